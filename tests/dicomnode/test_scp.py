"""Receiving with storescu: acknowledged instances become series that are delivered."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom

from agent.main import Agent
from tests.conftest import PATIENT_ID, PATIENT_NAME, write_series
from tests.waiting import wait_until

from .conftest import NodeAgents, echoscu, manifests, port_of, storescu


def test_storescu_series_is_delivered_deidentified(node_agent: NodeAgents, tmp_path: Path,
                                                   outbox_dir: Path) -> None:
    agent: Agent = node_agent()
    files = write_series(tmp_path / "send", 6)
    sent = storescu(port_of(agent), files)
    assert sent.returncode == 0, sent.output
    assert len(sent.acknowledged) == 6
    assert wait_until(lambda: len(manifests(outbox_dir)) == 1, timeout=60)
    [manifest] = manifests(outbox_dir)
    assert len(json.loads(manifest.read_text())["files"]) == 6
    for out in manifest.parent.glob("*.dcm"):
        ds = pydicom.dcmread(out)
        assert PATIENT_NAME not in str(ds.PatientName)
        assert ds.PatientID != PATIENT_ID
    node = agent.dicom_status()
    assert node is not None and node.instances_received == 6 and node.associations == 1
    assert node.last_caller == "VIEWER"


def test_echo_answers(node_agent: NodeAgents) -> None:
    agent: Agent = node_agent()
    r = echoscu(port_of(agent))
    assert r.returncode == 0, r.stderr
