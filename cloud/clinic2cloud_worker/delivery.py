"""Fetch one delivery and verify it against its manifest, file by file.

The manifest (``clinic2cloud-manifest/1``, written last by the agent) lists every file's
relative path, size and SHA-256. Each file is streamed to disk while its SHA-256 is
computed; a missing file, a size or hash that differs, a name that could escape the folder,
or a delivery larger than ``[worker] max_delivery_gb`` makes the delivery invalid - it is
never processed, and the failure is recorded for the agent to see.
"""

from __future__ import annotations

import hashlib
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

from clinic2cloud_worker.errors import DeliveryInvalid
from clinic2cloud_worker.messages import MANIFEST
from clinic2cloud_worker.storage import convert

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PARALLEL = 8


@dataclass(frozen=True)
class Fetched:
    """A verified delivery on local disk."""

    folder: Path
    manifest: dict[str, Any]
    manifest_sha256: str
    files: int
    bytes: int


def safe_relative(path: object) -> str:
    """``path`` if it is a plain relative file path inside its folder, else raise."""
    if not isinstance(path, str) or not path or len(path) > 512:
        raise DeliveryInvalid("the manifest lists a file without a usable name")
    parts = path.split("/")
    if (path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts)
            or any(ord(c) < 32 for c in path) or path == MANIFEST):
        raise DeliveryInvalid("the manifest lists a file whose name could escape its folder")
    return path


def read_manifest(client: ContainerClient, location: str, where: str) -> tuple[dict[str, Any],
                                                                               str]:
    """The manifest at ``location`` and the SHA-256 of its bytes."""
    try:
        raw = client.get_blob_client(f"{location}/{MANIFEST}").download_blob().readall()
    except ResourceNotFoundError:
        raise DeliveryInvalid("the delivery has no manifest.json (not committed)") from None
    except AzureError as exc:
        raise convert(exc, "reading the delivery's manifest", where) from None
    try:
        doc = json.loads(raw)
    except ValueError:
        raise DeliveryInvalid("the delivery's manifest.json is not valid JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), list) or not doc["files"]:
        raise DeliveryInvalid("the delivery's manifest lists no files")
    return doc, hashlib.sha256(raw).hexdigest()


def _fetch_one(client: ContainerClient, location: str, into: Path, rel: str, size: int,
               sha: str, where: str) -> None:
    target = into / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    written = 0
    try:
        stream = client.get_blob_client(f"{location}/{rel}").download_blob()
        with open(target, "wb") as fh:
            for chunk in stream.chunks():
                written += len(chunk)
                if written > size:
                    break
                h.update(chunk)
                fh.write(chunk)
    except ResourceNotFoundError:
        raise DeliveryInvalid(f"a file the manifest lists is missing: {rel}") from None
    except OSError:
        raise
    except AzureError as exc:
        raise convert(exc, "downloading the delivery", where) from None
    if written != size or h.hexdigest() != sha:
        raise DeliveryInvalid(f"a file differs from the manifest (size or SHA-256): {rel}")


def fetch(client: ContainerClient, location: str, into: Path, *, where: str,
          max_bytes: int) -> Fetched:
    """Download every file the manifest lists into ``into``, verified."""
    manifest, manifest_sha = read_manifest(client, location, where)
    entries = []
    total = 0
    for entry in manifest["files"]:
        if not isinstance(entry, dict):
            raise DeliveryInvalid("the delivery's manifest has a malformed file entry")
        rel = safe_relative(entry.get("path"))
        size, sha = entry.get("size"), entry.get("sha256")
        if not isinstance(size, int) or size < 0 or not isinstance(sha, str) \
                or not _HEX64.match(sha):
            raise DeliveryInvalid("the delivery's manifest has a file without size or SHA-256")
        total += size
        entries.append((rel, size, sha))
    if total > max_bytes:
        raise DeliveryInvalid(f"the delivery holds {total / 1e9:.1f} GB, more than "
                              "[worker] max_delivery_gb allows")
    if len({rel for rel, _, _ in entries}) != len(entries):
        raise DeliveryInvalid("the delivery's manifest lists a file twice")
    into.mkdir(parents=True, exist_ok=True)
    # Files are fetched in parallel: one request each, latency dominates for DICOM slices.
    with ThreadPoolExecutor(max_workers=_PARALLEL) as pool:
        for future in [pool.submit(_fetch_one, client, location, into, rel, size, sha, where)
                       for rel, size, sha in entries]:
            future.result()
    return Fetched(folder=into, manifest=manifest, manifest_sha256=manifest_sha,
                   files=len(entries), bytes=total)
