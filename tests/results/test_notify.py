"""The tray hears of results: a RESULTS event becomes a "Results ready" notification whose
words carry no identity unless the tray adds it at display time."""

from __future__ import annotations

from agent.status import AgentEvent
from agent.ui.notify import NotificationCenter, RecordingNotifier
from agent.vocab import EventKind


def test_results_and_failures_are_notified() -> None:
    now = [0.0]
    sent = RecordingNotifier()
    center = NotificationCenter(sent, clock=lambda: now[0], min_gap=0.0,
                                describe=lambda e: f"Doe, Jane: {e.message}")
    center.handle(AgentEvent(EventKind.RESULTS, "Results ready for SITE-0A1B2C3D4E (local)", 7))
    center.handle(AgentEvent(EventKind.RESULTS_FAILED, "Results for SITE-0A1B2C3D4E: no "
                             "results after 60 minutes; still watching", 8))
    now[0] = 5.0
    assert center.tick() == 2
    assert sent.titles == ["Results ready", "Cloud processing problem"] or \
        sent.titles == ["Cloud processing problem", "Results ready"]
    assert ("Results ready", "Doe, Jane: Results ready for SITE-0A1B2C3D4E (local)") in sent.sent
