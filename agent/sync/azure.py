"""The Azure Blob Storage target: ``[target] kind = "azure"``.

A series ``<site>/<patient>/<study>/<series>[.vN]`` becomes the blobs
``<location>/<file path>`` in the container, then ``<location>/manifest.json`` - uploaded
**last**, the commit marker whose creation (Event Grid ``BlobCreated``) starts the cloud
processing. Blob names are made of pseudonyms only and no blob carries metadata.

Every write is conditional (``If-None-Match: *``): nothing is ever overwritten. Re-delivering
identical content sends nothing new; when a name is already held by other content, the
delivery moves to the next version (``.v<N+1>``), as the folder target does, and the
receipt says where it went. See :mod:`agent.sync.azure_blocks` for resumable blocks and
:mod:`agent.sync.azure_auth` for credentials; docs/azure.md for the administrator's view.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from typing import Any

from azure.core.exceptions import HttpResponseError
from azure.storage.blob import ContainerClient, ContentSettings

from agent.config import Config
from agent.errors import Clinic2CloudError, SeriesProblem
from agent.sync.azure_auth import Connection, build_client, resolve
from agent.sync.azure_blocks import Conflict, TokenBucket, Uploader, UploadStats
from agent.sync.azure_errors import code_of, convert, is_read_denied
from agent.sync.azure_progress import BlobState, ProgressStore
from agent.sync.azure_queue import ManifestNotifier
from agent.sync.base import MANIFEST_NAME, Delivery, Receipt
from agent.sync.manifest import content_digest, dumps, same_files, with_version

log = logging.getLogger(__name__)

# The SDK logs every request at INFO, and urllib3 logs every request line - SAS signature
# included - at DEBUG: keep both to warnings, so even a DEBUG agent log holds no secret.
for _name in (
    "azure.core.pipeline.policies.http_logging_policy",
    "azure.storage",
    "urllib3.connectionpool",
):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.WARNING)

#: How many later versions a delivery may move to when names are taken, before giving up.
MAX_VERSION_BUMPS = 20
#: Seconds of backoff the SDK may spend retrying one request (transient errors only).
DEFAULT_RETRY_BUDGET = 30.0


def _check_name(location: str, path: str) -> str:
    """The blob name of ``path`` under ``location``; refuses names that could escape it."""
    name = f"{location}/{path}"
    parts = name.split("/")
    if (
        any(p in ("", ".", "..") for p in parts)
        or "\\" in name
        or any(ord(c) < 32 for c in name)
        or len(name) > 1024
    ):
        raise SeriesProblem(
            "a file of this series has a name that cannot be a blob name", code="bad-name"
        )
    return name


class AzureTarget:
    """Delivers series into one Azure Blob container (see the module docstring)."""

    def __init__(self, cfg: Config, *, retry_budget: float = DEFAULT_RETRY_BUDGET) -> None:
        t = cfg.target
        self._conn: Connection = resolve(t)
        self.description = self._conn.description
        self.site = cfg.site.name
        self.stats = UploadStats()
        self._retry_budget = retry_budget
        self._pool_size = t.concurrency + 4
        self._store = ProgressStore(cfg.paths.state_dir / "uploads.sqlite3")
        try:
            self._notifier = (
                ManifestNotifier(self._conn, t.queue_name, retry_budget=retry_budget)
                if t.queue_name else None
            )
            self._client: ContainerClient = build_client(
                self._conn, retry_budget=retry_budget, pool=self._pool_size,
                response_hook=self._count,
            )
        except BaseException:
            self._store.close()
            raise
        bucket = TokenBucket(t.max_mbps * 1_000_000 / 8) if t.max_mbps > 0 else None
        self._uploader = Uploader(
            self._client,
            self._store,
            where=self._conn.where,
            block_size=t.block_size_mb << 20,
            concurrency=t.concurrency,
            bucket=bucket,
            stats=self.stats,
        )

    def _count(self, response: Any) -> None:
        self.stats.add(requests=1)

    # -- Target ---------------------------------------------------------------------------

    def deliver(self, delivery: Delivery) -> Receipt:
        """Every file, then the manifest; idempotent; never overwrites (see module doc)."""
        for _ in range(MAX_VERSION_BUMPS + 1):
            try:
                return self._deliver_at(delivery)
            except Conflict:
                # No PHI here: locations are pseudonyms.
                log.warning(
                    "%s already holds other content; delivering as version %d instead",
                    delivery.location, delivery.version + 1,
                )
                version = delivery.version + 1
                delivery = dataclasses.replace(
                    delivery, version=version, manifest=with_version(delivery.manifest, version)
                )
        raise SeriesProblem(
            f"{MAX_VERSION_BUMPS} versions of this series in the container already hold other "
            "content; ask the cloud team to check the container",
            code="target-conflict",
        )

    def _deliver_at(self, d: Delivery) -> Receipt:
        started = time.monotonic()
        where = self._conn.where
        names = [(_check_name(d.location, f.path), f) for f in d.files]
        manifest_name = _check_name(d.location, MANIFEST_NAME)
        if any(name == manifest_name for name, _ in names):
            raise SeriesProblem("a file of this series is named like the manifest",
                                code="bad-name")
        digest = content_digest(d.files)
        record = self._store.get(where, manifest_name)
        if record is not None and record.state != BlobState.STARTED:
            if record.sha256 != digest or record.state == BlobState.FOREIGN:
                raise Conflict(manifest_name)  # this version was delivered with other files
            if self._uploader.still_there(manifest_name, record.md5):
                self._notify_once(d.location, manifest_name, digest)
                return Receipt(location=d.location, already_present=True)
        # Before sending anything: is this version already delivered (by another agent, or
        # before our records were lost)? Needs read access; without it, we learn at the end.
        existing = self._read_manifest(manifest_name)
        if existing is not None:
            if not same_files(existing, d.files):
                self._store.begin(where, manifest_name, digest, 0, 0)
                self._store.set_state(where, manifest_name, BlobState.FOREIGN)
                raise Conflict(manifest_name)
            self._store.begin(where, manifest_name, digest, 0, 0)
            self._store.set_state(where, manifest_name, BlobState.COMMITTED)
            self._notify_once(d.location, manifest_name, digest)
            return Receipt(location=d.location, already_present=True)
        sent = self._uploader.upload(names)
        body = dumps(d.manifest)
        outcome = self._uploader.put_small(manifest_name, body, digest, "application/json")
        if outcome == "taken":  # someone else's manifest appeared while we uploaded
            existing = self._read_manifest(manifest_name)
            if existing is None or not same_files(existing, d.files):
                self._store.set_state(where, manifest_name, BlobState.FOREIGN)
                raise Conflict(manifest_name)
            self._store.set_state(where, manifest_name, BlobState.COMMITTED)
        if outcome == "written":
            sent += len(body)
        self._notify_once(d.location, manifest_name, digest)
        log.info(
            "delivered %s: %d files, %.1f MB sent in %.1f s%s",
            d.location, len(d.files), sent / 1e6, time.monotonic() - started,
            "" if outcome == "written" else " (already present)",
        )
        return Receipt(location=d.location, already_present=outcome != "written",
                       bytes_sent=sent)

    def _notify_once(self, location: str, manifest_name: str, digest: str) -> None:
        """Send the queue message for a manifest in place, unless recorded as sent."""
        if self._notifier is None:
            return
        key = f"queue:{manifest_name}"
        sent = self._store.get(self._conn.where, key)
        if sent is not None and sent.sha256 == digest and sent.state == BlobState.COMMITTED:
            return
        self._notifier.notify(location, manifest_name, digest)
        self._store.begin(self._conn.where, key, digest, 0, 0)
        self._store.set_state(self._conn.where, key, BlobState.COMMITTED)

    def _read_manifest(self, name: str) -> dict[str, Any] | None:
        """The manifest at ``name`` if the container holds one we may read, else None
        (absent, unreadable JSON, or upload-only credentials)."""
        try:
            raw = self._client.get_blob_client(name).download_blob().readall()
        except HttpResponseError as exc:
            if is_read_denied(exc) or code_of(exc) == "BlobNotFound":
                return None
            raise convert(exc, action="looking for an existing manifest",
                          where=self._conn.where) from None
        except Exception as exc:  # noqa: BLE001 -- SDK/transport errors of any type; converted
            raise convert(exc, action="looking for an existing manifest",
                          where=self._conn.where) from None
        try:
            manifest = json.loads(raw)
        except ValueError:
            return {}  # something that is not our manifest: never the same files
        return manifest if isinstance(manifest, dict) else {}

    def check(self) -> list[str]:
        """Credentials, container and a test write, in sentences an administrator can act on.

        The probe blob ``<site>/.clinic2cloud-doctor/<uuid>`` stays behind: an upload-only
        SAS cannot delete it (documented in docs/azure.md).
        """
        problems: list[str] = []
        probe = f"{self.site}/.clinic2cloud-doctor/{uuid.uuid4().hex}"
        client = build_client(self._conn, retry_budget=min(self._retry_budget, 4.0),
                              pool=2)
        try:
            client.get_blob_client(probe).upload_blob(
                b"clinic2cloud doctor probe\n",
                overwrite=False,
                validate_content=True,
                content_settings=ContentSettings(content_type="text/plain"),
            )
        except Exception as exc:  # noqa: BLE001 -- SDK/transport errors of any type; converted
            err = convert(exc, action="writing a test file", where=self._conn.where)
            problems.append(str(err))
        finally:
            client.close()
        try:
            self._store.get(self._conn.where, probe)
        except Clinic2CloudError as exc:
            problems.append(str(exc))
        if self._notifier is not None:
            problems.extend(self._notifier.check())
        return problems

    def close(self) -> None:
        self._uploader.close()
        self._client.close()
        if self._notifier is not None:
            self._notifier.close()
        self._store.close()


__all__ = ["AzureTarget"]
