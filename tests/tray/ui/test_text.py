"""The tray's words: tooltip, status line, pause and series descriptions."""

from __future__ import annotations

import time

from agent.status import AgentState, AgentStatus, SeriesSummary
from agent.ui import text


def test_every_state_has_words_in_the_tooltip() -> None:
    seen = set()
    for state in AgentState:
        tip = text.tooltip(AgentStatus(state=state))
        assert tip.startswith("Clinic2Cloud - ")
        assert len(tip) <= 127
        seen.add(tip)
    assert len(seen) == len(AgentState)


def test_counts_line() -> None:
    status = AgentStatus(AgentState.WORKING, queued=2, working=1, delivered_today=5,
                         quarantined=1)
    assert text.counts_line(status) == "3 queued \u00b7 5 delivered today \u00b7 1 quarantined"


def test_working_line_with_progress() -> None:
    status = AgentStatus(AgentState.WORKING, working=2, progress=0.42, message="processing 2")
    assert text.state_line(status) == "Working on 2 series (42%)"


def test_agent_message_explains_offline_and_attention() -> None:
    offline = AgentStatus(AgentState.OFFLINE, message="the outbox folder is not reachable")
    assert text.state_line(offline) == "Offline: the outbox folder is not reachable"
    idle = AgentStatus(AgentState.IDLE, message="watching for exports")
    assert text.state_line(idle) == "Idle - watching for exports"


def test_pause_words() -> None:
    assert text.pause_words(None) == ""
    assert text.pause_words(0.0) == "Paused until resumed"
    until = time.time() + 3600
    assert text.pause_words(until) == "Paused until " + time.strftime(
        "%H:%M", time.localtime(until)) or text.pause_words(until).startswith("Paused until ")
    paused = AgentStatus(AgentState.PAUSED, paused_until=0.0, message="paused")
    assert text.state_line(paused) == "Paused until resumed"
    assert "Paused until resumed" in text.tooltip(paused)


def test_series_row_shows_pseudonym_and_reason() -> None:
    q = SeriesSummary(id=3, state="quarantined", updated=time.time(), modality="MR",
                      patient_pseudonym="SITE-AB12", reason="burned-in text")
    when, modality, who, state, detail = text.series_row(q)
    assert (modality, who, state, detail) == ("MR", "SITE-AB12", "Quarantined", "burned-in text")
    assert len(when) == 5  # HH:MM today
    d = SeriesSummary(id=4, state="delivered", updated=time.time() - 30 * 86400, file_count=12)
    row = text.series_row(d)
    assert row[1:] == ("-", "#4", "Delivered", "12 files")
    assert len(row[0]) == len("2026-01-01 10:00")
