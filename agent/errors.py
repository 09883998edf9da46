"""The one exception hierarchy of Clinic2Cloud.

Every library error (pydicom, SimpleITK, Azure, OS) is converted at the module boundary
into one of two families, because they call for opposite reactions:

* :class:`SeriesProblem` - something is wrong with *this series*: it is quarantined with
  the message as its reason and the agent carries on with the others.
* :class:`FatalError` - the agent itself cannot go on (bad config, wrong credentials,
  unwritable state folder): stop and tell the person in charge.

:class:`TargetUnavailable` sits between them: the storage is out of reach for now, the
series waits in the queue and is retried; nothing is quarantined.

Messages are written for the person who reads them: what happened, and what to do.
They never contain PHI (no patient names, no export paths).
"""

from __future__ import annotations


class Clinic2CloudError(Exception):
    """Base of every error raised on purpose by Clinic2Cloud."""


class SeriesProblem(Clinic2CloudError):
    """A problem with one series; the series goes to quarantine with this reason.

    ``code`` is a short stable identifier (``"leak"``, ``"burned-in"``, ``"incomplete"``,
    ``"deface-qc"`` ...) used by the ledger, the tray and tests; the message is the
    sentence a person reads.
    """

    code = "series-problem"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class NotDicom(SeriesProblem):
    """A file is not DICOM, or is DICOM too damaged to read."""

    code = "not-dicom"


class IdentityRisk(SeriesProblem):
    """The series might carry identity that cannot be removed safely (e.g. burned-in text)."""

    code = "identity-risk"


class LeakFound(SeriesProblem):
    """The verifier found an original identifier, or a structural rule broken, in an output."""

    code = "leak"


class DefaceFailed(SeriesProblem):
    """Defacing could not be done, or its quality control failed: never deliver a face."""

    code = "deface"


class FatalError(Clinic2CloudError):
    """The agent cannot continue; it stops and tells the person in charge."""

    exit_code = 1


class ConfigError(FatalError):
    """The configuration is wrong. The message names the key and the file."""

    exit_code = 2


class CredentialsError(FatalError):
    """The storage refused our credentials (wrong, expired or missing permissions)."""

    exit_code = 3


class TargetUnavailable(Clinic2CloudError):
    """The delivery target is out of reach for now; the series stays queued and is retried."""
