"""The export folder is a boundary: nothing outside it is ever opened.

Anyone who can write into the export folder can plant a symbolic link there - to another
patient's series, to ``/etc/shadow``. So every path taken from the folder (by the initial
scan, by an event, by a rescan, by staging) goes through here:

* :func:`kind_of` looks with ``lstat`` (links are never followed) and sorts entries into
  regular files, folders, links and special files (FIFOs, devices, sockets);
* :func:`open_export_file` opens with ``O_NOFOLLOW`` (a link swapped in after the look is
  refused by the kernel) and ``O_NONBLOCK`` (a FIFO cannot hang the agent), checks with
  ``fstat`` that it opened a regular file, and checks that the file it opened really lies
  inside the export folder (a folder component replaced by a link is caught there: Linux
  names the opened file in ``/proc/self/fd``; elsewhere the resolved path must be the same
  file as the one opened).
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_BINARY = getattr(os, "O_BINARY", 0)


class Kind(StrEnum):
    FILE = "file"
    FOLDER = "folder"
    LINK = "link"
    SPECIAL = "special"  # FIFO, device, socket
    GONE = "gone"


class OutsideExport(OSError):
    """The path is a link, a special file, or resolves outside the export folder."""


def kind_of_mode(mode: int) -> Kind:
    """The kind of an entry from its (lstat) mode."""
    if stat.S_ISLNK(mode):
        return Kind.LINK
    if stat.S_ISDIR(mode):
        return Kind.FOLDER
    if stat.S_ISREG(mode):
        return Kind.FILE
    return Kind.SPECIAL


def kind_of(path: str | Path) -> tuple[Kind, os.stat_result | None]:
    """What ``path`` is, looked at without following a link."""
    try:
        st = os.lstat(path)
    except OSError:
        return Kind.GONE, None
    return kind_of_mode(st.st_mode), st


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def real_root(root: str | Path) -> str:
    """The export folder as the system names it (its own links, set up by IT, resolved)."""
    return os.path.realpath(root)


def _opened_path(fd: int) -> str | None:
    if sys.platform.startswith("linux"):
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None
    return None


def open_export_file(path: str | Path, root: str | Path | None = None) -> BinaryIO:
    """Open a regular file of the export folder for reading, never through a link.

    ``root`` is the export folder; when given, the opened file must lie inside it. Raises
    :class:`OutsideExport` for links, special files and files outside ``root``, and the
    usual OSError for files that vanished or cannot be read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _BINARY)
    except OSError as exc:
        if _NOFOLLOW and exc.errno == errno.ELOOP:  # the last component is a link
            raise OutsideExport(exc.errno, "a link in the export folder is not followed"
                                ) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OutsideExport(0, "not a regular file")
        if root is not None:
            _check_inside(fd, st, str(path), real_root(root))
        if _NONBLOCK:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_inside(fd: int, st: os.stat_result, path: str, root: str) -> None:
    opened = _opened_path(fd)
    if opened is not None:
        if not _inside(opened, root):
            raise OutsideExport(0, "the file lies outside the export folder")
        return
    resolved = os.path.realpath(path)
    if not _inside(resolved, root):
        raise OutsideExport(0, "the file lies outside the export folder")
    try:
        same = os.path.samestat(os.stat(resolved), st)
    except OSError:
        same = False
    if not same:
        raise OutsideExport(0, "the file changed into a link while it was opened")


def is_inside(path: str | Path, root: str | Path) -> bool:
    """Whether ``path``, all links resolved, lies inside the export folder ``root``."""
    return _inside(os.path.realpath(path), real_root(root))
