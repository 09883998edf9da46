"""``clinic2cloud run`` with a tray, as a subprocess: icon shown, SIGTERM ends it cleanly."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from tests.conftest import manifests

from .conftest import TrayProcess
from .helpers import SHOWN, colours, shows, wait_until

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not (ROOT / "agent" / "cli.py").exists(), reason="agent/cli.py (the CLI) does not exist yet"
)


def write_config(tmp: Path) -> tuple[Path, Path, Path]:
    export, outbox = tmp / "export", tmp / "outbox"
    export.mkdir()
    outbox.mkdir()
    config = tmp / "config.toml"
    config.write_text(
        f'[watch]\nfolder = "{export.as_posix()}"\nstable_seconds = 1\n\n'
        f'[target]\nkind = "folder"\npath = "{outbox.as_posix()}"\n\n'
        "[deface]\nenabled = false\n",
        encoding="utf-8",
    )
    return config, export, outbox


def start(config: Path, home: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        cwd=ROOT,
        # A private XDG_CONFIG_HOME: the tray syncs the start-at-login entry with the config.
        env={**env, "CLINIC2CLOUD_HOME": str(home), "XDG_CONFIG_HOME": str(home / "xdg")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:  # never leave an agent behind, whatever the test did
        if p.poll() is None:
            p.kill()
            p.wait(5)


def terminate_within(proc: subprocess.Popen[bytes], seconds: float) -> tuple[int, float, str]:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(seconds + 2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    elapsed = time.monotonic() - t0
    out = proc.stdout.read().decode("utf-8", "replace") if proc.stdout else ""
    return proc.returncode, elapsed, out


def test_run_shows_the_icon_and_sigterm_exits_cleanly(
        system_tray: str, tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    config, export, outbox = write_config(tmp_path)
    env = {**os.environ, "DISPLAY": system_tray, "PYSTRAY_BACKEND": "xorg"}
    proc = start(config, tmp_path / "home", env)
    procs.append(proc)
    assert shows(system_tray, "green", timeout=30), (
        f"no idle icon in the tray: {colours(system_tray)}; exit code {proc.poll()}")
    # Feed it a real DICOM file: the agent processes it (delivered, or quarantined if the
    # pipeline objects - its details are not the tray's business) and the icon follows.
    shutil.copy(str(pydicom.data.get_testdata_file("MR_small.dcm")), export / "MR_small.dcm")
    wait_until(lambda: any(manifests(outbox)), 20)
    assert proc.poll() is None
    # The icon follows within a refresh or two (the manifest lands just before the ledger
    # records the delivery).
    assert wait_until(lambda: colours(system_tray)["green"] > SHOWN
                      or colours(system_tray)["red"] > SHOWN, 10), colours(system_tray)
    code, elapsed, out = terminate_within(proc, 5.0)
    assert code == 0, out
    assert elapsed < 5.0, f"took {elapsed:.1f} s to stop\n{out}"
    # The icon left the tray with the process.
    assert wait_until(lambda: all(v < SHOWN for v in colours(system_tray).values()), 5)


def test_without_a_display_it_runs_headless(
        tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    config, _export, _outbox = write_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    home = tmp_path / "home"
    proc = start(config, home, env)
    procs.append(proc)
    # The agent runs: it holds its instance lock and wrote its log.
    log = home / "logs" / "clinic2cloud.log"
    assert wait_until(lambda: log.is_file() and "headless" in log.read_text("utf-8"), 20), (
        proc.poll())
    assert proc.poll() is None
    code, elapsed, out = terminate_within(proc, 5.0)
    assert code == 0, out
    assert elapsed < 5.0
    assert "no tray icon" in out or "headless" in out


# The test restarts the session's trayer; the new one serves the tests that follow.
@pytest.mark.leaks_ok
def test_without_a_tray_on_the_desktop_no_tracebacks_and_the_icon_docks_later(
        tray_process: TrayProcess, tmp_path: Path,
        procs: list[subprocess.Popen[bytes]]) -> None:
    display = tray_process.display
    tray_process.stop()  # a desktop without a system tray (GNOME without the extension)
    try:
        config, _export, _outbox = write_config(tmp_path)
        env = {**os.environ, "DISPLAY": display, "PYSTRAY_BACKEND": "xorg"}
        home = tmp_path / "home"
        proc = start(config, home, env)
        procs.append(proc)
        log = home / "logs" / "clinic2cloud.log"
        assert wait_until(lambda: log.is_file() and "no system tray found" in log.read_text(
            "utf-8"), 30), proc.poll()
        tray_process.start()  # the panel appears: the icon docks into it
        assert shows(display, "green", timeout=15)
    finally:
        if tray_process.proc is None:
            tray_process.start()
    code, _elapsed, out = terminate_within(proc, 5.0)
    assert code == 0
    text = out + log.read_text("utf-8")
    assert "Failed to dock icon" not in text and "Traceback" not in text, text
    assert " ERROR " not in log.read_text("utf-8")
