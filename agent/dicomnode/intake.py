"""The node's intake: where received instances become durable files before "success".

Two folders in the agent's state area, on one filesystem so a rename is atomic:

* ``spool/`` - instances while they arrive. pynetdicom writes each C-STORE data set, as
  received and behind proper file meta, into a file here (its "chunked" mode, so memory
  stays bounded however large the object). Nothing here was acknowledged: files of an
  association that ended mid-instance are removed at once, and whatever a crash left is
  removed at the next start.
* ``intake/`` - acknowledged instances. A complete, parseable instance is fsynced and
  renamed here *before* the C-STORE response says success; the agent watches this folder
  with the export folder's stability rules. The name is a keyed hash of the instance's
  UIDs: a re-sent instance replaces itself instead of doubling, and names hold no PHI.

Intake files are the agent's own: :meth:`Intake.remove_ended` deletes those whose series
version ended (delivered, withheld, or quarantined with its copy kept), never one that an
unfinished version still needs.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from agent.ledger import Ledger
from agent.sync.folder import _fsync_dir  # one way to make a rename durable
from agent.vocab import FINAL, UNFINISHED, SeriesState

log = logging.getLogger(__name__)


class Intake:
    """The spool and intake folders of one node, and the lock that orders renames into the
    intake against removals from it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.spool = root / "spool"
        self.folder = root / "intake"
        self.lock = threading.Lock()
        for folder in (self.spool, self.folder):
            folder.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                os.chmod(folder, 0o700)

    def purge_spool(self) -> int:
        """Remove what arrived but was never acknowledged (left by a crash)."""
        removed = 0
        for path in self.spool.iterdir():
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
        return removed

    def accept(self, received: Path, name: str) -> Path:
        """Make ``received`` durable as ``intake/name``; returns the intake path.

        Raises OSError (disk full, permissions): the caller answers "out of resources".
        """
        target = self.folder / name
        _fsync_file(received)
        if received.parent == self.spool:
            try:
                with self.lock:
                    os.replace(received, target)
                _fsync_dir(self.folder)
                return target
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise
                # Windows refuses to rename a file that is still open: copy below.
        copy = self.spool / f".{name}.copy"
        try:
            with open(received, "rb") as src, open(copy, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
            with self.lock:
                os.replace(copy, target)
        finally:
            with contextlib.suppress(OSError):
                copy.unlink()
        _fsync_dir(self.folder)
        return target

    def remove_ended(self, ledger: Ledger, path_hash: Callable[[str], str],
                     quarantine_root: Path) -> int:
        """Delete intake files whose series version ended and that no unfinished version
        holds. A quarantined version's files go only when its quarantine copy is whole."""
        busy = {(h, size, mtime) for _, _, h, size, mtime in ledger.files_in_state(
            SeriesState.STABLE, *UNFINISHED)}
        ended: dict[tuple[str, int, int], list[tuple[int, str]]] = {}
        per_series: dict[int, int] = {}
        for series_id, state, h, size, mtime in ledger.files_in_state(*FINAL):
            ended.setdefault((h, size, mtime), []).append((series_id, state))
            per_series[series_id] = per_series.get(series_id, 0) + 1
        kept: dict[int, bool] = {}

        def copy_kept(series_id: int) -> bool:
            if series_id not in kept:
                qdir = quarantine_root / str(series_id)
                kept[series_id] = len(list(qdir.glob("*.dcm"))) >= per_series[series_id]
            return kept[series_id]

        removed = 0
        for entry in list(os.scandir(self.folder)):
            if not entry.name.endswith(".dcm"):
                continue
            with self.lock:  # a new copy of this instance cannot be renamed in meanwhile
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                ident = (path_hash(entry.path), st.st_size, st.st_mtime_ns)
                versions = ended.get(ident)
                if not versions or ident in busy:
                    continue
                if all(state == SeriesState.QUARANTINED and not copy_kept(sid)
                       for sid, state in versions):
                    continue
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
        return removed


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- where pynetdicom spools a C-STORE data set ------------------------------------------------
#
# In chunked mode pynetdicom writes each incoming data set through
# ``tempfile.NamedTemporaryFile`` in the system temp folder, and leaves the file behind when
# the association ends mid-instance. The factory below puts the file in the receiving
# node's spool instead (same filesystem as the intake: one rename), and remembers it per
# association so that an aborted instance is removed at once. It runs in the association's
# reactor thread, which knows its association and so the node's AE.

_SPOOLS: dict[int, Path] = {}                       # id(AE) -> its spool folder
_OPEN: weakref.WeakKeyDictionary[Any, list[Path]] = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()
_INSTALLED = False


def register_spool(ae: object, spool: Path) -> None:
    """Spool the C-STORE data sets that ``ae`` receives into ``spool``."""
    _install()
    with _REGISTRY_LOCK:
        _SPOOLS[id(ae)] = spool


def unregister_spool(ae: object) -> None:
    with _REGISTRY_LOCK:
        _SPOOLS.pop(id(ae), None)


def discard_unacknowledged(assoc: object) -> int:
    """Remove the spool files of an association that ended: any still there was never
    acknowledged (acknowledged ones were renamed into the intake)."""
    with _REGISTRY_LOCK:
        paths = _OPEN.pop(assoc, [])
    removed = 0
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
    return removed


def _spooling_file(*args: Any, **kwargs: Any) -> IO[bytes]:
    assoc = getattr(threading.current_thread(), "assoc", None)
    ae = getattr(assoc, "ae", None)
    with _REGISTRY_LOCK:
        spool = _SPOOLS.get(id(ae)) if ae is not None else None
    if spool is None or assoc is None:
        return tempfile.NamedTemporaryFile(*args, **kwargs)  # not one of our nodes
    kwargs["dir"] = str(spool)
    kwargs.setdefault("prefix", "rx-")
    fh: IO[bytes] = tempfile.NamedTemporaryFile(*args, **kwargs)
    with _REGISTRY_LOCK:
        _OPEN.setdefault(assoc, []).append(Path(fh.name))
    return fh


def _install() -> None:
    global _INSTALLED
    with _REGISTRY_LOCK:
        if _INSTALLED:
            return
        from pynetdicom import _config, dimse_messages

        # Received data sets go to a file, not memory: bounded memory per association.
        _config.STORE_RECV_CHUNKED_DATASET = True
        dimse_messages.NamedTemporaryFile = _spooling_file  # type: ignore[attr-defined,assignment]
        _INSTALLED = True
