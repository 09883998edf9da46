"""The tray icon of a real Agent in a real XEmbed system tray (Xvfb + trayer).

The icon is found on screen by its colours: the tray panel is grey, the idle icon green,
the working icon blue, paused amber, attention red (see :mod:`agent.ui.icons`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.tray import TrayApp
from agent.ui.notify import RecordingNotifier

from .helpers import SHOWN, Harness, colours, shows, wait_until


def test_icon_goes_busy_and_back_to_idle(harness: Harness,
                                         series_writer: Callable[..., list[Path]]) -> None:
    h = harness
    assert shows(h.display, "green"), colours(h.display)
    assert "Idle" in h.app.icon.title
    series_writer(h.export / "study1", n=3)
    assert h.stage.entered.wait(20), "the agent never started the series"
    assert shows(h.display, "blue"), colours(h.display)
    # Blue while the export arrives ("Receiving an export"), then while it is processed.
    assert wait_until(lambda: h.app.icon.title.startswith("Clinic2Cloud - Working"), 5), (
        h.app.icon.title)
    h.stage.gate.set()
    assert wait_until(lambda: len(h.delivered()) == 1, 20)
    assert shows(h.display, "green"), colours(h.display)
    assert "1 delivered today" in h.app.icon.title
    # One delivery, one (coalesced) notification.
    assert wait_until(lambda: h.notifier.titles == ["Delivered"], 5), h.notifier.sent


def test_pause_stops_new_processing_and_resume_continues(
        harness: Harness, series_writer: Callable[..., list[Path]]) -> None:
    h = harness
    h.stage.gate.set()
    assert not h.menu_item("Resume").enabled
    h.click("Pause", "Until resumed")
    assert shows(h.display, "amber"), colours(h.display)
    assert "Paused until resumed" in h.app.icon.title
    assert h.menu_item("Resume").enabled
    series_writer(h.export / "study2", n=3)
    # Longer than stable_seconds plus a rescan: the series would have been processed.
    time.sleep(4.0)
    assert not h.stage.entered.is_set()
    assert h.delivered() == []
    h.click("Resume")
    assert wait_until(lambda: len(h.delivered()) == 1, 20)
    assert shows(h.display, "green"), colours(h.display)


def test_timed_pause_from_the_menu(harness: Harness) -> None:
    h = harness
    before = time.time()
    h.click("Pause", "For 1 hour")
    until = h.agent.status().paused_until
    assert until is not None and before + 3590 < until < time.time() + 3610
    assert shows(h.display, "amber")
    assert "Paused until" in str(h.menu_item("Paused").text)
    h.click("Resume")
    assert shows(h.display, "green")


def test_quarantine_turns_the_icon_red_and_retry_delivers(
        harness: Harness, series_writer: Callable[..., list[Path]]) -> None:
    h = harness
    h.stage.gate.set()
    series_writer(h.export / "bad", n=2, patient_id="QUARANTINE-1")
    assert wait_until(lambda: h.agent.status().quarantined == 1, 20)
    assert shows(h.display, "red"), colours(h.display)
    assert "quarantined" in h.app.icon.title
    assert wait_until(lambda: "Series quarantined" in h.notifier.titles, 5)
    assert str(h.menu_item("0 queued").text).endswith("1 quarantined")
    series = next(s for s in h.agent.recent() if s.state == "quarantined")
    assert "burned-in" in series.reason
    h.stage.reject = False
    h.click("Retry 1 quarantined series")
    assert wait_until(lambda: len(h.delivered()) == 1, 20)
    assert shows(h.display, "green"), colours(h.display)
    assert h.messages == []  # it went through: nothing to explain
    # A Retry that cannot go through says why.
    h.app.retry(series.id)
    assert h.messages[-1] == ("Clinic2Cloud - Retry", f"series {series.id} is delivered, "
                              "not quarantined: nothing to retry")


def test_menu_actions(harness: Harness, export_dir: Path) -> None:
    h = harness
    texts = [str(i.text) for i in h.app.icon.menu.items
             if i is not h.app.icon.menu.SEPARATOR and i.visible]
    assert texts[0].startswith("Idle")
    assert texts[1] == "0 queued \u00b7 0 delivered today \u00b7 0 quarantined"
    assert [t for t in texts[2:]] == [
        "Pause", "Resume", "Open export folder", "Recent activity\u2026", "Open log folder",
        "About Clinic2Cloud\u2026", "Quit"]
    assert h.menu_item("Recent activity").default
    h.click("Open export folder")
    h.click("Open log folder")
    assert h.opened == [export_dir, h.agent.config.paths.log_dir]
    h.click("About")
    title, body = h.messages[-1]
    assert title == "About Clinic2Cloud"
    from agent import __version__

    assert __version__ in body and str(h.agent.config.paths.user_config) in body


def test_quit_asks_while_work_is_in_flight(harness: Harness,
                                           series_writer: Callable[..., list[Path]]) -> None:
    h = harness
    series_writer(h.export / "busy", n=2)
    assert h.stage.entered.wait(20)
    h.answer = False
    h.click("Quit")
    assert len(h.questions) == 1 and "Quit anyway" in h.questions[0]
    time.sleep(0.5)
    assert shows(h.display, "blue"), "declining must keep the tray running"
    h.answer = True
    h.click("Quit")
    assert len(h.questions) == 2
    assert wait_until(lambda: all(v < SHOWN for v in colours(h.display).values()), 5)


def test_quit_when_idle_does_not_ask(harness: Harness) -> None:
    h = harness
    assert shows(h.display, "green")
    h.click("Quit")
    assert h.questions == []
    assert wait_until(lambda: all(v < SHOWN for v in colours(h.display).values()), 5)


def test_muted_notifications(system_tray: str, pystray_module: Any,
                             gated_agent: Callable[..., Any]) -> None:
    agent, _stage = gated_agent(tray_notifications=False)
    rec = RecordingNotifier()
    app = TrayApp(agent, pystray_module, notifier=rec)
    assert app.notifications.enabled is False


# The test restarts the session's trayer; the new one serves the tests that follow.
@pytest.mark.leaks_ok
def test_icon_comes_back_when_the_panel_restarts(harness: Harness, tray_process: Any) -> None:
    h = harness
    assert shows(h.display, "green")
    tray_process.stop()
    time.sleep(0.5)
    assert all(v < SHOWN for v in colours(h.display).values())  # nothing to show it in
    tray_process.start()
    assert shows(h.display, "green", timeout=10), "the icon did not dock into the new tray"
