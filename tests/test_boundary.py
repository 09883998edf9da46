"""The export folder is a boundary: links planted in it (at start or while the agent runs),
folder links, FIFOs and devices never make the agent read or deliver anything outside it.

"Read" is measured with access times: the outside files get an access time in 1970 and a
current modification time, so any read(2) of them (relatime) moves the access time.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path

import pytest

from agent.boundary import OutsideExport, open_export_file
from agent.dicomfiles import is_complete, read_header
from tests.conftest import StartAgent, manifests, write_series
from tests.waiting import wait_until

SECRET_TEXT = b"root:x:0:0:CANARY-PASSWD-LINE\n"


def _untouched(path: Path) -> None:
    """Set the access time far back, so a later read shows."""
    os.utime(path, (1, time.time()), follow_symlinks=False)


def _was_read(path: Path) -> bool:
    return os.stat(path).st_atime > 10


@pytest.fixture
def outside(tmp_path: Path) -> tuple[Path, list[Path], Path]:
    """A folder outside the export folder with a whole series and a password-like file."""
    root = tmp_path / "outside"
    series = write_series(root / "other-patient", 3, patient_name="Outsider^Olga",
                          patient_id="OUTSIDE-1")
    passwd = root / "passwd"
    passwd.write_bytes(SECRET_TEXT)
    for p in (*series, passwd):
        _untouched(p)
    return root, series, passwd


def test_open_refuses_links_specials_and_paths_outside(tmp_path: Path,
                                                       outside: tuple[Path, list[Path], Path]
                                                       ) -> None:
    root, series, passwd = outside
    export = tmp_path / "export"
    export.mkdir()
    (export / "link.dcm").symlink_to(series[0])
    (export / "folder").symlink_to(root / "other-patient", target_is_directory=True)
    os.mkfifo(export / "fifo.dcm")
    for path in (export / "link.dcm", export / "folder" / series[0].name, export / "fifo.dcm"):
        with pytest.raises(OutsideExport):
            open_export_file(path, export).close()
        with pytest.raises(OSError):
            read_header(path, export)
    assert not is_complete(export / "fifo.dcm", export)
    assert not any(_was_read(p) for p in (*series, passwd))


def test_read_header_raises_for_a_link(tmp_path: Path, outside: tuple[Path, list[Path], Path]
                                       ) -> None:
    _, series, _ = outside
    (tmp_path / "e").mkdir()
    link = tmp_path / "e" / "x.dcm"
    link.symlink_to(series[0])
    with pytest.raises(OSError):
        read_header(link, tmp_path / "e")
    assert not _was_read(series[0])


def test_links_planted_while_running_are_never_followed(
        running_agent: StartAgent, export_dir: Path, outbox_dir: Path,
        outside: tuple[Path, list[Path], Path], caplog: pytest.LogCaptureFixture) -> None:
    root, series, passwd = outside
    (export_dir / "present-at-start.dcm").symlink_to(series[0])
    agent = running_agent()
    assert agent._watcher is not None
    assert wait_until(lambda: agent._watcher is not None and agent._watcher.scans >= 1)
    caplog.set_level(logging.WARNING, logger="agent.watcher")
    # Planted while the agent runs: file links, a folder link, a link to /etc/shadow-like
    # data, a FIFO and a device node, in an existing folder and a new one.
    sub = export_dir / "existing"
    sub.mkdir()
    for i, s in enumerate(series):
        (sub / f"IMG{i}.dcm").symlink_to(s)
    (sub / "passwd").symlink_to(passwd)
    (export_dir / "via-folder").symlink_to(root / "other-patient", target_is_directory=True)
    os.mkfifo(sub / "fifo.dcm")
    if os.geteuid() == 0:
        os.mknod(sub / "null.dcm", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    # A genuine series beside them is delivered, whole.
    mine = write_series(export_dir / "mine", 2)
    assert wait_until(lambda: len(manifests(outbox_dir)) == 1)
    agent._watcher.rescan_now()
    assert wait_until(lambda: agent._watcher is not None and agent._watcher.scans >= 3,
                      timeout=20)
    manifest = manifests(outbox_dir)[0].read_text()
    assert manifest.count('"path"') == len(mine)
    assert not any(_was_read(p) for p in (*series, passwd)), "an outside file was read"
    delivered = b"".join(p.read_bytes() for p in outbox_dir.rglob("*") if p.is_file())
    assert b"OUTSIDE-1" not in delivered and b"Outsider" not in delivered
    skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert any("symbolic link" in m for m in skipped)
    assert any("FIFO, device or socket" in m for m in skipped)
    assert not any(str(root) in m or "passwd" in m for m in skipped)  # no paths logged


def test_a_file_swapped_for_a_link_at_staging_is_not_copied(
        make_config: object, export_dir: Path, tmp_path: Path,
        outside: tuple[Path, list[Path], Path]) -> None:
    from agent.config import Config
    from agent.errors import ExportChanged
    from agent.keys import keyed_hash
    from agent.ledger import Ledger
    from agent.pipeline import Pipeline
    from agent.series import FileState
    from agent.sync.folder import FolderTarget

    assert callable(make_config)
    cfg = make_config()
    assert isinstance(cfg, Config)
    _, series, _ = outside
    files = write_series(export_dir / "s", 2)
    seen = {str(p): FileState(p.stat().st_size, p.stat().st_mtime_ns) for p in files}
    files[1].unlink()
    files[1].symlink_to(series[1])  # the attacker wins the race after the watcher looked
    ledger = Ledger(cfg.paths.ledger)
    pipeline = Pipeline(cfg, ledger, FolderTarget(tmp_path / "out"), [_Named("deidentify"),
                                                                        _Named("verify")],
                        b"i" * 32)
    with pytest.raises(ExportChanged):
        pipeline.stage(keyed_hash(b"k", "x"), seen)
    assert not _was_read(series[1])
    assert not list(cfg.paths.work.rglob("*.dcm"))
    ledger.close()


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, work: object) -> None:
        pass
