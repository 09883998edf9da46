"""Putting files in place without copying bytes twice, and making them durable in one step.

Three ways to put a file at its destination, cheapest first:

* **hard link** - no bytes move. Only for files that never change again (the agent's own
  verified outputs, which the pipeline hands over as ``linkable``): the link *is* the
  file, so a viewer or anyone else rewriting it in place would change the delivery. The
  work area's clean-up removes its own name only; the delivered name keeps the data.
* **reflink** (Linux ``FICLONE``: Btrfs, XFS, bcachefs, OCFS2) - the destination shares
  the source's blocks copy-on-write: a later write to either side copies the block first,
  so it is as safe as a copy, including for files of the export folder.
* **copy** - with the SHA-256 computed on the way (no second read to hash or to check).

Durability is batched: files are written first, then flushed together, concurrently, so
the filesystem commits them in one go (:func:`make_durable`). Callers write their commit
marker (a manifest) only after it returned.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
#: ``_IOW(0x94, 9, int)``: the Linux ioctl that clones a whole file (reflink).
FICLONE = 0x40049409
#: What ``link``/``FICLONE`` answer when the filesystem or the pair cannot do it.
_CANNOT = frozenset({errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL,
                     errno.ENOSYS, errno.EMLINK, errno.EACCES, errno.EBADF,
                     getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)})
#: What ``link`` answers where a hard link cannot be made (the caller copies instead).
CANNOT_LINK = _CANNOT


@dataclass(frozen=True)
class Placed:
    """How one file got to its destination, and what was written there."""

    how: str  # "link", "reflink" or "copy"
    size: int
    #: SHA-256 of the bytes copied ("" for a link or reflink: no bytes passed through us).
    sha256: str = ""


def copy_hashed(src: Path, dst: Path, mode: int = 0o666) -> Placed:
    """Copy ``src`` to a new file ``dst``, hashing what is copied (one read)."""
    h = hashlib.sha256()
    size = 0
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    with open(src, "rb") as fin, os.fdopen(os.open(dst, flags, mode), "wb") as fout:
        while chunk := fin.read(_CHUNK):
            h.update(chunk)
            fout.write(chunk)
            size += len(chunk)
    return Placed("copy", size, h.hexdigest())


def reflink(src: Path, dst: Path, mode: int = 0o666) -> bool:
    """Clone ``src`` to a new ``dst`` sharing its blocks copy-on-write; False (and no
    ``dst`` left) when the platform or filesystem cannot."""
    if not sys.platform.startswith("linux"):
        return False
    import fcntl

    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    with open(src, "rb") as fin:
        fd = os.open(dst, flags, mode)
        try:
            fcntl.ioctl(fd, FICLONE, fin.fileno())
        except OSError as exc:
            os.close(fd)
            os.unlink(dst)
            if exc.errno in _CANNOT:
                return False
            raise
        os.close(fd)
    return True


def clone_into(src_fd: int, dst_fd: int) -> bool:
    """Clone the open file ``src_fd`` into the open, empty ``dst_fd`` (copy-on-write);
    False when the platform or filesystem cannot (nothing written)."""
    if not sys.platform.startswith("linux"):
        return False
    import fcntl

    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
    except OSError as exc:
        if exc.errno in _CANNOT:
            return False
        raise
    return True


def place(src: Path, dst: Path, *, linkable: bool, mode: int = 0o666) -> Placed:
    """Put a copy of ``src`` at ``dst`` (which must not exist): a hard link when
    ``linkable`` (``src`` never changes again), else a reflink, else a hashed copy."""
    if linkable:
        try:
            os.link(src, dst)
        except OSError as exc:
            if exc.errno not in _CANNOT:
                raise
        else:
            return Placed("link", os.stat(dst).st_size)
    if reflink(src, dst, mode):
        return Placed("reflink", os.stat(dst).st_size)
    return copy_hashed(src, dst, mode)


def clone_or_copy(src: Path, dst: Path) -> str:
    """A private copy of ``src`` (an exported file: it may be rewritten in place later, so
    never a hard link): see :func:`clone_or_copy_open`. Returns "reflink" or "copy"."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        return clone_or_copy_open(fin, fout).how


def clone_or_copy_open(src: BinaryIO, out: BinaryIO) -> Placed:
    """The bytes of the open file ``src`` in the open, empty file ``out``: a reflink where
    the filesystem clones, else a real copy - the kernel's own where it can (no bytes
    through Python), else read and written here. ``size`` is what was copied."""
    if clone_into(src.fileno(), out.fileno()):
        return Placed("reflink", os.fstat(out.fileno()).st_size)
    copied = _kernel_copy(src.fileno(), out.fileno())
    if copied is None:
        shutil.copyfileobj(src, out, _CHUNK)
        copied = out.tell()
    return Placed("copy", copied)


def _kernel_copy(src_fd: int, dst_fd: int) -> int | None:
    """Copy ``src_fd`` from its start to ``dst_fd`` with ``sendfile``; None when the
    platform cannot (nothing written)."""
    sendfile = getattr(os, "sendfile", None)
    if sendfile is None or not sys.platform.startswith("linux"):
        return None
    total = 0
    try:
        while sent := sendfile(dst_fd, src_fd, total, 8 * _CHUNK):
            total += sent
    except OSError as exc:
        if total == 0 and exc.errno in _CANNOT | {errno.ENOTSOCK}:
            return None
        raise
    return total


def same_file(a: Path, b: Path) -> bool:
    """Whether two names are one file (a hard link): same device and inode."""
    sa, sb = os.stat(a), os.stat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def fsync_dir(path: Path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    # Windows flushes only handles opened for writing; POSIX flushes any descriptor.
    flags = (os.O_RDWR | getattr(os, "O_BINARY", 0)) if os.name == "nt" else os.O_RDONLY
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Concurrent fsyncs: the filesystem commits them together (one journal commit for many).
SYNC_THREADS = 16


def make_durable(folder: Path, files: Iterable[Path]) -> None:
    """Every file in ``files`` (all below ``folder``) and their folders on stable storage.

    The files are flushed concurrently, after all of them were written: a journaling
    filesystem groups concurrent flushes into one commit (200 files: ~0.03 s instead of
    ~0.5 s one after the other), and only these files are flushed - not, as ``syncfs``
    would, whatever else waits to be written on that disk. Raises OSError.
    """
    paths = list(files)
    if len(paths) > 1:
        with ThreadPoolExecutor(min(SYNC_THREADS, len(paths)),
                                thread_name_prefix="fsync") as pool:
            list(pool.map(_fsync_file, paths))
    else:
        for path in paths:
            _fsync_file(path)
    for d in {folder, *(p.parent for p in paths)}:
        fsync_dir(d)


__all__ = ["CANNOT_LINK", "Placed", "clone_into", "clone_or_copy", "clone_or_copy_open",
           "copy_hashed", "fsync_dir", "make_durable", "place", "reflink", "same_file"]
