"""Results in the results container: files, then ``manifest.json`` last; failure records.

Layout (the delivery's own pseudonymous path, in ``[worker] results_container``)::

    <site>/<patient>/<study>/<series>[.vN]/<result files ...>
    <site>/<patient>/<study>/<series>[.vN]/manifest.json    written last: results complete
    <site>/<patient>/<study>/<series>[.vN]/failure.json     a failed attempt (final or not)
    <site>/<patient>/<study>/<series>[.vN]/.lock            leased while a worker is on it

The results manifest (``clinic2cloud-results/1``) lists every file's path, size and
SHA-256, names the step and the delivery it came from (the delivery manifest's SHA-256 and
``content_sha256``). It is created with ``If-None-Match: *``: results are never replaced
unless a reprocessing is asked for. Nothing here holds identity: the step only ever saw the
de-identified delivery.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobLeaseClient, ContainerClient, ContentSettings

from clinic2cloud_worker import __version__
from clinic2cloud_worker.delivery import safe_relative
from clinic2cloud_worker.errors import DeliveryInvalid, StepFailed
from clinic2cloud_worker.messages import MANIFEST
from clinic2cloud_worker.storage import convert, status_of

RESULTS_FORMAT = "clinic2cloud-results/1"
FAILURE_FORMAT = "clinic2cloud-failure/1"
FAILURE = "failure.json"
LOCK = ".lock"
LEASE_SECONDS = 60


def _json(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _content_type(name: str) -> str:
    if name.endswith(".dcm"):
        return "application/dicom"
    if name.endswith(".json"):
        return "application/json"
    return "application/octet-stream"


class ResultsStore:
    """The results container, for one worker."""

    def __init__(self, client: ContainerClient, where: str) -> None:
        self.client = client
        self.where = where

    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            raw = self.client.get_blob_client(name).download_blob().readall()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise convert(exc, "reading the results container", self.where) from None
        try:
            doc = json.loads(raw)
        except ValueError:
            return {}
        return doc if isinstance(doc, dict) else {}

    def manifest(self, location: str) -> dict[str, Any] | None:
        return self._read(f"{location}/{MANIFEST}")

    def failure(self, location: str) -> dict[str, Any] | None:
        return self._read(f"{location}/{FAILURE}")

    def clear(self, location: str, *, keep: tuple[str, ...] = (LOCK,)) -> None:
        """Delete what an earlier attempt left under ``location`` (never the lock)."""
        try:
            for blob in self.client.list_blobs(name_starts_with=f"{location}/"):
                if blob.name.rsplit("/", 1)[-1] not in keep:
                    self.client.delete_blob(blob.name)
        except ResourceNotFoundError:
            pass
        except AzureError as exc:
            raise convert(exc, "clearing an earlier attempt's results", self.where) from None

    def write(self, location: str, output: Path, *, delivery: dict[str, Any],
              step: dict[str, Any]) -> dict[str, Any]:
        """Upload every file of ``output``, then the results manifest (created, never
        replaced). Returns the manifest; raises ResourceExistsError if results exist."""
        files = []
        for path in sorted(p for p in output.rglob("*") if p.is_file() or p.is_symlink()):
            if path.is_symlink():
                raise StepFailed("the processing step wrote a symbolic link; results must be "
                                 "plain files", code="step-bad-output")
            rel = path.relative_to(output).as_posix()
            try:
                safe_relative(rel)
            except DeliveryInvalid:
                raise StepFailed("the processing step wrote a file whose name is not "
                                 "allowed", code="step-bad-output") from None
            if rel in (FAILURE, LOCK):
                raise StepFailed(f"the processing step wrote a file named {rel}, which is "
                                 "reserved", code="step-bad-output")
            sha = _sha256(path)
            try:
                with open(path, "rb") as fh:
                    self.client.upload_blob(
                        f"{location}/{rel}", fh, overwrite=True, validate_content=True,
                        content_settings=ContentSettings(content_type=_content_type(rel)))
            except AzureError as exc:
                raise convert(exc, "writing results", self.where) from None
            files.append({"path": rel, "size": path.stat().st_size, "sha256": sha})
        content = hashlib.sha256(
            "".join(f"{f['path']}\x00{f['sha256']}\n" for f in files).encode()).hexdigest()
        manifest = {
            "format": RESULTS_FORMAT,
            "worker_version": __version__,
            "location": location,
            "delivery": delivery,
            "step": step,
            "completed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "content_sha256": content,
            "files": files,
        }
        try:
            self.client.upload_blob(f"{location}/{MANIFEST}", _json(manifest), overwrite=False,
                                    content_settings=ContentSettings(
                                        content_type="application/json"))
        except ResourceExistsError:
            raise
        except AzureError as exc:
            raise convert(exc, "writing the results manifest", self.where) from None
        try:
            self.client.delete_blob(f"{location}/{FAILURE}")
        except ResourceNotFoundError:
            pass
        except Exception:  # noqa: BLE001 - a stale failure record beside results is harmless
            pass
        return manifest

    def record_failure(self, location: str, *, code: str, message: str, attempts: int,
                       final: bool, exit_code: int | None = None) -> None:
        """``failure.json`` for the agent: what failed, how often, whether it is final."""
        doc = {"format": FAILURE_FORMAT, "worker_version": __version__, "code": code,
               "message": message, "attempts": attempts, "final": final,
               "exit_code": exit_code,
               "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            self.client.upload_blob(f"{location}/{FAILURE}", _json(doc), overwrite=True,
                                    content_settings=ContentSettings(
                                        content_type="application/json"))
        except AzureError as exc:
            raise convert(exc, "recording a failed job", self.where) from None

    def lock(self, location: str) -> Lease | None:
        """A lease on ``location``'s lock blob while this worker processes it; None when
        another worker holds it."""
        blob = self.client.get_blob_client(f"{location}/{LOCK}")
        try:
            blob.upload_blob(b"", overwrite=True)
        except HttpResponseError as exc:
            if status_of(exc) == 412:  # leased by another worker
                return None
            raise convert(exc, "locking the job", self.where) from None
        except AzureError as exc:
            raise convert(exc, "locking the job", self.where) from None
        lease = BlobLeaseClient(blob)
        try:
            lease.acquire(lease_duration=LEASE_SECONDS)
        except HttpResponseError as exc:
            if status_of(exc) == 409:
                return None
            raise convert(exc, "locking the job", self.where) from None
        return Lease(lease)


class Lease:
    """A renewed blob lease; released on :meth:`release` (or expires if the worker dies)."""

    def __init__(self, lease: BlobLeaseClient) -> None:
        self._lease = lease
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="lease-renewal", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 3):
            try:
                self._lease.renew()
            except Exception:  # noqa: BLE001 - a lost lease: the next renewal tries again
                pass

    def release(self) -> None:
        self._stop.set()
        self._thread.join(5)
        try:
            self._lease.release()
        except Exception:  # noqa: BLE001 - it expires by itself
            pass
