"""Who and what a series is, for the person at this workstation - read at display time.

The ledger knows a series by keyed hashes and pseudonyms only, which tell a clinician
nothing ("series 9"). The files themselves are still here: the export folder, the staged
copy in the work area (until delivery) and the quarantined copy (kept locally). This module
finds them and reads the few header fields a person recognises - patient name,
description, scan date, modality, series number, image count, export folder - into a
:class:`~agent.status.LocalIdentity` held in memory only. Nothing read here is ever
written to the ledger, the logs or a manifest.

Finding the export files of a series without storing their paths in clear: the ledger
keeps a keyed hash of each export path (``files.path_hash``); the watcher knows the paths
it sees, in memory. Hashing those with the same key and matching the ledger's hashes
finds the files again, and only on this installation (the key never leaves it).

``[display] local_identity = false`` (shared screens) turns all of this off.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pydicom

from agent.config import Config
from agent.ledger import Ledger, SeriesRow
from agent.messages import action_for, hhmm
from agent.status import LocalIdentity, SeriesSummary, start_of_today
from agent.vocab import SeriesState

log = logging.getLogger(__name__)

_TAGS = ["SpecificCharacterSet", "PatientName", "SeriesDescription", "StudyDescription",
         "SeriesDate", "AcquisitionDate", "ContentDate", "StudyDate", "Modality",
         "SeriesNumber"]
#: How many identities are kept in memory (one per recent series).
_CACHE = 512
#: How often the path-hash index of the watched files is rebuilt at most, in seconds.
_INDEX_AGE = 0.5
#: An identity read without finding the export files is read again after this long (the
#: watcher may not have listed them yet, or the export may come back).
_RETRY_AGE = 5.0


def _person(value: object) -> str:
    """``Family, Given`` for a DICOM person name; the raw text when it has no parts."""
    family = str(getattr(value, "family_name", "") or "").strip()
    given = str(getattr(value, "given_name", "") or "").strip()
    if family and given:
        return f"{family}, {given}"
    return family or given or str(value or "").replace("^", " ").strip()


def _date(value: object) -> str:
    text = str(value or "").strip()
    if len(text) >= 8 and text[:8].isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:8]}"
    return text


def describe_files(files: Sequence[Path], *, source: str, export_folder: str = ""
                   ) -> LocalIdentity | None:
    """Identity read from the first readable file of ``files``; None when none reads."""
    for path in files[:5]:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_TAGS)
        except Exception:  # noqa: BLE001 - unreadable here means "try the next one"
            continue
        date = next((_date(ds.get(t)) for t in ("SeriesDate", "AcquisitionDate",
                                                "ContentDate", "StudyDate") if ds.get(t)), "")
        return LocalIdentity(
            patient_name=_person(ds.get("PatientName")),
            description=str(ds.get("SeriesDescription") or ds.get("StudyDescription") or ""),
            scan_date=date,
            modality=str(ds.get("Modality") or ""),
            series_number=str(ds.get("SeriesNumber") or ""),
            images=len(files),
            export_folder=export_folder,
            source=source,
        )
    return None


def export_folder_of(paths: Iterable[str], root: Path) -> str:
    """The folder(s) holding ``paths``, relative to the watched folder, for a person."""
    folders: list[str] = []
    for p in paths:
        parent = os.path.dirname(p)
        if parent not in folders:
            folders.append(parent)
    if not folders:
        return ""
    try:
        first = os.path.relpath(folders[0], root)
    except ValueError:  # another drive on Windows
        first = folders[0]
    first = "(the export folder itself)" if first == "." else first + os.sep
    more = len(folders) - 1
    return first if not more else f"{first} and {more} other folder{'s' * (more > 1)}"


class LocalView:
    """Reads and caches the local identity of series (thread-safe, memory only)."""

    def __init__(self, cfg: Config, ledger: Ledger, path_hash: Callable[[str], str],
                 known_paths: Callable[[], Iterable[str]]) -> None:
        self.enabled = cfg.display.local_identity
        self._cfg = cfg
        self._root = Path(cfg.watch.folder).expanduser() if cfg.watch.folder else Path()
        self._ledger = ledger
        self._path_hash = path_hash
        self._known_paths = known_paths
        self._lock = threading.Lock()
        #: key -> (identity, monotonic time it expires; inf when complete).
        self._cache: dict[tuple[object, ...], tuple[LocalIdentity | None, float]] = {}
        self._hashes: dict[str, str] = {}  # export path -> keyed hash (memory only)
        self._index: dict[str, str] = {}   # keyed hash -> export path
        self._index_built = float("-inf")

    def of_row(self, row: SeriesRow) -> LocalIdentity | None:
        """The identity of a ledger series, from its quarantined, staged or exported files."""
        if not self.enabled:
            return None
        key = (row.id, row.state, row.updated)
        cached = self._cached(key)
        if cached is not None:
            return cached[0]
        found = self._read_row(row)
        complete = found is None or bool(found.export_folder) or not self._ledger.files_of(
            row.id)
        self._remember(key, found, complete)
        return found

    def _cached(self, key: tuple[object, ...]) -> tuple[LocalIdentity | None] | None:
        with self._lock:
            hit = self._cache.get(key)
        if hit is None or hit[1] < time.monotonic():
            return None
        return (hit[0],)

    def _remember(self, key: tuple[object, ...], found: LocalIdentity | None,
                  complete: bool) -> None:
        expires = float("inf") if complete else time.monotonic() + _RETRY_AGE
        with self._lock:
            if len(self._cache) >= _CACHE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = (found, expires)

    def of_export(self, paths: Sequence[str]) -> LocalIdentity | None:
        """The identity of files still in the export folder (a series being waited for)."""
        if not self.enabled or not paths:
            return None
        key = ("export", len(paths), min(paths))
        cached = self._cached(key)
        if cached is not None:
            return cached[0]
        found = describe_files([Path(p) for p in sorted(paths)], source="export",
                               export_folder=export_folder_of(sorted(paths), self._root))
        self._remember(key, found, found is not None)
        return found

    def _read_row(self, row: SeriesRow) -> LocalIdentity | None:
        exported = self._export_paths(row.id)
        folder = export_folder_of(exported, self._root) if exported else ""
        copies: list[tuple[str, Path]] = []
        if row.state == SeriesState.QUARANTINED:
            copies.append(("quarantine", self._cfg.paths.quarantine / str(row.id)))
        copies.append(("staged", self._cfg.paths.work / str(row.id) / "source"))
        for source, where in copies:
            files = sorted(where.glob("*.dcm")) if where.is_dir() else []
            if files:
                return describe_files(files, source=source, export_folder=folder)
        present = [Path(p) for p in exported if os.path.isfile(p)]
        found = describe_files(present, source="export", export_folder=folder)
        instances = self._ledger.instance_count(row.id)
        if found is not None and instances:
            # Two copies of an export are one series: count its images, not its files.
            found = dataclasses.replace(found, images=instances)
        return found

    def _export_paths(self, series_id: int) -> list[str]:
        wanted = self._ledger.files_of(series_id)
        if not wanted:
            return []
        index = self._path_index()
        if not any(h in index for h in wanted):
            index = self._path_index(fresh=True)  # files seen since the index was built
        return sorted(index[h] for h in wanted if h in index)

    def _path_index(self, fresh: bool = False) -> dict[str, str]:
        now = time.monotonic()
        with self._lock:
            if now - self._index_built < (0.05 if fresh else _INDEX_AGE):
                return self._index
        try:
            paths = list(self._known_paths())
        except Exception:
            log.debug("cannot list the watched files", exc_info=True)
            paths = []
        hashes = {p: self._hashes.get(p) or self._path_hash(p) for p in paths}
        index = {h: p for p, h in hashes.items()}
        with self._lock:
            self._hashes, self._index, self._index_built = hashes, index, now
        return index


def summarize(row: SeriesRow, view: LocalView | None,
              again: tuple[float, int] | None = None) -> SeriesSummary:
    """One ledger series as front ends list it; ``again`` is (time, count) of re-exports
    found identical to it (shown as its latest news)."""
    reason, updated = row.reason, row.updated
    if again is not None and again[0] > row.updated:
        n = again[1]
        reason = (f"exported again{f' ({n} times)' if n > 1 else ''} at {hhmm(again[0])}: "
                  "already delivered, nothing sent")
        updated = again[0]
    return SeriesSummary(
        id=row.id, state=row.state, updated=updated, modality=row.modality,
        patient_pseudonym=row.patient, reason=reason, location=row.location,
        file_count=row.file_count, render=row.render, version=row.version, code=row.code,
        action=action_for(row.code) if row.state == SeriesState.QUARANTINED else "",
        local=view.of_row(row) if view is not None else None)


def recent_summaries(ledger: Ledger, view: LocalView | None, limit: int = 50
                     ) -> list[SeriesSummary]:
    """The latest series, newest first; a series exported again counts from that time."""
    rows = {r.id: r for r in ledger.recent(limit)}
    for r in ledger.recently_reexported(start_of_today() - 7 * 86400)[:limit]:
        rows.setdefault(r.id, r)
    again = ledger.reexports(rows)
    shown = sorted((summarize(r, view, again.get(r.id)) for r in rows.values()),
                   key=lambda s: (s.updated, s.id), reverse=True)
    return shown[:limit]
