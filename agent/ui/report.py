"""``clinic2cloud status``: the agent's status as lines for a terminal, or as JSON.

The same words as the tray (:mod:`agent.ui.text`); times in the JSON are ISO 8601 with
the local UTC offset. Local identity (patient name...) is printed when the agent's
``[display] local_identity`` allows it: this is a local view, like the tray's window.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from agent.messages import waiting_sentence
from agent.status import AgentStatus, SeriesSummary
from agent.ui import text

_TIMES = ("updated", "since", "gives_up_at", "paused_until")


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    if ts == 0.0:
        return ""
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _with_iso(raw: dict[str, Any]) -> dict[str, Any]:
    out = dict(raw)
    for key in _TIMES:
        if key in out and isinstance(out[key], (int, float)) and not isinstance(out[key], bool):
            out[key] = iso(float(out[key]))
    return out


def status_document(status: AgentStatus, recent: list[SeriesSummary], *, source: str,
                    pid: int | None = None) -> dict[str, Any]:
    """The JSON of ``clinic2cloud status --json``. ``source`` is ``agent`` (asked the
    running agent) or ``ledger`` (none runs: what the ledger says)."""
    doc: dict[str, Any] = {
        "source": source,
        "running": source == "agent",
        "pid": pid,
        "state": status.state.value,
        "message": text.state_line(status),
        "counts": {
            "waiting": len(status.waiting),
            "queued": max(0, status.queued + status.working - len(status.waiting)),
            "working": status.working,
            "delivered_today": status.delivered_today,
            "withheld_today": status.withheld_today,
            "already_delivered_today": status.already_delivered_today,
            "quarantined": status.quarantined,
        },
        "paused_until": (None if status.paused_until is None
                         else "until resumed" if status.paused_until == 0.0
                         else iso(status.paused_until)),
        "not_dicom": {**dataclasses.asdict(status.ignored),
                      "message": text.ignored_line(status)},
        "waiting": [{**_with_iso(dataclasses.asdict(w)),
                     "message": waiting_sentence(w, detail=True)} for w in status.waiting],
        "recent": [_with_iso(dataclasses.asdict(s)) for s in recent],
        "dicom": dataclasses.asdict(status.dicom) if status.dicom is not None else None,
    }
    return doc


def status_lines(status: AgentStatus, recent: list[SeriesSummary], *, source: str,
                 pid: int | None = None) -> list[str]:
    """The terminal form of ``clinic2cloud status``."""
    if source == "agent":
        running = f"Clinic2Cloud is running (pid {pid}): " if pid else "Clinic2Cloud is running: "
        head = running + text.state_line(status)
    else:
        paused = text.pause_words(status.paused_until)
        head = ("Clinic2Cloud is not running: new exports wait in the export folder until it "
                "starts again" + (f" ({paused.lower()})" if paused else "") + ". Its ledger says:")
    lines = [head, text.counts_line(status)]
    if status.already_delivered_today:
        n = status.already_delivered_today
        lines.append(f"{n} export{'s' * (n > 1)} today {'were' if n > 1 else 'was'} "
                     "already delivered: nothing sent again")
    if status.ignored.files:
        lines.append(text.ignored_line(status))
    if status.dicom is not None:
        lines.append(text.dicom_line(status))
    if status.waiting:
        lines += ["", "Waiting for", *_waiting_lines(status)]
    if recent:
        lines += ["", "Recent", *_recent_lines(recent)]
    return lines


def _waiting_lines(status: AgentStatus) -> list[str]:
    lines = []
    for w in status.waiting:
        when, title, sentence = text.waiting_row(w)
        lines += [f"  {when:>5}  {title}", f"         {sentence}"]
        if w.local is not None:
            lines.append(f"         {text.identity_line(w.local)}")
    return lines


def _recent_lines(recent: list[SeriesSummary]) -> list[str]:
    lines = []
    for s in recent:
        when, modality, pseudonym, state, detail = text.series_row(s)
        lines.append(f"  #{s.id:<5} {when:>5}  {state:<12} {modality:<3} {pseudonym}")
        extra = [text.identity_line(s.local), detail,
                 f"What to do: {s.action}" if s.action else ""]
        lines += [f"         {e}" for e in extra if e]
    return lines
