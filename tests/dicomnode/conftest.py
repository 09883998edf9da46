"""The DICOM node against real, independent peers: dcmtk's storescu, echoscu and storescp.

Every test listens on a port of its own (the node binds port 0, or a free port is picked
for a child process), so tests never collide with each other or with a real PACS.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.config import Config
from agent.main import Agent

DCMTK = ("storescu", "echoscu", "storescp")
NODE_AE = "CLINIC2CLOUD"
SENDER_AE = "VIEWER"


def need_dcmtk() -> None:
    missing = [tool for tool in DCMTK if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"dcmtk tools missing ({', '.join(missing)}): apt-get install dcmtk")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on the loopback ``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Sent:
    """What storescu said: its exit code, and the files the node acknowledged."""

    returncode: int
    acknowledged: list[Path]
    failed: list[Path]
    output: str


_SENDING = re.compile(r"Sending file: (.+)$")
_RESPONSE = re.compile(r"Received Store Response \((\w+)")


def storescu(port: int, files: Sequence[Path], *, calling: str = SENDER_AE,
             called: str = NODE_AE, extra: Sequence[str] = (),
             timeout: float = 120) -> Sent:
    """Send ``files`` with dcmtk's storescu; parse which were acknowledged (-v output)."""
    cmd = ["storescu", "-v", "-aet", calling, "-aec", called, *extra, "127.0.0.1", str(port),
           *map(str, files)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    acked: list[Path] = []
    failed: list[Path] = []
    current: Path | None = None
    for line in (r.stdout + r.stderr).splitlines():
        m = _SENDING.search(line)
        if m:
            current = Path(m.group(1).strip())
            continue
        m = _RESPONSE.search(line)
        if m and current is not None:
            (acked if m.group(1) == "Success" else failed).append(current)
            current = None
    return Sent(r.returncode, acked, failed, r.stdout + r.stderr)


def echoscu(port: int, *, calling: str = SENDER_AE, called: str = NODE_AE,
            extra: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["echoscu", "-aet", calling, "-aec", called, *extra, "127.0.0.1",
                           str(port)], capture_output=True, text=True, timeout=60)


@pytest.fixture
def node_agent(make_config: Callable[..., Config]) -> Iterator[Callable[..., Agent]]:
    """Start agents whose DICOM node listens on a free port (``agent.dicom_status().port``)."""
    need_dcmtk()
    agents: list[Agent] = []

    def start(**overrides: object) -> Agent:
        base: dict[str, object] = {"dicom_listen": True, "dicom_port": 0,
                                   "dicom_bind_address": "127.0.0.1",
                                   "dicom_stable_seconds": 1.0}
        base.update(overrides)
        agent = Agent(make_config(**base))
        agent.start()
        agents.append(agent)
        return agent

    yield start
    for a in agents:
        a.stop()


def port_of(agent: Agent) -> int:
    node = agent.dicom_status()
    assert node is not None and node.listening
    return node.port


def manifests(outbox: Path) -> list[Path]:
    return sorted(outbox.rglob("manifest.json"))


@dataclass
class Storescp:
    """A real PACS stand-in: dcmtk's storescp, writing what it receives into ``folder``."""

    port: int
    ae_title: str
    folder: Path
    proc: subprocess.Popen[bytes]

    def received(self) -> list[Path]:
        return sorted(p for p in self.folder.rglob("*") if p.is_file())


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Callable[..., Storescp]]:
    """Start dcmtk storescp on a free port; stopped (and reaped) after the test."""
    need_dcmtk()
    from tests.waiting import wait_until

    procs: list[subprocess.Popen[bytes]] = []

    def start(ae_title: str = "PACS", extra: Sequence[str] = ()) -> Storescp:
        folder = tmp_path / f"pacs-{len(procs)}"
        folder.mkdir()
        port = free_port()
        proc = subprocess.Popen(["storescp", "-aet", ae_title, "-od", str(folder), *extra,
                                 str(port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        procs.append(proc)
        assert wait_until(lambda: listening(port) or proc.poll() is not None, timeout=20)
        assert proc.poll() is None, "storescp did not start"
        return Storescp(port, ae_title, folder, proc)

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
