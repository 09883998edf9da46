"""The "Recent activity" window (Tk): what was delivered, what waits, what needs a person.

It lists the exports being waited for ("waiting for 3 of 180 files since 12:03"), then
recent series - time, modality, who and what they are (patient name, description, scan
date, export folder: read at display time from the local copies, unless
``[display] local_identity = false``), the pseudonym, state, and the before/after face
render when there is one - with a Retry button, the reason and what to do on quarantined
series, and the policy reason on withheld ones (a calm colour: nobody needs to act).
Above the list: the agent's state and counts, and the controls of the tray menu (pause,
resume, open export folder, quit), because XEmbed trays have no menu and a click on the
icon opens this window instead.

Tk runs in a thread of its own, created by :meth:`RecentActivityWindow.show`; every Tk
call happens on that thread, other threads talk to it through a queue. Data comes from
callables (the Agent facade's ``recent()`` and ``status()``), read every couple of seconds.
"""

from __future__ import annotations

import base64
import io
import logging
import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from agent.status import AgentStatus, SeriesSummary
from agent.ui import icons, text

log = logging.getLogger(__name__)

#: Height of the before/after thumbnail in a row, in pixels.
THUMB_HEIGHT = 72
STATE_COLOURS = {
    "delivered": "#1b7f35",
    "quarantined": "#c62828",
    "failed": "#c62828",
    # Withheld by policy: its own calm colour, never the alarm's.
    "withheld": "#4f6d7a",
    "waiting": "#9a6700",
    "attention": "#c62828",
}
#: The colour of the local identity line (patient name ...).
IDENTITY_COLOUR = "#0d47a1"


@dataclass
class WindowActions:
    """What the window's buttons do; the tray wires them to the Agent facade."""

    retry: Callable[[int], object]
    pause: Callable[[float | None], None]
    resume: Callable[[], None]
    open_export: Callable[[], None]
    open_logs: Callable[[], None]
    about: Callable[[], None]
    #: May ask first and decline (work in flight), hence any return value.
    quit: Callable[[], object]


