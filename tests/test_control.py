"""The control endpoint: ``clinic2cloud status|pause|resume|retry|quit`` and a running agent.

In process (the real Agent and the real client over a real Unix socket), then against a
real ``clinic2cloud run --headless`` process driven by the real command line.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from multiprocessing.connection import Client
from pathlib import Path

import pytest

from agent.config import Config
from agent.control import RemoteAgent, endpoint_address, endpoint_file
from agent.main import Agent, AgentFacade
from agent.paths import AgentPaths
from agent.status import AgentState, AgentStatus
from tests.conftest import manifests, write_series
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
unix_only = pytest.mark.skipif(sys.platform == "win32", reason="Unix socket specifics")




def test_the_cli_side_drives_a_running_agent(started_agent: Agent, export_dir: Path,
                                             outbox_dir: Path) -> None:
    agent = started_agent
    remote = RemoteAgent.connect(agent.config)
    assert remote is not None and remote.pid == os.getpid()
    assert remote.status().state == AgentState.IDLE
    remote.pause(None)
    assert agent.paused_until() == 0.0
    assert remote.status().state == AgentState.PAUSED
    write_series(export_dir, 2)
    assert wait_until(lambda: remote.status().queued == 1, 15)
    assert manifests(outbox_dir) == []
    remote.resume()
    assert wait_until(lambda: len(manifests(outbox_dir)) == 1)
    [summary] = remote.recent(5)
    assert summary.state == "delivered" and summary.file_count == 2
    assert "is delivered, not quarantined" in remote.retry(summary.id)
    assert "there is no series 999" == remote.retry(999)
    assert remote.retry_all() == []
    assert "[results] is off" in remote.retry_results(summary.id)


def test_the_agent_and_its_remote_are_one_facade(started_agent: Agent) -> None:
    def front_end_sees(agent: AgentFacade) -> AgentStatus:  # mypy checks both structurally
        return agent.status()

    remote = RemoteAgent.connect(started_agent.config)
    assert remote is not None
    assert front_end_sees(started_agent).state == front_end_sees(remote).state
    assert remote.config is started_agent.config and not remote.busy


@unix_only
def test_endpoint_is_owner_only_and_needs_the_token(started_agent: Agent) -> None:
    agent = started_agent
    family, address = endpoint_address(agent.config.paths)
    assert family == "AF_UNIX"
    assert stat.S_IMODE(os.stat(address).st_mode) == 0o600
    assert stat.S_IMODE(endpoint_file(agent.config.paths).stat().st_mode) == 0o600
    with Client(address, family) as conn:
        conn.send_bytes(json.dumps({"token": "guess", "op": "pause"}).encode())
        answer = json.loads(conn.recv_bytes())
    assert answer == {"ok": False, "error": "not allowed: wrong or missing token"}
    assert agent.paused_until() is None
    with Client(address, family) as conn:  # garbage does not take the endpoint down
        conn.send_bytes(b"\x80\x03not json")
    assert RemoteAgent.connect(agent.config) is not None


def test_no_agent_no_endpoint_and_a_stale_file_is_not_an_agent(
        make_config: Callable[..., Config]) -> None:
    cfg = make_config()
    assert RemoteAgent.connect(cfg) is None
    a = Agent(cfg)
    a.start()
    a.stop()
    assert not endpoint_file(cfg.paths).exists()
    assert RemoteAgent.connect(cfg) is None
    # What a kill -9 leaves behind: the file, no listener.
    endpoint_file(cfg.paths).write_text(json.dumps(
        {"family": "AF_UNIX", "address": str(cfg.paths.state_dir / "control.sock"),
         "token": "x", "pid": 1}))
    assert RemoteAgent.connect(cfg) is None
    # ...and the next agent takes the endpoint over.
    b = Agent(cfg)
    b.start()
    try:
        assert RemoteAgent.connect(cfg) is not None
    finally:
        b.stop()


@unix_only
def test_a_deep_state_folder_gets_its_socket_in_a_private_runtime_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    run = Path(tempfile.mkdtemp(prefix="c2c-run-", dir="/tmp"))
    try:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
        deep = AgentPaths.under(tmp_path / ("d" * 60) / ("e" * 60))
        family, address = endpoint_address(deep)
        assert family == "AF_UNIX" and len(address) < 100
        assert Path(address).parent == run / f"clinic2cloud-{os.getuid()}"
        assert stat.S_IMODE(Path(address).parent.stat().st_mode) == 0o700
        assert endpoint_address(deep) == (family, address)  # stable across calls
        # A private folder that others can open is refused, not used.
        os.chmod(Path(address).parent, 0o755)
        with pytest.raises(Exception, match="open to others"):
            endpoint_address(deep)
    finally:
        import shutil

        shutil.rmtree(run)


# -- a real `clinic2cloud run --headless` process -------------------------------------------

def cli(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLINIC2CLOUD_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


def write_config(path: Path, export: Path, outbox: Path) -> Path:
    path.write_text(f'[watch]\nfolder = "{export.as_posix()}"\nstable_seconds = 0.5\n'
                    f'rescan_seconds = 2\n\n[target]\npath = "{outbox.as_posix()}"\n\n'
                    "[deface]\nenabled = false\n", encoding="utf-8")
    return path


@pytest.fixture
def headless(tmp_path: Path, export_dir: Path, outbox_dir: Path
             ) -> Iterator[tuple[subprocess.Popen[str], Path, Path]]:
    home = tmp_path / "home"
    config = write_config(tmp_path / "c.toml", export_dir, outbox_dir)
    env = {**os.environ, "CLINIC2CLOUD_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--headless", "--config",
                             str(config)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_until(lambda: (home / "state" / "control.json").exists(), 30), proc.poll()
        yield proc, home, config
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_pause_resume_quit_a_running_headless_agent(
        headless: tuple[subprocess.Popen[str], Path, Path], export_dir: Path,
        outbox_dir: Path) -> None:
    proc, home, config = headless
    r = cli(home, "pause", "--config", str(config))
    assert r.returncode == 0 and r.stdout.strip() == "Paused until resumed", r
    status = json.loads(cli(home, "status", "--json", "--config", str(config)).stdout)
    assert status["running"] and status["state"] == "paused"
    assert status["paused_until"] == "until resumed" and status["pid"] == proc.pid
    write_series(export_dir, 3)

    def queued() -> bool:
        doc = json.loads(cli(home, "status", "--json", "--config", str(config)).stdout)
        return bool(doc["counts"]["queued"])

    # The series is found and staged, but the paused agent does not process it.
    assert wait_until(queued, 30)
    assert manifests(outbox_dir) == []
    r = cli(home, "resume", "--config", str(config))
    assert r.returncode == 0 and "resumed" in r.stdout
    assert wait_until(lambda: len(manifests(outbox_dir)) == 1, 60)
    text = cli(home, "status", "--config", str(config)).stdout
    assert text.startswith(f"Clinic2Cloud is running (pid {proc.pid})")
    assert "1 delivered today" in text and "Delivered" in text
    r = cli(home, "retry", "--results", "--config", str(config))
    assert r.returncode == 2 and "needs the SERIES" in r.stderr, r
    r = cli(home, "retry", "--results", "1", "--config", str(config))
    assert r.returncode == 0 and "[results] is off" in r.stdout, r
    r = cli(home, "quit", "--config", str(config))
    assert r.returncode == 0 and "stopped" in r.stdout, r
    assert proc.wait(15) == 0
    out = proc.stdout.read() if proc.stdout else ""
    # Headless mode says what it delivered, in one line per series (no PHI: pseudonyms).
    assert "delivered: 3 files to SITE/" in out, out
    # Nobody runs now: the commands say so, status reads the ledger.
    r = cli(home, "pause", "--config", str(config))
    assert r.returncode == 1
    assert r.stderr.strip() == ("clinic2cloud: no Clinic2Cloud agent is running for this user; "
                                "start it with `clinic2cloud run` (or from the start menu)")
    r = cli(home, "status", "--config", str(config))
    assert r.returncode == 0
    assert r.stdout.startswith("Clinic2Cloud is not running: new exports wait in the export "
                               "folder until it starts again. Its ledger says:")
    assert "1 delivered today" in r.stdout


def test_status_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "CLINIC2CLOUD_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "agent", "status", "--limit", "1000"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # `| head` that has read enough: the reader is gone before we write
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err, err
