"""Resumable, verified, conditional uploads of files into block blobs.

How one file travels:

* The caller's thread reads the file once, in block-sized pieces, and hashes every byte it
  reads (SHA-256, checked against the manifest before anything is committed; MD5, the
  blob's Content-MD5). Pieces the service still lacks go to a thread pool shared by every
  delivery, which stages them with a transactional MD5 (``validate_content``: the service
  rejects a corrupted block) after taking their size from the shared bandwidth bucket.
* Block IDs are deterministic (content SHA-256 prefix + index), and each confirmed block is
  recorded in the :class:`~agent.sync.azure_progress.ProgressStore`, so after a crash only
  the blocks never confirmed are sent again.
* The block list is committed with ``If-None-Match: *`` and the whole-file Content-MD5.
  Files no bigger than one block go in a single conditional Put Blob.
* A commit that meets an existing blob (409/412) checks whether that blob is ours (same
  Content-MD5 when the credentials can read; our own earlier attempt at the same content
  when they cannot) - otherwise the name is *foreign* and :class:`Conflict` is raised: a
  delivery never overwrites anything.
* A commit refused because the service lost our uncommitted blocks (expiry after 7 days, a
  storage reset) forgets them, stages every block again and commits once more.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, fields
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobClient, ContainerClient, ContentSettings

from agent.errors import Clinic2CloudError, CredentialsError, SeriesProblem, TargetUnavailable
from agent.sync.azure_errors import LOST_BLOCKS, code_of, convert, is_read_denied, is_taken
from agent.sync.azure_progress import BlobState, ProgressStore, UploadRecord
from agent.sync.base import DeliveryFile

#: Largest body sent in one Put Blob (the SDK's own default single-put limit).
_SINGLE_PUT_MAX = 64 << 20


def block_id(sha256: str, index: int) -> str:
    """The ID of block ``index`` of the content with this SHA-256 (the SDK base64-encodes it).

    Same content, same IDs, in every process: what lets a resumed upload name blocks staged
    before a crash. All IDs of a blob have the same length, as the service requires.
    """
    return f"{sha256[:32]}-{index:06d}"


def content_type(path: str) -> str:
    if path.lower().endswith(".dcm"):
        return "application/dicom"
    guessed, _ = mimetypes.guess_type(path)
    return guessed or "application/octet-stream"


class Conflict(Exception):
    """The blob name holds content that is not ours, or cannot be shown to be ours."""

    def __init__(self, blob: str) -> None:
        super().__init__(blob)
        self.blob = blob


@dataclass
class UploadStats:
    """Counters since the target was opened (tests and the status page read them)."""

    requests: int = 0
    blocks_staged: int = 0
    bytes_sent: int = 0
    puts: int = 0
    commits: int = 0
    files_skipped: int = 0
    blocks_skipped: int = 0
    restaged_files: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_lock"}


class TokenBucket:
    """A bandwidth cap shared by every upload thread of a target.

    Takers may drive the bucket into debt (a block is sent whole) and then wait until it is
    paid back, so the long-run rate never exceeds ``rate`` bytes per second.
    """

    def __init__(self, rate: float, burst_seconds: float = 0.5) -> None:
        self.rate = rate
        self.burst = rate * burst_seconds
        self._tokens = self.burst
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n
            wait_s = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait_s > 0:
            time.sleep(wait_s)


class _Job:
    """One call's uploads: bytes sent, in-flight limit, and the first error met."""

    def __init__(self, inflight: int, where: str) -> None:
        self.slots = threading.BoundedSemaphore(inflight)
        self.where = where
        self.sent = 0
        self.error: Clinic2CloudError | None = None
        #: Set when the delivery is abandoned for a reason other than an upload error.
        self.stopped = False
        self._lock = threading.Lock()

    @property
    def failed(self) -> bool:
        return self.error is not None or self.stopped

    def fail(self, exc: BaseException, action: str) -> None:
        err = exc if isinstance(exc, Clinic2CloudError) else convert(
            exc, action=action, where=self.where
        )
        with self._lock:
            # Credentials trump everything: they are what the person must fix first.
            if self.error is None or (
                isinstance(err, CredentialsError) and not isinstance(self.error, CredentialsError)
            ):
                self.error = err

    def add_sent(self, n: int) -> None:
        with self._lock:
            self.sent += n


