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
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from agent.config import WatchConfig
from agent.dicomfiles import is_complete, read_header
from agent.logs import log_failure
from agent.messages import ignored_sentence
from agent.series import FileState, SeriesTracker
from agent.status import IgnoredFiles

log = logging.getLogger(__name__)
# watchdog warns when a new folder's watch is registered twice (harmless, it replaces it)
# and quotes the folder's path - an export path, which may name a patient - on stderr.
warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)

#: Called with (series key, {path: FileState}) for a stable, complete series.
ReadyCallback = Callable[[str, dict[str, FileState]], None]
#: Called with (series key, {path: FileState}) for a series that never became complete.
ExpiredCallback = Callable[[str, dict[str, FileState]], None]
#: Called (from the scanner thread) when more files settled as "not DICOM, not sent".
IgnoredCallback = Callable[[IgnoredFiles], None]
_RESCAN = object()
#: File names that viewers and desktops leave beside exports: never counted as "not sent".
_NOISE = {"dicomdir", "thumbs.db", "desktop.ini", ".ds_store"}
#: Archive signatures and names: a person must unpack these, we never open them.
_ARCHIVE_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"7z\xbc\xaf", b"Rar!", b"\x1f\x8b")
_ARCHIVE_SUFFIXES = (".zip", ".7z", ".rar", ".tar", ".tgz", ".gz", ".tar.gz", ".bz2", ".xz")


@dataclass(frozen=True)
class PendingExport:
    """A series the watcher waits for, as published to the status (memory only: paths)."""

    key: str
    paths: tuple[str, ...]
    #: Files found incomplete at the last completeness check; None before the first.
    incomplete: int | None
    #: Wall-clock times of the first file seen and of the last change.
    since: float
    last_change: float


@dataclass(frozen=True)
class _WatchAgain:
    """Ask the scanner to look at the files of a series again (Retry of a given-up series)."""

    key: str


def is_archive(path: str) -> bool:
    """Whether a file is a zip or another archive (by name or by its first bytes)."""
    if path.lower().endswith(_ARCHIVE_SUFFIXES):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head.startswith(_ARCHIVE_MAGIC)


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
        on_ignored: IgnoredCallback | None = None,
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
        self._on_ignored = on_ignored
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
            self._settle_unknown()
            self._publish()
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
            elif isinstance(item, _WatchAgain):
                rescan = self._forget_handled(item.key) or rescan
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
            self._drop_unknown(gone)
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
            self._drop_unknown(path)
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
            # stat'ed again at the next change) and count it as "not DICOM" only once it
            # has been quiet for stable_seconds (see _settle_unknown).
            self.tracker.forget(path)
            self._not_dicom.pop(path, None)
            if os.path.basename(path).lower() not in _NOISE:
                self._unsettled[path] = (state, time.monotonic())
            return
        self._drop_unknown(path)
        self.tracker.observe(path, self._series_key(header.study_uid, header.series_uid),
                             state, time.time())

    def _check_due(self) -> None:
        now = time.time()
        for due in self.tracker.due(now):
            if self._stop.is_set():
                return
            incomplete = [p for p in due.files if not is_complete(Path(p))]
            if incomplete:
                self._incomplete[due.key] = len(incomplete)
                if self.tracker.expired(due.key, now):
                    self._incomplete.pop(due.key, None)
                    self.tracker.take(due.key)
                    self._mark_handled(due.key, due.files)
                    self._on_expired(due.key, due.files)
                else:
                    self.tracker.postpone(due.key, now)
                continue
            self.tracker.take(due.key)
            self._incomplete.pop(due.key, None)
            self._publish()  # no longer waited for: the status must not show it meanwhile
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

    # -- what the status shows (issue 15) ----------------------------------------------------

    def known_paths(self) -> tuple[str, ...]:
        """Every file of the export folder the watcher knows (memory only; for local views)."""
        return tuple(self._known)

    def watch_again(self, key: str) -> None:
        """Take the files of series ``key`` into view again, as if new (thread-safe)."""
        self._events.put(_WatchAgain(key))

    @property
    def ignored(self) -> IgnoredFiles:
        """Files settled as not DICOM (and not sent), and how many of them are archives."""
        return self._reported

    def _forget_handled(self, key: str) -> bool:
        paths = self._handled_paths.pop(key, set())
        for phash in [h for h, (_s, _m, k) in self._handled.items() if k == key]:
            del self._handled[phash]
        for path in paths:
            self._known.pop(path, None)  # the next full scan observes it afresh
        return True

    def _drop_unknown(self, path: str) -> None:
        self._unsettled.pop(path, None)
        self._not_dicom.pop(path, None)

    def _settle_unknown(self) -> None:
        """Files without a DICOM header, quiet for stable_seconds: count them, say it once."""
        quiet = time.monotonic() - self.cfg.stable_seconds
        settled = [p for p, (_st, seen) in self._unsettled.items() if seen <= quiet]
        for path in settled:
            del self._unsettled[path]
            self._not_dicom[path] = is_archive(path)
        now = IgnoredFiles(len(self._not_dicom), sum(self._not_dicom.values()))
        grew = now.files > self._reported.files or now.archives > self._reported.archives
        self._reported = now
        if grew and settled:
            log.info("%s", ignored_sentence(now))
            if self._on_ignored is not None:
                try:
                    self._on_ignored(now)
                except Exception as exc:  # noqa: BLE001 - the scanner must survive it
                    log_failure(log, "reporting files that are not DICOM failed", exc)

    def _publish(self) -> None:
        """Publish the series being waited for, with wall-clock times for people.

        The tracker's times are in its own clock (which need not be the wall clock); the
        wall-clock time of the first sighting and of each change is noted here instead.
        """
        wall = time.time()
        walls: dict[str, tuple[float, float, float]] = {}
        out = []
        for p in self.tracker.pending():
            first, seen_change, last = self._walls.get(p.key, (wall, p.last_change, wall))
            if p.last_change != seen_change:
                last = wall
            walls[p.key] = (first, p.last_change, last)
            out.append(PendingExport(key=p.key, paths=tuple(sorted(p.files)),
                                     incomplete=self._incomplete.get(p.key),
                                     since=first, last_change=last))
        self._walls = walls
        self.pending = tuple(out)
        if self.on_publish is not None:
            try:
                self.on_publish(self.pending)
            except Exception as exc:  # noqa: BLE001 - the scanner must survive it
                log_failure(log, "publishing the series being waited for failed", exc)
