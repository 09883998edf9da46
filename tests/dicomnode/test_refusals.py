"""Who may send, and bad input: refused or dropped cleanly, nothing half-written taken,
the node keeps serving."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from agent.dicomnode.status import NodeStatus
from agent.main import Agent
from tests.conftest import write_series
from tests.dcmtk import dcmtk
from tests.waiting import wait_until

from .conftest import NodeAgents, echoscu, manifests, port_of, storescu


def _intake(agent: Agent) -> list[Path]:
    return sorted((agent.config.paths.state_dir / "dicom" / "intake").glob("*"))


def _node(agent: Agent) -> NodeStatus:
    node = agent.dicom_status()
    assert node is not None
    return node


def _spool(agent: Agent) -> list[Path]:
    return sorted((agent.config.paths.state_dir / "dicom" / "spool").glob("*"))


def test_unknown_calling_ae_is_refused(node_agent: NodeAgents, tmp_path: Path,
                                       outbox_dir: Path) -> None:
    agent: Agent = node_agent(dicom_allowed_callers=("VIEWER", "PACS1"))
    files = write_series(tmp_path / "send", 3)
    sent = storescu(port_of(agent), files, calling="STRANGER")
    assert sent.returncode != 0 and sent.acknowledged == []
    assert "Association Rejected" in sent.output
    node = agent.dicom_status()
    assert node is not None
    [refused] = node.refused_callers
    assert (refused.ae_title, refused.reason) == ("STRANGER", "calling AE title not allowed")
    assert _intake(agent) == [] and node.instances_received == 0
    # An allowed caller gets through.
    assert storescu(port_of(agent), files, calling="PACS1").returncode == 0
    assert wait_until(lambda: len(manifests(outbox_dir)) == 1, timeout=60)


def test_wrong_called_ae_is_refused(node_agent: NodeAgents) -> None:
    agent: Agent = node_agent()
    r = echoscu(port_of(agent), called="SOMEONE_ELSE")
    assert r.returncode != 0
    node = agent.dicom_status()
    assert node is not None
    assert [c.reason for c in node.refused_callers] == ["called AE title is not this node's"]


def test_address_outside_allowed_networks_is_refused(node_agent: NodeAgents) -> None:
    agent: Agent = node_agent(dicom_allowed_addresses=("10.99.0.0/16",))
    assert echoscu(port_of(agent)).returncode != 0
    node = agent.dicom_status()
    assert node is not None and node.refused_callers[0].reason == "address not allowed"
    assert node.refused_callers[0].address == "127.0.0.1"


def test_address_inside_allowed_networks_is_served(node_agent: NodeAgents) -> None:
    agent: Agent = node_agent(dicom_allowed_addresses=("10.99.0.0/16", "127.0.0.0/8"))
    assert echoscu(port_of(agent)).returncode == 0


# pynetdicom's acceptor thread of a connection that sent garbage waits out the ACSE timeout
# ([dicom] timeout_seconds) for an association request, even after the node stopped.
@pytest.mark.leaks_ok
def test_malformed_pdus_are_dropped_and_the_node_keeps_serving(node_agent: NodeAgents) -> None:
    agent: Agent = node_agent()
    port = port_of(agent)
    garbage = [b"\xff" * 64, b"\x01\x00\xff\xff\xff\xff" + b"A" * 100,  # huge length, short
               b"\x04\x00\x00\x00\x00\x10" + os.urandom(16),           # P-DATA before assoc
               b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", os.urandom(4096)]
    for payload in garbage:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(5)
            try:
                while s.recv(4096):
                    pass
            except (TimeoutError, ConnectionResetError):
                pass
    assert echoscu(port).returncode == 0
    node = agent.dicom_status()
    assert node is not None and node.listening and node.instances_received == 0
    assert _intake(agent) == []


def test_a_peer_announcing_a_huge_pdu_is_cut_off_unbuffered(node_agent: NodeAgents) -> None:
    agent: Agent = node_agent()
    port = port_of(agent)
    junk = b"\0" * (1 << 20)
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"\x01\x00\xff\xff\xff\xf0")  # an association request of ~4 GiB
        try:
            while sent < 200 << 20:  # the node must hang up long before 200 MiB
                s.sendall(junk)
                sent += len(junk)
        except (BrokenPipeError, ConnectionResetError):
            pass
    assert sent < 200 << 20
    assert echoscu(port).returncode == 0


def test_incomplete_instance_is_answered_with_an_error_not_taken(
        node_agent: NodeAgents, tmp_path: Path, outbox_dir: Path) -> None:
    agent: Agent = node_agent()
    [good, short] = write_series(tmp_path / "send", 2)
    ds = pydicom.dcmread(short)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]  # fewer bytes than Rows x Columns
    ds.save_as(short)
    sent = storescu(port_of(agent), [good, short])
    assert sent.acknowledged == [good] and sent.failed == [short]
    node = agent.dicom_status()
    assert node is not None and node.instances_refused == 1
    assert len(_intake(agent)) == 1


def _big_instance(path: Path) -> Path:
    [src] = write_series(path.parent / "one", 1)
    ds = pydicom.dcmread(src)
    ds.Rows = ds.Columns = 5000
    ds.PixelData = np.zeros((5000, 5000), np.uint16).tobytes()  # 50 MB
    ds.save_as(path)
    return path


def test_sender_killed_mid_instance_leaves_nothing_half_written(
        node_agent: NodeAgents, tmp_path: Path, outbox_dir: Path) -> None:
    agent: Agent = node_agent()
    port = port_of(agent)
    big = _big_instance(tmp_path / "big.dcm")
    proc = subprocess.Popen([dcmtk("storescu"), "-aet", "VIEWER", "-aec", "CLINIC2CLOUD",
                             "127.0.0.1", str(port), str(big)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Kill the sender once its data set is arriving (spooled, not yet acknowledged).
        assert wait_until(lambda: any(p.stat().st_size > 1_000_000 for p in _spool(agent)
                                      if p.exists()), timeout=30, step=0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert wait_until(lambda: _spool(agent) == [], timeout=20)
    assert _intake(agent) == []
    node = agent.dicom_status()
    assert node is not None and node.instances_received == 0
    # The node still serves; nothing was taken for a series.
    files = write_series(tmp_path / "send", 2)
    assert storescu(port, files).returncode == 0
    assert wait_until(lambda: len(manifests(outbox_dir)) == 1, timeout=60)
    assert len(_intake(agent)) <= 2


def test_flood_of_connections_is_bounded_and_the_node_recovers(node_agent: NodeAgents,
                                                               tmp_path: Path) -> None:
    agent: Agent = node_agent(dicom_max_associations=3, dicom_timeout_seconds=2.0)
    port = port_of(agent)
    before = threading.active_count()
    socks = []
    for _ in range(40):  # connect and say nothing
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            pass
    try:
        assert wait_until(lambda: any(c.reason == "too many connections"
                                      for c in _node(agent).refused_callers), timeout=20)
        node = agent.dicom_status()
        assert node is not None and node.active_associations <= 3 + 4
        # Each admitted connection costs an association and a reactor thread (and, for an
        # instant, the thread that starts them): bounded by the admitted connections.
        extra = threading.active_count() - before
        assert extra <= 3 * (3 + 4) + 2, sorted(t.name for t in threading.enumerate())
    finally:
        for s in socks:
            s.close()
    # Idle peers are dropped after the timeout; the node serves again. Connections still in
    # the listen backlog are admitted (and dropped) after the count first reaches zero, so
    # under load the first sender after the flood may still meet a full node: it retries,
    # as a modality does, and must get through once the flood has drained.
    assert wait_until(lambda: _node(agent).active_associations == 0, timeout=30)
    files = write_series(tmp_path / "send", 1)
    sent: list[int] = []

    def served() -> bool:
        sent.append(storescu(port, files).returncode)
        return sent[-1] == 0

    assert wait_until(served, timeout=30, step=1.0), sent


def test_stop_is_prompt_with_silent_peers_and_leaves_no_threads(node_agent: NodeAgents
                                                                 ) -> None:
    agent: Agent = node_agent()
    port = port_of(agent)
    silent = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
    try:
        assert wait_until(lambda: _node(agent).active_associations == 3)
        t0 = time.monotonic()
        agent.stop()
        assert time.monotonic() - t0 < 2.0
    finally:
        for s in silent:
            s.close()
    assert wait_until(lambda: not [t for t in threading.enumerate()
                                   if t.name.startswith(("AcceptorThread", "dicom-"))
                                   or "run_reactor" in t.name], timeout=5)
