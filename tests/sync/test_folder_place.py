"""The folder target puts files in place without copying twice, and keeps its guarantees:
a hard-linked delivery survives the work area's clean-up, reflink falls back to a real
copy, a copy is checked against the manifest as it is made, and a crash between the files
and the manifest leaves no manifest."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from agent.errors import TargetUnavailable
from agent.sync import place
from agent.sync.base import Delivery
from agent.sync.folder import FolderTarget
from agent.sync.manifest import build_manifest, describe_files, verify_folder


def _delivery(work: Path, n: int = 3, *, linkable: bool = True) -> Delivery:
    work.mkdir(parents=True, exist_ok=True)
    locals_ = []
    for i in range(n):
        p = work / f"{i}.dcm"
        p.write_bytes(os.urandom(4096) + bytes([i]))
        locals_.append((p.name, p))
    files = describe_files(locals_)
    manifest = build_manifest(files, ledger_head="0" * 64, site="SITE", patient="P",
                              study="S", series="R", version=1)
    return Delivery(series_key="k", series_path="SITE/P/S/R", version=1, files=files,
                    manifest=manifest, linkable=linkable)


def test_hard_linked_delivery_survives_the_work_area_clean_up(tmp_path: Path) -> None:
    work, outbox = tmp_path / "work" / "out", tmp_path / "outbox"
    delivery = _delivery(work)
    receipt = FolderTarget(outbox).deliver(delivery)
    final = outbox / receipt.location
    for f in delivery.files:
        assert place.same_file(f.local, final / f.path), "same filesystem: linked, not copied"
    shutil.rmtree(tmp_path / "work")  # what the pipeline does after delivery
    assert verify_folder(final) == []
    assert sorted(p.name for p in final.iterdir()) == ["0.dcm", "1.dcm", "2.dcm",
                                                        "manifest.json"]


def test_files_not_linkable_are_copied(tmp_path: Path) -> None:
    delivery = _delivery(tmp_path / "work", linkable=False)
    final = tmp_path / "outbox" / FolderTarget(tmp_path / "outbox").deliver(delivery).location
    for f in delivery.files:
        assert not place.same_file(f.local, final / f.path)
    assert verify_folder(final) == []


def test_no_link_and_no_reflink_falls_back_to_a_hashed_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def cross_device(_src: object, _dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    src, dst = tmp_path / "a", tmp_path / "b"
    src.write_bytes(b"x" * 100_000)
    placed = place.place(src, dst, linkable=True)
    # On a filesystem that clones (Btrfs, XFS) FICLONE works; elsewhere a real copy.
    assert placed.how in ("reflink", "copy")
    assert dst.read_bytes() == src.read_bytes() and not place.same_file(src, dst)
    monkeypatch.setattr(place, "reflink", lambda *_a, **_k: False)
    dst.unlink()
    placed = place.place(src, dst, linkable=True)
    assert placed.how == "copy" and placed.size == 100_000
    assert placed.sha256 == describe_files([("a", src)])[0].sha256


def test_reflink_declines_cleanly_where_the_filesystem_cannot(tmp_path: Path) -> None:
    src, dst = tmp_path / "a", tmp_path / "b"
    src.write_bytes(b"y" * 5000)
    if place.reflink(src, dst):
        assert dst.read_bytes() == src.read_bytes()
        src.write_bytes(b"z" * 5000)  # copy-on-write: the clone keeps its content
        assert dst.read_bytes() == b"y" * 5000
    else:
        assert not dst.exists()


def test_staging_never_links_an_exported_file(tmp_path: Path) -> None:
    """A viewer may rewrite an export in place: the staged copy must not change with it."""
    export, staged = tmp_path / "export.dcm", tmp_path / "staged.dcm"
    export.write_bytes(b"first export" * 1000)
    assert place.clone_or_copy(export, staged) in ("reflink", "copy")
    assert not place.same_file(export, staged)
    with open(export, "r+b") as fh:  # rewritten in place, as some viewers do
        fh.write(b"SECOND")
    assert staged.read_bytes() == b"first export" * 1000


def test_a_file_that_changed_after_hashing_is_not_delivered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    delivery = _delivery(tmp_path / "work", linkable=False)
    monkeypatch.setattr(place, "reflink", lambda *_a, **_k: False)
    delivery.files[1].local.write_bytes(b"changed after the manifest was made")
    outbox = tmp_path / "outbox"
    with pytest.raises(TargetUnavailable, match="does not match its manifest"):
        FolderTarget(outbox).deliver(delivery)
    assert not list(outbox.rglob("manifest.json"))
    assert not list(outbox.rglob("*.partial"))


def test_crash_between_files_and_manifest_leaves_no_manifest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    delivery = _delivery(tmp_path / "work")
    outbox = tmp_path / "outbox"

    def power_cut(folder_: Path, files: object) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr("agent.sync.folder.make_durable", power_cut)
    with pytest.raises(TargetUnavailable):
        FolderTarget(outbox).deliver(delivery)
    assert not list(outbox.rglob("manifest.json")), "a manifest before its files are durable"
    # The next attempt delivers normally.
    monkeypatch.undo()
    receipt = FolderTarget(outbox).deliver(delivery)
    assert verify_folder(outbox / receipt.location) == []


def test_files_are_durable_before_the_manifest_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    delivery = _delivery(tmp_path / "work")
    order: list[str] = []
    real = place.make_durable

    def recording(where: Path, files: list[Path]) -> None:
        order.append(f"durable:{len(files)}:{(where / 'manifest.json').exists()}")
        real(where, files)

    monkeypatch.setattr("agent.sync.folder.make_durable", recording)
    FolderTarget(tmp_path / "outbox").deliver(delivery)
    assert order == ["durable:3:False"]


def test_make_durable_fsyncs_every_file_and_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    files = []
    for i in range(4):
        (tmp_path / "sub").mkdir(exist_ok=True)
        p = tmp_path / ("sub" if i % 2 else ".") / f"{i}.bin"
        p.write_bytes(b"data")
        files.append(p)
    place.make_durable(tmp_path, files)
    assert len(synced) == 4 + 2  # four files, the folder and its sub-folder
