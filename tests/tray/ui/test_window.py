"""The Recent activity window of a real Agent, drawn by Tk under Xvfb and clicked with xdotool.

Screenshots are kept in ``$CLINIC2CLOUD_SCREENSHOTS`` (default: the test's tmp folder) so
a person can look at them.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from agent.status import AgentState
from agent.ui.icons import LOOKS

from ..helpers import (
    Harness,
    click,
    count_colour,
    screenshot,
    shots_dir,
    shows,
    wait_until,
    window_box,
    xdotool,
)

pytest.importorskip("tkinter", reason="the window needs Tk (Debian: python3-tk)")
pytestmark = pytest.mark.skipif(shutil.which("xdotool") is None, reason="needs xdotool")

BEFORE = (200, 170, 150)  # the "before" face of the test render (helpers.make_render)
QUARANTINE_RED = (0xC6, 0x28, 0x28)


def deliver_and_quarantine(h: Harness, series_writer: Callable[..., list[Path]]) -> None:
    h.stage.gate.set()
    series_writer(h.export / "good", n=2)
    assert wait_until(lambda: len(h.delivered()) == 1, 20)
    series_writer(h.export / "bad", n=2, patient_id="QUARANTINE-7")
    assert wait_until(lambda: h.agent.status().quarantined == 1, 20)
    assert shows(h.display, "red")


def test_recent_activity_lists_renders_and_quarantine_and_retry_works(
        harness: Harness, series_writer: Callable[..., list[Path]], tmp_path: Path) -> None:
    h = harness
    deliver_and_quarantine(h, series_writer)
    h.app.window.show()
    assert h.app.window.wait_rendered(10), "the window never drew"
    assert wait_until(lambda: window_box(h.display, "Recent activity") is not None, 10)
    box = window_box(h.display, "Recent activity")
    assert box is not None
    time.sleep(0.5)  # let Tk paint
    shot = screenshot(h.display, box)
    shot.save(shots_dir(tmp_path) / "recent-activity.png")
    # The delivered series shows its before/after render, the quarantined one its reason
    # in red, and the header the attention icon.
    assert count_colour(shot, BEFORE, tol=12) > 200, "no before/after render in the window"
    assert count_colour(shot, QUARANTINE_RED, tol=30) > 30, "no quarantine reason"
    assert count_colour(shot, LOOKS[AgentState.ATTENTION].fill[:3], tol=20) > 200

    quarantined = next(s for s in h.agent.recent() if s.state == "quarantined")
    layout = h.app.window.layout()
    assert f"Retry {quarantined.id}" in layout
    h.stage.reject = False
    click(h.display, *layout[f"Retry {quarantined.id}"])
    assert wait_until(lambda: len(h.delivered()) == 2, 20), "Retry did not deliver the series"
    assert shows(h.display, "green")
    # The window follows: no Retry button any more, the header turns idle.
    assert wait_until(lambda: f"Retry {quarantined.id}" not in h.app.window.layout(), 10)
    time.sleep(0.3)
    after = screenshot(h.display, box)
    assert count_colour(after, LOOKS[AgentState.IDLE].fill[:3], tol=20) > 200
    assert count_colour(after, BEFORE, tol=12) > 400, "both series show their render"
    h.app.window.close()
    assert wait_until(lambda: window_box(h.display, "Recent activity") is None, 5)


def test_click_on_the_xembed_icon_opens_the_window(harness: Harness) -> None:
    h = harness
    assert not h.app.has_menu  # XEmbed: no menu, a click is the only action
    assert shows(h.display, "green")
    strip = screenshot(h.display, (0, 0, 200, 32))
    green = Image.new("RGB", strip.size)
    xs = [x for x in range(strip.width)
          if count_colour(strip.crop((x, 0, x + 1, strip.height)), LOOKS[
              AgentState.IDLE].fill[:3], tol=30) > 3]
    assert xs, green
    click(h.display, (xs[0] + xs[-1]) // 2, 16)
    assert wait_until(lambda: h.app.window.is_open, 10), "a click did not open the window"
    assert wait_until(lambda: window_box(h.display, "Recent activity") is not None, 10)
    # A second click raises the same window rather than opening another one.
    click(h.display, (xs[0] + xs[-1]) // 2, 16)
    time.sleep(0.5)
    ids = xdotool(h.display, "search", "--onlyvisible", "--name", "Recent activity").split()
    assert len(ids) == 1
    h.app.window.close()


def test_window_buttons_pause_and_resume(harness: Harness) -> None:
    h = harness
    h.app.window.show()
    assert h.app.window.wait_rendered(10)
    layout = h.app.window.layout()
    click(h.display, *layout["Until resumed"])
    assert wait_until(lambda: h.agent.status().paused_until == 0.0, 5)
    assert shows(h.display, "amber")
    click(h.display, *h.app.window.layout()["Resume"])
    assert wait_until(lambda: h.agent.status().paused_until is None, 5)
    assert shows(h.display, "green")
    click(h.display, *h.app.window.layout()["Export folder"])
    assert wait_until(lambda: h.opened == [Path(h.agent.config.watch.folder)], 5)
    # XEmbed trays have no menu: About lives in the window too.
    click(h.display, *h.app.window.layout()["About"])
    assert wait_until(lambda: h.messages and h.messages[-1][0] == "About Clinic2Cloud", 5)
    h.app.window.close()
