"""``clinic2cloud-worker --config FILE``: take deliveries whose manifest has landed.

Modes:

* default - take up to ``[worker] max_messages`` messages from the queue, process them,
  exit (what one Azure Container Apps job execution does; KEDA starts executions while
  the queue holds messages). Exit 0 when the queue was empty or every job ended (results
  written, already there, or a failure recorded for the agent);
* ``--listen`` - keep polling the queue until SIGTERM / SIGINT (a VM, a local round trip);
* ``--scan`` - no queue: every delivery in the container that has a manifest but neither
  results nor a final failure (a scheduled safety net for lost events);
* ``--location LOC`` - one named delivery (``--reprocess`` to do it again on purpose).

A message is deleted when its job ended; a failed attempt leaves it to come back after a
backoff (attempts are counted in the results' ``failure.json``); storage out of reach
leaves it as well. Exit codes: 0 done, 1 storage unavailable, 2 configuration, 3 storage
refused the credentials.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from azure.core.exceptions import AzureError

from clinic2cloud_worker import __version__
from clinic2cloud_worker.config import Config, load
from clinic2cloud_worker.errors import StorageUnavailable, WorkerError
from clinic2cloud_worker.job import Outcome, run_job
from clinic2cloud_worker.messages import MANIFEST, Job, parse, valid_location
from clinic2cloud_worker.storage import Storage, convert, open_storage

log = logging.getLogger("clinic2cloud_worker")

#: Seconds a taken message stays invisible while its job runs, beyond the step's timeout.
_VISIBILITY_MARGIN = 300
#: Seconds before a message comes back after a failed attempt / a busy lock.
_RETRY_BACKOFF = 30
_BUSY_BACKOFF = 60
#: Longest wait between queue polls while the storage is out of reach (--listen).
_MAX_OUTAGE_WAIT = 60.0


def _process_message(cfg: Config, storage: Storage, queue: object, msg: object) -> Outcome:
    text = str(getattr(msg, "content", ""))
    job = parse(text)
    if job is None:
        log.warning("ignored a queue message that names no delivered manifest")
        queue.delete_message(msg)  # type: ignore[attr-defined]
        return Outcome.ALREADY_DONE
    if job.container != cfg.storage.container and cfg.storage.container:
        log.warning("ignored a message for container %s (configured: %s)", job.container,
                    cfg.storage.container)
        queue.delete_message(msg)  # type: ignore[attr-defined]
        return Outcome.ALREADY_DONE
    outcome = run_job(cfg, storage, job)
    log.info("%s: %s", job.location, outcome)
    if outcome in (Outcome.DONE, Outcome.ALREADY_DONE, Outcome.FAILED_FINAL):
        queue.delete_message(msg)  # type: ignore[attr-defined]
    else:
        delay = _BUSY_BACKOFF if outcome == Outcome.BUSY else _RETRY_BACKOFF
        queue.update_message(msg, visibility_timeout=delay)  # type: ignore[attr-defined]
    return outcome


def drain(cfg: Config, storage: Storage, stop: threading.Event, *, listen: bool) -> int:
    """Take messages (see the module docstring); the number of jobs run."""
    queue = storage.queue(cfg.queue_name)
    visibility = int(cfg.worker.step_timeout_minutes * 60) + _VISIBILITY_MARGIN
    taken = 0
    outage = cfg.worker.poll_seconds
    while not stop.is_set():
        try:
            batch = list(queue.receive_messages(messages_per_page=1, max_messages=1,
                                                visibility_timeout=visibility))
        except AzureError as exc:
            err = convert(exc, f"reading the queue {cfg.queue_name}", storage.where)
            if not (listen and isinstance(err, StorageUnavailable)):
                raise err from None
            # Listening: an outage is waited out, with backoff, instead of ending the worker.
            log.warning("%s; trying again in %.0f s", err, outage)
            stop.wait(outage)
            outage = min(outage * 2, _MAX_OUTAGE_WAIT)
            continue
        outage = cfg.worker.poll_seconds
        if not batch:
            if not listen:
                break
            stop.wait(cfg.worker.poll_seconds)
            continue
        try:
            _process_message(cfg, storage, queue, batch[0])
        except WorkerError:
            raise
        except AzureError as exc:
            raise convert(exc, "handling a queue message", storage.where) from None
        except Exception as exc:
            # The message comes back after its visibility timeout and is tried again.
            log.error("unexpected %s while processing a message; it will come back",
                      type(exc).__name__, exc_info=True)
        taken += 1
        if not listen and taken >= cfg.worker.max_messages:
            break
    return taken


def scan(cfg: Config, storage: Storage, stop: threading.Event, prefix: str = "") -> int:
    """Process every delivery with a manifest and no results; the number processed."""
    container = storage.container(cfg.storage.container)
    done = 0
    try:
        names = [b.name for b in container.list_blobs(name_starts_with=prefix or None)
                 if b.name.endswith("/" + MANIFEST)]
    except AzureError as exc:
        raise convert(exc, "listing deliveries", storage.where) from None
    for name in names:
        if stop.is_set():
            break
        location = name[: -len(MANIFEST) - 1]
        if not valid_location(location):
            continue
        if run_job(cfg, storage, Job(cfg.storage.container, location)) == Outcome.DONE:
            done += 1
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clinic2cloud-worker", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="TOML: [target], [worker]")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--listen", action="store_true", help="poll the queue until stopped")
    mode.add_argument("--scan", action="store_true", help="no queue: every unprocessed "
                      "delivery in the container")
    mode.add_argument("--location", help="process this delivery (<site>/<patient>/<study>/"
                      "<series>)")
    parser.add_argument("--reprocess", action="store_true",
                        help="with --location: process again even if results exist")
    parser.add_argument("--version", action="version", version=__version__)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("stopping after the current job")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        cfg = load(args.config)
        storage = open_storage(cfg.storage)
        if args.location:
            if not valid_location(args.location):
                print("clinic2cloud-worker: --location must be <site>/<patient>/<study>/"
                      "<series>", file=sys.stderr)
                return 2
            outcome = run_job(cfg, storage, Job(cfg.storage.container, args.location,
                                                args.reprocess))
            print(outcome)
            return 0 if outcome in (Outcome.DONE, Outcome.ALREADY_DONE) else 1
        if args.scan:
            print(f"{scan(cfg, storage, stop)} deliveries processed")
            return 0
        drain(cfg, storage, stop, listen=args.listen)
        return 0
    except StorageUnavailable as exc:
        print(f"clinic2cloud-worker: {exc}; the message stays queued", file=sys.stderr)
        return exc.exit_code
    except WorkerError as exc:
        print(f"clinic2cloud-worker: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
