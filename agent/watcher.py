"""Watching the export folder.

The watchdog handler does one thing: it puts the paths it hears about into a queue. The
``export-scanner`` thread does the rest - it looks at and reads headers, feeds the pure
:class:`~agent.series.SeriesTracker`, runs a full rescan every ``rescan_seconds`` (events
can be lost, above all on network shares), and hands stable, complete series to the agent.
It waits on the queue with a timeout set by the next deadline, never in a sleeping loop.

The scanner survives anything one file or one series can do: an exception while looking
at a path or handing on a series is logged by type and the scanner carries on; a
:class:`~agent.errors.TransientFault` from the agent (a full work area, a file that
changed while it was taken) puts the series back to wait. The agent's supervisor restarts
the thread should it die all the same (:meth:`ExportWatcher.revive`).

Every path goes through :mod:`agent.boundary`: links are never followed, FIFOs and
devices are skipped, and nothing outside the export folder is opened. Durations use the
monotonic clock: a wall clock set back does not hold a series.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from agent.boundary import Kind, is_inside, kind_of, kind_of_mode, real_root
from agent.config import WatchConfig
from agent.dicomfiles import is_complete
from agent.errors import TransientFault
from agent.exportlook import LookCache, look
from agent.logs import log_failure
from agent.series import FileState, SeriesTracker
from agent.status import IgnoredFiles
from agent.watch_report import (
    _NOISE,
    IgnoredCallback,
    PendingExport,
    WaitingReport,
)

log = logging.getLogger(__name__)
# watchdog warns when a new folder's watch is registered twice (harmless, it replaces it)
# and quotes the folder's path - an export path, which may name a patient - on stderr.
warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)

#: Called with (series key, {path: FileState}) for a stable, complete series. May raise
#: TransientFault: the series waits ``retry_after`` seconds and is looked at again.
ReadyCallback = Callable[[str, dict[str, FileState]], None]
#: Called with (series key, {path: FileState}) for a series that never became complete.
ExpiredCallback = Callable[[str, dict[str, FileState]], None]
_RESCAN = object()
_RETRY = 30.0  # seconds before a series whose hand-over failed is tried again
@dataclass(frozen=True)
class _WatchAgain:
    """Ask the scanner to look at the files of a series again (Retry of a given-up series)."""

    key: str


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


def scan_folder(root: Path, skipped: list[str] | None = None) -> dict[str, FileState]:
    """Every regular file below ``root`` with its size and mtime (lstat only, no reads).

    Links (to files or folders) are not followed and special files are not taken; their
    paths are added to ``skipped`` when given.
    """
    found: dict[str, FileState] = {}
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    kind = kind_of_mode(st.st_mode)
                    if kind is Kind.FOLDER:
                        stack.append(entry.path)
                    elif kind is Kind.FILE:
                        found[entry.path] = FileState(st.st_size, st.st_mtime_ns)
                    elif skipped is not None:
                        skipped.append(entry.path)
        except OSError:
            continue
    return found


class ExportWatcher(WaitingReport):
    """Finds stable, complete series in the export folder and hands them on."""

    def __init__(
        self,
        cfg: WatchConfig,
        series_key: Callable[[str, str], str],
        path_hash: Callable[[str], str],
        handled: dict[str, tuple[int, int, str]],
        on_ready: ReadyCallback,
        on_expired: ExpiredCallback,
        on_ignored: IgnoredCallback | None = None,
        looks: LookCache | None = None,
    ) -> None:
        self.cfg = cfg
        self.root = Path(cfg.folder).expanduser()
        self._real_root = real_root(self.root)
        self._series_key = series_key
        self._path_hash = path_hash
        #: path hash -> (size, mtime_ns, series key) of files already in a series version.
        self._handled = handled
        self._on_ready = on_ready
        self._on_expired = on_expired
        self.tracker = SeriesTracker(cfg.stable_seconds, cfg.max_wait_seconds)
        self._known: dict[str, FileState] = {}
        self._handled_paths: dict[str, set[str]] = {}  # series key -> handled paths present
        self._noted: set[str] = set()  # path hashes already logged as skipped
        self._on_ignored = on_ignored
        #: What was read of each file (series, whole or not, digest), shared with staging
        #: (:mod:`agent.exportlook`): each exported file is read once while it is quiet.
        self.looks = looks if looks is not None else LookCache()
        #: Called (from the scanner thread) when a series is first seen: the agent starts
        #: its process pool then, while the series becomes stable.
        self.on_first_sighting: Callable[[], None] | None = None
        #: Files without a DICOM header, until they have been quiet for stable_seconds
        #: (a file being written has no header yet): path -> (state, monotonic time seen).
        self._unsettled: dict[str, tuple[FileState, float]] = {}
        #: Files settled as not DICOM: path -> whether it is an archive. Counted, not sent.
        self._not_dicom: dict[str, bool] = {}
        self._reported = IgnoredFiles()
        self._incomplete: dict[str, int] = {}  # series key -> incomplete files at last check
        #: What the status shows of the series being waited for; replaced, never mutated.
        self.pending: tuple[PendingExport, ...] = ()
        #: Called from the scanner thread with :attr:`pending` each time it is published.
        self.on_publish: Callable[[tuple[PendingExport, ...]], None] | None = None
        #: series key -> (wall time first seen, tracker's last change, wall time of it).
        self._walls: dict[str, tuple[float, float, float]] = {}
        self._events: queue.Queue[object] = queue.Queue()
        self._stop = threading.Event()
        self._observer: BaseObserver | None = None
        self._thread: threading.Thread | None = None
        self.scans = 0
        #: Monotonic time of the scanner's last pass (the supervisor reads it).
        self.last_pass = time.monotonic()

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._start_observer()
        self._start_scanner()

    def _start_observer(self) -> None:
        observer: BaseObserver = PollingObserver(timeout=5) if self.cfg.polling else Observer()
        observer.schedule(_EventsToQueue(self._events), str(self.root), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def _start_scanner(self) -> None:
        self._thread = threading.Thread(target=self._run, name="export-scanner", daemon=True)
        self._thread.start()

    def dead_parts(self) -> list[str]:
        """The parts of the watcher whose thread ended while it should run."""
        if self._stop.is_set():
            return []
        dead = []
        if self._thread is not None and not self._thread.is_alive():
            dead.append("export-scanner")
        if self._observer is not None and not self._observer.is_alive():
            dead.append("export-events")
        return dead

    def revive(self) -> list[str]:
        """Restart the threads that died (called by the agent's supervisor); their names."""
        dead = self.dead_parts()
        if "export-events" in dead:
            self._start_observer()
            self._events.put(_RESCAN)  # events were lost while it was down
        if "export-scanner" in dead:
            self._start_scanner()
        return dead

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
            self.last_pass = time.monotonic()
            if time.monotonic() >= next_rescan:
                self._guarded("a rescan of the export folder", self._full_scan)
                next_rescan = time.monotonic() + self.cfg.rescan_seconds
            self._guarded("checking series for completeness", self._check_due)
            self._guarded("settling files that are not DICOM", self._settle_unknown)
            self._guarded("publishing the series waited for", self._publish)
            wait = next_rescan - time.monotonic()
            deadline = self.tracker.next_deadline(time.monotonic())
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
                self._guarded("looking at an exported file", functools.partial(
                    self._look_at, path))

    def _guarded(self, what: str, step: Callable[[], None]) -> None:
        """Run one step of the scanner; an exception is logged by type, never fatal."""
        try:
            step()
        except Exception as exc:  # noqa: BLE001 -- the scanner must survive any one item
            log_failure(log, f"{what} failed; the scanner carries on", exc)

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
            elif isinstance(item, _WatchAgain):
                rescan = self._forget_handled(item.key) or rescan
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                return paths, rescan

    def _full_scan(self) -> None:
        self.scans += 1
        skipped: list[str] = []
        found = scan_folder(self.root, skipped)
        for path in skipped:
            self._note_skipped(path, kind_of(path)[0])
        for gone in set(self._known) - set(found):
            self._forget(gone)
        for path, state in found.items():
            if self._known.get(path) != state:
                self._observe(path, state)

    def _forget(self, path: str) -> None:
        self._known.pop(path, None)
        self.looks.drop(path)
        self.tracker.forget(path)
        self._drop_unknown(path)
        for paths in self._handled_paths.values():
            paths.discard(path)

    def _look_at(self, path: str) -> None:
        kind, st = kind_of(path)
        if kind is Kind.GONE or st is None:
            self._forget(path)
            return
        if kind is not Kind.FILE or not is_inside(path, self._real_root):
            self._forget(path)
            self._note_skipped(path, kind)
            return
        state = FileState(st.st_size, st.st_mtime_ns)
        if self._known.get(path) != state:
            self._observe(path, state)

    def _note_skipped(self, path: str, kind: Kind) -> None:
        """One visible line per skipped entry (by keyed hash: paths may name patients)."""
        if kind is Kind.FOLDER or kind is Kind.GONE:
            return
        phash = self._path_hash(path)
        if phash in self._noted:
            return
        self._noted.add(phash)
        what = {Kind.LINK: "a symbolic link (links are never followed)",
                Kind.SPECIAL: "a FIFO, device or socket"}.get(
            kind, "a file whose real location is outside the export folder")
        log.warning("skipping %s in the export folder (entry %s)", what, phash[:12])

    def _observe(self, path: str, state: FileState) -> None:
        self._known[path] = state
        phash = self._path_hash(path)
        done = self._handled.get(phash)
        if done is not None and done[:2] == (state.size, state.mtime_ns):
            self._handled_paths.setdefault(done[2], set()).add(path)
            return
        try:
            found = look(Path(path), self.root)
        except OSError:
            return  # vanished, locked or swapped for a link: the next look tells
        header = found.header
        if header is None:
            # Maybe a DICOM file whose header is not written yet: keep it in view (it is
            # looked at again at the next change) and count it as "not DICOM" only once it
            # has been quiet for stable_seconds (see _settle_unknown).
            self.tracker.forget(path)
            self._not_dicom.pop(path, None)
            if os.path.basename(path).lower() not in _NOISE:
                self._unsettled[path] = (state, time.monotonic())
            return
        self._drop_unknown(path)
        self.looks.put(path, found)
        key = self._series_key(header.study_uid, header.series_uid)
        if self.on_first_sighting is not None and key not in self.tracker:
            self._guarded("telling that an export began", self.on_first_sighting)
        self.tracker.observe(path, key, state, time.monotonic())

    def _check_due(self) -> None:
        now = time.monotonic()
        for due in self.tracker.due(now):
            if self._stop.is_set():
                return
            # A file read whole at the state it still has is not read again.
            incomplete = [p for p, st in due.files.items()
                          if not self.looks.whole(p, st) and not is_complete(Path(p), self.root)]
            if not incomplete:
                self._incomplete.pop(due.key, None)
                self._hand_on(due.key, due.files)
                continue
            self._incomplete[due.key] = len(incomplete)
            if self.tracker.expired(due.key, now):
                self._incomplete.pop(due.key, None)
                self.tracker.take(due.key)
                self._mark_handled(due.key, due.files)
                self._call(self._on_expired, due.key, due.files, due.files)
            else:
                self.tracker.postpone(due.key, now)

    def _hand_on(self, key: str, due_files: dict[str, FileState]) -> None:
        self.tracker.take(key)
        self._publish()  # no longer waited for: the status must not show it meanwhile
        files = dict(due_files)
        for path in self._handled_paths.get(key, set()):
            if path not in files and path in self._known:
                files[path] = self._known[path]
        self._mark_handled(key, files)
        self._call(self._on_ready, key, files, due_files)

    def _call(self, callback: ReadyCallback, key: str, files: dict[str, FileState],
              due_files: dict[str, FileState]) -> None:
        """Hand a series on; if that fails, the series waits and is looked at again."""
        try:
            callback(key, files)
        except TransientFault as fault:
            # Not taken after all (the work area is full, a file changed): wait and retry.
            delay = fault.retry_after if fault.retry_after is not None else _RETRY
            log.info("a series was not taken yet (%s); looking again in %.0f s",
                     fault.title, delay)
            self._give_back(key, due_files, delay)
        except Exception as exc:  # noqa: BLE001 -- one series must not stop the scanner
            log_failure(log, "handing a series on failed; it is tried again later", exc)
            self._give_back(key, due_files, _RETRY * 10)

    def _give_back(self, key: str, due_files: dict[str, FileState], delay: float) -> None:
        """Put a series back to waiting: its files are looked at afresh (a file that changed
        restarts the quiet period) and the series is due again after ``delay``."""
        for path in due_files:
            self._handled.pop(self._path_hash(path), None)
            self._handled_paths.get(key, set()).discard(path)
            self._known.pop(path, None)
            self._look_at(path)
        self.tracker.retry_later(key, time.monotonic(), delay)

    def _mark_handled(self, key: str, files: dict[str, FileState]) -> None:
        for path, state in files.items():
            self._handled[self._path_hash(path)] = (state.size, state.mtime_ns, key)
            self._handled_paths.setdefault(key, set()).add(path)

    # -- what the status shows (issue 15) ----------------------------------------------------

    def watch_again(self, key: str) -> None:
        """Take the files of series ``key`` into view again, as if new (thread-safe)."""
        self._events.put(_WatchAgain(key))

    def _forget_handled(self, key: str) -> bool:
        paths = self._handled_paths.pop(key, set())
        for phash in [h for h, (_s, _m, k) in self._handled.items() if k == key]:
            del self._handled[phash]
        for path in paths:
            self._known.pop(path, None)  # the next full scan observes it afresh
        return True
