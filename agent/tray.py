"""The tray icon: the agent's state at a glance, a menu, notifications.

``clinic2cloud run`` (without ``--headless``) calls :func:`run_tray`, which starts the
agent, shows a pystray icon and blocks until Quit or SIGTERM/SIGINT. The tray only talks
to the :class:`~agent.main.Agent` facade: it reads ``status()`` on a thread of its own
(twice a second, and at once when the agent reports an event), and calls ``pause``,
``resume``, ``retry`` from menu actions. Nothing it does can hold up the pipeline.

Backends are pystray's: Windows and macOS natively; on Linux AppIndicator where available
(with menus), else an XEmbed system tray (pystray's ``xorg`` backend), which has no menu:
a click opens the Recent activity window, which offers the same controls. With no display
or no usable backend at all, :func:`run_tray` says so in the log and runs headless.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from agent import __version__
from agent.config import Config
from agent.headless import STOP_TIMEOUT, install_signal_handlers, run_headless
from agent.main import RETRY_STARTED, AgentFacade
from agent.status import AgentEvent, AgentState, AgentStatus
from agent.ui import icons, text, xembed
from agent.ui.notify import NotificationCenter, Notifier, default_notifier
from agent.ui.window import RecentActivityWindow, WindowActions, ask_yes_no, open_path, show_message

__all__ = ["AgentFacade", "TrayApp", "run_tray", "load_backend", "STOP_TIMEOUT"]

log = logging.getLogger(__name__)

#: Pause choices of the menu: label and seconds (None: until resumed).
PAUSES: tuple[tuple[str, float | None], ...] = (
    ("For 1 hour", 3600.0),
    ("For 8 hours", 8 * 3600.0),
    ("Until resumed", None),
)
#: Pixel size the icon is drawn at; backends scale it to the taskbar.
ICON_SIZE = 64
#: How often an undocked XEmbed icon looks for a (restarted) tray, in seconds.
REDOCK_INTERVAL = 2.0


def load_backend() -> ModuleType | None:
    """Import pystray, or None with a warning when no backend can work here.

    pystray picks its backend at import time and its xorg backend connects to the display
    then, so a missing ``DISPLAY`` shows up as an X error, not an ImportError.
    """
    if sys.platform.startswith("linux") and not _has_display():
        log.warning("no graphical display (DISPLAY/WAYLAND_DISPLAY unset): no tray icon")
        return None
    try:
        import pystray
    except Exception as exc:  # noqa: BLE001 -- any backend failure means "no tray"
        log.warning("no usable tray backend (%s: %s)", type(exc).__name__, exc)
        return None
    return pystray


def _has_display() -> bool:
    import os

    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class TrayApp:
    """The icon, its menu and its notifications, for one agent.

    Deliveries within ``notification_delay`` seconds are told in one notification.
    ``confirm`` asks a yes/no question (Quit while busy), ``opener`` opens a folder, and
    ``message`` shows an information box; tests replace them, by default they are Tk
    dialogs and the platform's file manager.
    """

    def __init__(
        self,
        agent: AgentFacade,
        pystray: ModuleType,
        *,
        notifier: Notifier | None = None,
        confirm: Callable[[str], bool] | None = None,
        opener: Callable[[Path], None] = open_path,
        message: Callable[[str, str], None] = show_message,
        poll_interval: float = 0.5,
        notification_delay: float = 10.0,
    ) -> None:
        self.agent = agent
        self.cfg = agent.config
        self._pystray = pystray
        self._confirm = confirm or (lambda q: ask_yes_no(text.APP_NAME, q))
        self._opener = opener
        self._message = message
        self._poll_interval = poll_interval
        self._wake = threading.Event()
        self._quit = threading.Event()
        self._loop_done = threading.Event()
        self._status = self._read_status() or AgentStatus(state=AgentState.IDLE)
        self._shown: tuple[AgentState, int | None] | None = None
        self._menu_key: tuple[Any, ...] | None = None
        self._poller: threading.Thread | None = None
        self._next_dock_check = 0.0
        self.window = RecentActivityWindow(
            recent=lambda: self.agent.recent(50),
            status=lambda: self._status,
            actions=WindowActions(
                retry=self.retry,
                pause=self.pause,
                resume=self.resume,
                open_export=self.open_export_folder,
                open_logs=self.open_log_folder,
                about=self.about,
                quit=self.request_quit,
            ),
        )
        self.icon = pystray.Icon(
            "clinic2cloud",
            icon=self._image(self._status),
            title=text.tooltip(self._status),
            menu=self.build_menu(),
        )
        self._shown = self._look(self._status)
        self._dispatcher = xembed.patch_icon(self.icon)
        self.notifications = NotificationCenter(
            notifier or default_notifier(self.icon),
            enabled=self.cfg.tray.notifications,
            coalesce_seconds=notification_delay,
            describe=self.describe,
        )
        # A weak reference: the agent must not keep a closed tray (and its X connection) alive.
        this = weakref.ref(self)

        def on_event(event: AgentEvent) -> None:
            app = this()
            if app is not None:
                app._on_event(event)

        agent.subscribe(on_event)

    # -- what the icon shows --------------------------------------------------------------

    @property
    def status(self) -> AgentStatus:
        """The last status read from the agent (what the icon and menu show)."""
        return self._status

    @property
    def has_menu(self) -> bool:
        return bool(getattr(self.icon, "HAS_MENU", False))

    @staticmethod
    def _look(status: AgentStatus) -> tuple[AgentState, int | None]:
        # Progress in 5 % steps: finer steps would redraw the icon for nothing.
        step = None if status.progress is None else round(status.progress * 20)
        return (status.state, step if status.state is AgentState.WORKING else None)

    @staticmethod
    def _image(status: AgentStatus) -> Any:
        return icons.render_icon(status.state, ICON_SIZE, status.progress)

    def _read_status(self) -> AgentStatus | None:
        try:
            return self.agent.status()
        except Exception:
            log.warning("cannot read the agent's status", exc_info=True)
            return None

    def refresh(self) -> None:
        """Read the agent's status; redraw the icon, tooltip and menu where they changed."""
        status = self._read_status()
        if status is None:
            return
        self._status = status
        look = self._look(status)
        if look != self._shown or self._should_redock():
            # Setting the image also docks the icon again on XEmbed trays.
            self.icon.icon = self._image(status)
            self._shown = look
        self.icon.title = text.tooltip(status)  # pystray skips an unchanged title
        menu_key = (text.state_line(status), text.counts_line(status), status.paused_until,
                    text.dicom_line(status))
        if menu_key != self._menu_key and self.has_menu:
            self._menu_key = menu_key
            self.icon.update_menu()

    def _should_redock(self) -> bool:
        """XEmbed only: the icon is not docked and a tray (perhaps a restarted panel) is
        there to take it. Checked every few seconds at most."""
        if self._dispatcher is None or getattr(self.icon, "_systray_manager", True):
            return False
        now = time.monotonic()
        if now < self._next_dock_check:
            return False
        self._next_dock_check = now + REDOCK_INTERVAL
        return self._dispatcher.tray_available()

    def describe(self, event: AgentEvent) -> str:
        """A notification's words: who the series is (local identity, when shown), what
        happened and, for a quarantined series, what to do. Called on the tray thread."""
        words = event.message
        if event.series_id is None:
            return words
        summary = next((s for s in self.agent.recent(50) if s.id == event.series_id), None)
        if summary is None:
            return words
        who = text.identity_line(summary.local)
        if who:
            words = f"{who}: {words}"
        if event.kind == "quarantined" and summary.action:
            words += f" What to do: {summary.action}"
        return words

    def _on_event(self, event: AgentEvent) -> None:
        """From the agent's worker threads: record, wake the tray thread, return at once."""
        self.notifications.handle(event)
        self._wake.set()

    def _poll(self) -> None:
        while not self._quit.is_set():
            self._wake.wait(self._poll_interval)
            self._wake.clear()
            if self._quit.is_set():
                break
            try:
                self.refresh()
                self.notifications.tick()
            except Exception:
                log.exception("tray refresh failed")
        self._shutdown_icon()

    # -- the menu ---------------------------------------------------------------------------

    def build_menu(self) -> Any:
        """The pystray menu. Texts and enabled states are callables over the last status,
        so they are current whenever the backend draws the menu."""
        item, menu = self._pystray.MenuItem, self._pystray.Menu
        pauses = [item(label, self._pause_action(seconds)) for label, seconds in PAUSES]
        return menu(
            item(lambda _i: text.state_line(self._status), None, enabled=False),
            item(lambda _i: text.counts_line(self._status), None, enabled=False),
            item(lambda _i: text.dicom_line(self._status), None, enabled=False,
                 visible=lambda _i: self._status.dicom is not None),
            menu.SEPARATOR,
            item("Pause", menu(*pauses)),
            item("Resume", self._menu_action(self.resume), enabled=lambda _i: self.is_paused),
            item(
                lambda _i: f"Retry {self._status.quarantined} quarantined series",
                self._menu_action(self.retry_quarantined),
                visible=lambda _i: self._status.quarantined > 0,
            ),
            menu.SEPARATOR,
            item(
                "Open export folder",
                self._menu_action(self.open_export_folder),
                enabled=lambda _i: bool(self.cfg.watch.folder),
            ),
            # The default item is what a click on the icon does (the only action on XEmbed).
            item("Recent activity\u2026", self._menu_action(self.window.show), default=True),
            item("Open log folder", self._menu_action(self.open_log_folder)),
            menu.SEPARATOR,
            item(f"About {text.APP_NAME}\u2026", self._menu_action(self.about)),
            item("Quit", self._menu_action(self.request_quit)),
        )

    def _menu_action(self, action: Callable[[], object]) -> Callable[[Any, Any], None]:
        def run(_icon: Any, _item: Any) -> None:
            try:
                action()
            except Exception:
                log.exception("menu action failed")
            self._wake.set()

        return run

    def _pause_action(self, seconds: float | None) -> Callable[[Any, Any], None]:
        return self._menu_action(lambda: self.pause(seconds))

    @property
    def is_paused(self) -> bool:
        return self._status.paused_until is not None

    def pause(self, seconds: float | None) -> None:
        self.agent.pause(seconds)
        self._wake.set()

    def resume(self) -> None:
        self.agent.resume()
        self._wake.set()

    def retry(self, series_id: int) -> str:
        """Retry a series; when it is not sent through again (nothing to retry, it would be
        kept back again, its copy is gone), say why in a message box."""
        said = self.agent.retry(series_id)
        self._wake.set()
        if not said.endswith(RETRY_STARTED):
            self._message(f"{text.APP_NAME} - Retry", said)
        return said

    def retry_quarantined(self) -> int:
        """Send every quarantined series of the recent list through again; returns how many."""
        ids = [s.id for s in self.agent.recent(200) if s.state == "quarantined"]
        for series_id in ids:
            self.agent.retry(series_id)
        self._wake.set()
        return len(ids)

    def open_export_folder(self) -> None:
        if self.cfg.watch.folder:
            self._opener(Path(self.cfg.watch.folder).expanduser())

    def open_log_folder(self) -> None:
        folder = self.cfg.paths.log_dir
        folder.mkdir(parents=True, exist_ok=True)
        self._opener(folder)

    def about_text(self) -> str:
        sources = ", ".join(self.cfg.sources) or f"{self.cfg.paths.user_config} (not created yet)"
        return (
            f"{text.APP_NAME} {__version__}\n"
            "De-identifies and defaces brain MRI exports and delivers them.\n\n"
            f"Configuration: {sources}\n"
            f"Logs: {self.cfg.paths.log_dir}"
        )

    def about(self) -> None:
        self._message(f"About {text.APP_NAME}", self.about_text())

    def request_quit(self) -> bool:
        """Quit, asking first when work is in flight; returns whether quitting goes ahead."""
        if self._agent_busy():
            question = (
                "Series are being processed. Quit anyway?\n"
                "Unfinished work resumes the next time Clinic2Cloud starts."
            )
            if not self._confirm(question):
                return False
        self.quit()
        return True

    def _agent_busy(self) -> bool:
        try:
            return bool(self.agent.busy)
        except Exception:  # noqa: BLE001
            return False

    # -- life cycle -------------------------------------------------------------------------

    def quit(self) -> None:
        """Ask the tray to end (thread-safe, also from a signal handler): run() returns."""
        self._quit.set()
        self._wake.set()

    def _setup(self, icon: Any) -> None:
        icon.visible = True
        if xembed.is_xorg(icon) and not getattr(icon, "_systray_manager", True):
            log.warning(
                "no system tray found on this desktop: the agent runs, and its icon appears "
                "as soon as a tray starts (GNOME needs the AppIndicator extension)"
            )
        self._start_poller()
        supervise = getattr(self.agent, "supervise", None)  # an in-process Agent
        if callable(supervise):
            supervise("tray-poll", self._poller_alive, self._start_poller)

    def _start_poller(self) -> None:
        self._poller = threading.Thread(target=self._poll, name="tray-poll", daemon=True)
        self._poller.start()

    def _poller_alive(self) -> bool:
        """For the agent's supervisor: the poller ends by itself only when the tray quits."""
        return self._quit.is_set() or (self._poller is not None and self._poller.is_alive())

    def _shutdown_icon(self) -> None:
        self.window.close(timeout=1.0)
        if not self._loop_done.is_set():
            try:
                self.icon.stop()
            except Exception:
                log.warning("stopping the tray icon failed", exc_info=True)
        if not self._loop_done.wait(2.0) and self._dispatcher is not None:
            log.warning("the tray icon loop did not end; closing its window")
            self._dispatcher.destroy_window()
            self._loop_done.wait(2.0)
        if self._dispatcher is not None:
            self._dispatcher.close()

    def run(self) -> None:
        """Show the icon and block until :meth:`quit` (must be called on the main thread
        on macOS). The agent must already be started."""
        try:
            self.icon.run(setup=self._setup)
        finally:
            self._loop_done.set()
            # The loop is over, whatever ended it: tell pystray, or its finalizer would try
            # to stop the loop again and wait for it.
            if getattr(self.icon, "_running", False):
                self.icon._running = False
            self._quit.set()
            self._wake.set()


