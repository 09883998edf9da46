"""The results container, seen from the clinic: what is there for a delivery, and a
verified download of complete results.

The cloud worker writes results under the delivery's pseudonymous location, their
``manifest.json`` last; ``failure.json`` records a failed job (``final`` once it gave up).
Credentials are ``[target]``'s (the same account), or ``[results] secret_file`` (a SAS with
read and list on the results container) when the target's SAS is upload-only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

from agent.config import Config
from agent.sync.azure_auth import build_client, resolve
from agent.sync.azure_errors import convert

MANIFEST = "manifest.json"
FAILURE = "failure.json"
RESULTS_FORMAT = "clinic2cloud-results/1"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ResultsInvalid(Exception):
    """The results do not match their manifest, or it is malformed (message: no PHI)."""


@dataclass(frozen=True)
class Seen:
    """What the results container holds for one location."""

    manifest: bool
    failure: dict[str, Any] | None


@dataclass(frozen=True)
class Downloaded:
    folder: Path
    manifest: dict[str, Any]
    files: list[str]


def open_results(cfg: Config) -> tuple[ContainerClient, str]:
    """The results container client and a description for messages (no secret)."""
    t = cfg.target
    if cfg.results.secret_file:
        t = dataclasses.replace(t, connection_string="", sas_token="", secret_env="",
                                secret_file=cfg.results.secret_file)
    conn = dataclasses.replace(resolve(t), container=cfg.results.container)
    return build_client(conn, retry_budget=8.0, pool=4), conn.where


def _safe(path: object) -> str:
    if not isinstance(path, str) or not path or len(path) > 512:
        raise ResultsInvalid("the results manifest lists a file without a usable name")
    parts = path.split("/")
    if path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts) \
            or any(ord(c) < 32 for c in path) or path in (MANIFEST, FAILURE):
        raise ResultsInvalid("the results manifest lists a file whose name is not allowed")
    return path


class ResultsSource:
    """Reads one results container."""

    def __init__(self, client: ContainerClient, where: str) -> None:
        self.client = client
        self.where = where

    def look(self, location: str) -> Seen:
        """Whether results or a failure are recorded for ``location``."""
        try:
            names = {b.name.rsplit("/", 1)[-1]
                     for b in self.client.list_blobs(name_starts_with=f"{location}/")}
            failure = None
            if FAILURE in names and MANIFEST not in names:
                failure = self._json(f"{location}/{FAILURE}") or {}
        except ResourceNotFoundError:
            return Seen(False, None)
        except AzureError as exc:
            raise convert(exc, action="looking for results", where=self.where) from None
        return Seen(MANIFEST in names, failure)

    def _json(self, name: str) -> dict[str, Any] | None:
        raw = self.client.get_blob_client(name).download_blob().readall()
        try:
            doc = json.loads(raw)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None

    def download(self, location: str, into: Path, *, max_bytes: int = 4 << 30) -> Downloaded:
        """Every file the results manifest lists, into ``into``, size and SHA-256 checked."""
        shutil.rmtree(into, ignore_errors=True)
        into.mkdir(parents=True)
        try:
            manifest = self._json(f"{location}/{MANIFEST}")
            if manifest is None or manifest.get("format") != RESULTS_FORMAT \
                    or not isinstance(manifest.get("files"), list) or not manifest["files"]:
                raise ResultsInvalid("the results manifest is not a Clinic2Cloud results "
                                     "manifest or lists no files")
            if manifest.get("location") != location:
                raise ResultsInvalid("the results manifest names another delivery")
            entries = []
            for entry in manifest["files"]:
                if not isinstance(entry, dict):
                    raise ResultsInvalid("the results manifest has a malformed entry")
                rel, size, sha = _safe(entry.get("path")), entry.get("size"), entry.get("sha256")
                if not isinstance(size, int) or size < 0 or not isinstance(sha, str) \
                        or not _HEX64.match(sha):
                    raise ResultsInvalid("the results manifest has a file without size or "
                                         "SHA-256")
                entries.append((rel, size, sha))
            if sum(size for _, size, _ in entries) > max_bytes:
                raise ResultsInvalid("the results are larger than the agent accepts")
            for rel, size, sha in entries:
                self._fetch(f"{location}/{rel}", into / rel, size, sha, rel)
        except ResultsInvalid:
            raise
        except AzureError as exc:
            raise convert(exc, action="downloading results", where=self.where) from None
        return Downloaded(folder=into, manifest=manifest, files=[e[0] for e in entries])

    def _fetch(self, name: str, target: Path, size: int, sha: str, rel: str) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        written = 0
        try:
            stream = self.client.get_blob_client(name).download_blob()
        except ResourceNotFoundError:
            raise ResultsInvalid(f"a result file the manifest lists is missing ({rel})") from None
        with open(target, "wb") as fh:
            for chunk in stream.chunks():
                written += len(chunk)
                if written > size:
                    break
                h.update(chunk)
                fh.write(chunk)
        if written != size or h.hexdigest() != sha:
            raise ResultsInvalid(f"a result file differs from its manifest ({rel})")
