"""The words the engine, the ledger and the front ends share, as types.

Series states, the state transitions the ledger accepts, the kinds of events front ends
hear about, audit event names and problem codes are all here, in one place, so that a
newcomer reads the vocabulary once and a typo is a type error rather than a silent new
state. Every enum is a :class:`enum.StrEnum`: its members compare equal to (and are stored
in SQLite and JSON as) their plain string values.
"""

from __future__ import annotations

from enum import StrEnum


class SeriesState(StrEnum):
    """Where one version of one series is. The three endings are DELIVERED, WITHHELD and
    QUARANTINED; everything before them is work still to do."""

    #: Every file is complete and quiet; recorded in the ledger, not yet copied.
    STABLE = "stable"
    #: Copied into the work area; processing starts (or restarts) from here.
    STAGED = "staged"
    #: De-identified (and defaced); the verifier runs next.
    PROCESSED = "processed"
    #: Verified; its outputs are persisted (``ready.json``) and wait for delivery.
    VERIFIED = "verified"
    #: Every file and the manifest are at the target, hash-verified.
    DELIVERED = "delivered"
    #: Held back by a stated policy (localizer, report, raw data, the site's selection):
    #: recorded and visible, nobody needs to act.
    WITHHELD = "withheld"
    #: Something is wrong and a person must act; the reason says what to do.
    QUARANTINED = "quarantined"


#: States in which a series still has work to do after a restart.
UNFINISHED: tuple[SeriesState, ...] = (
    SeriesState.STAGED, SeriesState.PROCESSED, SeriesState.VERIFIED)
#: The endings.
FINAL: tuple[SeriesState, ...] = (
    SeriesState.DELIVERED, SeriesState.WITHHELD, SeriesState.QUARANTINED)

_S = SeriesState
#: Every state change the ledger accepts: from -> the states it may move to. A new series
#: version starts in STABLE. Re-entering the same working state is a restart after a crash.
TRANSITIONS: dict[SeriesState, frozenset[SeriesState]] = {
    _S.STABLE: frozenset({_S.STABLE, _S.STAGED, _S.WITHHELD, _S.QUARANTINED}),
    # STAGED -> DELIVERED: a retried copy found identical to what was delivered already
    # (agent/reexport.py): nothing is sent, the content is at the target.
    _S.STAGED: frozenset({_S.STAGED, _S.PROCESSED, _S.VERIFIED, _S.DELIVERED, _S.WITHHELD,
                          _S.QUARANTINED}),
    _S.PROCESSED: frozenset({_S.STAGED, _S.PROCESSED, _S.VERIFIED, _S.WITHHELD,
                             _S.QUARANTINED}),
    _S.VERIFIED: frozenset({_S.STAGED, _S.PROCESSED, _S.VERIFIED, _S.DELIVERED,
                            _S.QUARANTINED}),
    # Retry (a person asked) puts a kept-back series through the pipeline again.
    _S.QUARANTINED: frozenset({_S.STAGED}),
    _S.WITHHELD: frozenset({_S.STAGED}),
    _S.DELIVERED: frozenset(),
}


class Undecided(StrEnum):
    """How ``clinic2cloud process`` reports a series it could not bring to an ending."""

    #: The target was out of reach or refused us, or a file changed while it was taken:
    #: nothing was decided about the series; running the command again may succeed.
    FAILED = "failed"
    #: Waits for the other series of the run (a study's structural series): it runs once
    #: more after them, and is reported as what it then becomes.
    DEFERRED = "deferred"


def may_move(old: SeriesState | str, new: SeriesState | str) -> bool:
    """Whether the ledger accepts moving a series from ``old`` to ``new``."""
    return SeriesState(new) in TRANSITIONS[SeriesState(old)]


class EventKind(StrEnum):
    """What an :class:`~agent.status.AgentEvent` tells a front end about."""

    DELIVERED = "delivered"
    #: An export was found identical to a series already delivered: nothing sent.
    ALREADY_DELIVERED = "already-delivered"
    WITHHELD = "withheld"
    QUARANTINED = "quarantined"
    WAITING = "waiting"            # an export is incomplete and has waited long
    IGNORED = "ignored"            # files in the export folder are not DICOM: not sent
    OFFLINE = "offline"
    ONLINE = "online"
    CREDENTIALS = "credentials"
    PAUSED = "paused"
    RESUMED = "resumed"
    HEALTH = "health"              # a part of the engine failed or recovered
    DISK_FULL = "disk-full"        # the work area or ledger disk is full (or has room again)
    SETUP = "setup"                # the installation or configuration must be fixed
    RESULTS = "results"            # results came back from the cloud
    RESULTS_FAILED = "results-failed"  # cloud processing failed, timed out or was invalid
    STATE = "state"