@dataclass
class _Pending:
    """A file whose bytes are on their way; committed once its futures are done."""

    blob: str
    file: DeliveryFile
    md5: bytes
    futures: list[Future[Any]]
    single: bool
    #: An earlier attempt of ours began this same content under this name.
    prior: bool


class Uploader:
    """Uploads files into one container; shared by every delivery of a target."""

    def __init__(
        self,
        client: ContainerClient,
        store: ProgressStore,
        *,
        where: str,
        block_size: int,
        concurrency: int,
        bucket: TokenBucket | None,
        stats: UploadStats,
    ) -> None:
        self.client = client
        self.store = store
        self.where = where
        self.block_size = block_size
        self.single_put_max = min(block_size, _SINGLE_PUT_MAX)
        self.concurrency = concurrency
        self.bucket = bucket
        self.stats = stats
        self._pool = ThreadPoolExecutor(max_workers=concurrency,
                                        thread_name_prefix="azure-upload")
        self._closed = False

    def close(self) -> None:
        """Cancel queued work and wait for requests in flight (each bounded by the retry
        budget and timeouts). A delivery still running fails with TargetUnavailable."""
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- public ---------------------------------------------------------------------------

    def upload(self, files: list[tuple[str, DeliveryFile]]) -> int:
        """Upload every (blob name, file); the bytes sent. Raises :class:`Conflict` when a
        name is taken by other content, or a Clinic2Cloud error."""
        job = _Job(2 * self.concurrency, self.where)
        pending: list[_Pending] = []
        try:
            for blob, f in files:
                if job.failed:
                    break
                p = self._start(job, blob, f)
                if p is not None:
                    pending.append(p)
            for p in pending:
                wait(p.futures)
                if any(fut.cancelled() for fut in p.futures):
                    job.fail(_closed_error(), "uploading")
                if job.failed:
                    break
                self._finish(job, p)
        except BaseException:
            job.stopped = True  # queued blocks of this delivery need not be sent any more
            raise
        finally:
            wait([fut for p in pending for fut in p.futures])
        if job.error is not None:
            raise job.error
        return job.sent

    def still_there(self, blob: str, md5: str) -> bool:
        """Whether a blob recorded as committed is still in the container with our content.

        Upload-only credentials cannot look; then the record is trusted.
        """
        try:
            props = self.client.get_blob_client(blob).get_blob_properties()
        except ResourceNotFoundError as exc:
            if code_of(exc) == "ContainerNotFound":
                raise convert(exc, action="checking a delivered file", where=self.where) from None
            self.store.forget(self.where, blob)
            return False
        except HttpResponseError as exc:
            if is_read_denied(exc):
                return True
            raise convert(exc, action="checking a delivered file", where=self.where) from None
        except Exception as exc:  # noqa: BLE001 -- SDK/transport errors of any type; converted
            raise convert(exc, action="checking a delivered file", where=self.where) from None
        stored = props.content_settings.content_md5
        if stored and md5 and _b64(bytes(stored)) != md5:
            self.store.set_state(self.where, blob, BlobState.FOREIGN)
            raise Conflict(blob)
        return True

    def put_small(self, blob: str, data: bytes, content_id: str, ctype: str) -> str:
        """Put ``data`` (the manifest) at ``blob`` unless the name is taken.

        ``content_id`` identifies what ``data`` stands for (for a manifest: the digest of
        the files it lists, since its bytes may differ between attempts). Returns
        ``"written"``, ``"ours"`` (taken by our own earlier attempt at the same content)
        or ``"taken"`` (by something we cannot vouch for; the caller may look closer).
        """
        md5 = hashlib.md5(data).digest()
        before = self.store.begin(self.where, blob, content_id, 0, 0)
        prior = before is not None and before.holds(content_id, 0)
        if prior and before is not None:
            if before.state == BlobState.FOREIGN:
                raise Conflict(blob)
            if before.state == BlobState.COMMITTED:
                return "ours"
        outcome = "written"
        try:
            if self.bucket is not None:
                self.bucket.take(len(data))
            self._put(self.client.get_blob_client(blob), data, md5, ctype)
        except HttpResponseError as exc:
            if not is_taken(exc):
                raise convert(exc, action="uploading the manifest", where=self.where) from None
            if not prior:
                return "taken"
            outcome = "ours"  # our earlier attempt's put went through before the crash
        except Exception as exc:  # noqa: BLE001 -- SDK/transport errors of any type; converted
            raise convert(exc, action="uploading the manifest", where=self.where) from None
        # When the blob was already there, its bytes may be an earlier rendering of the same
        # manifest: leave its MD5 unknown rather than record one it may not have.
        known = _b64(md5) if outcome == "written" else ""
        self.store.set_state(self.where, blob, BlobState.COMMITTED, known)
        return outcome

    # -- one file ---------------------------------------------------------------------------

    def _start(self, job: _Job, blob: str, f: DeliveryFile) -> _Pending | None:
        record = self.store.get(self.where, blob)
        if record is not None and record.holds(f.sha256, f.size):
            if record.state == BlobState.FOREIGN:
                raise Conflict(blob)
            if record.state == BlobState.COMMITTED and self.still_there(blob, record.md5):
                self.stats.add(files_skipped=1)
                return None
        before = self.store.begin(self.where, blob, f.sha256, f.size, self.block_size)
        prior = before is not None and before.holds(f.sha256, f.size)
        staged = _staged(before, f, self.block_size)
        if f.size <= self.single_put_max:
            # Read, verify and put in a worker: small files hash in parallel on every core.
            self._acquire(job)
            fut = self._submit(job, self._put_task, job, blob, f)
            return _Pending(blob, f, b"", [fut], single=True, prior=prior)
        md5, futures = self._send_blocks(job, blob, f, staged)
        return _Pending(blob, f, md5, futures, single=False, prior=prior)

    def _send_blocks(
        self, job: _Job, blob: str, f: DeliveryFile, staged: frozenset[int]
    ) -> tuple[bytes, list[Future[Any]]]:
        """Read and hash the whole file; submit the blocks not in ``staged``."""
        sha, md5 = hashlib.sha256(), hashlib.md5()
        futures: list[Future[Any]] = []
        client = self.client.get_blob_client(blob)
        try:
            with open(f.local, "rb") as fh:
                index = 0
                while data := fh.read(self.block_size):
                    if job.failed:
                        break
                    sha.update(data)
                    md5.update(data)
                    if index in staged:
                        self.stats.add(blocks_skipped=1)
                    else:
                        self._acquire(job)
                        futures.append(
                            self._submit(job, self._stage_task, job, client, blob, f, index, data)
                        )
                    index += 1
        except OSError:
            job.fail(_unreadable(f), "reading")
        if not job.failed:
            try:
                _check_sha256(f, sha.hexdigest())
            except SeriesProblem as exc:
                job.fail(exc, "verifying")
        return md5.digest(), futures

    def _acquire(self, job: _Job) -> None:
        """A slot for one more block in memory; gives up when the target is closed."""
        while not job.slots.acquire(timeout=0.5):
            if self._closed:
                raise _closed_error()

    def _submit(self, job: _Job, fn: Any, *args: Any) -> Future[Any]:
        try:
            fut = self._pool.submit(fn, *args)
        except RuntimeError:  # the target was closed under us (agent shutting down)
            job.slots.release()
            raise _closed_error() from None
        # A task cancelled by close() never runs, so never frees its slot: free it here.
        fut.add_done_callback(lambda f: job.slots.release() if f.cancelled() else None)
        return fut

    def _stage_task(
        self, job: _Job, client: BlobClient, blob: str, f: DeliveryFile, index: int, data: bytes
    ) -> None:
        try:
            if job.failed:
                return
            if self.bucket is not None:
                self.bucket.take(len(data))
            client.stage_block(block_id(f.sha256, index), data, length=len(data),
                               validate_content=True)
            self.store.block_staged(self.where, blob, index)
            job.add_sent(len(data))
            self.stats.add(blocks_staged=1, bytes_sent=len(data))
        except BaseException as exc:  # noqa: BLE001 -- handed to the delivering thread
            job.fail(exc, "uploading a block")
        finally:
            job.slots.release()

    def _put_task(self, job: _Job, blob: str, f: DeliveryFile) -> bytes | None:
        """Read, verify and put a small file. Returns its MD5, or None when the name was
        already taken (the caller settles that)."""
        md5 = b""
        try:
            if job.failed:
                return md5
            data = _read(f)
            _check_sha256(f, hashlib.sha256(data).hexdigest())
            md5 = hashlib.md5(data).digest()
            if self.bucket is not None:
                self.bucket.take(len(data))
            self._put(self.client.get_blob_client(blob), data, md5, content_type(f.path))
            job.add_sent(len(data))
        except HttpResponseError as exc:
            if is_taken(exc):
                return None
            job.fail(exc, "uploading a file")
        except BaseException as exc:  # noqa: BLE001 -- handed to the delivering thread
            job.fail(exc, "uploading a file")
        finally:
            job.slots.release()
        return md5

    def _put(self, client: BlobClient, data: bytes, md5: bytes, ctype: str) -> None:
        client.upload_blob(
            data,
            length=len(data),
            overwrite=False,  # sends If-None-Match: *
            # The transactional Content-MD5 (the service rejects a body that does not match
            # it) is the one we computed already: the SDK's validate_content would hash the
            # body a second time.
            transactional_content_md5=md5,
            content_settings=ContentSettings(content_type=ctype, content_md5=bytearray(md5)),
        )
        self.stats.add(puts=1, bytes_sent=len(data))

    def _finish(self, job: _Job, p: _Pending) -> None:
        """Commit a file whose blocks are all staged (or settle its single put)."""
        if p.single:
            md5 = p.futures[0].result()
            if md5 is None:
                p.md5 = hashlib.md5(_read(p.file)).digest()
                self._settle_taken(p)
            elif not job.failed:
                self.store.set_state(self.where, p.blob, BlobState.COMMITTED, _b64(md5))
            return
        client = self.client.get_blob_client(p.blob)
        n_blocks = -(-p.file.size // self.block_size)
        ids = [BlobBlock(block_id(p.file.sha256, i)) for i in range(n_blocks)]
        settings = ContentSettings(content_type=content_type(p.file.path),
                                   content_md5=bytearray(p.md5))
        for attempt in (1, 2):
            try:
                client.commit_block_list(ids, content_settings=settings, if_none_match="*")
            except HttpResponseError as exc:
                if is_taken(exc):
                    self._settle_taken(p)
                    return
                if code_of(exc) in LOST_BLOCKS and attempt == 1:
                    # The service no longer holds blocks we recorded: send them all again.
                    self.store.forget_blocks(self.where, p.blob)
                    self.stats.add(restaged_files=1)
                    _, futures = self._send_blocks(job, p.blob, p.file, frozenset())
                    wait(futures)
                    if job.failed:
                        return
                    continue
                job.fail(exc, "committing a file")
                return
            except Exception as exc:  # noqa: BLE001 -- handed to the delivering thread
                job.fail(exc, "committing a file")
                return
            self.stats.add(commits=1)
            self.store.set_state(self.where, p.blob, BlobState.COMMITTED, _b64(p.md5))
            return

    def _settle_taken(self, p: _Pending) -> None:
        """The blob exists already: record it as ours, or raise :class:`Conflict`."""
        try:
            props = self.client.get_blob_client(p.blob).get_blob_properties()
        except HttpResponseError as exc:
            if not is_read_denied(exc):
                raise convert(exc, action="checking an existing file", where=self.where) \
                    from None
            ours = p.prior  # cannot look: trust our own earlier attempt at this content
        except Exception as exc:  # noqa: BLE001 -- SDK/transport errors of any type; converted
            raise convert(exc, action="checking an existing file", where=self.where) from None
        else:
            stored = props.content_settings.content_md5
            ours = props.size == p.file.size and stored is not None and bytes(stored) == p.md5
        if not ours:
            self.store.set_state(self.where, p.blob, BlobState.FOREIGN)
            raise Conflict(p.blob)
        self.store.set_state(self.where, p.blob, BlobState.COMMITTED, _b64(p.md5))


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _staged(before: UploadRecord | None, f: DeliveryFile, block_size: int) -> frozenset[int]:
    if (
        before is not None
        and before.holds(f.sha256, f.size)
        and before.state == BlobState.STARTED
        and before.block_size == block_size
    ):
        return before.staged
    return frozenset()


def _closed_error() -> TargetUnavailable:
    return TargetUnavailable("the Azure target was closed; the series stays queued")


def _unreadable(f: DeliveryFile) -> SeriesProblem:
    return SeriesProblem(
        f"the file {f.path} of this series can no longer be read from the outbox",
        code="outbox-missing",
    )


def _read(f: DeliveryFile) -> bytes:
    try:
        return f.local.read_bytes()
    except OSError:
        raise _unreadable(f) from None


def _check_sha256(f: DeliveryFile, actual: str) -> None:
    if actual != f.sha256:
        raise SeriesProblem(
            f"the file {f.path} changed after its manifest was written (SHA-256 differs); "
            "the series must be processed again",
            code="integrity",
        )
