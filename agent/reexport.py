"""Re-exports: content already delivered is recognised, and a new version says what changed.

A viewer exports the same series again - over the first export, into a second folder, or
with one image changed - and the agent sees the same Series Instance UID again. What
decides is the content, instance by instance: the SOP Instance UID and a digest of the
*source* file (the dataset, without the file meta group that differs between two exports
of one object). Comparing sources, not outputs, keeps the decision independent of whether
processing is reproducible (defacing is not: its noise differs from run to run).

* Every instance already delivered (or on its way) with the same content: nothing is sent;
  the export is recorded against the series it repeats ("already delivered").
* Two copies of one instance (the same series exported into two folders) are one
  instance; if their contents differ, the newer file is taken and the manifest says so.
* New or changed instances: a new version of the whole series, whose manifest lists which
  files were added or changed since the version before (``changes``).

Both digests are keyed with the installation secret before they reach the ledger, like
every other source identifier there.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from agent.boundary import open_export_file
from agent.keys import keyed_hash
from agent.series import FileState

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Instance:
    """One exported file as re-export recognition sees it. ``path`` stays in memory."""

    path: str
    uid_hash: str
    content_hash: str
    mtime_ns: int


_HEAD = 1 << 16
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})
_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_BE = "1.2.840.10008.1.2.2"
_DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1")
_SOP_INSTANCE_UID = 0x00080018


def _meta_end(head: bytes) -> tuple[int, str] | None:
    """(offset where the dataset starts, transfer syntax) of a Part 10 file, from its
    first bytes; None when there is no Part 10 header to read (pydicom decides then)."""
    if len(head) < 144 or head[128:132] != b"DICM":
        return None
    pos, ts = 132, ""
    while pos + 8 <= len(head) and head[pos:pos + 2] == b"\x02\x00":
        elem, vr = struct.unpack_from("<H2s", head, pos + 2)
        if vr in _LONG_VRS:
            if pos + 12 > len(head):
                return None
            length, value = struct.unpack_from("<L", head, pos + 8)[0], pos + 12
        else:
            length, value = struct.unpack_from("<H", head, pos + 6)[0], pos + 8
        if length == 0xFFFFFFFF or value + length > len(head):
            return None
        if elem == 0x0010:
            ts = head[value:value + length].decode("ascii", "replace").strip("\x00 ")
        pos = value + length
    return pos, ts


def _sop_uid(head: bytes, pos: int, ts: str) -> str | None:
    """The SOP Instance UID, walking the first top-level elements of the dataset; None
    when it is not found simply (no such element early on, an odd structure)."""
    implicit, order = ts == _IMPLICIT_LE, ">" if ts == _EXPLICIT_BE else "<"
    while pos + 8 <= len(head):
        group, elem = struct.unpack_from(order + "HH", head, pos)
        tag = group << 16 | elem
        if implicit:
            length, value = struct.unpack_from(order + "L", head, pos + 4)[0], pos + 8
        elif head[pos + 4:pos + 6] in _LONG_VRS:
            if pos + 12 > len(head):
                return None
            length, value = struct.unpack_from(order + "L", head, pos + 8)[0], pos + 12
        else:
            length, value = struct.unpack_from(order + "H", head, pos + 6)[0], pos + 8
        if tag == _SOP_INSTANCE_UID:
            if value + length > len(head):
                return None
            return head[value:value + length].decode("ascii", "replace").strip("\x00 ")
        if tag > _SOP_INSTANCE_UID or length == 0xFFFFFFFF:
            return None
        pos = value + length
    return None


def _feed(h: Any, ds: Dataset) -> None:
    """Hash the elements of ``ds`` as stored (raw value bytes where pydicom kept them)."""
    for elem in ds.elements():
        tag = int(elem.tag)
        if tag >> 16 == 0x0002:
            continue  # file meta: differs between two exports of the same object
        h.update(tag.to_bytes(4, "little"))
        if isinstance(elem, RawDataElement):
            h.update(elem.value or b"")
        elif elem.VR == "SQ":
            for item in elem.value:
                h.update(b"\xfe\xff\x00\xe0")
                _feed(h, item)
            h.update(b"\xfe\xff\xdd\xe0")
        else:
            h.update(repr(elem.value).encode("utf-8", "surrogateescape"))


def quick_digest(data: bytes) -> tuple[str, str] | None:
    """:func:`source_digest` of a whole file already in memory, where its quick path
    applies; None where pydicom must read the file (the caller then calls
    :func:`source_digest`)."""
    start = _quick_start(data[:_HEAD])
    if start is None:
        return None
    h = hashlib.sha256(b"dataset\x00")
    h.update(memoryview(data)[start[0]:])
    return start[1], h.hexdigest()


def _quick_start(head: bytes) -> tuple[int, str] | None:
    """(where the dataset starts, SOP Instance UID) from a file's first bytes, where the
    quick path applies (a Part 10 header, not deflated); None where pydicom must read it.
    One decision for both digests: a file hashed in memory and one streamed must agree."""
    meta = _meta_end(head)
    uid = _sop_uid(head, *meta) if meta is not None and meta[1] not in _DEFLATED else None
    return None if meta is None or uid is None else (meta[0], uid)


def source_digest(path: Path, root: Path | None = None) -> tuple[str, str]:
    """(SOP Instance UID, SHA-256 of the dataset without its file meta) of one file.

    The bytes after the file meta group are hashed as they are, streamed; the file meta
    (which differs between two exports of one object) is left out. Files this quick path
    cannot read (no Part 10 header, deflated) are hashed element by element by pydicom.
    Raises OSError when the file cannot be read; ValueError when it is not DICOM.
    """
    with open_export_file(path, root) as fh:  # never through a link (agent.boundary)
        head = fh.read(_HEAD)
        start = _quick_start(head)
        if start is None:
            return _digest_with_pydicom(path, root)
        h = hashlib.sha256(b"dataset\x00")
        h.update(memoryview(head)[start[0]:])
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return start[1], h.hexdigest()


def _digest_with_pydicom(path: Path, root: Path | None = None) -> tuple[str, str]:
    """The slow path of :func:`source_digest`: the header element by element, then the
    pixel data and anything after them as bytes."""
    h = hashlib.sha256(b"elements\x00")
    with open_export_file(path, root) as fh:
        try:
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, EOFError, TypeError, KeyError,
                AttributeError, NotImplementedError, OverflowError, ValueError) as exc:
            raise ValueError(f"not readable as DICOM ({type(exc).__name__})") from None
        uid = str(ds.get("SOPInstanceUID", "") or "")
        _feed(h, ds)
        h.update(b"\x00pixels\x00")
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return uid, h.hexdigest()


def fingerprint(path: str, state: FileState, key: bytes,
                root: Path | None = None, known: tuple[str, str] | None = None) -> Instance:
    """The keyed identity and content of one exported file (see :func:`source_digest`);
    ``known``: its (UID, digest) from a read at this very state (:mod:`agent.exportlook`)."""
    uid, digest = known if known is not None else source_digest(Path(path), root)
    content = keyed_hash(key, "content", digest)
    # An object without a SOP Instance UID is known by its content alone.
    ident = keyed_hash(key, "instance", uid) if uid else "content:" + content
    return Instance(path=path, uid_hash=ident, content_hash=content, mtime_ns=state.mtime_ns)


@dataclass
class Plan:
    """What to do with an export of a series, given what was delivered of it before."""

    #: One instance per SOP Instance UID: the files to stage.
    chosen: list[Instance] = field(default_factory=list)
    added: list[Instance] = field(default_factory=list)
    changed: list[Instance] = field(default_factory=list)
    unchanged: int = 0
    #: Instances of the earlier versions that this export does not hold.
    absent: int = 0
    #: Copies of an instance dropped because another copy was taken (same content).
    duplicates: int = 0
    #: Instances found twice with different content at once: the newest file was taken.
    conflicts: int = 0
    #: The series (ledger id) whose content this export repeats, when nothing is new.
    repeats: int | None = None
    #: Version of the newest earlier series that the changes are counted against.
    since_version: int | None = None

    @property
    def nothing_new(self) -> bool:
        return self.repeats is not None

    def changes(self, names: Mapping[str, str]) -> dict[str, Any]:
        """The manifest's ``changes``: delivered file names (``names`` maps export path to
        the name of its staged copy) of added and changed instances, and counts."""
        return {
            "since_version": self.since_version,
            "added": sorted(names[i.path] for i in self.added if i.path in names),
            "changed": sorted(names[i.path] for i in self.changed if i.path in names),
            "unchanged": self.unchanged,
            "not_in_this_version": self.absent,
            "duplicate_copies_dropped": self.duplicates,
            "conflicting_copies": self.conflicts,
        }


def plan_export(files: Mapping[str, FileState], key: bytes,
                known: Mapping[str, tuple[str, int]],
                versions: Mapping[int, int] | None = None,
                root: Path | None = None,
                digests: Mapping[str, tuple[str, str]] | None = None) -> Plan:
    """Decide what to stage from an export, compared with ``known`` (uid hash ->
    (content hash, series id) of versions delivered or under way; see
    :meth:`agent.ledger.Ledger.known_instances`). ``versions`` maps series id to version.
    ``digests``: (UID, digest) of files already read at the states in ``files``
    (:class:`agent.exportlook.LookCache`); the others are read here.

    Raises OSError / ValueError from reading a file (the caller quarantines the series).
    """
    by_uid: dict[str, list[Instance]] = {}
    for path in sorted(files):
        inst = fingerprint(path, files[path], key, root, (digests or {}).get(path))
        by_uid.setdefault(inst.uid_hash, []).append(inst)
    plan = Plan()
    for copies in by_uid.values():
        copies.sort(key=lambda i: (i.mtime_ns, i.path))
        newest = copies[-1]
        plan.chosen.append(newest)
        if len({c.content_hash for c in copies}) > 1:
            plan.conflicts += 1
        plan.duplicates += len(copies) - 1 - (len({c.content_hash for c in copies}) - 1)
        earlier = known.get(newest.uid_hash)
        if earlier is None:
            plan.added.append(newest)
        elif earlier[0] != newest.content_hash:
            plan.changed.append(newest)
        else:
            plan.unchanged += 1
    plan.absent = len(set(known) - set(by_uid))
    if known:
        newest_id = max(series_id for _c, series_id in known.values())
        plan.since_version = (versions or {}).get(newest_id)
        if not plan.added and not plan.changed:
            plan.repeats = newest_id
    return plan
