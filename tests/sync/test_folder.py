"""The folder target (the embedded default) on a real disk: atomic, verified, idempotent,
never overwriting, owner-only or group-readable as configured, and honest about faults."""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path

import pytest

from agent.errors import ConfigError, TargetUnavailable
from agent.sync.base import Delivery
from agent.sync.folder import FolderTarget
from agent.sync.manifest import build_manifest, describe_files, verify_folder
from tests.conftest import manifests

SERIES = "SITE/SITE-P1/st1/se1"


def _delivery(tmp_path: Path, contents: list[bytes], version: int = 1) -> Delivery:
    folder = tmp_path / f"made-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    files = []
    for i, data in enumerate(contents):
        local = folder / f"IM{i:04d}.dcm"
        local.write_bytes(data)
        files.append((local.name, local))
    described = describe_files(files)
    manifest = build_manifest(described, ledger_head="0" * 64, site="SITE",
                              patient="SITE-P1", study="st1", series="se1", version=version)
    return Delivery(series_key="k", series_path=SERIES, version=version, files=described,
                    manifest=manifest)


def test_delivers_files_then_manifest_in_one_rename(tmp_path: Path) -> None:
    out = tmp_path / "outbox"
    receipt = FolderTarget(out).deliver(_delivery(tmp_path, [b"a" * 100, b"b" * 50]))
    assert receipt.location == SERIES and receipt.bytes_sent == 150
    final = out / SERIES
    assert verify_folder(final) == []
    assert not [p for p in final.parent.iterdir() if p.name.endswith(".partial")]
    manifest = json.loads((final / "manifest.json").read_text())
    assert [f["path"] for f in manifest["files"]] == ["IM0000.dcm", "IM0001.dcm"]


def test_the_same_content_again_is_recognised_not_resent(tmp_path: Path) -> None:
    out = tmp_path / "outbox"
    target = FolderTarget(out)
    d = _delivery(tmp_path, [b"same"])
    target.deliver(d)
    again = target.deliver(d)  # a redelivery after a crash
    assert again.already_present and again.location == SERIES
    assert len(manifests(out)) == 1


def test_other_content_under_the_same_name_becomes_the_next_version(tmp_path: Path) -> None:
    out = tmp_path / "outbox"
    target = FolderTarget(out)
    target.deliver(_delivery(tmp_path, [b"first"]))
    second = target.deliver(_delivery(tmp_path, [b"other"]))
    assert second.location == SERIES + ".v2"
    assert json.loads((out / (SERIES + ".v2") / "manifest.json").read_text())["version"] == 2
    assert (out / SERIES / "IM0000.dcm").read_bytes() == b"first"  # never overwritten


def test_a_partial_copy_left_by_a_crash_is_removed_and_redone(tmp_path: Path) -> None:
    out = tmp_path / "outbox"
    stale = out / "SITE/SITE-P1/st1" / ".se1.deadbeef.partial"
    stale.mkdir(parents=True)
    (stale / "manifest.json").write_text("{}")  # what a kill -9 mid-delivery leaves
    assert manifests(out) == []  # a partial folder's manifest is no delivery
    FolderTarget(out).deliver(_delivery(tmp_path, [b"x"]))
    assert not stale.exists()
    assert manifests(out) == [out / SERIES / "manifest.json"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
@pytest.mark.parametrize(("group", "dirs", "files"), [(False, 0o700, 0o600),
                                                      (True, 0o750, 0o640)])
def test_modes_follow_the_configuration_not_the_umask(tmp_path: Path, group: bool, dirs: int,
                                                      files: int) -> None:
    old = os.umask(0o002)
    try:
        out = tmp_path / "outbox"
        out.mkdir()
        FolderTarget(out, group_readable=group).deliver(_delivery(tmp_path, [b"x", b"y"]))
    finally:
        os.umask(old)
    made = list(out.rglob("*"))
    assert {stat.S_IMODE(p.stat().st_mode) for p in made if p.is_dir()} == {dirs}
    assert {stat.S_IMODE(p.stat().st_mode) for p in made if p.is_file()} == {files}


def test_an_unreachable_outbox_is_a_passing_fault(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("the share is not mounted")
    target = FolderTarget(blocker / "outbox")
    assert target.check() and "not writable" in target.check()[0]
    with pytest.raises(TargetUnavailable, match="retried"):
        target.deliver(_delivery(tmp_path, [b"x"]))


def test_an_empty_path_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="target.path"):
        FolderTarget("")
