"""What the DICOM node tells status views, the tray and ``doctor``: plain data, no PHI.

AE titles and addresses of callers are device names, not patients; they are shown so the
person in charge can see who sends and who was turned away.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RefusedCaller:
    """A caller turned away at association (or before it), the last time it tried."""

    ae_title: str
    address: str
    #: Why, in a few words: "calling AE title not allowed", "address not allowed", "busy".
    reason: str
    when: float
    count: int = 1


@dataclass(frozen=True)
class NodeStatus:
    """A snapshot of the node. ``port`` is the one actually listened on (config 0 = any)."""

    listening: bool
    ae_title: str
    port: int
    address: str = ""
    tls: bool = False
    #: Associations in progress now, and accepted since the node started.
    active_associations: int = 0
    associations: int = 0
    #: Unix time and calling AE title of the last accepted association.
    last_association: float | None = None
    last_caller: str = ""
    #: Instances acknowledged (written to the intake) since the node started.
    instances_received: int = 0
    #: Instances answered with a failure status (unreadable, incomplete, disk full).
    instances_refused: int = 0
    #: Most recent first, one entry per (AE title, address, reason).
    refused_callers: tuple[RefusedCaller, ...] = field(default_factory=tuple)
    #: Why the node is not listening, when it is not.
    problem: str = ""
    #: Series being gathered from received instances (not yet quiet).
    pending_series: int = 0

    def summary(self) -> str:
        """One line for a tooltip, a menu or ``doctor``."""
        if not self.listening:
            return f"DICOM node not listening: {self.problem}" if self.problem else \
                "DICOM node off"
        parts = [f"DICOM node {self.ae_title} listening on port {self.port}"
                 + (" (TLS)" if self.tls else "")]
        if self.last_association is not None:
            when = time.strftime("%H:%M", time.localtime(self.last_association))
            parts.append(f"last association {when} from {self.last_caller}")
        if self.refused_callers:
            last = self.refused_callers[0]
            who = f"{last.ae_title}@{last.address}" if last.ae_title else last.address
            parts.append(f"{sum(r.count for r in self.refused_callers)} refused "
                         f"(last {who}: {last.reason})")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_snapshot(status: NodeStatus, path: Path) -> None:
    """Persist the snapshot atomically, for ``clinic2cloud status``/``doctor`` in another
    process while the agent runs."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(status.as_dict()), encoding="utf-8")
    os.replace(tmp, path)


def read_snapshot(path: Path) -> NodeStatus | None:
    """The last snapshot the running (or last) agent wrote, or None."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        refused = tuple(RefusedCaller(**r) for r in raw.pop("refused_callers", []))
        return NodeStatus(**raw, refused_callers=refused)
    except (OSError, ValueError, TypeError):
        return None
