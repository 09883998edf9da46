"""Taking a series out of the export folder: the first step of the pipeline.

A stable series is checked against the size limits before a byte of it is read, then
looked at for a re-export of content already delivered (:mod:`agent.reexport`), then
copied into the work area - every file opened through :mod:`agent.boundary`, and compared
with what the watcher saw before and after the copy, so that a file rewritten while the
series is taken makes the series wait (:class:`~agent.errors.ExportChanged`) rather than
leave short. A full work area is :class:`~agent.errors.DiskFull`: the series waits too.

The one-shot command (``link_exports``) may stage a hard link to the exported file instead
of a copy, where the work area shares its filesystem and the file may be linked: its work
area is a temporary folder that nothing resumes from, so the staged file need only hold
still while the run reads it - and that is checked, not assumed: before a series is
delivered every linked file must still be the inode staged, with the size, modification
and change times it had (a rewrite in place, even one that restores the modification
time, changes the change time), else nothing of it is delivered
(:meth:`Staging.check_links`). The export's bytes are never written; the running agent,
whose staged copies outlive a restart, always copies.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.boundary import OutsideExport, open_export_file
from agent.diskspace import NO_SPACE, require_work_space, work_full
from agent.errors import ExportChanged, SeriesProblem, TransientFault
from agent.exportlook import LookCache
from agent.ledger import DELIVERED, STAGED, UNFINISHED, SeriesRow
from agent.limits import check_sizes
from agent.reexport import Plan, plan_export
from agent.series import FileState
from agent.sync.place import CANNOT_LINK, clone_or_copy_open
from agent.vocab import ProblemCode

if TYPE_CHECKING:
    from agent.config import Config
    from agent.ledger import Ledger

log = logging.getLogger("agent.pipeline")


@dataclass(frozen=True)
class Taken:
    """What became of an export handed to :meth:`Pipeline.take`."""

    row: SeriesRow
    #: True when the export repeats ``row`` (already delivered or on its way): nothing new.
    repeat: bool = False


class Staging:
    """The staging half of :class:`~agent.pipeline.Pipeline` (which provides the
    attributes and :meth:`quarantine` declared here)."""

    cfg: Config
    ledger: Ledger
    work_root: Path
    #: The folders series are taken from (the watched export folder; the DICOM node's
    #: intake adds its own): nothing outside them is opened.
    export_roots: list[Path]
    _key: bytes
    #: What the watcher (or the one-shot survey) read of each exported file: a file read
    #: at the state it is staged with is not read again to plan the copy.
    looks: LookCache
    #: Stage hard links where possible (the one-shot command only: see the module doc).
    link_exports: bool = False
    #: The state of each linked staged file (by series, by staged name) at staging.
    _linked: dict[int, dict[str, tuple[int, ...]]]

    def path_hash(self, path: str | Path) -> str:
        raise NotImplementedError

    def workdir(self, series_id: int) -> Path:
        raise NotImplementedError

    def quarantine(self, series_id: int, problem: SeriesProblem) -> SeriesRow:
        raise NotImplementedError

    def root_of(self, paths: Iterable[str]) -> Path | None:
        """The source folder the files of a series lie in (by their names; the opening
        checks where they really are). None when no folder is configured (library use)."""
        if not self.export_roots:
            return None
        first = next(iter(paths), "")
        for root in self.export_roots:
            if Path(first).is_relative_to(root):
                return root
        return self.export_roots[0]  # opening will refuse it: it lies outside

    # -- 1. stage --------------------------------------------------------------------------

    def stage(self, key: str, files: Mapping[str, FileState]) -> SeriesRow:
        """Copy a stable series out of the export folder into the work area."""
        return self.take(key, files).row

    def take(self, key: str, files: Mapping[str, FileState]) -> Taken:
        """Take a stable series from the export folder: recognise a re-export of content
        already delivered (nothing new: recorded, not sent), else stage one copy of each
        instance as a new version (see :mod:`agent.reexport`).

        Raises :class:`~agent.errors.ExportChanged` when a file changed, vanished or could
        not be read while the series was taken (it waits for another quiet period) and
        :class:`~agent.errors.DiskFull` when the work area cannot take it; quarantines a
        series beyond the size limits before reading a byte of it.
        """
        handled = [(self.path_hash(p), st.size, st.mtime_ns) for p, st in files.items()]
        try:
            check_sizes(files, self.cfg.limits)
        except SeriesProblem as problem:
            return Taken(self.quarantine(self.ledger.open_version(key, handled).id, problem))
        require_work_space(self.work_root, sum(st.size for st in files.values()))
        try:
            plan: Plan | None = self._plan(key, files)
        except OSError as exc:
            raise staging_fault(exc, self.work_root) from None
        except Exception:  # noqa: BLE001 -- pydicom raises many types for damaged files
            plan = None
        if plan is not None and plan.repeats is not None:
            earlier = self.ledger.note_reexport(plan.repeats, handled,
                                                duplicates=plan.duplicates)
            log.info("series %s exported again (%d files): identical to version %d, "
                     "nothing sent", earlier.id, len(files), earlier.version)
            return Taken(earlier, repeat=True)
        row = self.ledger.open_version(key, handled)
        if plan is None:
            return Taken(self.quarantine(row.id, SeriesProblem(
                "a file of the series could not be read in the export folder (it is "
                "damaged or not DICOM); export the series again",
                code=ProblemCode.UNREADABLE)))
        source = self.workdir(row.id) / "source"
        if source.exists():
            shutil.rmtree(source)
        partial = source.with_name("source.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        names = {inst.path: f"{n:06d}.dcm" for n, inst in enumerate(plan.chosen)}
        try:
            linked = self._copy_all(names, files, partial)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        self._record_plan(row.id, plan, names)
        if linked:
            self._linked[row.id] = linked
        else:
            self._linked.pop(row.id, None)
        os.replace(partial, source)
        self.looks.forget(list(files))
        return Taken(self.ledger.set_state(row.id, STAGED))

    def _plan(self, key: str, files: Mapping[str, FileState], exclude: int | None = None,
              root: Path | None = None) -> Plan:
        """What to stage (:func:`agent.reexport.plan_export`) of files below ``root``
        (default: the source folder they come from)."""
        known = self.ledger.known_instances(key, (DELIVERED, *UNFINISHED), exclude=exclude)
        versions = {sid: self.ledger.get(sid).version for sid in {s for _c, s in known.values()}}
        digests = self.looks.digests(files) if root is None else None
        return plan_export(files, self._key, known, versions, root or self.root_of(files),
                           digests)

    def _record_plan(self, series_id: int, plan: Plan, names: Mapping[str, str]) -> None:
        """Persist what this version holds (ledger) and what changed (for its manifest)."""
        self.ledger.record_instances(series_id,
                                     [(i.uid_hash, i.content_hash) for i in plan.chosen])
        atomic_write(self.workdir(series_id) / "changes.json",
                      json.dumps(plan.changes(names)).encode())

    def _copy_all(self, names: Mapping[str, str], files: Mapping[str, FileState],
                  folder: Path) -> dict[str, tuple[int, ...]]:
        """Every chosen file into ``folder`` under its staged name; the states of those
        staged as links."""
        linked = {}
        for path, name in names.items():
            state = self._copy_in(path, files[path], folder / name)
            if state is not None:
                linked[name] = state
        return linked

    def _copy_in(self, path: str, seen: FileState, dst: Path) -> tuple[int, ...] | None:
        """Copy one exported file, refusing a link, a file outside the export folder and a
        file that is not the one the watcher saw (changed before or during the copy).
        With ``link_exports``, a hard link where it can be made: then its state, for
        :meth:`check_links` (None for a copy)."""
        try:
            with open_export_file(path, self.root_of([path])) as src:
                if _state_of(src) != seen:
                    raise ExportChanged("a file of the series changed since it was seen; "
                                        "the series waits until it is quiet", retry_after=0)
                if self.link_exports:
                    state = _link_in(path, src.fileno(), seen, dst)
                    if state is not None:
                        return state
                with open(dst, "wb") as out:
                    # Else a copy: the running agent's staged files outlive a restart,
                    # and an export may be rewritten in place later.
                    copied = clone_or_copy_open(src, out).size
                if _state_of(src) != seen or copied != seen.size:
                    raise ExportChanged("a file of the series changed while it was copied; "
                                        "the series waits until it is quiet", retry_after=0)
        except OSError as exc:
            raise staging_fault(exc, self.work_root) from None
        return None

    def check_links(self, series_id: int) -> None:
        """Raise ExportChanged unless every file staged as a link (``link_exports``) is
        still the inode staged, unchanged since: called after the last stage read the
        series' originals, before anything of it is delivered."""
        linked = self._linked.get(series_id)
        if not linked:
            return
        source = self.workdir(series_id) / "source"
        for name, state in linked.items():
            try:
                now = _link_state(os.stat(source / name))
            except OSError:
                now = ()
            if now != state:
                raise ExportChanged(
                    "a file of the series changed in the export folder while the series was "
                    "processed, so nothing of it was delivered; run again once the export "
                    "has finished", retry_after=0)


