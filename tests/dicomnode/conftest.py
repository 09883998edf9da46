"""The DICOM node against real, independent peers: dcmtk's storescu, echoscu and storescp.

Every test listens on a port of its own (the node binds port 0, or a free port is picked
for a child process), so tests never collide with each other or with a real PACS.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.main import Agent
from tests.dcmtk import DCMTK_TOOLS, dcmtk, find_dcmtk

NODE_AE = "CLINIC2CLOUD"
SENDER_AE = "VIEWER"


#: What the fixtures below yield: call them to start a node agent, a storescp, an agent
#: process.
NodeAgents = Callable[..., Agent]


def need_dcmtk() -> None:
    missing = [tool for tool in DCMTK_TOOLS if find_dcmtk(tool) is None]
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
#: "(Success)" in older dcmtk, "(Status: 0x0000 - Success)" in newer ones.
_RESPONSE = re.compile(r"Received Store Response \((?:Status: \S+ - )?(\w+)")


def storescu(port: int, files: Sequence[Path], *, calling: str = SENDER_AE,
             called: str = NODE_AE, extra: Sequence[str] = (),
             timeout: float = 120) -> Sent:
    """Send ``files`` with dcmtk's storescu; parse which were acknowledged (-v output)."""
    cmd = [dcmtk("storescu"), "-v", "-aet", calling, "-aec", called, *extra, "127.0.0.1", str(port),
           *map(str, files)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    acked, failed = parse_responses(r.stdout + r.stderr)
    return Sent(r.returncode, acked, failed, r.stdout + r.stderr)


def parse_responses(output: str) -> tuple[list[Path], list[Path]]:
    """The files storescu -v was told success for, and those it was told a failure for."""
    acked: list[Path] = []
    failed: list[Path] = []
    current: Path | None = None
    for line in output.splitlines():
        m = _SENDING.search(line)
        if m:
            current = Path(m.group(1).strip())
            continue
        m = _RESPONSE.search(line)
        if m and current is not None:
            (acked if m.group(1) == "Success" else failed).append(current)
            current = None
    return acked, failed


def echoscu(port: int, *, calling: str = SENDER_AE, called: str = NODE_AE,
            extra: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([dcmtk("echoscu"), "-aet", calling, "-aec", called, *extra, "127.0.0.1",
                           str(port)], capture_output=True, text=True, timeout=60)


#: What a node agent listens on unless a test says otherwise: a free port, loopback only.
NODE_DEFAULTS: dict[str, object] = {"dicom_listen": True, "dicom_port": 0,
                                    "dicom_bind_address": "127.0.0.1",
                                    "dicom_stable_seconds": 1.0}


@pytest.fixture
def node_agent(running_agent: Callable[..., Agent]) -> Callable[..., Agent]:
    """Start agents whose DICOM node listens on a free port (``agent.dicom_status().port``)."""
    need_dcmtk()

    def start(**overrides: object) -> Agent:
        return running_agent(**{**NODE_DEFAULTS, **overrides})

    return start


def port_of(agent: Agent) -> int:
    node = agent.dicom_status()
    assert node is not None and node.listening
    return node.port


def manifests(outbox: Path) -> list[Path]:
    """Manifests of finished deliveries (not of a folder still being written)."""
    return sorted(p for p in outbox.rglob("manifest.json")
                  if not any(part.endswith(".partial") for part in p.parts))


class AgentProcess:
    """A real ``clinic2cloud run --headless`` process with its DICOM node on a free port."""

    def __init__(self, tmp_path: Path, export: Path, outbox: Path, *,
                 stable_seconds: float = 2.0, deface: bool = False,
                 partner_wait_minutes: float = 30.0) -> None:
        self.home = tmp_path / "agent-process-home"
        self.port = free_port()
        self.config = tmp_path / "agent-process.toml"
        self.config.write_text(
            f'[watch]\nfolder = "{export}"\nstable_seconds = 0.5\nrescan_seconds = 2\n'
            f'[target]\npath = "{outbox}"\n[deface]\nenabled = {str(deface).lower()}\n'
            f"partner_wait_minutes = {partner_wait_minutes}\n"
            f'[dicom]\nlisten = true\nport = {self.port}\nbind_address = "127.0.0.1"\n'
            f"stable_seconds = {stable_seconds}\n", encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        from tests.waiting import wait_until

        env = {**os.environ, "CLINIC2CLOUD_HOME": str(self.home)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--headless", "--config", str(self.config)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        proc = self.proc
        assert wait_until(lambda: listening(self.port) or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def states(self) -> list[str]:
        """The states of its series in the ledger (read-only, while it runs)."""
        from tests.test_agent import _states

        return _states(self.home)

    @property
    def intake(self) -> Path:
        return self.home / "state" / "dicom" / "intake"


@pytest.fixture
def agent_process(tmp_path: Path, export_dir: Path,
                  outbox_dir: Path) -> Iterator[Callable[..., AgentProcess]]:
    need_dcmtk()
    started: list[AgentProcess] = []

    def make(**kwargs: object) -> AgentProcess:
        agent = AgentProcess(tmp_path, export_dir, outbox_dir, **kwargs)  # type: ignore[arg-type]
        started.append(agent)
        return agent

    yield make
    for agent in started:
        agent.stop()


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
        proc = subprocess.Popen([dcmtk("storescp"), "-aet", ae_title, "-od", str(folder), *extra,
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


Storescps = Callable[..., Storescp]
AgentProcesses = Callable[..., AgentProcess]
