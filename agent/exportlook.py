"""One read of each exported file: its series, whether it is whole, and its content digest.

The watcher (and the one-shot survey) must read every exported file to know its series;
staging must know whether it is whole and what its content is (re-export recognition,
:mod:`agent.reexport`). Done separately, that was four opens and three full reads of
every file - a pydicom header parse, a pydicom completeness walk, a streamed digest - and
in the running agent the completeness walk of a 200-file series alone held the scanner
for most of a second before the series was handed on. :func:`look` answers all three
from one read (:mod:`agent.quickread`), and a :class:`LookCache` keeps the answer for
the state (size, mtime) the file had when it was read: staging and the watcher's
stability check use it only while the file still has that state, and read the file
themselves otherwise. Staging still checks the state before and after its copy, so a file
rewritten after it was looked at makes the series wait, as before.

Holds source UIDs and export paths: memory only, never logged.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.boundary import open_export_file
from agent.dicomfiles import DicomHeader, read_header
from agent.quickread import QUICK_MAX_BYTES, scan
from agent.reexport import quick_digest
from agent.series import FileState


@dataclass(frozen=True)
class Look:
    """What one read of an exported file found, at the state it had while read."""

    state: FileState
    #: Its series and instance; None when it is not a DICOM image we process.
    header: DicomHeader | None
    #: Whether it is whole; None when the quick reader cannot tell (ask is_complete).
    complete: bool | None = None
    #: (SOP Instance UID, digest) as :func:`agent.reexport.source_digest` gives them;
    #: None when not known from this read.
    digest: tuple[str, str] | None = None


def look(path: Path, root: Path | None = None) -> Look:
    """Read ``path`` once (opened through :mod:`agent.boundary`: never through a link,
    nothing outside ``root``). Files the quick reader does not answer for are read by
    pydicom (header only; completeness and digest left to later). Raises OSError."""
    if path.name.upper() == "DICOMDIR":
        st = os.lstat(path)
        return Look(FileState(st.st_size, st.st_mtime_ns), None)
    with open_export_file(path, root) as fh:
        before = os.fstat(fh.fileno())
        data = fh.read() if before.st_size <= QUICK_MAX_BYTES else None
        after = os.fstat(fh.fileno())
    state = FileState(after.st_size, after.st_mtime_ns)
    steady = (before.st_size, before.st_mtime_ns) == (state.size, state.mtime_ns) and (
        data is not None and len(data) == state.size)
    found = scan(data) if data is not None else None
    if found is None:
        return Look(state, read_header(path, root))
    if not found.is_image_we_process:
        return Look(state, None)
    header = DicomHeader(found.study_uid, found.series_uid, found.instance_uid)
    if not steady:  # written while read: what was read says nothing of the file now
        return Look(state, header)
    assert data is not None
    digest = quick_digest(data) if found.complete else None
    return Look(state, header, found.complete, digest)


class LookCache:
    """The latest :class:`Look` of each exported file, by path (thread-safe, bounded:
    the oldest are dropped first; a dropped look only means one more read)."""

    def __init__(self, limit: int = 50_000) -> None:
        self._looks: OrderedDict[str, Look] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._looks)

    def put(self, path: str, found: Look) -> None:
        with self._lock:
            self._looks[path] = found
            self._looks.move_to_end(path)
            while len(self._looks) > self._limit:
                self._looks.popitem(last=False)

    def get(self, path: str, state: FileState) -> Look | None:
        """The look of ``path`` if it was taken at ``state`` (else None: read again)."""
        with self._lock:
            found = self._looks.get(path)
        return found if found is not None and found.state == state else None

    def drop(self, path: str) -> None:
        with self._lock:
            self._looks.pop(path, None)

    def whole(self, path: str, state: FileState) -> bool:
        """Whether ``path`` was read whole at ``state`` (False: not known, ask)."""
        found = self.get(path, state)
        return found is not None and found.complete is True

    def digests(self, files: Mapping[str, FileState]) -> dict[str, tuple[str, str]]:
        """The digests known for ``files`` at the states given (for staging)."""
        out = {}
        for path, state in files.items():
            found = self.get(path, state)
            if found is not None and found.digest is not None:
                out[path] = found.digest
        return out

    def forget(self, paths: Mapping[str, object] | list[str]) -> None:
        """Drop the looks of files that were taken (staged or given up on)."""
        with self._lock:
            for path in paths:
                self._looks.pop(path, None)


__all__ = ["Look", "LookCache", "look"]
