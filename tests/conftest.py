"""Fixtures shared by every test: an isolated agent home, configs, and real DICOM series.

Series are made from pydicom's own MR test file (public test data): each slice gets its own
SOP Instance UID, instance number and position, and planted identifiers that the
de-identification must remove.
"""

from __future__ import annotations

import copy
import gc
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import process as _futures_process
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
import pytest
from pydicom.uid import generate_uid

from agent.config import Config, load_config, replace
from agent.paths import AgentPaths

if TYPE_CHECKING:
    from agent.main import Agent

MR_SMALL = Path(pydicom.data.get_testdata_file("MR_small.dcm"))  # type: ignore[arg-type]

#: Identifiers planted in generated series. A test that finds one in an output has found a leak.
PATIENT_NAME = "Canarysson^Wilhelmina"
PATIENT_ID = "PID-CANARY-84213"


# -- leaks: every test ends with the threads and child processes it started ---------------

#: How long a test's threads and processes get to finish after its teardown (an agent's
#: busy worker finishes its current step; a killed child is reaped by its Popen).
LEAK_GRACE = 10.0


def _session_threads() -> set[threading.Thread]:
    """Threads that legitimately outlive a test: the agent's shared process pool (started
    on first use, shut down at exit) and the feeder threads of its queues."""
    from agent import procpool

    keep: set[threading.Thread] = set()
    for t in threading.enumerate():
        if isinstance(t, _futures_process._ExecutorManagerThread):
            keep.add(t)
        elif t.name == "QueueFeederThread":
            keep.add(t)
    pool = procpool._pool
    manager = getattr(pool, "_executor_manager_thread", None) if pool else None
    if isinstance(manager, threading.Thread):
        keep.add(manager)
    return keep


def _session_children() -> set[int]:
    """Child processes that legitimately outlive a test: the shared pool's workers,
    multiprocessing's resource tracker (started with the first spawned process, it lives
    as long as the interpreter) and its fork server (started with the pool's first worker
    on Linux: the workers are its children, it is ours)."""
    from multiprocessing import forkserver, resource_tracker

    from agent import procpool

    pool = procpool._pool
    processes = getattr(pool, "_processes", None) if pool else None
    keep = set(processes or ())
    for helper in (getattr(resource_tracker._resource_tracker, "_pid", None),
                   getattr(forkserver._forkserver, "_forkserver_pid", None)):
        if isinstance(helper, int):
            keep.add(helper)
    return keep


def _live_children() -> set[int]:
    """Pids of this process's children that are running (zombies are not: reaped soon)."""
    if not sys.platform.startswith("linux"):
        return set()
    me = os.getpid()
    out: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode("ascii", "replace")
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after it.
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if int(ppid) == me and state != "Z":
            out.add(int(entry))
    return out


def _leaks(threads_before: set[threading.Thread], children_before: set[int]
           ) -> tuple[list[str], list[int]]:
    gc.collect()
    threads = [t for t in threading.enumerate()
               if t not in threads_before and t.is_alive() and t not in _session_threads()]
    children = sorted(_live_children() - children_before - _session_children())
    return [t.name for t in threads], children


