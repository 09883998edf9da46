"""DICOM TLS with real dcmtk peers, and what ``doctor`` says about the node and the PACS."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.config import Config, replace
from agent.dicomnode.doctor import dicom_checks
from agent.dicomnode.remote import RemoteNode
from agent.dicomnode.scu import ObjectState, send_files
from agent.main import Agent
from tests.conftest import write_series
from tests.waiting import wait_until

from .conftest import NodeAgents, Storescps, free_port, port_of, storescu


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A test CA, and a node and a viewer certificate it signed (generated, never stored)."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "ca.key"),
             "-out", str(d / "ca.pem"), "-days", "2", "-subj", "/CN=Clinic2Cloud test CA")
    for name in ("node", "viewer"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / f"{name}.key"),
                 "-out", str(d / f"{name}.csr"), "-subj", f"/CN={name}")
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
                 "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
                 "-out", str(d / f"{name}.pem"))
    return {p.stem + p.suffix.replace(".", "_"): p for p in d.iterdir()}


def _tls_node(node_agent: NodeAgents, pki: dict[str, Path]) -> Agent:
    return node_agent(dicom_tls_certificate=str(pki["node_pem"]),
                      dicom_tls_key=str(pki["node_key"]), dicom_tls_ca=str(pki["ca_pem"]))


def test_tls_node_receives_from_an_authenticated_viewer(
        node_agent: NodeAgents, pki: dict[str, Path], tmp_path: Path) -> None:
    agent = _tls_node(node_agent, pki)
    files = write_series(tmp_path / "send", 2)
    tls = ["+tls", str(pki["viewer_key"]), str(pki["viewer_pem"]), "+cf", str(pki["ca_pem"])]
    sent = storescu(port_of(agent), files, extra=tls)
    assert sent.returncode == 0 and len(sent.acknowledged) == 2, sent.output
    node = agent.dicom_status()
    assert node is not None and node.tls and node.instances_received == 2


def test_tls_node_refuses_plain_and_anonymous_callers(
        node_agent: NodeAgents, pki: dict[str, Path], tmp_path: Path) -> None:
    agent = _tls_node(node_agent, pki)
    files = write_series(tmp_path / "send", 1)
    assert storescu(port_of(agent), files, timeout=60).acknowledged == []
    anonymous = storescu(port_of(agent), files, extra=["+tla", "+cf", str(pki["ca_pem"])])
    assert anonymous.acknowledged == []
    assert wait_until(lambda: any(
        r.reason == "TLS handshake failed" for r in (agent.dicom_status() or _none()).
        refused_callers))
    with_cert = ["+tls", str(pki["viewer_key"]), str(pki["viewer_pem"]),
                 "+cf", str(pki["ca_pem"])]
    assert len(storescu(port_of(agent), files, extra=with_cert).acknowledged) == 1


def _none() -> SimpleNamespace:
    return SimpleNamespace(refused_callers=())


def test_results_sent_over_tls_to_storescp(storescp: Storescps, pki: dict[str, Path],
                                           tmp_path: Path) -> None:
    pacs = storescp(extra=["+tls", str(pki["viewer_key"]), str(pki["viewer_pem"]),
                           "+cf", str(pki["ca_pem"])])
    dicom = replace(Config(), dicom_send_tls=True, dicom_tls_certificate=str(pki["node_pem"]),
                    dicom_tls_key=str(pki["node_key"]), dicom_tls_ca=str(pki["ca_pem"])).dicom
    node = RemoteNode.configured(f"PACS@viewer:{pacs.port}", dicom)
    node = RemoteNode(node.ae_title, "127.0.0.1", node.port, node.calling_ae_title, node.tls)
    assert node.tls is not None
    node.tls.check_hostname = False  # the test certificate names "viewer", we dial 127.0.0.1
    files = write_series(tmp_path / "results", 2)
    report = send_files(files, node)
    assert [r.state for r in report.results] == [ObjectState.SENT] * 2, report
    assert len(pacs.received()) == 2


def test_doctor_echoes_the_running_node_and_the_pacs(
        node_agent: NodeAgents, storescp: Storescps) -> None:
    port = free_port()
    agent = node_agent(dicom_port=port)
    assert port_of(agent) == port
    pacs = storescp()
    lines, problems = dicom_checks(replace(agent.config,
                                           results_pacs=f"PACS@127.0.0.1:{pacs.port}"))
    assert problems == []
    assert any(f"listening on port {port}" in line for line in lines), lines
    assert any(line.startswith(f"PACS PACS@127.0.0.1:{pacs.port}: answers C-ECHO")
               for line in lines), lines
    _, problems = dicom_checks(replace(agent.config,
                                       results_pacs=f"PACS@127.0.0.1:{free_port()}"))
    assert len(problems) == 1 and "cannot be reached" in problems[0]


def test_doctor_command_on_a_stopped_node_and_a_taken_port(tmp_path: Path) -> None:
    def doctor(port: int) -> subprocess.CompletedProcess[str]:
        config = tmp_path / "c.toml"
        export, outbox = tmp_path / "export", tmp_path / "outbox"
        export.mkdir(exist_ok=True)
        outbox.mkdir(exist_ok=True)
        config.write_text(f'[watch]\nfolder = "{export}"\n[target]\npath = "{outbox}"\n'
                          f'[dicom]\nlisten = true\nport = {port}\n'
                          'bind_address = "127.0.0.1"\n', encoding="utf-8")
        env = {**os.environ, "CLINIC2CLOUD_HOME": str(tmp_path / "home")}
        return subprocess.run([sys.executable, "-m", "agent", "doctor", "--config",
                               str(config)], capture_output=True, text=True, timeout=120,
                              env=env)

    free = free_port()
    r = doctor(free)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"DICOM node: not running now; port {free} is free for it" in r.stdout
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        r = doctor(taken)
    assert r.returncode == 1
    assert f"PROBLEM: [dicom.port] port {taken} is taken" in r.stdout
