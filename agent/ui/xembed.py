"""Fixes for pystray's xorg (XEmbed system tray) backend, kept out of the tray logic.

Four problems of pystray 0.19 + python-xlib 0.33 showed up under a real XEmbed tray:

1. **Cross-thread calls stall or deadlock.** The backend runs the icon's X event loop on
   one thread. Changing the icon or the title, or stopping it, from another thread sends a
   ClientMessage *through the loop's own X connection* and waits for the loop to answer.
   python-xlib does not cope with two threads on one connection: the message may stay
   unsent while the loop thread blocks reading (the call waits until some unrelated event
   arrives - forever, on a quiet display), and while the loop holds a server grab to find
   the tray, the connection can deadlock, freezing every X client. :class:`Dispatcher`
   sends those ClientMessages through a second connection of its own, so only the loop
   thread ever uses the loop's connection, and waits with a timeout.
2. **Re-docking on every update, under a server grab.** The backend asks the tray to dock
   the icon again on each icon change (trayer then embeds the same window twice and may
   crash), and grabs the X server to look the tray up (which, under Xvfb, now and then
   froze every client until an unrelated connection woke the server up).
   :func:`dock_once` docks only when the icon is not docked yet, without a grab.
3. **Deaf to clicks.** The icon window does not select button presses, so a click never
   reaches the backend's handler. :func:`listen_to_clicks` selects them.
4. **Lost after a panel restart.** When the tray goes away the backend tries to dock once,
   at once, and never again. :meth:`Dispatcher.tray_available` lets the tray look for a
   new tray now and then and dock again.

5. **Tracebacks without a tray.** With no tray on the desktop, every show and icon update
   logs "Failed to dock icon" at ERROR with a traceback of an AssertionError.
   :func:`quiet_dock_errors` drops those records; the tray logs one plain warning instead
   and docks as soon as a tray appears.

All are no-ops on other backends. They touch pystray internals (``_window``, ``_queue``,
``_thread``...), checked at runtime: if pystray changes, the fixes step aside.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

#: The backend methods pystray runs on the loop thread via a ClientMessage.
DISPATCHED = ("_show", "_hide", "_update_icon", "_update_title", "_stop")
#: How long a cross-thread call may wait for the loop before giving up.
CALL_TIMEOUT = 5.0


def is_xorg(icon: Any) -> bool:
    return type(icon).__module__.endswith("._xorg")


def patch_icon(icon: Any) -> Dispatcher | None:
    """Apply the fixes of this module to a new (not yet running) xorg icon.

    Returns the :class:`Dispatcher` now serving cross-thread calls (close it after the
    icon stopped), or None on other backends or when it could not be set up.
    """
    if not is_xorg(icon):
        return None
    quiet_dock_errors()
    listen_to_clicks(icon)
    dock_once(icon)
    try:
        return Dispatcher(icon)
    except Exception:
        log.warning("cannot open a second X connection for the tray icon", exc_info=True)
        return None


class _NoDockTracebacks(logging.Filter):
    """Drops pystray's "Failed to dock icon" records (an expected state, not an error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to dock icon")


_DOCK_FILTER = _NoDockTracebacks()


def quiet_dock_errors() -> None:
    """Install :class:`_NoDockTracebacks` on pystray's loggers (once)."""
    for name in ("pystray._base", "pystray._xorg", "pystray"):
        logger = logging.getLogger(name)
        if _DOCK_FILTER not in logger.filters:
            logger.addFilter(_DOCK_FILTER)


def listen_to_clicks(icon: Any) -> None:
    """Select button presses on the icon window, which pystray forgets to do."""
    try:
        import Xlib.X

        icon._window.change_attributes(
            event_mask=Xlib.X.ExposureMask | Xlib.X.StructureNotifyMask | Xlib.X.ButtonPressMask
        )
        icon._display.flush()
    except Exception:
        log.warning("cannot listen to clicks on the tray icon", exc_info=True)


