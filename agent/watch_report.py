"""What the watcher tells the status about exports it waits for (issue 15).

The series being waited for (with wall-clock times for people: the tracker's own clock is
monotonic), and the files that settled as "not DICOM, not sent" (archives counted apart).
A mixin of :class:`agent.watcher.ExportWatcher`, which holds the state declared here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.boundary import open_export_file
from agent.config import WatchConfig
from agent.logs import log_failure
from agent.messages import ignored_sentence
from agent.series import FileState, SeriesTracker
from agent.status import IgnoredFiles

log = logging.getLogger("agent.watcher")

#: Called (from the scanner thread) when more files settled as "not DICOM, not sent".
IgnoredCallback = Callable[[IgnoredFiles], None]
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


def is_archive(path: str, root: Path | None = None) -> bool:
    """Whether a file is a zip or another archive (by name or by its first bytes; opened
    like every export file, never through a link)."""
    if path.lower().endswith(_ARCHIVE_SUFFIXES):
        return True
    try:
        with open_export_file(path, root) as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head.startswith(_ARCHIVE_MAGIC)




class WaitingReport:
    """The status side of the watcher."""

    cfg: WatchConfig
    root: Path
    tracker: SeriesTracker
    _known: dict[str, FileState]
    _on_ignored: IgnoredCallback | None
    _unsettled: dict[str, tuple[FileState, float]]
    _not_dicom: dict[str, bool]
    _reported: IgnoredFiles
    _incomplete: dict[str, int]
    pending: tuple[PendingExport, ...]
    on_publish: Callable[[tuple[PendingExport, ...]], None] | None
    _walls: dict[str, tuple[float, float, float]]

    def known_paths(self) -> tuple[str, ...]:
        """Every file of the export folder the watcher knows (memory only; for local views)."""
        return tuple(self._known)

    @property
    def ignored(self) -> IgnoredFiles:
        """Files settled as not DICOM (and not sent), and how many of them are archives."""
        return self._reported

    def _drop_unknown(self, path: str) -> None:
        self._unsettled.pop(path, None)
        self._not_dicom.pop(path, None)

    def _settle_unknown(self) -> None:
        """Files without a DICOM header, quiet for stable_seconds: count them, say it once."""
        quiet = time.monotonic() - self.cfg.stable_seconds
        settled = [p for p, (_st, seen) in self._unsettled.items() if seen <= quiet]
        for path in settled:
            del self._unsettled[path]
            self._not_dicom[path] = is_archive(path, self.root)
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