class AuditEvent(StrEnum):
    """Audit log events that are not series states (those are logged under their state)."""

    AGENT_STARTED = "agent-started"
    AGENT_STOPPED = "agent-stopped"
    PAUSED = "paused"
    RESUMED = "resumed"
    CONFIRMED = "confirmed"
    EXPORT_REMOVED = "export-removed"
    RETRIED = "retried"
    #: An export identical to a delivered series: recorded against it, nothing sent.
    ALREADY_DELIVERED = "already-delivered"
    # The cloud loop (agent/results): hashes and pseudonymous locations only.
    RELINK_PURGED = "relink-purged"
    RESULTS_EXPECTED = "results-expected"
    RESULTS_RECEIVED = "results-received"
    RESULTS_REIDENTIFIED = "results-reidentified"
    RESULTS_DELIVERED = "results-delivered"
    RESULTS_FAILED = "results-failed"
    RESULTS_INVALID = "results-invalid"
    RESULTS_TIMEOUT = "results-timeout"
    RESULTS_RETRIED = "results-retried"
    PIXELS_REDACTED = "pixels-redacted"   # burned-in text redacted: where, never what
    PIXELS_CLEANED = "pixels-cleaned"     # hidden bits, overlays, embedded bytes removed
    RESULTS_ATTEMPT_FAILED = "results-attempt-failed"
    RESULTS_PACS_INCOMPLETE = "results-pacs-incomplete"
    #: Whether a series was defaced or shows no face, and why (no PHI).
    FACE_DECISION = "face-decision"
    #: The first keyed row of a ledger migrated from the unkeyed chain (schema 1).
    CHAIN_KEYED = "chain-keyed"
    #: A new ledger started after the damaged one was kept aside.
    LEDGER_REBUILT = "ledger-rebuilt"
    #: A series' worker crashed (or the agent was killed) while processing it.
    ATTEMPT_CRASHED = "attempt-crashed"


class ResultsState(StrEnum):
    """Where the cloud results of one delivered series are (agent/results)."""

    #: Delivered; the worker's results are awaited.
    WAITING = "waiting"
    #: No results within [results] timeout_minutes; still watched, less often.
    TIMED_OUT = "timed-out"
    #: The worker recorded a final failure (job failed, delivery invalid).
    FAILED = "failed"
    #: Results arrived but did not verify, or could not be re-linked; a person may retry.
    INVALID = "invalid"
    #: Re-identified and delivered to the results folder / PACS.
    DELIVERED = "delivered"


class ProblemCode(StrEnum):
    """Stable short identifiers of why a series was kept back (ledger, tray, tests)."""

    SERIES_PROBLEM = "series-problem"
    NOT_DICOM = "not-dicom"
    IDENTITY_RISK = "identity-risk"
    LEAK = "leak"
    INCOMPLETE = "incomplete"
    UNREADABLE = "unreadable"
    MISSING = "missing"
    INTEGRITY = "integrity"
    INTERNAL = "internal"
    BAD_NAME = "bad-name"
    DUPLICATE = "duplicate"
    MIXED_SERIES = "mixed-series"
    TARGET = "target"
    TARGET_CONFLICT = "target-conflict"
    OUTBOX_MISSING = "outbox-missing"
    DEFACE = "deface"
    DEFACE_INPUT = "deface-input"
    #: An image without usable position/orientation: where its face is cannot be told.
    DEFACE_GEOMETRY = "deface-geometry"
    DEFACE_FIT = "deface-fit"
    DEFACE_FOV = "deface-fov"
    DEFACE_QC = "deface-qc"
    DEFACE_ERROR = "deface-error"
    DEFACE_WRITE = "deface-write"
    DEFACE_TEMPLATE = "deface-template"
    DEFACE_CT = "deface-ct"
    DEFACE_LOCALIZER = "deface-localizer"
    #: A file or the series is larger than the configured limits ([limits]).
    TOO_LARGE = "too-large"
    #: The agent died N times while processing this series: kept back so others go on.
    POISON = "poison"
    #: A file about to be delivered does not parse, or its pixel data are short or do not
    #: decode (the last look before delivery, agent.integrity).
    INVALID_OUTPUT = "invalid-output"
    #: A file of the export is damaged: cut short, or bytes garbled so that an element
    #: cannot be read (a copy interrupted, a disk or network fault on the viewer's side).
    DAMAGED = "damaged"
    #: A file parses but its header says what no image can be: a required element missing
    #: or malformed (UIDs, image size, bits, transfer syntax), pixel data that do not match.
    MALFORMED = "malformed"
    #: The agent could not write, or read back, a file in its own work folder.
    WORK_AREA = "work-area"


class FaceCode(StrEnum):
    """The face decision of a series, for the ledger, the manifest and ``process --json``
    (no PHI). ``defaced`` or one of the reasons a volume was delivered as it is: each is
    positive evidence from pixels and geometry (agent.deface.presence, agent.deface.noface),
    never header words."""

    DEFACED = "defaced"
    #: The images hold no tissue at all.
    NO_TISSUE = "no-tissue"
    #: A fitted head places the face and ears outside the field of view (a slab above the
    #: eyes), confirmed independently of the fit.
    FACE_OUT_OF_VIEW = "face-out-of-view"
    #: No ray of a projection crosses the face or the ears.
    RAYS_MISS_FACE = "rays-miss-face"
    #: The tissue's cross-section is the same along one axis over a length no face allows
    #: (a limb, a rod or cylinder phantom, the trunk in a thin slab).
    UNIFORM_SECTION = "uniform-section"
    #: The tissue is one smooth convex body, wholly in view, from whose surface nothing
    #: protrudes as a nose does (a sphere or bottle phantom).
    SMOOTH_BODY = "smooth-body"
    #: Everything in view is smaller than the smallest face.
    TOO_SMALL = "too-small-for-a-face"


class WithheldCode(StrEnum):
    """Why a series was withheld by policy (not a problem: nobody needs to act)."""

    LOCALIZER = "localizer"
    SCREEN_CAPTURE = "screen-capture"
    REPORT = "report"
    RAW_DATA = "raw-data"
    NOT_AN_IMAGE = "not-an-image"
    SITE_POLICY = "site-policy"
    #: A QA phantom no head template fits (held back: nothing of it leaves).
    QA_PHANTOM = "qa-phantom"
