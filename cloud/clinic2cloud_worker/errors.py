"""The worker's errors, by what they call for.

* :class:`WorkerConfigError` - the configuration is wrong: exit 2, nothing is processed.
* :class:`StorageUnavailable` - storage out of reach for now: the message stays in the queue
  and comes back (the delivery is retried; nothing is recorded as failed).
* :class:`StorageDenied` - credentials refused: exit 3, a person must act.
* :class:`DeliveryInvalid` - the delivery does not match its manifest (missing file, wrong
  SHA-256, unsafe name): permanent; recorded as the job's failure, never processed.
* :class:`StepFailed` - the processing step exited non-zero, timed out or wrote nothing:
  retried up to ``[worker] max_attempts``, then recorded as the job's final failure.

Messages never quote the SDK's text (it can carry a SAS signature) and never hold PHI
(deliveries hold none; names are pseudonyms).
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base of the worker's own errors; ``code`` is stable (results failure records)."""

    code = "worker-error"
    exit_code = 1


class WorkerConfigError(WorkerError):
    code = "config"
    exit_code = 2


class StorageUnavailable(WorkerError):
    code = "storage-unavailable"


class StorageDenied(WorkerError):
    code = "storage-denied"
    exit_code = 3


class DeliveryInvalid(WorkerError):
    code = "delivery-invalid"


class StepFailed(WorkerError):
    """``code`` is step-failed, step-timeout or step-no-output."""

    def __init__(self, message: str, *, code: str = "step-failed", exit_code: int | None = None
                 ) -> None:
        super().__init__(message)
        self.code = code
        self.step_exit_code = exit_code
