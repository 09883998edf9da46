"""Durations use the monotonic clock: a wall clock set back (by an administrator, NTP, a
dead CMOS battery) does not hold a series back. The clock is moved at the process
boundary with libfaketime (wall clock only: the kernel's monotonic clock never jumps)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import end_process, manifests, spawn_agent, write_series
from tests.waiting import wait_until

_LIBS = ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
         "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
         "/usr/lib/faketime/libfaketime.so.1")


def _libfaketime() -> str:
    for lib in _LIBS:
        if Path(lib).exists():
            return lib
    pytest.skip("libfaketime is not installed (apt-get install faketime)")


@pytest.mark.parametrize("jump", ["-90s", "-3600s"])
def test_a_wall_clock_jump_back_does_not_delay_a_series(tmp_path: Path, jump: str) -> None:
    lib = _libfaketime()
    export, outbox, home = tmp_path / "export", tmp_path / "outbox", tmp_path / "home"
    export.mkdir()
    clock = tmp_path / "faketime"
    clock.write_text("+0s\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[watch]\nfolder = "{export}"\nstable_seconds = 3\nrescan_seconds = 5\n'
                   f'[target]\npath = "{outbox}"\n[deface]\nenabled = false\n')
    env = {"LD_PRELOAD": lib, "FAKETIME_TIMESTAMP_FILE": str(clock),
           "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    proc = spawn_agent(cfg, home, env=env, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: (home / "state" / "agent.lock").exists(), timeout=60)
        files = write_series(export / "s", 3)
        for f in files:  # an access time far back: the agent's first read of each shows
            os.utime(f, (1, f.stat().st_mtime))
        assert wait_until(lambda: all(f.stat().st_atime > 10 for f in files), timeout=30)
        clock.write_text(f"{jump}\n")  # the agent saw the files: its wall clock goes back
        started = time.monotonic()
        assert wait_until(lambda: len(manifests(outbox)) == 1, timeout=45)
        # 3 s of quiet, then the pipeline: far from 90 s, let alone an hour.
        assert time.monotonic() - started < 40
        assert proc.poll() is None
    finally:
        end_process(proc)
    assert shutil.which("faketime")  # the tool the clock file belongs to is installed
