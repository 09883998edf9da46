"""The pipeline's endings: delivered, withheld by policy, quarantined."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from agent.config import Config
from agent.deid import DeidStage, VerifyStage
from agent.errors import Withheld
from agent.oneshot import process_folder
from agent.paths import AgentPaths
from agent.status import AgentEvent, AgentState
from agent.vocab import EventKind, ProblemCode, SeriesState, WithheldCode
from agent.work import SeriesWork, Stage
from tests.conftest import StartAgent, manifests, resize_disk, write_series
from tests.waiting import wait_until


class HoldLocalizers:
    """A policy stage that withholds every series whose description says localizer."""

    name = "select"

    def __call__(self, work: SeriesWork) -> None:
        if "LOCALIZER" in work.series_description.upper():
            raise Withheld("localizers are not sent", code=WithheldCode.LOCALIZER)


def test_withheld_is_an_ending_that_is_not_a_failure(
        make_config: Callable[..., Config], tmp_path: Path) -> None:
    cfg = make_config()
    secret = b"s" * 32
    src = tmp_path / "src"
    write_series(src / "a", 2)
    files = write_series(src / "b", 2)

    for f in files:
        ds = pydicom.dcmread(f)
        ds.SeriesDescription = "3-plane localizer"
        ds.save_as(f)
    out = tmp_path / "out"
    stages: list[Stage] = [DeidStage(cfg, secret), HoldLocalizers(), VerifyStage(cfg)]
    summary = process_folder(cfg, src, out, stages=stages)
    states = sorted(o.state for o in summary.series)
    assert states == [SeriesState.DELIVERED, SeriesState.WITHHELD]
    assert summary.ok and summary.as_dict()["withheld"] == 1
    [held] = [o for o in summary.series if o.state == SeriesState.WITHHELD]
    assert held.code == WithheldCode.LOCALIZER and "localizers" in held.reason
    assert len(list(out.rglob("manifest.json"))) == 1  # nothing of the withheld one left


# -- passing faults are waited out, never quarantined ----------------------------------------


def test_full_work_area_waits_shows_why_and_resumes_by_itself(
        running_agent: StartAgent, make_config: Callable[..., Config], export_dir: Path,
        outbox_dir: Path, small_disk: Callable[..., Path], agent_paths: AgentPaths,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from agent import diskspace

    monkeypatch.setattr(diskspace, "RETRY_SECONDS", 1.0)
    work = small_disk(8, at=agent_paths.work)  # less than the work area's reserve
    events: list[AgentEvent] = []
    agent = running_agent()
    agent.subscribe(events.append)
    write_series(export_dir / "s", 3)
    assert wait_until(lambda: agent.status().state == AgentState.DISK_FULL, timeout=30)
    message = agent.status().message
    assert message.startswith("the work area is full: ") and " free, " in message
    assert " needed" in message
    assert agent.status().quarantined == 0
    resize_disk(work, 200)  # someone frees space
    assert wait_until(lambda: len(manifests(outbox_dir)) == 1, timeout=30)
    assert wait_until(lambda: agent.status().state == AgentState.IDLE, timeout=10)
    assert any(e.kind == EventKind.DISK_FULL and "room again" in e.message for e in events)
    assert agent.ledger.in_state(SeriesState.QUARANTINED) == []


class FillTheDisk:
    """A stage that runs out of space once (writing its outputs fills the work area)."""

    name = "fill"

    def __init__(self) -> None:
        self.filled = False

    def __call__(self, work: SeriesWork) -> None:
        if self.filled:
            return
        self.filled = True
        with open(work.workdir / "big.tmp", "wb") as fh:
            while True:
                fh.write(b"\0" * (1 << 20))  # until ENOSPC


def test_disk_full_while_processing_is_retried_not_quarantined(
        make_config: Callable[..., Config], export_dir: Path, outbox_dir: Path,
        small_disk: Callable[..., Path], agent_paths: AgentPaths,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.main import Agent

    # The series is looked at again 1 s after the disk filled, not 30 s: the test's time.
    monkeypatch.setattr("agent.diskspace.RETRY_SECONDS", 1.0)
    work = small_disk(80, at=agent_paths.work)
    cfg = make_config()
    secret = b"s" * 32
    fill = FillTheDisk()
    agent = Agent(cfg, stages=[DeidStage(cfg, secret), fill, VerifyStage(cfg)])
    agent.start()
    try:
        write_series(export_dir / "s", 2)
        assert wait_until(lambda: fill.filled, timeout=30)
        assert wait_until(lambda: agent.status().state == AgentState.DISK_FULL, timeout=30)
        resize_disk(work, 300)
        agent._queue.wake()
        assert wait_until(lambda: len(manifests(outbox_dir)) == 1, timeout=60)
        assert agent.ledger.in_state(SeriesState.QUARANTINED) == []
    finally:
        agent.stop()


def test_the_ledger_refuses_to_start_on_a_full_disk_in_one_line(
        tmp_path: Path, small_disk: Callable[..., Path]) -> None:
    import subprocess
    import sys

    home = small_disk(4)  # below what the ledger needs to start
    export = tmp_path / "export"
    export.mkdir()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[watch]\nfolder = "{export}"\n[target]\npath = "{tmp_path / "o"}"\n'
                   "[deface]\nenabled = false\n")
    env = {**os.environ, "CLINIC2CLOUD_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-m", "agent", "run", "--headless", "--config",
                           str(cfg)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "is full:" in lines[0] and "Traceback" not in proc.stderr


def test_a_full_disk_under_a_running_ledger_is_a_passing_fault(
        small_disk: Callable[..., Path]) -> None:
    from agent.errors import DiskFull
    from agent.ledger import Ledger

    disk = small_disk(20)
    ledger = Ledger(disk / "ledger.sqlite3", b"k" * 32)
    with open(disk / "filler", "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (1 << 16))
        except OSError:
            pass
    with pytest.raises(DiskFull, match="is full"):
        for i in range(2000):
            ledger.audit("agent-started", n=i, pad="x" * 2000)
    (disk / "filler").unlink()
    ledger.audit("agent-started")  # room again: it simply works
    assert ledger.verify_chain() == []
    ledger.close()


# -- a file that changes while the series is taken -------------------------------------------


def test_a_file_rewritten_while_taken_makes_the_series_wait_not_ship_short(
        running_agent: StartAgent, export_dir: Path, outbox_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from agent import pipeline as pipeline_module

    real = pipeline_module.Pipeline._copy_in
    rewritten: list[str] = []

    def copy_while_rewriting(self: object, path: str, seen: object, dst: Path
                             ) -> tuple[int, ...] | None:
        if rewritten or not path.endswith("IMG00005.dcm"):
            return real(self, path, seen, dst)  # type: ignore[arg-type]
        rewritten.append(path)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])  # the viewer rewrites it now ...
        try:
            return real(self, path, seen, dst)  # type: ignore[arg-type]
        finally:
            Path(path).write_bytes(data)  # ... and finishes a moment later

    monkeypatch.setattr(pipeline_module.Pipeline, "_copy_in", copy_while_rewriting)
    running_agent()
    files = write_series(export_dir / "s", 10)
    assert wait_until(lambda: len(manifests(outbox_dir)) == 1, timeout=45)
    import json

    manifest = json.loads(manifests(outbox_dir)[0].read_text())
    assert len(manifest["files"]) == len(files) == 10  # whole, never 9 of 10
    assert rewritten


def test_a_file_that_cannot_be_read_for_a_while_waits_never_quarantines(
        running_agent: StartAgent, export_dir: Path, outbox_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """EACCES that goes away (a viewer holding the file locked, permissions fixed by IT):
    the series waits for another quiet period and is delivered once the file reads."""
    import errno
    from typing import BinaryIO

    from agent import staging, watcher
    from agent.boundary import open_export_file

    monkeypatch.setattr(watcher, "_RETRY", 0.5)  # the scanner looks again soon (30 s)
    refused: list[str] = []

    def locked_for_a_while(path: str | Path, root: Path | None = None) -> BinaryIO:
        if str(path).endswith("IMG00002.dcm") and len(refused) < 3:
            refused.append(str(path))
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return open_export_file(path, root)

    monkeypatch.setattr(staging, "open_export_file", locked_for_a_while)
    agent = running_agent()
    write_series(export_dir / "s", 4)
    assert wait_until(lambda: len(manifests(outbox_dir)) == 1, timeout=30)
    assert len(refused) == 3
    # The manifest is written just before the ledger says delivered: wait for that too.
    assert wait_until(lambda: agent.ledger.counts() == {SeriesState.DELIVERED: 1},
                      timeout=10)  # never quarantined


# -- limits, before anything is read ---------------------------------------------------------


def _sparse_giant(path: Path) -> None:
    """A valid header claiming ~4 GB of pixel data, the data a sparse hole."""
    import struct

    template = pydicom.dcmread(write_series(path.parent / "tpl", 1)[0])
    del template.PixelData
    template.Rows, template.Columns, template.NumberOfFrames = 32768, 32767, 2
    template.save_as(path, enforce_file_format=True)
    length = 32768 * 32767 * 2 * 2
    with open(path, "r+b") as fh:
        fh.seek(0, 2)
        fh.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, length))
        fh.truncate(fh.tell() + length)


def test_a_file_claiming_4_gb_is_quarantined_before_it_is_read(
        running_agent: StartAgent, export_dir: Path, outbox_dir: Path,
        make_config: Callable[..., Config]) -> None:
    import resource

    from agent.main import Agent

    giant = export_dir / "giant" / "IMG0.dcm"
    giant.parent.mkdir()
    _sparse_giant(giant)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    agent = running_agent()
    assert wait_until(lambda: agent.status().quarantined == 1, timeout=60)
    [row] = agent.ledger.in_state(SeriesState.QUARANTINED)
    assert row.code == ProblemCode.TOO_LARGE and "max_file_mb" in row.reason
    grew_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grew_kb < 500_000, f"memory grew by {grew_kb} kB"
    assert not any(agent.config.paths.work.rglob("*.dcm"))  # not even copied
    agent.stop()
    again = Agent(make_config())  # a restart does not take it again
    again.start()
    try:
        assert wait_until(lambda: again._watcher is not None and again._watcher.scans >= 1)
        assert again.ledger.counts().get(SeriesState.STAGED, 0) == 0
        assert len(again.ledger.in_state(SeriesState.QUARANTINED)) == 1
    finally:
        again.stop()


class ShortenPixels:
    """A buggy stage: its outputs lose the end of their pixel data."""

    name = "shorten"

    def __call__(self, work: SeriesWork) -> None:
        for path in work.files:
            ds = pydicom.dcmread(path)
            ds.PixelData = ds.PixelData[:-64]
            ds.save_as(path)


def test_outputs_that_would_not_decode_are_quarantined_with_the_reason(
        make_config: Callable[..., Config], tmp_path: Path) -> None:
    cfg = make_config()
    src = tmp_path / "src"
    write_series(src / "a", 3)
    out = tmp_path / "out"
    stages: list[Stage] = [DeidStage(cfg, b"s" * 32), VerifyStage(cfg), ShortenPixels()]
    summary = process_folder(cfg, src, out, stages=stages)
    [outcome] = summary.series
    assert outcome.state == SeriesState.QUARANTINED
    assert outcome.code == ProblemCode.INVALID_OUTPUT and "pixel data" in outcome.reason
    assert list(out.rglob("*.dcm")) == []


# -- the one-shot's staged links -------------------------------------------------------------


class SeeOriginals:
    """Notes the inodes of the staged originals; with ``rewrite``, rewrites one exported
    file in place first (a byte of it changed, its modification time put back)."""

    name = "see-originals"

    def __init__(self, rewrite: Path | None = None) -> None:
        self.rewrite = rewrite
        self.inodes: set[int] = set()

    def __call__(self, work: SeriesWork) -> None:
        self.inodes |= {os.stat(p).st_ino for p in work.source_files}
        if self.rewrite is not None:
            st = os.stat(self.rewrite)
            data = bytearray(self.rewrite.read_bytes())
            data[-1] ^= 0xFF
            with open(self.rewrite, "r+b") as fh:  # in place: the same inode
                fh.write(data)
            os.utime(self.rewrite, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_the_one_shot_stages_links_and_leaves_the_export_as_it_was(
        make_config: Callable[..., Config], tmp_path: Path) -> None:
    """``process`` stages a hard link where it can (no bytes copied): delivered as from a
    copy, and the exported files keep their bytes and modification times."""
    cfg = make_config()
    seer = SeeOriginals()
    src = tmp_path / "src"
    files = write_series(src / "a", 3)
    before = {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in files}
    summary = process_folder(cfg, src, tmp_path / "out",
                             stages=[DeidStage(cfg, b"s" * 32), seer, VerifyStage(cfg)])
    assert [o.state for o in summary.series] == [SeriesState.DELIVERED]
    assert seer.inodes == {f.stat().st_ino for f in files}  # the staged files were links
    assert {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in files} == before
    assert all(f.stat().st_nlink == 1 for f in files)  # the links went with the work area
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 3


def test_an_export_rewritten_in_place_while_processed_is_not_delivered(
        make_config: Callable[..., Config], tmp_path: Path) -> None:
    """A staged link whose exported file is rewritten during processing (even with its
    modification time put back) delivers nothing: the stages read changing originals."""
    cfg = make_config()
    src = tmp_path / "src"
    files = write_series(src / "a", 3)
    seer = SeeOriginals(rewrite=files[1])
    summary = process_folder(cfg, src, tmp_path / "out",
                             stages=[DeidStage(cfg, b"s" * 32), seer, VerifyStage(cfg)])
    [outcome] = summary.series
    assert outcome.state not in (SeriesState.DELIVERED, SeriesState.WITHHELD)
    assert "changed in the export folder while the series was processed" in outcome.reason
    assert not summary.ok
    assert list((tmp_path / "out").rglob("*.dcm")) == []


def test_an_export_that_cannot_be_linked_is_copied(
        make_config: Callable[..., Config], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a link is refused (another filesystem, protected_hardlinks), the file is
    copied as before."""
    import errno

    link = os.link

    def refuse(src: str, dst: Path, **kwargs: bool) -> None:
        if Path(dst).parent.name == "source.partial":  # staging's links only
            raise PermissionError(errno.EPERM, "not permitted")
        link(src, dst, **kwargs)

    monkeypatch.setattr(os, "link", refuse)
    cfg = make_config()
    seer = SeeOriginals()
    src = tmp_path / "src"
    files = write_series(src / "a", 3)
    summary = process_folder(cfg, src, tmp_path / "out",
                             stages=[DeidStage(cfg, b"s" * 32), seer, VerifyStage(cfg)])
    assert [o.state for o in summary.series] == [SeriesState.DELIVERED]
    assert not seer.inodes & {f.stat().st_ino for f in files}