def _link_state(st: os.stat_result) -> tuple[int, ...]:
    """What a rewrite of a linked file changes: inode, size, modification and change time
    (the change time moves with every write, and no program can set it back)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _link_in(path: str, fd: int, seen: FileState, dst: Path) -> tuple[int, ...] | None:
    """Hard-link the exported file open as ``fd`` (found at ``path``) to ``dst``: its
    state, or None (nothing left at ``dst``) where it cannot be linked - another
    filesystem, a file this user may not link (``protected_hardlinks``) - or ``path`` is
    no longer the file opened and checked (replaced meanwhile)."""
    try:
        os.link(path, dst, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in CANNOT_LINK:
            return None
        raise
    st, opened = os.stat(dst, follow_symlinks=False), os.fstat(fd)
    if ((st.st_dev, st.st_ino) != (opened.st_dev, opened.st_ino)
            or FileState(st.st_size, st.st_mtime_ns) != seen):
        os.unlink(dst)
        return None
    return _link_state(st)


def _state_of(fh: Any) -> FileState:
    st = os.fstat(fh.fileno())
    return FileState(st.st_size, st.st_mtime_ns)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (temporary file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def staging_fault(exc: OSError, work: Path) -> TransientFault:
    """A failed copy out of the export folder is a passing fault: the series waits."""
    if exc.errno in NO_SPACE:
        return work_full(work)
    if isinstance(exc, OutsideExport):
        return ExportChanged("a file of the series was replaced by a link or special file; "
                             "it is skipped and the series waits until it is quiet",
                             retry_after=0)
    if isinstance(exc, FileNotFoundError):
        return ExportChanged("a file of the series vanished while it was taken; the series "
                             "waits until it is quiet", retry_after=0)
    if isinstance(exc, PermissionError):
        return ExportChanged("a file of the series cannot be read yet (locked, or no "
                             "permission); the series waits and is tried again")
    return ExportChanged(f"a file of the series could not be read ({type(exc).__name__}); "
                         "the series waits and is tried again")
