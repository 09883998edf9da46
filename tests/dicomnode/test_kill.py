"""The agent killed with SIGKILL while a PACS sends: nothing acknowledged is lost, every
instance is delivered once."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pydicom

from agent.sync.manifest import verify_folder
from tests.conftest import write_series
from tests.dcmtk import dcmtk
from tests.waiting import wait_until

from .conftest import AgentProcess, AgentProcesses, manifests, parse_responses, storescu


def _intake_uids(agent: AgentProcess) -> set[str]:
    uids = set()
    for p in agent.intake.glob("*.dcm"):
        try:
            uids.add(str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID))
        except FileNotFoundError:
            continue
    return uids


def test_sigkill_during_transfer_loses_no_acknowledged_instance(
        agent_process: AgentProcesses, tmp_path: Path, outbox_dir: Path) -> None:
    files = write_series(tmp_path / "pacs", 60)
    uid_of = {f: str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
              for f in files}
    agent: AgentProcess = agent_process(stable_seconds=4.0).start()
    sender = subprocess.Popen(
        [dcmtk("storescu"), "-v", "-aet", "VIEWER", "-aec", "CLINIC2CLOUD", "127.0.0.1",
         str(agent.port), *map(str, files)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        assert wait_until(lambda: len(list(agent.intake.glob("*.dcm"))) >= 12, timeout=60,
                          step=0.002)
        agent.kill()
        output, _ = sender.communicate(timeout=60)
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait()
    acked, _ = parse_responses(output)
    assert 0 < len(acked) < len(files), "the kill came too late to test anything"
    # Every instance the sender was told "success" for is on disk, whole.
    on_disk = _intake_uids(agent)
    assert {uid_of[f] for f in acked} <= on_disk
    assert agent.states() == []  # nothing was taken for a series yet

    # Restarted, the agent receives what the sender never had confirmed.
    agent.start()
    rest = [f for f in files if f not in set(acked)]
    sent = storescu(agent.port, rest)
    assert sent.returncode == 0 and len(sent.acknowledged) == len(rest), sent.output
    assert wait_until(lambda: "delivered" in agent.states(), timeout=120)
    assert wait_until(lambda: not list(agent.intake.glob("*.dcm")), timeout=30)
    agent.stop()
    [manifest] = manifests(outbox_dir)
    assert verify_folder(manifest.parent) == []
    delivered = [pydicom.dcmread(p) for p in manifest.parent.glob("*.dcm")]
    assert len(json.loads(manifest.read_text())["files"]) == len(delivered) == len(files)
    assert len({str(ds.SOPInstanceUID) for ds in delivered}) == len(files)
    assert agent.states() == ["delivered"]

