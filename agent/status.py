"""What the agent tells its front ends (tray, CLI): its state, and events as they happen."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from agent.dicomnode.status import NodeStatus
from agent.vocab import EventKind


class AgentState(StrEnum):
    """The one word the tray icon shows. Ordered by how urgently a person should look."""

    IDLE = "idle"
    WORKING = "working"
    PAUSED = "paused"
    OFFLINE = "offline"          # the target is out of reach; work waits and resumes by itself
    CREDENTIALS = "credentials"  # the target refused our credentials; uploads stopped
    ATTENTION = "attention"      # series were quarantined and wait for a person
    STOPPED = "stopped"


@dataclass(frozen=True)
class SeriesSummary:
    """One series as the status window lists it. Pseudonyms only, never PHI."""

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


@dataclass(frozen=True)
class AgentStatus:
    state: AgentState
    #: Series detected or stable but not yet processed, and those being processed.
    queued: int = 0
    working: int = 0
    delivered_today: int = 0
    #: Held back by policy today (localizers, reports...): shown, never an alarm.
    withheld_today: int = 0
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


@dataclass(frozen=True)
class AgentEvent:
    """Something a person may want to be told about (:class:`~agent.vocab.EventKind`)."""

    kind: EventKind
    message: str
    series_id: int | None = None