def photo_data(image: Image.Image) -> str:
    """An image as base64 PNG, which Tk 8.6's PhotoImage reads without PIL.ImageTk."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail(path: str, height: int = THUMB_HEIGHT) -> Image.Image | None:
    """The render at ``path`` scaled to ``height``; None when absent or unreadable."""
    if not path:
        return None
    try:
        with Image.open(path) as img:
            img.load()
            scale = height / img.height
            return img.convert("RGB").resize(
                (max(1, round(img.width * scale)), height), Image.Resampling.LANCZOS
            )
    except (OSError, ValueError, ZeroDivisionError):
        log.debug("render %s cannot be shown", path, exc_info=True)
        return None


class RecentActivityWindow:
    """One window at most; :meth:`show` opens it or brings it to the front."""

    def __init__(
        self,
        *,
        recent: Callable[[], list[SeriesSummary]],
        status: Callable[[], AgentStatus],
        actions: WindowActions,
        refresh_ms: int = 2000,
        limit: int = 50,
    ) -> None:
        self._recent = recent
        self._status = status
        self._actions = actions
        self._refresh_ms = refresh_ms
        self._limit = limit
        self._requests: queue.Queue[str] = queue.Queue()
        self._layout: dict[str, tuple[int, int]] = {}
        self._texts: list[str] = []
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._opened = threading.Event()
        self._rendered = threading.Event()

    # Public, thread-safe ---------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._opened.is_set()

    def show(self) -> None:
        """Open the window (in its own thread) or raise it if it is already open."""
        if sys.platform == "darwin":
            # Tk must own the main thread on macOS, where pystray's run loop lives.
            log.warning("the Recent activity window is not available on macOS yet")
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                self._requests.put("raise")
                return
            self._opened.clear()
            self._rendered.clear()
            self._thread = threading.Thread(
                target=self._main, name="recent-activity-window", daemon=True
            )
            self._thread.start()

    def refresh(self) -> None:
        """Re-read the data now (e.g. after an agent event)."""
        self._requests.put("refresh")

    def close(self, timeout: float = 3.0) -> None:
        """Close the window and wait for its thread to end."""
        thread = self._thread
        if thread is None:
            return
        self._requests.put("close")
        thread.join(timeout)

    def wait_rendered(self, timeout: float = 10.0) -> bool:
        """Block until the window shows its first data (for tests and screenshots)."""
        return self._rendered.wait(timeout)

    def texts(self) -> list[str]:
        """Every line of text the window drew last, top to bottom (for tests)."""
        with self._lock:
            return list(self._texts)

    def layout(self) -> dict[str, tuple[int, int]]:
        """Screen coordinates of the centre of each button (``"Resume"``, ``"Retry 3"`` ...)
        and of the window (``"window"``) as last drawn: for UI automation and tests."""
        with self._lock:
            return dict(self._layout)

    # Tk thread -------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            import tkinter as tk
        except ImportError:
            log.warning("Tk is not available: the Recent activity window cannot be shown")
            return
        try:
            root = tk.Tk(className="Clinic2Cloud")
        except tk.TclError as exc:
            log.warning("cannot open the Recent activity window: %s", exc)
            return
        try:
            _View(root, self).run()
        except Exception:
            log.exception("the Recent activity window failed")
        finally:
            self._opened.clear()
            try:
                root.destroy()
            except tk.TclError:
                pass


class _View:
    """The widgets of one open window; lives and dies on the Tk thread."""

    def __init__(self, root: Any, owner: RecentActivityWindow) -> None:
        import tkinter as tk
        from tkinter import ttk

        self.tk = tk
        self.root = root
        self.owner = owner
        self._images: list[Any] = []  # Tk forgets images nobody references
        self._shown: tuple[Any, ...] | None = None
        root.title(f"{text.APP_NAME} - Recent activity")
        root.geometry("820x520")
        root.minsize(600, 300)
        root.protocol("WM_DELETE_WINDOW", root.quit)
        style = ttk.Style(root)
        if "clam" in style.theme_names():
            style.theme_use("clam")
        # Buttons as wide as their text: clam's default minimum pushes the last ones out.
        style.configure("TButton", width=0, padding=(8, 3))

        head = ttk.Frame(root, padding=(10, 8))
        head.pack(fill="x")
        self.state_icon = ttk.Label(head)
        self.state_icon.pack(side="left", padx=(0, 10))
        words = ttk.Frame(head)
        words.pack(side="left", fill="x", expand=True)
        self.state_label = ttk.Label(words, font=("TkDefaultFont", 12, "bold"))
        self.state_label.pack(anchor="w")
        self.counts_label = ttk.Label(words)
        self.counts_label.pack(anchor="w")
        self.ignored_label = ttk.Label(words, foreground="#9a6700")
        self.ignored_label.pack(anchor="w")

        bar = ttk.Frame(root, padding=(10, 0, 10, 6))
        bar.pack(fill="x")
        acts = owner._actions
        ttk.Label(bar, text="Pause:").pack(side="left", padx=(0, 4))
        for label, command in (
            ("1 hour", lambda: acts.pause(3600.0)),
            ("8 hours", lambda: acts.pause(8 * 3600.0)),
            ("Until resumed", lambda: acts.pause(None)),
            ("Resume", acts.resume),
        ):
            ttk.Button(bar, text=label, command=self._then_refresh(command)).pack(
                side="left", padx=(0, 4)
            )
        ttk.Button(bar, text="Quit", command=acts.quit).pack(side="right")
        for label, command in (
            ("About", acts.about),
            ("Log folder", acts.open_logs),
            ("Export folder", acts.open_export),
        ):
            ttk.Button(bar, text=label, command=self._then_refresh(command)).pack(
                side="right", padx=(0, 4)
            )
        self._buttons: dict[str, Any] = {}
        for child in bar.winfo_children():
            if isinstance(child, ttk.Button):
                self._buttons[str(child.cget("text"))] = child

        ttk.Separator(root).pack(fill="x")
        # A canvas with a frame inside: rows hold images and buttons, which a Treeview cannot.
        body = ttk.Frame(root)
        body.pack(fill="both", expand=True)
        self.canvas = tk.Canvas(body, highlightthickness=0, background="white")
        scroll = ttk.Scrollbar(body, orient="vertical", command=self.canvas.yview)
        self.canvas.configure(yscrollcommand=scroll.set)
        scroll.pack(side="right", fill="y")
        self.canvas.pack(side="left", fill="both", expand=True)
        self.rows = tk.Frame(self.canvas, background="white")
        self.rows.grid_columnconfigure(0, weight=1)
        inner = self.canvas.create_window((0, 0), window=self.rows, anchor="nw")
        self.rows.bind(
            "<Configure>",
            lambda _e: self.canvas.configure(scrollregion=self.canvas.bbox("all")),
        )
        # Rows as wide as the window, whatever its size.
        self.canvas.bind("<Configure>", lambda e: self.canvas.itemconfigure(inner, width=e.width))
        self.canvas.bind_all("<Button-4>", lambda _e: self.canvas.yview_scroll(-2, "units"))
        self.canvas.bind_all("<Button-5>", lambda _e: self.canvas.yview_scroll(2, "units"))
        self.canvas.bind_all(
            "<MouseWheel>", lambda e: self.canvas.yview_scroll(-e.delta // 120, "units")
        )

    def _then_refresh(self, command: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                command()
            except Exception:
                log.exception("window action failed")
            self.update(force=True)

        return run

    def run(self) -> None:
        self.update(force=True)
        self.owner._opened.set()
        self.root.after(100, self._poll_requests)
        self.root.after(self.owner._refresh_ms, self._tick)
        self.root.deiconify()
        self.root.lift()
        self.root.mainloop()

    def _poll_requests(self) -> None:
        try:
            while True:
                request = self.owner._requests.get_nowait()
                if request == "close":
                    self.root.quit()
                    return
                if request == "raise":
                    self.root.deiconify()
                    self.root.lift()
                    self.root.focus_force()
                elif request == "refresh":
                    self.update()
        except queue.Empty:
            pass
        self.root.after(100, self._poll_requests)

    def _tick(self) -> None:
        self.update()
        self.root.after(self.owner._refresh_ms, self._tick)

    def update(self, force: bool = False) -> None:
        """Re-read status and series; rebuild the rows only when something changed."""
        try:
            status = self.owner._status()
            series = self.owner._recent()[: self.owner._limit]
        except Exception:
            log.warning("cannot read the agent's recent activity", exc_info=True)
            return
        key = (status, tuple(series))
        if not force and key == self._shown:
            return
        self._shown = key
        self._images = []
        icon = self.tk.PhotoImage(
            master=self.root, data=photo_data(icons.render_icon(status.state, 40, status.progress))
        )
        self._images.append(icon)
        self.state_icon.configure(image=icon)
        self.state_label.configure(text=text.state_line(status))
        self.counts_label.configure(text=text.counts_line(status))
        self.ignored_label.configure(text=text.ignored_line(status))
        self._drawn = [text.state_line(status), text.counts_line(status),
                       text.ignored_line(status)]
        for child in self.rows.winfo_children():
            child.destroy()
        self._retry: dict[int, Any] = {}
        for row, waiting in enumerate(status.waiting):
            self._waiting_row(row, waiting)
        offset = len(status.waiting)
        if not series and not offset:
            self.tk.Label(
                self.rows,
                text="Nothing yet. Exported series appear here as they are processed.",
                background="white",
                foreground="#555555",
                padx=12,
                pady=12,
            ).grid(row=0, column=0, sticky="w")
        for row, summary in enumerate(series):
            self._row(row + offset, summary)
        self.root.update_idletasks()
        with self.owner._lock:
            self.owner._texts = [t for t in self._drawn if t]
        self._record_layout()
        self.owner._rendered.set()

    def _record_layout(self) -> None:
        def centre(widget: Any) -> tuple[int, int]:
            return (
                widget.winfo_rootx() + widget.winfo_width() // 2,
                widget.winfo_rooty() + widget.winfo_height() // 2,
            )

        layout = {name: centre(w) for name, w in self._buttons.items()}
        layout["window"] = centre(self.root)
        layout.update({f"Retry {sid}": centre(w) for sid, w in self._retry.items()})
        with self.owner._lock:
            self.owner._layout = layout

    def _row(self, row: int, summary: SeriesSummary) -> None:
        tk = self.tk
        bg = "white" if row % 2 == 0 else "#f3f5f7"
        frame = tk.Frame(self.rows, background=bg, padx=8, pady=4)
        frame.grid(row=row, column=0, sticky="we")
        when, modality, pseudonym, state, detail = text.series_row(summary)
        thumb = thumbnail(summary.render)
        if summary.state == "withheld":
            label = tk.Label(frame, text="not sent\n(policy)", width=14, height=4,
                             background="#e3eaee", foreground=STATE_COLOURS["withheld"])
        elif thumb is not None:
            photo = tk.PhotoImage(master=self.root, data=photo_data(thumb))
            self._images.append(photo)
            label = tk.Label(frame, image=photo, background=bg, cursor="hand2")
            label.bind("<Button-1>", lambda _e, p=summary.render: self._enlarge(p))
        else:
            label = tk.Label(
                frame, text="no render", width=14, height=4, background="#e6e8ea",
                foreground="#777777",
            )
        label.grid(row=0, column=0, rowspan=4, padx=(0, 10))
        title = f"{when}   {modality}   {text.series_title(summary)}"
        colour = STATE_COLOURS.get(summary.state, "#333333")
        line = state if not detail else f"{state} - {detail}"
        lines: list[tuple[str, str, Any]] = [
            (title, "#000000", ("TkDefaultFont", 11, "bold"))]
        identity = text.identity_line(summary.local)
        if identity:
            lines.append((f"{identity}   ({pseudonym})", IDENTITY_COLOUR, None))
        lines.append((line, colour, None))
        if summary.action:
            lines.append((f"What to do: {summary.action}", "#333333", None))
        self._lines(frame, bg, lines)
        if summary.state == "quarantined":
            retry = self.owner._actions.retry
            series_id = summary.id
            button = tk.Button(
                frame, text="Retry", command=self._then_refresh(lambda: retry(series_id))
            )
            button.grid(row=0, column=2, rowspan=len(lines), padx=(10, 0))
            self._retry[summary.id] = button
        # The same thumbnail column in every row, rendered or not.
        frame.grid_columnconfigure(0, minsize=THUMB_HEIGHT * 2 + 16)
        frame.grid_columnconfigure(1, weight=1)

    def _lines(self, frame: Any, bg: str, lines: list[tuple[str, str, Any]]) -> None:
        for n, (words, colour, font) in enumerate(lines):
            label = self.tk.Label(frame, text=words, background=bg, foreground=colour,
                                  anchor="w", justify="left", wraplength=560)
            if font is not None:
                label.configure(font=font)
            label.grid(row=n, column=1, sticky="w")
            self._drawn.append(words)

    def _waiting_row(self, row: int, waiting: Any) -> None:
        """An export still being written: what is missing, since when, and who it is."""
        bg = "#fff8e1"
        frame = self.tk.Frame(self.rows, background=bg, padx=8, pady=4)
        frame.grid(row=row, column=0, sticky="we")
        when, title, sentence = text.waiting_row(waiting)
        self.tk.Label(frame, text="waiting", width=14, height=3, background="#ffe082",
                      foreground="#5d4037").grid(row=0, column=0, rowspan=3, padx=(0, 10))
        lines: list[tuple[str, str, Any]] = [
            (f"{when}   {title}", "#000000", ("TkDefaultFont", 11, "bold"))]
        identity = text.identity_line(waiting.local)
        if identity:
            lines.append((identity, IDENTITY_COLOUR, None))
        lines.append((sentence, STATE_COLOURS["attention" if waiting.attention
                                              else "waiting"], None))
        self._lines(frame, bg, lines)
        frame.grid_columnconfigure(0, minsize=THUMB_HEIGHT * 2 + 16)
        frame.grid_columnconfigure(1, weight=1)

    def _enlarge(self, path: str) -> None:
        """Show the render at a readable size in a window of its own."""
        img = thumbnail(path, height=480)
        if img is None:
            return
        top = self.tk.Toplevel(self.root)
        top.title(f"{text.APP_NAME} - before / after")
        photo = self.tk.PhotoImage(master=top, data=photo_data(img))
        label = self.tk.Label(top, image=photo)
        label.image = photo  # type: ignore[attr-defined]  # keep a reference for Tk
        label.pack()


def ask_yes_no(title: str, question: str, timeout: float = 120.0) -> bool:
    """A modal yes/no question on a Tk root of its own thread; False when Tk is unavailable.

    Used by the tray menu (Quit while work is in flight), whose callbacks run on the tray
    backend's thread where a Tk main loop must not live.
    """
    if sys.platform == "darwin":
        return _osascript_dialog(title, question, ("Cancel", "Yes"), timeout) == "Yes"
    answer: list[bool] = []

    def ask() -> None:
        try:
            import tkinter as tk
            from tkinter import messagebox

            root = tk.Tk(className="Clinic2Cloud")
            root.withdraw()
            try:
                answer.append(bool(messagebox.askyesno(title, question, parent=root)))
            finally:
                root.destroy()
        except Exception:
            log.warning("cannot ask %r", question, exc_info=True)

    thread = threading.Thread(target=ask, name="question", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer and answer[0])


def show_message(title: str, message: str) -> None:
    """An information box on a thread of its own (returns at once)."""
    if sys.platform == "darwin":
        threading.Thread(
            target=_osascript_dialog, args=(title, message, ("OK",)), daemon=True
        ).start()
        return

    def show() -> None:
        try:
            import tkinter as tk
            from tkinter import messagebox

            root = tk.Tk(className="Clinic2Cloud")
            root.withdraw()
            try:
                messagebox.showinfo(title, message, parent=root)
            finally:
                root.destroy()
        except Exception:
            log.warning("cannot show %r", title, exc_info=True)

    threading.Thread(target=show, name="message", daemon=True).start()


def _osascript_dialog(
    title: str, message: str, buttons: tuple[str, ...], timeout: float = 120.0
) -> str:
    """A native macOS dialog (Tk cannot run off the main thread there); the button chosen."""
    import subprocess

    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    script = (
        f"display dialog {quoted(message)} with title {quoted(title)} "
        f"buttons {{{', '.join(quoted(b) for b in buttons)}}} default button {len(buttons)}"
    )
    try:
        out = subprocess.run(
            ["osascript", "-e", script], capture_output=True, text=True, timeout=timeout
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        log.warning("cannot show a dialog with osascript", exc_info=True)
        return ""
    return out.strip().rpartition(":")[2]


def open_path(path: Path) -> None:
    """Open a folder in the platform's file manager (non-blocking)."""
    import os
    import subprocess

    if sys.platform == "win32":
        os.startfile(path)  # type: ignore[attr-defined]  # Windows only
        return
    command = "open" if sys.platform == "darwin" else "xdg-open"
    try:
        subprocess.Popen(
            [command, str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        log.warning("cannot open %s with %s", path, command)
