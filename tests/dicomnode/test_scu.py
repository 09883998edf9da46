"""Results out: send_files to a real dcmtk storescp: Storescps, with a state per object."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from agent.dicomnode.remote import RemoteNode
from agent.dicomnode.scu import ObjectState, echo, send_files
from agent.errors import ConfigError, TargetUnavailable
from tests.conftest import write_series

from .conftest import Storescps, free_port


def test_results_reach_storescp_as_sent(storescp: Storescps, tmp_path: Path) -> None:
    pacs = storescp()
    files = write_series(tmp_path / "results", 4)
    report = send_files(files, RemoteNode.parse(f"PACS@127.0.0.1:{pacs.port}"))
    assert report.all_sent, report
    assert [r.state for r in report.results] == [ObjectState.SENT] * 4
    received = pacs.received()
    assert len(received) == 4
    sent_uids = {pydicom.dcmread(f).SOPInstanceUID for f in files}
    assert {pydicom.dcmread(f).SOPInstanceUID for f in received} == sent_uids


def test_compressed_objects_go_as_stored(storescp: Storescps, tmp_path: Path) -> None:
    src = Path(pydicom.data.get_testdata_file("JPEG2000.dcm"))  # type: ignore[arg-type]
    pacs = storescp(extra=["+xa"])  # accept every transfer syntax dcmtk knows
    report = send_files([src], RemoteNode.parse(f"PACS@127.0.0.1:{pacs.port}"))
    assert report.all_sent, report
    [received] = pacs.received()
    assert pydicom.dcmread(received).file_meta.TransferSyntaxUID == \
        pydicom.dcmread(src).file_meta.TransferSyntaxUID


def test_pacs_that_takes_no_such_object_refuses_it(storescp: Storescps, tmp_path: Path) -> None:
    src = Path(pydicom.data.get_testdata_file("JPEG2000.dcm"))  # type: ignore[arg-type]
    pacs = storescp()  # uncompressed transfer syntaxes only
    report = send_files([src], RemoteNode.parse(f"PACS@127.0.0.1:{pacs.port}"))
    [result] = report.results
    assert result.state == ObjectState.REFUSED and result.attempts == 1
    assert "does not accept this kind of object" in result.message
    assert pacs.received() == []


def test_unreachable_pacs_fails_each_object_after_its_attempts(tmp_path: Path) -> None:
    files = write_series(tmp_path / "results", 2)
    report = send_files(files, RemoteNode.parse(f"PACS@127.0.0.1:{free_port()}"),
                        attempts=2, backoff_seconds=0.05, timeout=5)
    assert [r.state for r in report.results] == [ObjectState.FAILED] * 2
    assert all(r.attempts == 2 and "cannot be reached" in r.message for r in report.results)


def test_rejected_association_is_a_clear_failure(storescp: Storescps, tmp_path: Path) -> None:
    pacs = storescp(extra=["--refuse"])  # refuses every association
    files = write_series(tmp_path / "results", 1)
    report = send_files(files, RemoteNode.parse(f"PACS@127.0.0.1:{pacs.port}"),
                        attempts=2, backoff_seconds=0.2)
    [result] = report.results
    assert result.state == ObjectState.FAILED and "rejected the association" in result.message


def test_unreadable_file_is_reported_not_sent(storescp: Storescps, tmp_path: Path) -> None:
    pacs = storescp()
    junk = tmp_path / "notes.txt"
    junk.write_text("not DICOM")
    good = write_series(tmp_path / "results", 1)
    report = send_files([junk, *good], RemoteNode.parse(f"PACS@127.0.0.1:{pacs.port}"))
    assert [r.state for r in report.results] == [ObjectState.UNREADABLE, ObjectState.SENT]
    assert len(pacs.received()) == 1


def test_echo(storescp: Storescps) -> None:
    pacs = storescp()
    assert echo(RemoteNode.parse(f"PACS@127.0.0.1:{pacs.port}")) >= 0
    with pytest.raises(TargetUnavailable, match="cannot be reached"):
        echo(RemoteNode.parse(f"PACS@127.0.0.1:{free_port()}"), timeout=5)


@pytest.mark.parametrize("text,host,port", [
    ("PACS@pacs.example.org:104", "pacs.example.org", 104),
    ("MY@AE@10.0.0.5:11112", "10.0.0.5", 11112),
    ("PACS@[fd00::5]:104", "fd00::5", 104),
])
def test_remote_node_parse(text: str, host: str, port: int) -> None:
    node = RemoteNode.parse(text)
    assert (node.host, node.port) == (host, port)
    assert RemoteNode.parse(str(node)) == node


@pytest.mark.parametrize("text", ["pacs.example.org:104", "PACS@host", "PACS@host:0",
                                  "PACS@:104", "A_TITLE_LONGER_THAN_16@h:104", "P\\X@h:1"])
def test_remote_node_parse_refuses_with_the_key(text: str) -> None:
    with pytest.raises(ConfigError, match=r"\[results.pacs\].*AE@host:port"):
        RemoteNode.parse(text)
