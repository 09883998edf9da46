"""Free space on the disks the agent writes to, in words a person reads.

The work area needs room for a staged copy of a series and its outputs; the ledger needs a
little room for every commit. When space runs out the agent says how much is free and how
much it needs ("the work area is full: 120 MB free, 2 GB needed"), waits, and carries on
by itself once space returns (:class:`~agent.errors.DiskFull` is a transient fault).
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from agent.errors import DiskFull

#: Room the ledger needs to start (its WAL grows by a few pages per commit).
LEDGER_RESERVE = 16 * 1024 * 1024
#: Room left free beyond what a series needs, so the rest of the machine keeps working.
WORK_RESERVE = 64 * 1024 * 1024
#: A staged series needs its copy, de-identified outputs and a defaced copy: about 3x.
WORK_FACTOR = 3
#: How long a series waits before the work area is looked at again.
RETRY_SECONDS = 30.0


def human(n: float) -> str:
    """A size as people say it: 950 kB, 120 MB, 2.4 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            value = n / scale
            return f"{value:.1f} {unit}" if value < 10 and unit == "GB" else \
                f"{value:.0f} {unit}"
    return f"{int(n)} bytes"


def free_bytes(path: Path) -> int:
    """Free bytes on the disk holding ``path`` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def free_space_problem(folder: Path, needed: int = LEDGER_RESERVE) -> str:
    """A sentence when the disk of ``folder`` has less than ``needed`` free, else ""."""
    try:
        free = free_bytes(folder)
    except OSError:
        return ""  # cannot tell: opening the ledger will say what is wrong
    if free >= needed:
        return ""
    return (f"the disk holding {folder} is full: {human(free)} free, {human(needed)} needed; "
            "free some space and start again")


def require_work_space(work: Path, series_bytes: int) -> None:
    """Raise :class:`DiskFull` when the work area cannot take a series of this size."""
    needed = series_bytes * WORK_FACTOR + WORK_RESERVE
    try:
        free = free_bytes(work)
    except OSError:
        return
    if free < needed:
        raise DiskFull(work_full_message(free, needed), retry_after=RETRY_SECONDS)


def work_full_message(free: int, needed: int) -> str:
    return (f"the work area is full: {human(free)} free, {human(needed)} needed. Series wait "
            "and resume by themselves when space is freed")


#: errno values of a full disk (or quota).
NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def out_of_space(exc: BaseException | None) -> bool:
    """Whether ``exc`` or an exception it was raised from is a full disk (stages convert
    library errors ``from None``, which keeps the original as the context)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def work_full(work: Path) -> DiskFull:
    """The DiskFull for a work area that ran out of space while writing."""
    try:
        free = free_bytes(work)
    except OSError:
        free = 0
    return DiskFull(work_full_message(free, free + WORK_RESERVE), retry_after=RETRY_SECONDS)