@pytest.fixture(autouse=True)
def _no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves a thread or a child process running after its teardown
    (watchdog's fixture, with a grace period and the process pool allowed)."""
    threads_before = set(threading.enumerate())
    children_before = _live_children()
    yield
    if request.node.get_closest_marker("leaks_ok") is not None:
        return
    deadline = time.monotonic() + LEAK_GRACE
    threads, children = _leaks(threads_before, children_before)
    while (threads or children) and time.monotonic() < deadline:
        time.sleep(0.05)  # nothing signals "a thread ended" across the suite: poll briefly
        threads, children = _leaks(threads_before, children_before)
    assert not threads, f"the test left threads running: {threads}"
    assert not children, f"the test left child processes running: {children}"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory,
                   monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own agent home: no test touches the real user's config or state."""
    home = tmp_path_factory.mktemp("agent-home")
    monkeypatch.setenv("CLINIC2CLOUD_HOME", str(home))
    yield home


@pytest.fixture
def agent_paths(_isolated_home: Path) -> AgentPaths:
    return AgentPaths.under(_isolated_home)


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    d = tmp_path / "export ü folder"
    d.mkdir()
    return d


@pytest.fixture
def outbox_dir(tmp_path: Path) -> Path:
    d = tmp_path / "outbox"
    d.mkdir()
    return d


@pytest.fixture
def make_config(agent_paths: AgentPaths, export_dir: Path,
                outbox_dir: Path) -> Callable[..., Config]:
    """A config watching ``export_dir`` and delivering to ``outbox_dir``; keyword arguments
    are ``section_key=value`` overrides (see :func:`agent.config.replace`)."""

    def make(**overrides: object) -> Config:
        cfg = load_config(None, paths=agent_paths)
        base: dict[str, object] = {
            "watch_folder": str(export_dir),
            "watch_stable_seconds": 0.5,
            "watch_rescan_seconds": 2.0,
            "target_path": str(outbox_dir),
            "deface_enabled": False,
            "pipeline_workers": 2,
        }
        base.update(overrides)
        return replace(cfg, **base)

    return make


#: Starts a real Agent on ``make_config(**overrides)``; stopped at teardown.
StartAgent = Callable[..., "Agent"]


@pytest.fixture
def running_agent(make_config: Callable[..., Config]) -> Iterator[StartAgent]:
    from agent.main import Agent

    agents: list[Agent] = []

    def start(**overrides: object) -> Agent:
        agent = Agent(make_config(**overrides))
        agent.start()
        agents.append(agent)
        return agent

    yield start
    for a in agents:
        a.stop()


def spawn_agent(config: Path, home: Path, *, env: dict[str, str] | None = None,
                stderr: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """``clinic2cloud run --headless --config CONFIG`` as a real process with its own home
    (``stderr``: a ``subprocess`` constant, DEVNULL by default)."""
    full = {**os.environ, **(env or {}), "CLINIC2CLOUD_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "agent", "run", "--headless", "--config",
                             str(config)], env=full, stdout=subprocess.DEVNULL, stderr=stderr)


def end_process(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Ask a child to end (SIGTERM); kill it when it does not within ``timeout``."""
    proc.terminate()
    try:
        proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=timeout)


def make_slice(template: pydicom.Dataset, study_uid: str, series_uid: str, index: int,
               patient_name: str, patient_id: str) -> pydicom.Dataset:
    ds = copy.deepcopy(template)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [0.0, 0.0, float(index) * 5.0]
    ds.SliceLocation = float(index) * 5.0
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.InstitutionName = "Canary Memorial Hospital"
    return ds


def write_series(folder: Path, n: int = 5, *, study_uid: str | None = None,
                 series_uid: str | None = None, patient_name: str = PATIENT_NAME,
                 patient_id: str = PATIENT_ID, prefix: str = "IMG") -> list[Path]:
    """Write ``n`` slices of one MR series into ``folder``; returns the file paths."""
    template = pydicom.dcmread(MR_SMALL)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        ds = make_slice(template, study_uid, series_uid, i, patient_name, patient_id)
        path = folder / f"{prefix}{i:05d}.dcm"
        tmp = path.with_name(path.name + ".part")
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
        out.append(path)
    return out


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``small_disk(mb, at=None)``: a real filesystem of ``mb`` MB (tmpfs), mounted at
    ``at`` (created) or a fresh folder, for full-disk tests; ``resize_disk(point, mb)``
    gives it room again. Needs root (mount); skipped where the machine does not allow it."""
    mounted: list[Path] = []

    def make(mb: int, at: Path | None = None) -> Path:
        point = at or tmp_path / f"disk{len(mounted)}"
        point.mkdir(parents=True, exist_ok=True)
        if shutil.which("mount") is None or os.geteuid() != 0:
            pytest.skip("a small filesystem needs root and mount")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mb}m,mode=0700",
                               "tmpfs", str(point)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"mounting a tmpfs was refused: {done.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield make
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def resize_disk(point: Path, mb: int) -> None:
    """Give a ``small_disk`` more (or less) room, as when someone frees space."""
    import subprocess

    subprocess.run(["mount", "-o", f"remount,size={mb}m", str(point)], check=True)


@pytest.fixture
def series_writer() -> Callable[..., list[Path]]:
    return write_series


def manifests(outbox: Path) -> list[Path]:
    """Manifests of finished deliveries in a folder target, not of one still in flight
    (the target's hidden ``.partial`` folder)."""
    return sorted(m for m in outbox.rglob("manifest.json")
                  if not any(part.endswith(".partial") for part in m.parts))


@pytest.fixture
def started_agent(make_config: Callable[..., Config]) -> Iterator[Agent]:
    """A real Agent on ``make_config()``'s defaults, started; stopped at teardown."""
    from agent.main import Agent

    agent = Agent(make_config())
    agent.start()
    yield agent
    agent.stop()