def dock_once(icon: Any) -> None:
    """Make the xorg backend dock the icon only when it is not docked, without grabbing
    the X server to find the tray."""
    needed = ("_assert_docked", "_dock_window", "_systray_manager", "_net_system_tray_sx")
    if not all(hasattr(icon, a) for a in needed):
        return

    def assert_docked() -> None:
        if not icon._systray_manager:  # first show, or the tray was restarted
            icon._dock_window()
        assert icon._systray_manager

    def get_systray_manager() -> Any:
        # pystray grabs the server around this one request; under Xvfb that grab froze
        # every client now and then. The tray owner is read atomically anyway, and if the
        # tray dies right after, the DestroyNotify handler docks again.
        import Xlib.X

        owner = icon._display.get_selection_owner(icon._net_system_tray_sx)
        if owner == Xlib.X.NONE:
            return None
        return icon._display.create_resource_object("window", owner.id)

    icon._assert_docked = assert_docked
    icon._get_systray_manager = get_systray_manager


class Dispatcher:
    """Runs the backend's loop-thread methods from other threads, safely (see module doc).

    It replaces the icon's dispatching methods by ones that send pystray's own
    ``_PYSTRAY_<METHOD>`` ClientMessage through a private X connection and wait, at most
    :data:`CALL_TIMEOUT` seconds, for the loop's answer on pystray's result queue. Calls
    are serialised: that queue carries no caller identity.
    """

    def __init__(self, icon: Any) -> None:
        import Xlib.display

        self._icon = icon
        self._lock = threading.Lock()
        self._broken = False
        self._display = Xlib.display.Display()
        # The icon window is destroyed on stop: later errors are expected and harmless.
        self._display.set_error_handler(lambda *_args: None)
        self._window = self._display.create_resource_object("window", icon._window.id)
        self._tray_atom = self._display.intern_atom(
            f"_NET_SYSTEM_TRAY_S{self._display.get_default_screen()}"
        )
        for name in DISPATCHED:
            in_loop = getattr(icon, name)  # pystray's dispatcher; runs directly in the loop
            atom = self._display.intern_atom(f"_PYSTRAY_{name.upper()}")
            setattr(icon, name, self._make(name, atom, in_loop))

    def _make(self, name: str, atom: int, in_loop: Any) -> Any:
        def call() -> None:
            loop = getattr(self._icon, "_thread", None)
            if loop is not None and threading.current_thread().ident == loop.ident:
                in_loop()
                return
            self._call(name, atom)

        return call

    def _call(self, name: str, atom: int) -> None:
        import queue

        with self._lock:
            if self._broken:
                # A call timed out earlier: its late answer could be taken for ours.
                log.debug("tray icon %s skipped: the icon stopped answering", name)
                return
            self.send(atom)
            try:
                result = self._icon._queue.get(timeout=CALL_TIMEOUT)
            except queue.Empty:
                self._broken = True
                log.warning("the tray icon did not answer %s within %.0f s", name, CALL_TIMEOUT)
                return
        if result is not True:
            raise result[1]

    def send(self, atom: int) -> None:
        """Send one ClientMessage of type ``atom`` to the icon window."""
        import Xlib.display
        import Xlib.X

        event = Xlib.display.event.ClientMessage(
            window=self._window, client_type=atom, data=(32, (0, 0, 0, 0, 0))
        )
        self._window.send_event(event, event_mask=Xlib.X.NoEventMask)
        self._display.flush()

    def tray_available(self) -> bool:
        """Whether some XEmbed tray owns the system tray selection right now."""
        import Xlib.X

        with self._lock:
            try:
                return self._display.get_selection_owner(self._tray_atom) != Xlib.X.NONE
            except Exception:  # noqa: BLE001 -- the display may be going away
                return False

    def destroy_window(self) -> None:
        """Last resort when the loop did not end on stop: destroy the icon window from
        this connection; the loop sees the DestroyNotify and returns."""
        with contextlib.suppress(Exception):
            self._window.destroy()
            self._display.flush()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._display.close()
