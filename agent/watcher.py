"""Watching the export folder.

The watchdog handler does one thing: it puts the paths it hears about into a queue. The
``export-scanner`` thread does the rest - it stats and reads headers, feeds the pure
:class:`~agent.series.SeriesTracker`, runs a full rescan every ``rescan_seconds`` (events
can be lost, above all on network shares), and hands stable, complete series to the agent.
It waits on the queue with a timeout set by the next deadline, never in a sleeping loop.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from agent.config import WatchConfig
from agent.dicomfiles import is_complete, read_header
from agent.logs import log_failure
from agent.series import FileState, SeriesTracker

log = logging.getLogger(__name__)

#: Called with (series key, {path: FileState}) for a stable, complete series.
ReadyCallback = Callable[[str, dict[str, FileState]], None]
#: Called with (series key, {path: FileState}) for a series that never became complete.
ExpiredCallback = Callable[[str, dict[str, FileState]], None]
_RESCAN = object()


class _EventsToQueue(FileSystemEventHandler):
    """Translates filesystem events into paths on a queue; nothing else."""

    def __init__(self, events: queue.Queue[object]) -> None:
        self.events = events

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            if event.event_type in ("moved", "created"):
                self.events.put(_RESCAN)  # a folder moved in: its files raise no events
            return
        self.events.put(os.fsdecode(event.src_path))
        dest = getattr(event, "dest_path", "")
        if dest:
            self.events.put(os.fsdecode(dest))


def scan_folder(root: Path) -> dict[str, FileState]:
    """Every regular file below ``root`` with its size and mtime (stat only, no reads)."""
    found: dict[str, FileState] = {}
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            st = entry.stat(follow_symlinks=False)
                            found[entry.path] = FileState(st.st_size, st.st_mtime_ns)
                    except OSError:
                        continue
        except OSError:
            continue
    return found


class ExportWatcher:
    """Finds stable, complete series in the export folder and hands them on."""

    def __init__(
        self,
        cfg: WatchConfig,
        series_key: Callable[[str, str], str],
        path_hash: Callable[[str], str],
        handled: dict[str, tuple[int, int, str]],
        on_ready: ReadyCallback,
        on_expired: ExpiredCallback,
    ) -> None:
        self.cfg = cfg
        self.root = Path(cfg.folder).expanduser()
        self._series_key = series_key
        self._path_hash = path_hash
        #: path hash -> (size, mtime_ns, series key) of files already in a series version.
        self._handled = handled
        self._on_ready = on_ready
        self._on_expired = on_expired
        self.tracker = SeriesTracker(cfg.stable_seconds, cfg.max_wait_seconds)
        self._known: dict[str, FileState] = {}
        self._handled_paths: dict[str, set[str]] = {}  # series key -> handled paths present
        self._ignored: set[str] = set()  # path hashes of non-DICOM files, logged once
        self._events: queue.Queue[object] = queue.Queue()
        self._stop = threading.Event()
        self._observer: BaseObserver | None = None
        self._thread: threading.Thread | None = None
        self.scans = 0

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        observer: BaseObserver = PollingObserver(timeout=5) if self.cfg.polling else Observer()
        observer.schedule(_EventsToQueue(self._events), str(self.root), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._thread = threading.Thread(target=self._run, name="export-scanner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._events.put(None)
        if self._observer is not None:
            self._observer.stop()
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._observer is not None:
            self._observer.join(max(0.0, deadline - time.monotonic()))

    def rescan_now(self) -> None:
        self._events.put(_RESCAN)

    # -- the scanner thread ----------------------------------------------------------------

    def _run(self) -> None:
        next_rescan = time.monotonic()  # the first pass is a full scan
        while not self._stop.is_set():
            if time.monotonic() >= next_rescan:
                self._full_scan()
                next_rescan = time.monotonic() + self.cfg.rescan_seconds
            self._check_due()
            wait = next_rescan - time.monotonic()
            deadline = self.tracker.next_deadline(time.time())
            if deadline is not None:
                wait = min(wait, deadline + 0.05)
            try:
                item = self._events.get(timeout=max(0.05, wait))
            except queue.Empty:
                continue
            batch = self._drain(item)
            if batch is None:
                return
            paths, rescan = batch
            if rescan:
                next_rescan = time.monotonic()
            for path in paths:
                self._look_at(path)

    def _drain(self, first: object) -> tuple[set[str], bool] | None:
        """The paths and rescan request of a burst of events (handled as one batch);
        None when the stop sentinel is among them."""
        paths: set[str] = set()
        rescan = False
        item: object = first
        while True:
            if item is None:
                return None
            if item is _RESCAN:
                rescan = True
            elif isinstance(item, str):
                paths.add(item)
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                return paths, rescan

    def _full_scan(self) -> None:
        self.scans += 1
        found = scan_folder(self.root)
        for gone in set(self._known) - set(found):
            self._known.pop(gone, None)
            self.tracker.forget(gone)
            for paths in self._handled_paths.values():
                paths.discard(gone)
        for path, state in found.items():
            if self._known.get(path) != state:
                self._observe(path, state)

    def _look_at(self, path: str) -> None:
        try:
            st = os.stat(path)
        except OSError:
            self._known.pop(path, None)
            self.tracker.forget(path)
            return
        if not os.path.isfile(path):
            return
        state = FileState(st.st_size, st.st_mtime_ns)
        if self._known.get(path) != state:
            self._observe(path, state)

    def _observe(self, path: str, state: FileState) -> None:
        self._known[path] = state
        phash = self._path_hash(path)
        done = self._handled.get(phash)
        if done is not None and done[:2] == (state.size, state.mtime_ns):
            self._handled_paths.setdefault(done[2], set()).add(path)
            return
        try:
            header = read_header(Path(path))
        except OSError:
            return  # vanished or locked: the next event or rescan tells
        if header is None:
            # Maybe a DICOM file whose header is not written yet: keep it in view (it is
            # stat'ed again at the next change); log the first sighting only.
            if phash not in self._ignored:
                self._ignored.add(phash)
                log.info("ignoring a file that is not a DICOM image (file %s)", phash[:12])
            self.tracker.forget(path)
            return
        self.tracker.observe(path, self._series_key(header.study_uid, header.series_uid),
                             state, time.time())

    def _check_due(self) -> None:
        now = time.time()
        for due in self.tracker.due(now):
            if self._stop.is_set():
                return
            incomplete = [p for p in due.files if not is_complete(Path(p))]
            if incomplete:
                if self.tracker.expired(due.key, now):
                    self.tracker.take(due.key)
                    self._mark_handled(due.key, due.files)
                    self._on_expired(due.key, due.files)
                else:
                    self.tracker.postpone(due.key, now)
                continue
            self.tracker.take(due.key)
            files = dict(due.files)
            for path in self._handled_paths.get(due.key, set()):
                if path not in files and path in self._known:
                    files[path] = self._known[path]
            self._mark_handled(due.key, files)
            try:
                self._on_ready(due.key, files)
            except Exception as exc:  # noqa: BLE001 -- the scanner must survive whatever happens
                log_failure(log, "handing a stable series to the pipeline failed", exc)

    def _mark_handled(self, key: str, files: dict[str, FileState]) -> None:
        for path, state in files.items():
            self._handled[self._path_hash(path)] = (state.size, state.mtime_ns, key)
            self._handled_paths.setdefault(key, set()).add(path)
