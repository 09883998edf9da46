"""The one headless main loop, shared by ``clinic2cloud run --headless`` and the tray's
fallback when no desktop tray can be shown.

It starts the agent (unless told it is started), then waits on the main thread until
SIGTERM/SIGINT, a ``clinic2cloud quit`` through the control endpoint, or the agent
stopping by itself; then it stops the agent within its time budget.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.main import AgentFacade

log = logging.getLogger(__name__)

#: Budget for stopping the agent after Quit/SIGTERM (the whole shutdown must take < 5 s).
STOP_TIMEOUT = 3.5


def install_signal_handlers(on_signal: Callable[[], None]) -> Callable[[], None]:
    """SIGTERM/SIGINT call ``on_signal``; returns a function restoring the old handlers.

    Only the main thread may set handlers; elsewhere (tests) nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, Any] = {}

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: shutting down", signum)
        on_signal()

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def run_headless(agent: AgentFacade, *, started: bool = False,
                 on_started: Callable[[], None] | None = None) -> int:
    """Run ``agent`` until SIGTERM/SIGINT, ``clinic2cloud quit`` or its own stop; returns 0."""
    stop = threading.Event()
    restore = install_signal_handlers(stop.set)
    try:
        if not started:
            agent.start()
        if on_started is not None:
            on_started()
        # A timed wait keeps the main thread returning to the interpreter, where Python
        # runs signal handlers (Windows cannot interrupt an untimed wait).
        while not stop.is_set() and not agent.wait(0.2):
            pass
    finally:
        agent.stop(STOP_TIMEOUT)
        restore()
    return 0
