"""What the node tells the views: one line, a snapshot file, and the control endpoint's
round trip."""

from __future__ import annotations

from pathlib import Path

from agent.dicomnode.status import NodeStatus, RefusedCaller, read_snapshot, write_snapshot
from agent.status import AgentState, AgentStatus, status_from_dict, status_to_dict
from agent.ui import text
from agent.ui.report import status_lines

NODE = NodeStatus(listening=True, ae_title="CLINIC2CLOUD", port=11112, tls=True,
                  associations=3, last_association=1_700_000_000.0, last_caller="PACS1",
                  instances_received=240,
                  refused_callers=(RefusedCaller("INTRUDER", "10.0.0.9",
                                                 "calling AE title not allowed", 1.0, 2),
                                   RefusedCaller("", "10.0.0.7", "address not allowed", 0.5)))


def test_summary_names_the_port_the_last_caller_and_who_was_refused() -> None:
    line = NODE.summary()
    assert line.startswith("DICOM node CLINIC2CLOUD listening on port 11112 (TLS)")
    assert "from PACS1" in line
    assert "3 refused (last INTRUDER@10.0.0.9: calling AE title not allowed)" in line
    off = NodeStatus(listening=False, ae_title="X", port=1, problem="port in use")
    assert off.summary() == "DICOM node not listening: port in use"


def test_snapshot_round_trip(tmp_path: Path) -> None:
    write_snapshot(NODE, tmp_path / "status.json")
    assert read_snapshot(tmp_path / "status.json") == NODE
    (tmp_path / "bad.json").write_text("{not json")
    assert read_snapshot(tmp_path / "bad.json") is None
    assert read_snapshot(tmp_path / "missing.json") is None


def test_status_carries_the_node_through_the_control_endpoint_and_views() -> None:
    status = AgentStatus(state=AgentState.IDLE, dicom=NODE)
    assert status_from_dict(status_to_dict(status)).dicom == NODE
    assert text.dicom_line(status) == NODE.summary()
    assert NODE.summary() in status_lines(status, [], source="agent", pid=1)
    assert text.dicom_line(AgentStatus(state=AgentState.IDLE)) == ""
