"""The one exception hierarchy of Clinic2Cloud.

Every library error (pydicom, SimpleITK, Azure, sqlite3, OS) is converted at the module
boundary into one of these families, because they call for different reactions:

* :class:`SeriesProblem` - something is wrong with *this series*: it is quarantined with
  the message as its reason and the agent carries on with the others.
* :class:`Withheld` - not an error: a stated policy holds this series back (a localizer, a
  report, a series the site chose not to send). Recorded and visible, no alarm.
* :class:`TransientFault` - a passing condition (storage out of reach, disk full, a locked
  file): the series keeps its state and is retried with backoff; never quarantined.
* :class:`FatalError` - the agent itself cannot go on (bad config, wrong credentials,
  unwritable state folder, missing templates): stop and tell the person in charge.

Every error carries a short ``title`` (a notification's heading) and its message, the
sentence a person reads: what happened, and what to do. Messages never contain PHI (no
patient names, no export paths).
"""

from __future__ import annotations

from agent.vocab import ProblemCode, WithheldCode


class Clinic2CloudError(Exception):
    """Base of every error raised on purpose by Clinic2Cloud."""

    #: A few words for a notification's or a dialog's heading.
    title = "Clinic2Cloud problem"

    def __init__(self, message: str = "", *, title: str | None = None) -> None:
        super().__init__(message)
        if title is not None:
            self.title = title

    @property
    def message(self) -> str:
        """The sentence a person reads: what happened and what to do."""
        return str(self)


class SeriesProblem(Clinic2CloudError):
    """A problem with one series; the series goes to quarantine with this reason.

    ``code`` is a stable identifier (:class:`~agent.vocab.ProblemCode`) used by the ledger,
    the tray and tests; the message is the sentence a person reads.
    """

    code: ProblemCode = ProblemCode.SERIES_PROBLEM
    title = "Series kept back"

    def __init__(self, message: str, *, code: ProblemCode | str | None = None,
                 title: str | None = None) -> None:
        super().__init__(message, title=title)
        if code is not None:
            self.code = ProblemCode(code)


class NotDicom(SeriesProblem):
    """A file is not DICOM, or is DICOM too damaged to read."""

    code = ProblemCode.NOT_DICOM


class IdentityRisk(SeriesProblem):
    """The series might carry identity that cannot be removed safely (e.g. burned-in text)."""

    code = ProblemCode.IDENTITY_RISK


class LeakFound(SeriesProblem):
    """The verifier found an original identifier, or a structural rule broken, in an output."""

    code = ProblemCode.LEAK


class DefaceFailed(SeriesProblem):
    """Defacing could not be done, or its quality control failed: never deliver a face."""

    code = ProblemCode.DEFACE
    title = "Face could not be replaced"


class Withheld(Clinic2CloudError):
    """A stated policy holds this series back: it ends ``withheld``, with this reason.

    Raised by a stage (or the site's selection) for localizers, screen captures that the
    site does not send, reports, raw data... Nobody needs to act, so no alarm is raised.
    """

    title = "Series not sent (policy)"

    def __init__(self, reason: str, *, code: WithheldCode | str = WithheldCode.SITE_POLICY
                 ) -> None:
        super().__init__(reason)
        self.code = WithheldCode(code)


class TransientFault(Clinic2CloudError):
    """A passing condition: the series keeps its state and is retried later, with backoff.

    ``retry_after`` is a hint in seconds (None: the caller's backoff decides).
    """

    title = "Waiting to retry"
    #: True where the message is worth showing beside the waiting series (it holds no path
    #: and no identity): a wait of minutes, such as for the rest of the study, must not look
    #: like a series silently queued.
    shown = False

    def __init__(self, message: str, *, retry_after: float | None = None,
                 title: str | None = None) -> None:
        super().__init__(message, title=title)
        self.retry_after = retry_after


class TargetUnavailable(TransientFault):
    """The delivery target is out of reach for now; the series stays queued and is retried."""

    title = "Storage out of reach"


class DiskFull(TransientFault):
    """The work area (or the ledger's disk) is full; work resumes when space returns."""

    title = "Disk full"


class ExportChanged(TransientFault):
    """A file of the series changed, vanished or could not be read while the series was
    being taken: it waits for another quiet period rather than leave short."""

    title = "Export still changing"


class FatalError(Clinic2CloudError):
    """The agent cannot continue; it stops and tells the person in charge."""

    exit_code = 1
    title = "Clinic2Cloud stopped"


class ConfigError(FatalError):
    """The configuration is wrong. The message names the key and the file."""

    exit_code = 2
    title = "Configuration problem"


class CredentialsError(FatalError):
    """The storage refused our credentials (wrong, expired or missing permissions)."""

    exit_code = 3
    title = "Credentials refused"


class StartupError(FatalError):
    """A start-up check failed (a folder not writable, a disk full, the installation
    incomplete): the agent does not start, and says in one line what to do."""

    exit_code = 2
    title = "Clinic2Cloud cannot start"


class LedgerDamaged(StartupError):
    """The ledger is unreadable, incomplete or was altered. The message names the way out
    (``clinic2cloud ledger rebuild`` keeps the damaged file aside and starts afresh)."""

    title = "Ledger damaged"


class InstallationBroken(StartupError):
    """Part of the installation is missing or unreadable (the defacing templates): no
    series can be processed until it is repaired, so none is quarantined for it."""

    title = "Installation incomplete"


def is_library_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a Rust extension's panic (``pyo3_runtime.PanicException``, raised
    by pylibjpeg-rle and others on damaged data). It derives from BaseException, so it gets
    past ``except Exception``; it is a library's failure on one file, to be converted like
    any other, not a reason for a thread to die."""
    return type(exc).__name__ == "PanicException"
