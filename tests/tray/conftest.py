"""A real X display with a real XEmbed system tray, and agents that work at the tests' pace.

``xdisplay`` starts Xvfb (session-wide) and points DISPLAY at it, with pystray's xorg
backend; ``system_tray`` adds ``trayer``, a GTK XEmbed tray docked at the top of the screen.
``gated_agent`` builds the real :class:`agent.main.Agent` on a temporary home, with one
test stage that holds every series until the test opens the gate, so the "working" state
lasts exactly as long as a test needs to look at it.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import Config
from agent.tray import TrayApp
from agent.ui.notify import RecordingNotifier

from .helpers import SHOWN, TRAY_HEIGHT, GateStage, Harness, colours, wait_until

SCREEN = (1024, 768)


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (apt-get install xvfb trayer)")


@pytest.fixture(scope="session")
def xdisplay() -> Iterator[str]:
    """A fresh Xvfb server; DISPLAY and PYSTRAY_BACKEND=xorg are set for the whole session."""
    _need("Xvfb")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24",
         "-nolisten", "tcp", "-noreset"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as pipe:
            number = pipe.readline().strip()
        if not number:
            pytest.skip("Xvfb did not start")
        display = f":{number}"
        old = {k: os.environ.get(k) for k in ("DISPLAY", "PYSTRAY_BACKEND")}
        os.environ["DISPLAY"] = display
        os.environ["PYSTRAY_BACKEND"] = "xorg"
        yield display
    finally:
        # pystray icons close their X connection when collected: collect them while the
        # server is still there, or their finalizers raise at some random later point.
        gc.collect()
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _tray_owner(display: str) -> int:
    """The window owning the XEmbed tray selection, 0 when there is no tray."""
    import Xlib.display

    d = Xlib.display.Display(display)
    try:
        atom = d.intern_atom(f"_NET_SYSTEM_TRAY_S{d.get_default_screen()}")
        owner = d.get_selection_owner(atom)
        return int(getattr(owner, "id", owner))
    finally:
        d.close()


class TrayProcess:
    """The trayer process of the session; :meth:`restart` plays a panel restarting."""

    def __init__(self, display: str) -> None:
        self.display = display
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["trayer", "--edge", "top", "--align", "left", "--widthtype", "pixel", "--width",
             "200", "--height", str(TRAY_HEIGHT), "--transparent", "false", "--tint",
             "0x808080", "--SetDockType", "true", "--expand", "false"],
            env={**os.environ, "DISPLAY": self.display},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_until(lambda: _tray_owner(self.display), timeout=10):
            pytest.fail("trayer did not take the system tray selection")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        wait_until(lambda: not _tray_owner(self.display), timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def tray_process(xdisplay: str) -> Iterator[TrayProcess]:
    """trayer docked along the top edge, grey, growing with its icons."""
    _need("trayer")
    tray = TrayProcess(xdisplay)
    try:
        tray.start()
        yield tray
    finally:
        tray.stop()


@pytest.fixture(scope="session")
def system_tray(tray_process: TrayProcess) -> str:
    """The display, with a system tray on it."""
    return tray_process.display


@pytest.fixture(scope="session")
def pystray_module(xdisplay: str):  # type: ignore[no-untyped-def]
    """pystray imported with the xorg backend (it needs DISPLAY at import time)."""
    import pystray

    return pystray


@pytest.fixture
def gated_agent(
    make_config: Callable[..., Config], tmp_path: Path
) -> Iterator[Callable[..., tuple[object, GateStage]]]:
    """Builds real Agents (not started) with a :class:`GateStage`; stops them at teardown."""
    from agent.deid import DeidStage, VerifyStage
    from agent.main import Agent

    made: list[tuple[Agent, GateStage]] = []

    def build(**overrides: object) -> tuple[Agent, GateStage]:
        overrides.setdefault("watch_stable_seconds", 1.0)
        overrides.setdefault("pipeline_workers", 1)
        cfg = make_config(**overrides)
        stage = GateStage(tmp_path / "renders")
        agent = Agent(cfg, stages=[stage, DeidStage(cfg, b"tray-test-site-key"),
                                   VerifyStage(cfg)])
        made.append((agent, stage))
        return agent, stage

    yield build
    for agent, stage in made:
        stage.gate.set()
        agent.stop(3.0)


@pytest.fixture
def harness(request: pytest.FixtureRequest, system_tray: str, pystray_module: Any,
            gated_agent: Callable[..., Any], export_dir: Path) -> Iterator[Harness]:
    """A started agent and its tray. Config overrides: parametrize ``harness`` indirectly
    with a dict (``section_key=value``)."""
    agent, stage = gated_agent(**getattr(request, "param", {}))
    notifier = RecordingNotifier()
    opened: list[Path] = []
    messages: list[tuple[str, str]] = []
    questions: list[str] = []
    holder: dict[str, Harness] = {}

    def confirm(question: str) -> bool:
        questions.append(question)
        return holder["h"].answer

    agent.start()
    app = TrayApp(agent, pystray_module, notifier=notifier, confirm=confirm,
                  opener=opened.append, message=lambda t, m: messages.append((t, m)),
                  poll_interval=0.1, notification_delay=0.5)
    thread = threading.Thread(target=app.run, name="tray-under-test", daemon=True)
    thread.start()
    h = Harness(agent, stage, app, system_tray, export_dir, notifier, opened, messages,
                questions)
    holder["h"] = h
    try:
        yield h
    finally:
        stage.gate.set()
        app.quit()
        thread.join(5)
        if thread.is_alive():  # show where it hangs
            faulthandler.dump_traceback(sys.stderr)
        assert not thread.is_alive(), "the tray loop did not end"
        agent.stop(3.0)
        del h, app
        gc.collect()  # the icon's finalizer closes its X connection: now, not at random
        # The icon left the tray: the next test starts from an empty panel.
        assert wait_until(lambda: all(v < SHOWN for v in colours(system_tray).values()), 5)
