"""Helpers of the tray tests: waiting, screenshots, colour counts, a gated test stage."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from agent.errors import SeriesProblem, Withheld
from agent.status import AgentState
from agent.tray import TrayApp
from agent.ui.icons import LOOKS
from agent.ui.notify import RecordingNotifier
from agent.vocab import ProblemCode, WithheldCode
from agent.work import SeriesWork
from tests.waiting import wait_until as _wait_until

#: Height of the trayer panel docked at the top edge; icons are drawn inside it.
TRAY_HEIGHT = 32


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, step: float = 0.05) -> bool:
    """The suite's one waiting helper, with the tray tests' shorter default timeout."""
    return _wait_until(predicate, timeout, step)


def screenshot(display: str, box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """The screen (or ``box`` of it) as RGB, through Pillow's X grabber."""
    from PIL import ImageGrab

    img = ImageGrab.grab(xdisplay=display).convert("RGB")
    return img.crop(box) if box else img


def tray_strip(display: str) -> Image.Image:
    """The tray panel: the top strip of the screen where trayer shows icons."""
    return screenshot(display, (0, 0, 200, TRAY_HEIGHT))


def count_colour(img: Image.Image, rgb: tuple[int, int, int], tol: int = 40) -> int:
    """Pixels of ``img`` within ``tol`` (per channel) of ``rgb``."""
    px = np.asarray(img.convert("RGB")).astype(int)
    return int((np.abs(px - np.array(rgb)).max(axis=2) <= tol).sum())


# Windows on the display (xdotool, xwininfo) ----------------------------------------------


def xdotool(display: str, *args: str) -> str:
    out = subprocess.run(
        ["xdotool", *args], env={**os.environ, "DISPLAY": display}, capture_output=True,
        text=True, timeout=10,
    )
    return out.stdout.strip()


def click(display: str, x: int, y: int) -> None:
    # No --sync: it waits for a motion event, which never comes if the pointer is there.
    xdotool(display, "mousemove", str(x), str(y), "sleep", "0.1", "click", "1")


def window_box(display: str, title: str) -> tuple[int, int, int, int] | None:
    """Screen box of the first window whose title contains ``title``."""
    ids = xdotool(display, "search", "--onlyvisible", "--name", title).split()
    if not ids:
        return None
    info = subprocess.run(
        ["xwininfo", "-id", ids[0]], env={**os.environ, "DISPLAY": display},
        capture_output=True, text=True, timeout=10,
    ).stdout
    values = {}
    for line in info.splitlines():
        key, _, value = line.strip().partition(":")
        values[key] = value.strip()
    x, y = int(values["Absolute upper-left X"]), int(values["Absolute upper-left Y"])
    return (x, y, x + int(values["Width"]), y + int(values["Height"]))


def shots_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("CLINIC2CLOUD_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder



# A test stage for the real Agent ---------------------------------------------------------


@dataclass
class GateStage:
    """Runs before the real de-identification: holds every series until :attr:`gate` is
    set (so the working icon can be looked at), leaves a before/after render; quarantines
    series whose Patient ID starts with ``QUARANTINE`` while :attr:`reject` is true, and
    withholds (by policy) those whose Patient ID starts with ``WITHHOLD``."""

    renders: Path
    name: str = "hold"
    gate: threading.Event = field(default_factory=threading.Event)
    reject: bool = True
    entered: threading.Event = field(default_factory=threading.Event)
    count: int = 0

    def __call__(self, work: SeriesWork) -> None:
        self.entered.set()
        # Bounded, so a failing test cannot leave a worker blocked forever.
        self.gate.wait(60)
        self.count += 1
        patient = _patient_id(work.source_files[0])
        if self.reject and patient.startswith("QUARANTINE"):
            # A code whose outcome may change on Retry (the test flips ``reject``), unlike
            # identity-risk, which the same agent would only find again.
            raise SeriesProblem("test: burned-in annotation suspected",
                                code=ProblemCode.SERIES_PROBLEM)
        if patient.startswith("WITHHOLD"):
            raise Withheld("a localizer: it shows the face in profile and this site does "
                           "not send localizers", code=WithheldCode.LOCALIZER)
        work.render = make_render(self.renders / f"render-{self.count}.png")


def _patient_id(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).get("PatientID", ""))


def make_render(path: Path) -> Path:
    """A before/after picture like the defacer's: two panels with labels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (320, 160), (10, 10, 10))
    draw = ImageDraw.Draw(img)
    for x0, label, fill in ((0, "before", (200, 170, 150)), (160, "after", (120, 160, 200))):
        draw.ellipse((x0 + 40, 25, x0 + 120, 135), fill=fill)
        draw.text((x0 + 10, 5), label, fill=(255, 255, 255))
    img.save(path)
    return path




GREEN = LOOKS[AgentState.IDLE].fill[:3]
BLUE = LOOKS[AgentState.WORKING].fill[:3]
AMBER = LOOKS[AgentState.PAUSED].fill[:3]
RED = LOOKS[AgentState.ATTENTION].fill[:3]
#: An icon in the panel has well over this many pixels of its fill colour.
SHOWN = 80


def colours(display: str) -> dict[str, int]:
    strip = tray_strip(display)
    return {name: count_colour(strip, rgb, tol=30)
            for name, rgb in (("green", GREEN), ("blue", BLUE), ("amber", AMBER), ("red", RED))}


def shows(display: str, name: str, timeout: float = 15.0) -> bool:
    """The tray shows the icon of colour ``name`` (and no other state colour)."""
    def check() -> bool:
        c = colours(display)
        return c[name] > SHOWN and all(v < SHOWN for k, v in c.items() if k != name)

    if wait_until(check, timeout, step=0.1):
        return True
    # Keep the evidence for whoever reads the failure.
    tray_strip(display).resize((800, 128)).save(f"/tmp/tray-not-{name}.png")
    return False


class Harness:
    """A started Agent and its TrayApp, the icon loop running on a thread."""

    def __init__(self, agent: Any, stage: GateStage, app: TrayApp, display: str,
                 export: Path, notifier: RecordingNotifier, opened: list[Path],
                 messages: list[tuple[str, str]], questions: list[str]) -> None:
        self.agent, self.stage, self.app, self.display = agent, stage, app, display
        self.export, self.notifier, self.opened = export, notifier, opened
        self.messages, self.questions = messages, questions
        self.answer = True

    def menu_item(self, *path: str) -> Any:
        """The pystray MenuItem reached through the texts in ``path``."""
        menu = self.app.icon.menu
        item = None
        for text in path:
            item = next(i for i in menu.items if str(i.text).startswith(text))
            menu = item.submenu
        return item

    def click(self, *path: str) -> None:
        self.menu_item(*path)(self.app.icon)

    def delivered(self) -> list[Any]:
        return [s for s in self.agent.recent() if s.state == "delivered"]