def _apply_autostart(cfg: Config) -> None:
    try:
        from agent.ui import autostart

        if autostart.apply(cfg.tray.autostart):
            log.info("start at login %s", "enabled" if cfg.tray.autostart else "disabled")
    except Exception:
        log.warning("cannot update the start-at-login entry", exc_info=True)


def run_tray(agent: AgentFacade, *, notifier: Notifier | None = None) -> int:
    """Start ``agent``, show the tray icon, block until Quit or SIGTERM/SIGINT; returns 0.

    Without a display or a tray backend, logs a warning and runs headless instead.
    """
    pystray = load_backend()
    if pystray is None:
        log.warning("running without a tray icon (headless); stop with Ctrl+C or SIGTERM")
        return run_headless(agent)
    # Start first: a second instance (AlreadyRunning) or a bad config fails before any icon.
    agent.start()
    try:
        app = TrayApp(agent, pystray, notifier=notifier)
    except Exception as exc:  # noqa: BLE001 -- e.g. the X server went away meanwhile
        log.warning("cannot create the tray icon (%s); running headless", exc)
        return run_headless(agent, started=True)
    _apply_autostart(agent.config)
    restore = install_signal_handlers(app.quit)
    set_quit = getattr(agent, "set_quit_handler", None)
    if set_quit is not None:
        set_quit(app.quit)  # `clinic2cloud quit` ends the tray like its Quit item
    started = time.monotonic()
    try:
        log.info("tray icon shown (%s backend)", type(app.icon).__module__.rsplit(".", 1)[-1])
        app.run()
    finally:
        app.quit()
        agent.stop(STOP_TIMEOUT)
        restore()
        log.info("tray closed after %.0f s", time.monotonic() - started)
    return 0
