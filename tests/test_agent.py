"""The Agent end to end, in process and as a real `clinic2cloud run` process."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from agent.config import Config
from agent.main import Agent
from agent.status import AgentEvent, AgentState
from agent.sync.manifest import verify_folder
from agent.vocab import SeriesState
from tests.conftest import (
    PATIENT_ID,
    PATIENT_NAME,
    StartAgent,
    manifests,
    spawn_agent,
    write_series,
)
from tests.waiting import wait_until


def test_series_delivered_deidentified_with_manifest(running_agent: StartAgent, export_dir: Path,
                                                     outbox_dir: Path) -> None:
    events: list[AgentEvent] = []
    agent = running_agent()
    agent.subscribe(events.append)
    write_series(export_dir / PATIENT_NAME, 4)
    assert wait_until(lambda: len(manifests(outbox_dir)) == 1)
    [manifest] = manifests(outbox_dir)
    folder = manifest.parent
    assert verify_folder(folder) == []
    doc = json.loads(manifest.read_text())
    assert len(doc["files"]) == 4 and doc["version"] == 1 and len(doc["ledger_head"]) == 64
    rel = folder.relative_to(outbox_dir).as_posix()
    assert rel.startswith("SITE/") and PATIENT_NAME.split("^")[0] not in rel
    for f in folder.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        assert PATIENT_ID not in str(ds.PatientID) and ds.PatientIdentityRemoved == "YES"
        assert PATIENT_NAME.encode() not in f.read_bytes()
    assert wait_until(lambda: any(e.kind == "delivered" for e in events))
    assert wait_until(lambda: agent.status().state == AgentState.IDLE)
    assert agent.status().delivered_today == 1
    assert agent.ledger.verify_chain() == []


def test_late_files_make_a_new_version_identical_ones_do_not(
        running_agent: StartAgent, export_dir: Path, outbox_dir: Path) -> None:
    agent = running_agent()
    first = write_series(export_dir, 3)
    assert wait_until(lambda: len(manifests(outbox_dir)) == 1)
    ds = pydicom.dcmread(first[0])
    write_series(export_dir, 2, study_uid=ds.StudyInstanceUID,
                 series_uid=ds.SeriesInstanceUID, prefix="LATE")
    assert wait_until(lambda: len(manifests(outbox_dir)) == 2)
    v2 = [m for m in manifests(outbox_dir) if m.parent.name.endswith(".v2")]
    assert len(v2) == 1 and len(json.loads(v2[0].read_text())["files"]) == 5
    # Touching a file changes nothing in its content: recognised as already delivered,
    # no third version.
    os.utime(first[0], ns=(time.time_ns(), time.time_ns() + 10**9))
    assert agent._watcher is not None
    agent._watcher.rescan_now()
    assert wait_until(lambda: agent.ledger.reexport_count(0) == 1, timeout=15)
    assert agent.ledger.counts().get("delivered", 0) == 2
    assert len(manifests(outbox_dir)) == 2


def test_pause_survives_restart_and_resume_continues(
        make_config: Callable[..., Config], export_dir: Path, outbox_dir: Path) -> None:
    agent = Agent(make_config())
    agent.start()
    agent.pause(None)
    assert agent.status().state == AgentState.PAUSED
    agent.stop()
    agent = Agent(make_config())
    agent.start()
    try:
        assert agent.status().state == AgentState.PAUSED
        write_series(export_dir, 2)
        time.sleep(2.5)
        assert manifests(outbox_dir) == []
        agent.resume()
        assert wait_until(lambda: len(manifests(outbox_dir)) == 1)
    finally:
        agent.stop()


def test_timed_pause_ends_by_itself(running_agent: StartAgent, export_dir: Path,
                                    outbox_dir: Path) -> None:
    agent = running_agent()
    agent.pause(1.5)
    write_series(export_dir, 2)
    time.sleep(1.0)
    assert manifests(outbox_dir) == []
    assert wait_until(lambda: len(manifests(outbox_dir)) == 1, timeout=20)


def test_burned_in_series_is_quarantined_not_delivered(
        running_agent: StartAgent, export_dir: Path, outbox_dir: Path, tmp_path: Path) -> None:
    events: list[AgentEvent] = []
    agent = running_agent()
    agent.subscribe(events.append)
    files = write_series(tmp_path / "made", 2)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.BurnedInAnnotation = "YES"
        ds.save_as(export_dir / f.name)
    assert wait_until(lambda: agent.status().quarantined == 1)
    assert manifests(outbox_dir) == []
    [row] = agent.ledger.in_state(SeriesState.QUARANTINED)
    assert "burn" in row.reason.lower()
    # The worker finishes its bookkeeping after the ledger says quarantined.
    assert wait_until(lambda: agent.status().state == AgentState.ATTENTION)
    assert wait_until(lambda: any(e.kind == "quarantined" for e in events), timeout=5)
    # The quarantined copy stays local, with its reason.
    qdir = agent.config.paths.quarantine / str(row.id)
    assert (qdir / "reason.txt").is_file() and len(list(qdir.glob("*.dcm"))) == 2


def test_second_instance_refused(running_agent: StartAgent,
                                 make_config: Callable[..., Config]) -> None:
    from agent.instance import AlreadyRunning

    running_agent()
    other = Agent(make_config())
    with pytest.raises(AlreadyRunning, match="already running"):
        other.start()


# -- real processes ----------------------------------------------------------------------

def _write_config(path: Path, export: Path, outbox: Path, **extra: str) -> Path:
    lines = [f'[watch]\nfolder = "{export}"\nstable_seconds = 0.5\nrescan_seconds = 2\n',
             f'[target]\npath = "{outbox}"\n', "[deface]\nenabled = false\n"]
    lines += [f"{v}\n" for v in extra.values()]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def _spawn(config: Path, home: Path) -> subprocess.Popen[bytes]:
    return spawn_agent(config, home, stderr=subprocess.PIPE)


def _processes_of(home: Path) -> list[int]:
    """Live processes started with this agent home in their environment."""
    needle = f"CLINIC2CLOUD_HOME={home}".encode()
    found = []
    for proc_dir in Path("/proc").glob("[0-9]*"):
        try:
            if needle in (proc_dir / "environ").read_bytes().split(b"\0"):
                found.append(int(proc_dir.name))
        except OSError:
            continue
    return found


def _states(home: Path) -> list[str]:
    db = home / "state" / "ledger.sqlite3"
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return [r[0] for r in con.execute("SELECT state FROM series")]
        finally:
            con.close()
    except sqlite3.Error:
        return []


def test_sigterm_stops_within_5_seconds(tmp_path: Path, export_dir: Path,
                                        outbox_dir: Path) -> None:
    config = _write_config(tmp_path / "c.toml", export_dir, outbox_dir)
    proc = _spawn(config, tmp_path / "home")
    try:
        assert wait_until(lambda: (tmp_path / "home" / "state" / "ledger.sqlite3").exists())
        write_series(export_dir, 30)
        time.sleep(1.0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        assert time.monotonic() - t0 < 5.0
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    # Whatever was in flight finishes on the next start.
    proc = _spawn(config, tmp_path / "home")
    try:
        assert wait_until(lambda: len(manifests(outbox_dir)) == 1, timeout=60)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("kill_in", ["staged", "processed", "verified"])
def test_kill_9_mid_processing_delivers_exactly_once(
        tmp_path: Path, export_dir: Path, outbox_dir: Path, kill_in: str) -> None:
    config = _write_config(tmp_path / "c.toml", export_dir, outbox_dir)
    home = tmp_path / "home"
    proc = _spawn(config, home)
    try:
        write_series(export_dir, 120)
        reached = wait_until(lambda: kill_in in _states(home) or "delivered" in _states(home),
                             timeout=60)
        assert reached
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # No worker process of the killed agent lives on (it would hold memory, or locks). A
    # fork server killed with the agent while it still imports the stage modules notices
    # only once the imports end: on a loaded 2-core box that took more than 10 s.
    assert wait_until(lambda: not _processes_of(home), timeout=30), _processes_of(home)
    proc = _spawn(config, home)
    try:
        assert wait_until(lambda: "delivered" in _states(home), timeout=90)
        time.sleep(2.5)  # a rescan: nothing more must be delivered
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    found = manifests(outbox_dir)
    assert len(found) == 1
    assert verify_folder(found[0].parent) == []
    assert len(json.loads(found[0].read_text())["files"]) == 120
    assert not [p for p in outbox_dir.rglob("*") if p.name.endswith(".partial")]
    assert _states(home).count("delivered") == 1


def test_stop_is_prompt_even_with_a_busy_queue(make_config: Callable[..., Config],
                                               export_dir: Path) -> None:
    agent = Agent(make_config(pipeline_workers=1))
    agent.start()
    write_series(export_dir, 50)
    time.sleep(1.0)
    done = threading.Event()
    t0 = time.monotonic()

    def stop() -> None:
        agent.stop()
        done.set()

    threading.Thread(target=stop).start()
    assert done.wait(6)
    assert time.monotonic() - t0 < 5.5


def test_outbox_unavailable_shows_offline_then_recovers(
        running_agent: StartAgent, export_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "share"
    blocker.write_text("the share is not mounted")  # a file where the outbox folder should be
    events: list[AgentEvent] = []
    agent = running_agent(target_path=str(blocker / "outbox"))
    agent.subscribe(events.append)
    write_series(export_dir, 2)
    assert wait_until(lambda: agent.status().state == AgentState.OFFLINE)
    # The state is set just before the event is sent (from the worker thread): wait for it.
    assert wait_until(lambda: any(e.kind == "offline" for e in events), timeout=5)
    blocker.unlink()
    (blocker / "outbox").mkdir(parents=True)
    assert wait_until(lambda: len(manifests(blocker / "outbox")) == 1, timeout=30)
    assert wait_until(lambda: agent.status().state == AgentState.IDLE)
    assert wait_until(lambda: any(e.kind == "online" for e in events), timeout=5)


def test_exports_removed_only_when_asked_and_after_delivery(
        running_agent: StartAgent, export_dir: Path, outbox_dir: Path) -> None:
    running_agent(watch_delete_after_delivery=True)
    files = write_series(export_dir, 3)
    assert wait_until(lambda: len(manifests(outbox_dir)) == 1)
    assert wait_until(lambda: not any(f.exists() for f in files))


def test_exports_untouched_by_default(running_agent: StartAgent, export_dir: Path,
                                      outbox_dir: Path) -> None:
    files = write_series(export_dir, 3)
    before = {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in files}
    running_agent()
    assert wait_until(lambda: len(manifests(outbox_dir)) == 1)
    assert {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in files} == before
