"""One agent per user, held by an OS lock on the state folder: deleting the lock file (or
any file) does not let a second agent start; a killed agent never blocks the next one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent.instance import AlreadyRunning, InstanceLock
from tests.waiting import wait_until


def test_the_lock_file_is_not_the_lock(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = InstanceLock(state, state / "agent.lock")
    first.acquire()
    (state / "agent.lock").unlink()
    second = InstanceLock(state, state / "agent.lock")
    with pytest.raises(AlreadyRunning, match="already running"):
        second.acquire()
    first.release()
    second.acquire()  # free once the first let go
    second.release()


def _run(home: Path, cfg: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "CLINIC2CLOUD_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "agent", "run", "--headless", "--config",
                             str(cfg)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_second_agent_refused_with_the_lock_file_deleted(tmp_path: Path) -> None:
    export, outbox, home = tmp_path / "export", tmp_path / "outbox", tmp_path / "home"
    export.mkdir()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[watch]\nfolder = "{export}"\n[target]\npath = "{outbox}"\n'
                   "[deface]\nenabled = false\n")
    first = _run(home, cfg)
    try:
        lock = home / "state" / "agent.lock"
        assert wait_until(lock.exists, timeout=60), first.stderr.read() if first.stderr else ""
        lock.unlink()
        second = _run(home, cfg)
        out, err = second.communicate(timeout=60)
        assert second.returncode != 0 and "already running" in err, out + err
        assert "Traceback" not in err
        assert first.poll() is None  # the first one is untouched
        first.send_signal(signal.SIGKILL)  # a killed agent leaves nothing that blocks
        first.wait(20)
        third = _run(home, cfg)

        def third_runs() -> bool:
            try:
                return lock.read_text() == str(third.pid)
            except OSError:
                return False

        assert wait_until(third_runs, timeout=60)
        third.terminate()
        third.communicate(timeout=30)
        assert third.returncode == 0
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate(timeout=30)
