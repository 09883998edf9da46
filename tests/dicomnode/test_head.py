"""A real head sent by storescu arrives de-identified, defaced and delivered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from agent.main import Agent
from agent.sync.manifest import verify_folder
from tests.conftest import write_series
from tests.deface.conftest import Colin, colin, make_case  # noqa: F401 - the fixture
from tests.deface.dicom_writer import write_mr_series
from tests.waiting import wait_until

from .conftest import AgentProcesses, NodeAgents, Storescps, manifests, port_of, storescu

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus" / "dicom"
#: A real GE series (a DWI of 14 files): small enough for the default run.
GE_SERIES = CORPUS / "dcm_qa_ge" / "01_Ax_DWI_TENSOR_R2"


def test_head_series_sent_by_storescu_is_defaced_and_delivered(
        agent_process: AgentProcesses, colin: Colin, tmp_path: Path, outbox_dir: Path) -> None:  # noqa: F811
    case = make_case(colin, "sagittal", (2.0, 2.0, 2.0))
    files = write_mr_series(case.image, tmp_path / "viewer")
    agent = agent_process(deface=True).start()
    sent = storescu(agent.port, files)
    assert sent.returncode == 0 and len(sent.acknowledged) == len(files), sent.output
    assert wait_until(lambda: len(manifests(outbox_dir)) == 1, timeout=150)
    [manifest] = manifests(outbox_dir)
    doc = json.loads(manifest.read_text())
    assert doc["defaced"] is True and "113102" in doc["deidentification_codes"], doc
    assert verify_folder(manifest.parent) == []
    outputs = [pydicom.dcmread(p) for p in manifest.parent.glob("*.dcm")]
    assert len(outputs) == len(files)
    for ds in outputs:
        assert "VOLUNTEER" not in str(ds.PatientName) and ds.PatientID != "VOLUNTEER01"
    # The face changed, as it does when the same series is exported to the folder.
    before = {pydicom.dcmread(f).InstanceNumber: pydicom.dcmread(f).pixel_array for f in files}
    changed = sum(int((ds.pixel_array != before[ds.InstanceNumber]).sum()) for ds in outputs)
    assert changed > 1000
    assert agent.states() == ["delivered"]


def _process(src: Path, out: Path, home: Path) -> dict[str, Any]:
    env = {**os.environ, "CLINIC2CLOUD_HOME": str(home)}
    r = subprocess.run([sys.executable, "-m", "agent", "process", str(src), "--out", str(out),
                        "--json"], capture_output=True, text=True, timeout=600, env=env)
    return json.loads(r.stdout)


def test_vendor_series_over_the_network_ends_as_when_exported(
        agent_process: AgentProcesses, tmp_path: Path, outbox_dir: Path) -> None:
    """A real GE series sent by storescu ends exactly as `clinic2cloud process` of the same
    files: receiving keeps the objects as they were, nothing the pipeline reads changes."""
    if not GE_SERIES.is_dir():
        pytest.skip(f"the shared corpus is absent ({GE_SERIES})")
    files = sorted(GE_SERIES.iterdir())
    expected = _process(GE_SERIES, tmp_path / "out", tmp_path / "home")["series"]
    # One series alone, as `process` sees it: no partner series of its study will come, so
    # the agent does not wait for one (it would wait 30 minutes by default).
    agent = agent_process(deface=True, partner_wait_minutes=0).start()
    sent = storescu(agent.port, files)
    assert len(sent.acknowledged) == len(files), sent.output
    final = ("delivered", "withheld", "quarantined")
    assert wait_until(lambda: any(s in final for s in agent.states()), timeout=600)
    assert agent.states() == [s["state"] for s in expected]


def test_received_instances_are_kept_as_sent(node_agent: NodeAgents, storescp: Storescps,
                                             tmp_path: Path) -> None:
    """Byte for byte what came over the wire (compressed stays compressed), behind file
    meta naming the transfer syntax it came in: the same bytes dcmtk's storescp keeps in
    its bit-preserving mode when the same files are sent to it."""
    jpeg = Path(pydicom.data.get_testdata_file("JPEG2000.dcm"))  # type: ignore[arg-type]
    rle = Path(pydicom.data.get_testdata_file("MR_small_RLE.dcm"))  # type: ignore[arg-type]
    plain = write_series(tmp_path / "send", 1)[0]
    agent: Agent = node_agent(dicom_stable_seconds=600)  # keep them in the intake
    pacs = storescp(extra=["+B", "+xa"])
    for f, propose in ((jpeg, "-xw"), (rle, "-xr"), (plain, "-R")):  # propose as stored
        sent = storescu(port_of(agent), [f], extra=[propose])
        assert sent.acknowledged == [f], sent.output
        assert storescu(pacs.port, [f], called="PACS", extra=[propose]).acknowledged == [f]
    intake = agent.config.paths.state_dir / "dicom" / "intake"
    received = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in intake.glob("*.dcm")}
    reference = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in pacs.received()}
    assert len(received) == 3
    for f in (jpeg, rle, plain):
        original = pydicom.dcmread(f)
        uid = str(original.SOPInstanceUID)
        copy = pydicom.dcmread(received[uid])
        assert copy.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert copy.file_meta.MediaStorageSOPInstanceUID == uid
        assert _data_set_bytes(received[uid]) == _data_set_bytes(reference[uid])
        assert np.array_equal(copy.pixel_array, original.pixel_array)


def _data_set_bytes(path: Path) -> bytes:
    """The bytes after the preamble and the file meta group (its length is its first
    element, (0002,0000) UL, explicit little endian)."""
    raw = path.read_bytes()
    assert raw[128:132] == b"DICM" and raw[132:136] == b"\x02\x00\x00\x00"
    return raw[144 + int.from_bytes(raw[140:144], "little"):]
