"""One job: a delivery in, results (or a recorded failure) out; idempotent.

1. Results already complete for the location (their manifest exists)? Done, nothing
   processed twice - unless a reprocessing was asked for.
2. A final failure is recorded? Done as well, unless asked again (a retry from the clinic).
3. Lease the location's lock: another worker on it means this one leaves the message for
   later.
4. Download the delivery and verify every file's SHA-256 against its manifest; an invalid
   delivery is a final failure at once (processing it again cannot help).
5. Run the step on the verified folder; a failed attempt is recorded (``failure.json``,
   ``final`` once ``[worker] max_attempts`` attempts failed) and retried through the queue.
6. Write the results, their manifest last.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from enum import StrEnum
from pathlib import Path

from azure.core.exceptions import ResourceExistsError

from clinic2cloud_worker.config import Config, work_root
from clinic2cloud_worker.delivery import fetch
from clinic2cloud_worker.errors import DeliveryInvalid, StepFailed
from clinic2cloud_worker.messages import Job
from clinic2cloud_worker.results import ResultsStore
from clinic2cloud_worker.step import IMAGE_PREFIX, run_step
from clinic2cloud_worker.storage import Storage

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    DONE = "done"                    # results written
    ALREADY_DONE = "already-done"    # results were there: nothing processed
    FAILED_FINAL = "failed-final"    # recorded for the agent; no more attempts
    RETRY = "retry"                  # a failed attempt; the message comes back
    BUSY = "busy"                    # another worker holds the lock


def step_label(cfg: Config) -> str:
    if cfg.worker.step_name:
        return cfg.worker.step_name
    step = cfg.worker.step.strip()
    if step.startswith(IMAGE_PREFIX):
        return step[len(IMAGE_PREFIX):].strip()
    return Path(step.split()[0]).name


def run_job(cfg: Config, storage: Storage, job: Job) -> Outcome:
    """Process ``job`` (see the module docstring). Raises StorageUnavailable /
    StorageDenied (the message stays in the queue)."""
    results = ResultsStore(storage.container(cfg.worker.results_container),
                           f"{storage.where}/{cfg.worker.results_container}")
    loc = job.location
    if results.manifest(loc) is not None and not job.reprocess:
        log.info("%s: results already complete; nothing to do", loc)
        return Outcome.ALREADY_DONE
    earlier = results.failure(loc) or {}
    if earlier.get("final") and not job.reprocess:
        log.info("%s: failed for good earlier (%s); a retry must be asked for", loc,
                 earlier.get("code"))
        return Outcome.FAILED_FINAL
    lease = results.lock(loc)
    if lease is None:
        log.info("%s: another worker is processing it", loc)
        return Outcome.BUSY
    attempts = 1 if job.reprocess else int(earlier.get("attempts") or 0) + 1
    scratch = work_root(cfg) / uuid.uuid4().hex
    try:
        if job.reprocess:
            results.clear(loc)
        elif results.manifest(loc) is not None:  # finished by another worker meanwhile
            return Outcome.ALREADY_DONE
        else:
            results.clear(loc)
        started = time.monotonic()
        try:
            fetched = fetch(storage.container(job.container), loc, scratch / "input",
                            where=f"{storage.where}/{job.container}",
                            max_bytes=int(cfg.worker.max_delivery_gb * 1e9))
        except DeliveryInvalid as exc:
            log.warning("%s: invalid delivery: %s", loc, exc)
            results.record_failure(loc, code=exc.code, message=str(exc), attempts=attempts,
                                   final=True)
            return Outcome.FAILED_FINAL
        log.info("%s: %d files verified (%.1f MB) in %.1f s", loc, fetched.files,
                 fetched.bytes / 1e6, time.monotonic() - started)
        try:
            ran = run_step(cfg.worker.step, scratch / "input", scratch / "output",
                           timeout=cfg.worker.step_timeout_minutes * 60,
                           runtime=cfg.worker.container_runtime, log_file=scratch / "step.log")
            manifest = results.write(
                loc, scratch / "output",
                delivery={"container": job.container,
                          "manifest_sha256": fetched.manifest_sha256,
                          "content_sha256": fetched.manifest.get("content_sha256", ""),
                          "files": fetched.files},
                step={"name": step_label(cfg), "exit_code": ran.exit_code,
                      "seconds": round(ran.seconds, 2), "attempt": attempts})
        except StepFailed as exc:
            final = attempts >= cfg.worker.max_attempts
            log.warning("%s: attempt %d failed (%s): %s%s", loc, attempts, exc.code, exc,
                        "; final" if final else "; will be retried")
            results.record_failure(loc, code=exc.code, message=str(exc), attempts=attempts,
                                   final=final, exit_code=exc.step_exit_code)
            return Outcome.FAILED_FINAL if final else Outcome.RETRY
        except ResourceExistsError:
            return Outcome.ALREADY_DONE
        log.info("%s: %d result files written in %.1f s", loc, len(manifest["files"]),
                 time.monotonic() - started)
        return Outcome.DONE
    finally:
        lease.release()
        shutil.rmtree(scratch, ignore_errors=True)
