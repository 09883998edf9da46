"""The engine never dies silently: one bad item is logged and skipped, a dead thread is
restarted and reported, a series that keeps killing its worker ends quarantined, a
passing fault is waited out, and each kind of fatal problem is shown for what it is."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agent.config import Config
from agent.errors import DefaceFailed, StartupError
from agent.main import Agent
from agent.status import AgentEvent, AgentState
from agent.supervisor import Supervisor
from agent.sync.azure_errors import ContainerNotFound
from agent.sync.base import Delivery, Receipt
from agent.sync.folder import FolderTarget
from agent.vocab import EventKind, ProblemCode, SeriesState
from agent.work import SeriesWork, Stage
from tests.conftest import StartAgent, manifests, write_series
from tests.waiting import wait_until


class WorkerKiller(BaseException):
    """Gets past every ``except Exception``: what a bug or a C extension can do."""


class Explode:
    """A stage that kills its worker thread for series whose description says so."""

    name = "explode"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, work: SeriesWork) -> None:
        import pydicom

        # The staged copy (the original description: de-identification cleans it).
        source = pydicom.dcmread(work.source_files[0], stop_before_pixels=True)
        if "EXPLODE" in str(source.get("SeriesDescription", "")).upper():
            self.calls += 1
            raise WorkerKiller


def _stages(cfg: Config, *extra: Stage) -> list[Stage]:
    from agent.deid import DeidStage, VerifyStage

    return [DeidStage(cfg, b"s" * 32), *extra, VerifyStage(cfg)]


def _describe(files: list[Path], description: str) -> None:
    import pydicom

    for f in files:
        ds = pydicom.dcmread(f)
        ds.SeriesDescription = description
        ds.save_as(f)


def test_the_supervisor_restarts_a_dead_part_and_reports_it() -> None:
    alive = [False]
    seen: list[str] = []
    sup = Supervisor(seen.append, window=60, max_restarts=2)
    sup.add("demo", lambda: alive[0], lambda: alive.__setitem__(0, True))
    assert sup.check() == ["demo"] and alive[0] and seen == ["demo"]
    assert sup.health() and "demo stopped 1 time(s)" in sup.health()[0]
    assert sup.failing() == []
    alive[0] = False
    sup.check()
    assert sup.failing() == ["demo"]  # restarts do not help: the agent says unhealthy


def test_an_exception_in_the_expiry_callback_does_not_end_the_scanner(
        running_agent: StartAgent, export_dir: Path, outbox_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    agent = running_agent(watch_max_wait_seconds=1.0)
    calls = []

    def broken(key: str, files: object) -> None:
        calls.append(key)
        raise RuntimeError("a bug in the expiry handling")

    assert agent._watcher is not None
    monkeypatch.setattr(agent._watcher, "_on_expired", broken)
    incomplete = write_series(export_dir / "bad", 1)[0]
    incomplete.write_bytes(incomplete.read_bytes()[:-500])  # pixel data cut short forever
    assert wait_until(lambda: calls, timeout=20)
    write_series(export_dir / "good", 2)  # the scanner still picks up exports
    assert wait_until(lambda: len(manifests(outbox_dir)) == 1, timeout=30)
    assert agent._watcher.dead_parts() == []


# The thread that dies reports through threading.excepthook; that is the point here.
_THREAD_DEATH = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnhandledThreadExceptionWarning")


@_THREAD_DEATH
def test_a_dead_scanner_is_restarted_and_shown_in_health(
        running_agent: StartAgent, export_dir: Path, outbox_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[AgentEvent] = []
    agent = running_agent()
    agent.subscribe(events.append)
    watcher = agent._watcher
    assert watcher is not None
    real = watcher._drain
    killed: list[int] = []

    def drain_once_fatally(first: object) -> object:
        if not killed:
            killed.append(1)
            raise WorkerKiller
        return real(first)

    monkeypatch.setattr(watcher, "_drain", drain_once_fatally)
    write_series(export_dir / "a", 2)  # the event kills the scanner thread
    assert wait_until(lambda: killed and any(e.kind == EventKind.HEALTH for e in events),
                      timeout=20)
    assert agent.status().health and "export-scanner" in agent.status().health[0]
    assert wait_until(lambda: len(manifests(outbox_dir)) == 1, timeout=30)


@_THREAD_DEATH
def test_a_series_that_keeps_killing_its_worker_is_quarantined_as_poison(
        make_config: Callable[..., Config], export_dir: Path, outbox_dir: Path) -> None:
    cfg = make_config(limits_max_crashes=2, pipeline_workers=1)
    explode = Explode()
    agent = Agent(cfg, stages=_stages(cfg, explode))
    agent.start()
    try:
        _describe(write_series(export_dir / "poison", 2), "EXPLODE me")
        assert wait_until(lambda: agent.status().quarantined == 1, timeout=60)
        [row] = agent.ledger.in_state(SeriesState.QUARANTINED)
        assert row.code == ProblemCode.POISON and "stopped 2 times" in row.reason
        assert explode.calls == 2
        write_series(export_dir / "fine", 2)  # the others go on, on a restarted worker
        assert wait_until(lambda: len(manifests(outbox_dir)) == 1, timeout=30)
    finally:
        agent.stop()


def test_crashes_are_counted_across_restarts_of_the_agent(
        make_config: Callable[..., Config], export_dir: Path) -> None:
    cfg = make_config(limits_max_crashes=3)
    agent = Agent(cfg)
    row = agent.ledger.open_version("k", [("h", 1, 1)])
    agent.ledger.set_state(row.id, SeriesState.STAGED)
    for _ in range(3):  # three attempts started, none finished: three kills mid-series
        agent.ledger.begin_attempt(row.id)
    outcome = agent.pipeline.process(row.id)
    assert outcome.state == SeriesState.QUARANTINED and outcome.code == ProblemCode.POISON
    agent.ledger.close()


def test_a_missing_template_stops_work_instead_of_quarantining(
        make_config: Callable[..., Config], export_dir: Path) -> None:
    class NoTemplate:
        name = "deface"

        def __call__(self, work: SeriesWork) -> None:
            raise DefaceFailed("the defacing template is missing (looked in /nowhere)",
                               code=ProblemCode.DEFACE_TEMPLATE)

    cfg = make_config()
    agent = Agent(cfg, stages=_stages(cfg, NoTemplate()))
    agent.start()
    try:
        write_series(export_dir / "head", 2)
        assert wait_until(lambda: agent.status().state == AgentState.SETUP, timeout=30)
        assert "template is missing" in agent.status().message
        assert agent.status().quarantined == 0
    finally:
        agent.stop()


def test_the_start_up_check_names_a_missing_template(
        make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.checks import run_startup_checks, startup_checks
    from agent.deface import template

    monkeypatch.setattr(template, "template_dirs", lambda: [Path("/nonexistent")])
    template.load_template.cache_clear()
    cfg = make_config(deface_enabled=True)
    with pytest.raises(StartupError, match="templates: the defacing template is missing"):
        run_startup_checks(cfg)
    assert [c.name for c in startup_checks(cfg) if not c.ok] == ["templates"]
    template.load_template.cache_clear()


class MissingContainer(FolderTarget):
    def deliver(self, delivery: Delivery) -> Receipt:
        raise ContainerNotFound("the container of https://x/c does not exist (HTTP 404 "
                                "ContainerNotFound): create it in the storage account")


def test_a_missing_container_is_not_shown_as_credentials_refused(
        make_config: Callable[..., Config], export_dir: Path, outbox_dir: Path) -> None:
    cfg = make_config()
    agent = Agent(cfg, target=MissingContainer(outbox_dir))
    agent.start()
    try:
        write_series(export_dir / "s", 2)
        assert wait_until(lambda: agent.status().state == AgentState.SETUP, timeout=30)
        assert "does not exist" in agent.status().message
        assert agent.ledger.in_state(SeriesState.VERIFIED)  # kept, waiting: nothing lost
    finally:
        agent.stop()


class PanicException(BaseException):
    """Like pyo3_runtime.PanicException (a Rust extension's panic on damaged data)."""


class Panics:
    name = "panics"

    def __call__(self, work: SeriesWork) -> None:
        raise PanicException("index out of bounds")


def test_a_library_panic_quarantines_the_series_and_spares_the_worker(
        make_config: Callable[..., Config], tmp_path: Path) -> None:
    from agent.oneshot import process_folder

    cfg = make_config()
    write_series(tmp_path / "src" / "s", 2)
    summary = process_folder(cfg, tmp_path / "src", tmp_path / "out",
                             stages=_stages(cfg, Panics()))
    [outcome] = summary.series
    assert outcome.state == SeriesState.QUARANTINED and outcome.code == ProblemCode.INTERNAL
    assert "PanicException" in outcome.reason
