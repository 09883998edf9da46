"""What the agent tells its front ends (tray, CLI): its state, and events as they happen.

These records cross the control endpoint (:mod:`agent.control`) as JSON, so each has a
plain-dict form (:func:`status_to_dict` / :func:`status_from_dict`). They hold pseudonyms,
counts and times, except :class:`LocalIdentity`, which is read from this workstation's own
copies at display time for the person in front of it and is never written anywhere.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from agent.dicomnode.status import NodeStatus
from agent.vocab import EventKind


class AgentState(StrEnum):
    """The one word the tray icon shows. Ordered by how urgently a person should look."""

    IDLE = "idle"
    WORKING = "working"
    PAUSED = "paused"
    OFFLINE = "offline"          # the target is out of reach; work waits and resumes by itself
    CREDENTIALS = "credentials"  # the target refused our credentials; uploads stopped
    ATTENTION = "attention"      # quarantined series, or an export stuck; a person should look
    STOPPED = "stopped"
    DISK_FULL = "disk-full"      # the work area or the ledger's disk is full; work waits
    SETUP = "setup"              # the installation or configuration must be fixed (templates
    #                              missing, container gone...); work waits, nothing is lost
    UNHEALTHY = "unhealthy"      # a part of the engine keeps failing despite restarts


@dataclass(frozen=True)
class LocalIdentity:
    """Who and what a series is, as this workstation may show it (patient name and all).

    Read at display time from the export folder, the staged copy or the quarantined copy,
    which all stay on this workstation; kept in memory only. ``repr`` hides the values so
    that a stray log call cannot write them anywhere.
    """

    patient_name: str = ""
    description: str = ""
    #: The scan date as YYYY-MM-DD (series date, else acquisition or study date).
    scan_date: str = ""
    modality: str = ""
    series_number: str = ""
    #: Images (instances) of the series found locally.
    images: int = 0
    #: Where the export is, relative to the watched folder ("" when no longer there).
    export_folder: str = ""
    #: Which local copy this was read from: "export", "staged" or "quarantine".
    source: str = ""

    def __repr__(self) -> str:
        return f"LocalIdentity(<{self.images} images, hidden>)"

    __str__ = __repr__


@dataclass(frozen=True)
class SeriesSummary:
    """One series as the status window lists it. Pseudonyms only, except ``local``."""

    id: int
    state: str
    updated: float
    modality: str = ""
    patient_pseudonym: str = ""
    reason: str = ""
    location: str = ""
    file_count: int = 0
    render: str = ""
    version: int = 1
    #: The problem or withheld code (:class:`~agent.vocab.ProblemCode` / ``WithheldCode``).
    code: str = ""
    #: For quarantined series: what a person should do about it.
    action: str = ""
    #: Who and what this is, read locally at display time; None when not shown
    #: (``[display] local_identity = false``) or when no local copy is left.
    local: LocalIdentity | None = None


@dataclass(frozen=True)
class WaitingSeries:
    """An export the watcher sees but cannot take yet: files still arriving or incomplete."""

    #: A short, non-identifying handle (the start of the keyed series hash).
    ref: str
    files: int
    #: Files found incomplete at the last check (still being written); None: not checked.
    incomplete: int | None
    #: Wall-clock time the first file was seen.
    since: float
    #: Seconds since any file of it last changed.
    quiet_for: float = 0.0
    #: Waiting long enough that a person should look (well before it is given up on).
    attention: bool = False
    #: Wall-clock time it will be given up on (quarantined as incomplete) if nothing changes.
    gives_up_at: float = 0.0
    local: LocalIdentity | None = None


@dataclass(frozen=True)
class IgnoredFiles:
    """Files in the export folder that are not DICOM images and were not sent."""

    files: int = 0
    #: Of which zip (or other archive) files: they must be unpacked first.
    archives: int = 0


@dataclass(frozen=True)
class AgentStatus:
    state: AgentState
    #: Series found in the export folder or stable but not yet processed, and those being
    #: processed.
    queued: int = 0
    working: int = 0
    delivered_today: int = 0
    #: Held back by policy today (localizers, reports...): shown, never an alarm.
    withheld_today: int = 0
    #: Quarantined series still waiting for a person (not resolved by a later export).
    quarantined: int = 0
    #: Unix time the pause ends; None when not paused, 0.0 when paused until resumed.
    paused_until: float | None = None
    #: A sentence for the tooltip and the status line.
    message: str = ""
    #: Fraction of the current batch done, when known (0..1), for the working icon.
    progress: float | None = None
    recent: tuple[SeriesSummary, ...] = field(default_factory=tuple)
    #: The DICOM node, when ``[dicom] listen`` is on (see :class:`NodeStatus`).
    dicom: NodeStatus | None = None
    #: Exports the watcher is waiting for.
    waiting: tuple[WaitingSeries, ...] = field(default_factory=tuple)
    ignored: IgnoredFiles = field(default_factory=IgnoredFiles)
    #: Exported again, found identical to what was delivered: nothing sent (today).
    already_delivered_today: int = 0
    #: Parts of the engine that failed and were restarted recently, in words (empty:
    #: healthy). The supervisor fills it; the state says UNHEALTHY when restarts fail.
    health: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        return not self.health


@dataclass(frozen=True)
class AgentEvent:
    """Something a person may want to be told about (:class:`~agent.vocab.EventKind`)."""

    kind: EventKind
    message: str
    series_id: int | None = None


def start_of_today(now: float | None = None) -> float:
    """Local midnight of today: what "today" means in every count the agent shows."""
    t = time.localtime(time.time() if now is None else now)
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1))


# -- plain-dict form (the control endpoint's JSON) ---------------------------------------------

def status_to_dict(status: AgentStatus) -> dict[str, Any]:
    """A JSON-ready dict of ``status`` (local identity included: the endpoint is local)."""
    return dataclasses.asdict(status)


def _identity(raw: Any) -> LocalIdentity | None:
    return LocalIdentity(**raw) if isinstance(raw, dict) else None


def summary_from_dict(raw: dict[str, Any]) -> SeriesSummary:
    values = {k: v for k, v in raw.items() if k in _SUMMARY_FIELDS}
    values["local"] = _identity(raw.get("local"))
    return SeriesSummary(**values)


def status_from_dict(raw: dict[str, Any]) -> AgentStatus:
    """The inverse of :func:`status_to_dict`; unknown keys (a newer agent) are ignored."""
    values = {k: v for k, v in raw.items() if k in _STATUS_FIELDS}
    values["state"] = AgentState(raw["state"])
    values["recent"] = tuple(summary_from_dict(r) for r in raw.get("recent", ()))
    values["waiting"] = tuple(
        WaitingSeries(**{**{k: v for k, v in w.items() if k in _WAITING_FIELDS},
                         "local": _identity(w.get("local"))})
        for w in raw.get("waiting", ()))
    values["ignored"] = IgnoredFiles(**raw.get("ignored", {}))
    values["dicom"] = _node(raw.get("dicom"))
    return AgentStatus(**values)


def _node(raw: Any) -> NodeStatus | None:
    if not isinstance(raw, dict):
        return None
    from agent.dicomnode.status import RefusedCaller

    known = {f.name for f in dataclasses.fields(NodeStatus)}
    values = {k: v for k, v in raw.items() if k in known}
    values["refused_callers"] = tuple(RefusedCaller(**r) for r in raw.get("refused_callers", ()))
    return NodeStatus(**values)


_SUMMARY_FIELDS = {f.name for f in dataclasses.fields(SeriesSummary)}
_STATUS_FIELDS = {f.name for f in dataclasses.fields(AgentStatus)}
_WAITING_FIELDS = {f.name for f in dataclasses.fields(WaitingSeries)}
