"""The supervisor: no long-lived thread of the agent dies silently.

Every long-lived part (the export scanner and its event thread, each series worker, the
tray's poller) is registered with a way to tell whether it is alive and a way to restart
it. Once a second the supervisor looks; a part found dead is logged, restarted, and
reported: the agent's health lists it (``AgentStatus.health``) and front ends hear an
:data:`~agent.vocab.EventKind.HEALTH` event. A part that keeps dying - ``max_restarts``
times within ``window`` seconds - makes the agent *unhealthy*: its state says so, in words,
instead of "watching for exports" while nothing is watched. Health clears by itself when
the window passes without another failure.

The parts themselves already survive any exception in one item (they log it by type and
carry on); the supervisor is for what gets past that - a bug in a loop, a BaseException,
a library thread ending.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.logs import log_failure

log = logging.getLogger(__name__)


@dataclass
class _Part:
    name: str
    alive: Callable[[], bool]
    restart: Callable[[], object]
    failures: list[float] = field(default_factory=list)  # monotonic times


class Supervisor:
    """Watches registered parts from its own thread (``supervisor``)."""

    def __init__(self, on_change: Callable[[str], None], *, interval: float = 1.0,
                 window: float = 600.0, max_restarts: int = 3) -> None:
        self._on_change = on_change
        self.interval = interval
        self.window = window
        self.max_restarts = max_restarts
        self._parts: dict[str, _Part] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.restarts = 0

    def add(self, name: str, alive: Callable[[], bool], restart: Callable[[], object]) -> None:
        """Watch ``name``: ``alive()`` false means dead, ``restart()`` brings it back."""
        with self._lock:
            self._parts[name] = _Part(name, alive, restart)

    def remove(self, name: str) -> None:
        with self._lock:
            self._parts.pop(name, None)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 -- the supervisor itself must not die
                log_failure(log, "the supervisor's check failed", exc)

    def check(self) -> list[str]:
        """Look at every part once, restart the dead; the names restarted."""
        with self._lock:
            parts = list(self._parts.values())
        restarted = []
        now = time.monotonic()
        for part in parts:
            if self._stop.is_set():
                break
            try:
                alive = part.alive()
            except Exception:  # noqa: BLE001 -- a broken probe counts as dead
                alive = False
            if alive:
                continue
            part.failures = [t for t in part.failures if now - t < self.window] + [now]
            log.error("%s stopped unexpectedly (%d time(s) in %.0f min); restarting it",
                      part.name, len(part.failures), self.window / 60)
            try:
                part.restart()
            except Exception as exc:  # noqa: BLE001 -- report, and try again next round
                log_failure(log, f"restarting {part.name} failed", exc)
            self.restarts += 1
            restarted.append(part.name)
            self._on_change(part.name)
        return restarted

    def health(self) -> tuple[str, ...]:
        """Recent failures, in words (empty when every part ran through the window)."""
        now = time.monotonic()
        out = []
        with self._lock:
            parts = list(self._parts.values())
        for part in parts:
            recent = [t for t in part.failures if now - t < self.window]
            if recent:
                ago = (now - recent[-1]) / 60
                out.append(f"{part.name} stopped {len(recent)} time(s) and was restarted "
                           f"(last {ago:.0f} min ago)")
        return tuple(out)

    def failing(self) -> list[str]:
        """Parts that died ``max_restarts`` times within the window: restarts do not help."""
        now = time.monotonic()
        with self._lock:
            parts = list(self._parts.values())
        return [p.name for p in parts
                if len([t for t in p.failures if now - t < self.window]) >= self.max_restarts]
