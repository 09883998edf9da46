"""One agent per user: an OS lock held for the life of the process.

The lock is taken on the **state folder itself** (POSIX ``flock`` on the folder), not on
the existence of a file: deleting ``agent.lock`` - or any file - does not let a second
agent start, and the folder cannot be replaced while it holds the ledger. The kernel
releases the lock when the process dies, even by kill -9, so nothing stale ever blocks a
restart. On Windows, where a folder cannot be locked this way, the lock is a byte range of
the ledger database far beyond SQLite's own lock bytes (``msvcrt.locking``), which the
system also releases with the process.

``agent.lock`` still receives the process id, for people and tools that want to know
which process runs; it proves nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from agent.errors import FatalError

#: Windows: the byte of the ledger file that is locked (SQLite locks bytes near 1 GiB).
_WINDOWS_LOCK_OFFSET = 0x7FFF_0000


class AlreadyRunning(FatalError):
    """Another agent of this user holds the lock."""

    title = "Already running"


class InstanceLock:
    """Held from :meth:`acquire` to :meth:`release` (or the end of the process)."""

    def __init__(self, state_dir: Path, info_file: Path | None = None,
                 ledger_file: Path | None = None) -> None:
        self.state_dir = state_dir
        self.info_file = info_file
        self.ledger_file = ledger_file or state_dir / "ledger.sqlite3"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = self._lock()
        self._fd = fd
        if self.info_file is not None:
            try:
                self.info_file.write_text(str(os.getpid()), encoding="ascii")
            except OSError:
                pass  # informational only

    def _lock(self) -> int:
        if sys.platform == "win32":
            import msvcrt

            fd = os.open(self.ledger_file, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            except OSError:
                os.close(fd)
                raise self._refused() from None
            return fd
        import fcntl

        fd = os.open(self.state_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise self._refused() from None
        return fd

    def _refused(self) -> AlreadyRunning:
        return AlreadyRunning(
            "Clinic2Cloud is already running for this user (see its tray icon); quit it "
            "first, or use `clinic2cloud status`")

    def release(self) -> None:
        if self._fd is None:
            return
        if self.info_file is not None:
            try:
                if self.info_file.read_text(encoding="ascii") == str(os.getpid()):
                    self.info_file.unlink()
            except OSError:
                pass
        os.close(self._fd)  # closing the descriptor releases the lock
        self._fd = None
