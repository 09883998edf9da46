"""The words of the tray: tooltip, status line, pause descriptions, series rows.

Pure functions of :class:`~agent.status.AgentStatus` / :class:`~agent.status.SeriesSummary`,
so every front end says the same thing and tests need no display. Besides pseudonyms, a
summary may carry the local identity read at display time (:mod:`agent.localview`); the
words here show it on this screen and never write it anywhere.
"""

from __future__ import annotations

import time

from agent.messages import ignored_sentence, waiting_sentence
from agent.status import AgentState, AgentStatus, LocalIdentity, SeriesSummary, WaitingSeries

APP_NAME = "Clinic2Cloud"

#: What each state means, in the words a clinician reads in the tooltip.
STATE_WORDS: dict[AgentState, str] = {
    AgentState.IDLE: "Idle - watching for exports",
    AgentState.WORKING: "Working",
    AgentState.PAUSED: "Paused",
    AgentState.OFFLINE: "Offline - deliveries wait and resume by themselves",
    AgentState.CREDENTIALS: "Credentials refused - uploads stopped",
    AgentState.ATTENTION: "Needs attention - series in quarantine",
    AgentState.STOPPED: "Stopped",
    AgentState.DISK_FULL: "Disk full - work waits and resumes when space is freed",
    AgentState.SETUP: "Setup problem - work waits until it is fixed",
    AgentState.UNHEALTHY: "Not working properly - send the log folder to support",
}


def clock(ts: float) -> str:
    """``14:30`` today, ``Mon 14:30`` within a week, ``2026-11-20 14:30`` otherwise."""
    now = time.time()
    t = time.localtime(ts)
    if time.strftime("%Y-%m-%d", t) == time.strftime("%Y-%m-%d", time.localtime(now)):
        return time.strftime("%H:%M", t)
    if abs(now - ts) < 6 * 86400:
        return time.strftime("%a %H:%M", t)
    return time.strftime("%Y-%m-%d %H:%M", t)


def pause_words(paused_until: float | None) -> str:
    """``""`` when not paused, else ``Paused until resumed`` / ``Paused until 14:30``."""
    if paused_until is None:
        return ""
    if paused_until == 0.0:
        return "Paused until resumed"
    return f"Paused until {clock(paused_until)}"


def counts_line(status: AgentStatus) -> str:
    """The menu's status line: ``1 waiting · 2 queued · 5 delivered today · 1 withheld
    today · 1 quarantined`` (waiting and withheld only when there are some)."""
    waiting = len(status.waiting)
    parts = [f"{waiting} waiting"] if waiting else []
    parts += [f"{max(0, status.queued + status.working - waiting)} queued",
              f"{status.delivered_today} delivered today"]
    if status.withheld_today:
        parts.append(f"{status.withheld_today} withheld today")
    parts.append(f"{status.quarantined} quarantined")
    return " \u00b7 ".join(parts)


def ignored_line(status: AgentStatus) -> str:
    """``12 files are not DICOM and were not sent ...`` or ""."""
    return ignored_sentence(status.ignored)


def state_line(status: AgentStatus) -> str:
    """One sentence for the state: the agent's own message when it gives one."""
    if status.state is AgentState.PAUSED and status.paused_until is not None:
        words = pause_words(status.paused_until)
    else:
        words = STATE_WORDS.get(status.state, status.state.value)
    if status.state is AgentState.WORKING and not status.working and status.waiting:
        return f"Receiving an export: {status.message}"
    if status.state is AgentState.WORKING:
        busy = status.working or 1
        words = f"Working on {busy} series"
        if status.progress is not None:
            words += f" ({round(100 * max(0.0, min(1.0, status.progress)))}%)"
    if status.message and status.state in _EXPLAINED:
        # The agent knows more (which target is offline, why); keep the state word first.
        return f"{words.split(' - ')[0]}: {status.message}"
    return words


def dicom_line(status: AgentStatus) -> str:
    """The DICOM node in one line (listening, last association, refused callers); ``""``
    when the node is off."""
    return status.dicom.summary() if status.dicom is not None else ""


#: States whose cause the agent's message explains better than our generic words.
_EXPLAINED = (AgentState.OFFLINE, AgentState.CREDENTIALS, AgentState.ATTENTION,
              AgentState.DISK_FULL, AgentState.SETUP, AgentState.UNHEALTHY)


def tooltip(status: AgentStatus) -> str:
    """The icon's tooltip: the state in words, then the counts. Kept short: Windows cuts
    tooltips at 127 characters."""
    text = f"{APP_NAME} - {state_line(status)}\n{counts_line(status)}"
    return text if len(text) <= 127 else text[:124] + "..."


SERIES_STATE_WORDS = {
    "delivered": "Delivered",
    "quarantined": "Quarantined",
    "withheld": "Withheld (not sent by policy)",
    "staged": "Queued",
    "verified": "Uploading",
    "detected": "Waiting",
    "stable": "Queued",
    "queued": "Queued",
    "processing": "Processing",
    "uploading": "Uploading",
    "failed": "Failed",
}


def series_state(summary: SeriesSummary) -> str:
    """The series state as a word (unknown ledger states are shown as they are)."""
    return SERIES_STATE_WORDS.get(summary.state, summary.state.replace("_", " ").capitalize())


def series_row(summary: SeriesSummary) -> tuple[str, str, str, str, str]:
    """Time, modality, pseudonym, state and detail of one series, as the window lists them."""
    # A series still in work shows its reason only while it waits (for the rest of its
    # study, say) or after a retry; the endings always show theirs.
    detail = summary.reason if summary.state in (
        "quarantined", "withheld", "delivered", "staged", "processed") else ""
    if summary.file_count and summary.state == "delivered":
        detail = f"{summary.file_count} files" + (f"; {detail}" if detail else "")
    elif not detail and summary.file_count:
        detail = f"{summary.file_count} files"
    local_modality = summary.local.modality if summary.local is not None else ""
    return (
        clock(summary.updated),
        summary.modality or local_modality or "-",
        summary.patient_pseudonym or f"#{summary.id}",
        series_state(summary),
        detail,
    )


def identity_line(local: LocalIdentity | None) -> str:
    """``Canarysson, Wilhelmina · T1 MPRAGE · 2024-03-12 · MR · series 9 · 180 images`` and
    where the export is; "" when no local identity is shown."""
    if local is None:
        return ""
    parts = [local.patient_name or "(no patient name)"]
    parts += [p for p in (local.description, local.scan_date, local.modality) if p]
    if local.series_number:
        parts.append(f"series {local.series_number}")
    if local.images:
        parts.append(f"{local.images} image{'s' * (local.images != 1)}")
    text = " \u00b7 ".join(parts)
    if local.export_folder:
        text += f" \u00b7 in {local.export_folder}"
    return text


def series_title(summary: SeriesSummary) -> str:
    """What names a series for a person: its local identity when shown, else pseudonym."""
    if summary.local is not None and summary.local.patient_name:
        desc = f" - {summary.local.description}" if summary.local.description else ""
        return f"{summary.local.patient_name}{desc}"
    return summary.patient_pseudonym or f"#{summary.id}"


def waiting_row(w: WaitingSeries) -> tuple[str, str, str]:
    """Time first seen, the title and the sentence of a series being waited for."""
    title = "an export being written"
    if w.local is not None and w.local.patient_name:
        title = w.local.patient_name + (f" - {w.local.description}" if w.local.description
                                        else "")
    state = "Needs attention" if w.attention else "Waiting"
    return clock(w.since), title, f"{state} - {waiting_sentence(w, detail=True)}"
