"""The Agent: the one facade over the engine that the tray and the CLI call.

It owns the ledger, the target, the pipeline, the export watcher and the named worker
threads. Front ends read :meth:`Agent.status`, subscribe to :class:`AgentEvent` s, and
ask for pause, resume, retry and stop; they never touch the engine's parts.

:class:`AgentFacade` is that surface as a protocol: the in-process :class:`Agent` and
:class:`agent.control.RemoteAgent` (a running agent reached through its control
endpoint) both implement it, so the tray and the CLI work with either.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from agent.config import Config
from agent.errors import (
    Clinic2CloudError,
    ConfigError,
    CredentialsError,
    DiskFull,
    FatalError,
    SeriesProblem,
    StartupError,
    TargetUnavailable,
    TransientFault,
)
from agent.instance import InstanceLock
from agent.keys import installation_secret, keyed_hash, site_secret
from agent.ledger import (
    DELIVERED,
    QUARANTINED,
    STAGED,
    UNFINISHED,
    WITHHELD,
    Ledger,
    SeriesRow,
)
from agent.localview import LocalView, recent_summaries
from agent.logs import log_failure
from agent.messages import action_for, ignored_sentence, same_on_retry, waiting_sentence
from agent.paths import secure_umask, tighten
from agent.pipeline import Interrupted, Outcome, Pipeline, build_stages
from agent.procpool import series_in_flight
from agent.series import FileState
from agent.status import (
    AgentEvent,
    AgentState,
    AgentStatus,
    IgnoredFiles,
    LocalIdentity,
    SeriesSummary,
    WaitingSeries,
    start_of_today,
)
from agent.supervisor import Supervisor
from agent.sync import Target, open_target
from agent.vocab import AuditEvent, EventKind, ProblemCode, SeriesState
from agent.watch_report import PendingExport
from agent.watcher import ExportWatcher
from agent.work import Stage
from agent.workqueue import ScheduledQueue

if TYPE_CHECKING:
    from agent.control import ControlServer
    from agent.dicomnode.scp import DicomNode
    from agent.dicomnode.status import NodeStatus
    from agent.results.service import ResultsService

log = logging.getLogger(__name__)

PAUSE_SETTING = "paused_until"
#: How :meth:`Agent.retry` ends its answer when the series goes through again.
RETRY_STARTED = "is being processed again"
_OFFLINE_RETRY = (5.0, 300.0)     # first and largest delay while the target is out of reach
_CREDENTIALS_RETRY = 600.0        # credentials rarely fix themselves: look again rarely
_TRANSIENT_RETRY = 30.0           # a passing fault without its own hint
#: What a fatal error found while processing makes the agent show (work waits meanwhile).
_RECOVERED: dict[AgentState, tuple[EventKind, str]] = {
    AgentState.OFFLINE: (EventKind.ONLINE, "the storage is reachable again"),
    AgentState.CREDENTIALS: (EventKind.ONLINE, "the storage accepts the credentials again"),
    AgentState.DISK_FULL: (EventKind.DISK_FULL, "there is room again: work resumed"),
    AgentState.SETUP: (EventKind.SETUP, "the setup problem is solved: work resumed"),
}
_FATAL_STATES: tuple[tuple[type[FatalError], AgentState, EventKind], ...] = (
    (CredentialsError, AgentState.CREDENTIALS, EventKind.CREDENTIALS),
    (FatalError, AgentState.SETUP, EventKind.SETUP),
)


class AgentFacade(Protocol):
    """What front ends (tray, CLI) may ask of an agent, in process or running elsewhere."""

    @property
    def config(self) -> Config: ...
    def start(self) -> None: ...
    def stop(self, timeout: float = 5.0) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...
    def status(self) -> AgentStatus: ...
    def subscribe(self, callback: Callable[[AgentEvent], None]) -> None: ...
    def pause(self, seconds: float | None) -> None: ...
    def resume(self) -> None: ...
    def retry(self, series_id: int) -> str: ...
    def retry_results(self, series_id: int) -> str: ...
    def recent(self, limit: int = 50) -> list[SeriesSummary]: ...
    def identity(self, series_id: int) -> LocalIdentity | None: ...
    @property
    def busy(self) -> bool: ...


class Agent:
    """Watch, process and deliver, until :meth:`stop`."""

    def __init__(self, cfg: Config, *, stages: Sequence[Stage] | None = None,
                 target: Target | None = None) -> None:
        self._cfg = cfg
        paths = cfg.paths
        secure_umask()  # staged copies and quarantined originals carry names: owner-only
        try:
            tighten(paths)
        except OSError as exc:
            raise StartupError(f"the agent's folders cannot be prepared ({exc.strerror}): "
                               f"check that {paths.state_dir} belongs to this user") from None
        self._install_key = installation_secret(paths.installation_secret)
        self._site_key = site_secret(cfg.site.secret_file, paths.installation_secret)
        self.ledger = Ledger(paths.ledger, self._install_key)
        self._standard_stages = stages is None  # (tests' own stages need no pool)
        self.target = target if target is not None else open_target(cfg)
        self.pipeline = Pipeline(
            cfg, self.ledger, self.target,
            stages if stages is not None else build_stages(cfg, self._site_key),
            self._install_key,
        )
        self._queue = ScheduledQueue()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._pause_changed = threading.Condition()
        self._lock = threading.Lock()
        self._working: set[int] = set()
        self._exports: dict[int, list[str]] = {}  # series id -> export paths (memory only)
        self._subscribers: list[Callable[[AgentEvent], None]] = []
        self._workers: list[threading.Thread] = []
        self._watcher: ExportWatcher | None = None
        self._dicom: DicomNode | None = None
        self._instance = InstanceLock(paths.state_dir, paths.runtime_file, paths.ledger)
        self._supervisor = Supervisor(self._part_restarted)
        self._held: dict[str, int] = {}  # worker thread name -> series it is processing
        self._target_state: AgentState | None = None
        self._target_message = ""
        self._offline_delay = _OFFLINE_RETRY[0]
        self._started = False
        self.results = self._results_service()
        self.view = LocalView(cfg, self.ledger, self.pipeline.path_hash, self._known_paths)
        self._control: ControlServer | None = None
        self._quit_handler: Callable[[], None] | None = None
        self._ignored = IgnoredFiles()
        self._warned_waiting: set[str] = set()
        #: series id -> problem code of series this run quarantined (same settings since).
        self._kept_back_here: dict[int, str] = {}

    @property
    def config(self) -> Config:
        return self._cfg

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start watching and processing; returns at once. Raises AlreadyRunning."""
        folder = Path(self._cfg.watch.folder).expanduser() if self._cfg.watch.folder else None
        if folder is not None and not folder.is_dir():
            raise ConfigError(f"[watch.folder] {folder} does not exist or is not a folder")
        from agent.checks import run_startup_checks

        run_startup_checks(self._cfg, skip=("ledger", "export folder"))
        self._instance.acquire()
        try:
            self._start_dicom_node()
        except BaseException:
            self._instance.release()
            raise
        self._started = True
        self.ledger.audit(AuditEvent.AGENT_STARTED)
        for row in self.ledger.in_state(*UNFINISHED):
            self._queue.put(row.id)  # resume what a crash or shutdown left unfinished
        # With the standard stages the CPU-bound work runs in the process pool: one series
        # more than its workers keeps it fed (procpool.series_in_flight).
        count = self._cfg.worker_count
        for n in range(series_in_flight(count) if self._standard_stages else count):
            self._workers.append(self._start_worker(n))
            self._supervisor.add(f"series-worker-{n + 1}",
                                 alive=functools.partial(self._worker_alive, n),
                                 restart=functools.partial(self._restart_worker, n))
        if folder is not None:
            self._watcher = ExportWatcher(
                self._cfg.watch,
                series_key=self._series_key,
                path_hash=self.pipeline.path_hash,
                handled=self.ledger.handled_files(),
                on_ready=self._series_ready,
                on_expired=self._series_expired,
                on_ignored=self._files_ignored,
                looks=self.pipeline.looks,
            )
            self._watcher.on_publish = self._waiting_published
            if self._standard_stages and self._cfg.worker_count > 1:
                from agent.procpool import warm_in_background

                self._watcher.on_first_sighting = warm_in_background
            self._watcher.start()
            watcher = self._watcher
            self._supervisor.add("export-scanner", alive=lambda: not watcher.dead_parts(),
                                 restart=watcher.revive)
        if self.results is not None:
            self.results.start()
        self._start_control()
        self._supervisor.start()
        log.info("agent started: %d workers, target %s", len(self._workers),
                 self.target.description)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop within ``timeout`` seconds; work in flight resumes on the next start."""
        if self._stopped.is_set():
            return
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._supervisor.stop()
        self._queue.close()
        self._notify_pause_change()
        if self._watcher is not None:
            self._watcher.stop(timeout=min(1.5, timeout / 3))
        if self._dicom is not None:
            self._dicom.stop(timeout=min(1.5, timeout / 3))
        if self.results is not None:
            self.results.stop(timeout=min(1.0, timeout / 5))
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic() - 0.5))
        busy = [t.name for t in self._workers if t.is_alive()]
        if busy:
            # Their series stay in a persisted state and are redone on the next start.
            log.info("leaving %d busy worker(s) behind; their series resume next start",
                     len(busy))
        else:
            self.target.close()
        if self._started:
            self.ledger.audit(AuditEvent.AGENT_STOPPED)
        if self._control is not None:
            self._control.stop()
        self._instance.release()
        self._stopped.set()
        self._emit(AgentEvent(EventKind.STATE, "stopped"))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the agent stopped; True if it did."""
        return self._stopped.wait(timeout)

    def _results_service(self) -> ResultsService | None:
        """The cloud loop's poller (``[results] enabled``), subscribed to deliveries."""
        if not self._cfg.results.enabled:
            return None
        from agent.results.service import ResultsService

        service = ResultsService(self._cfg, self.ledger, self._site_key, self._emit)
        self.subscribe(service.on_event)
        return service

    def retry_results(self, series_id: int) -> str:
        """Look for (and bring home) the results of a delivered series again; what
        happened, in words. Results that failed or timed out are also sent to the cloud
        worker again (through the queue, when one is configured)."""
        if self.results is None:
            return ("results are not brought home here ([results] is off): there is "
                    "nothing to look for")
        from agent.results.service import REPROCESSED

        previous = self.results.retry(series_id)
        if previous is None:
            return (f"no results are expected for series {series_id}: only series delivered "
                    "while [results] is on, whose study this workstation can re-link, get "
                    "results")
        again = ""
        if previous in REPROCESSED:  # the service asked only where a queue can carry it
            again = (" and asked the cloud to process it again" if self._cfg.target.queue_name
                     else "; no [target] queue_name is set, so the cloud team re-runs the job")
        return f"series {series_id}: results were {previous}; looking for them again{again}"

    def results_identity(self, series_id: int) -> str | None:
        """Who a series' results belong to, read from the local re-link store at display
        time (tray notifications: "Results ready for <patient> (local)"). Never log it."""
        if self.results is None:
            return None
        identity = self.results.identity_of(series_id)
        return None if identity is None else identity.display_name

    def supervise(self, name: str, alive: Callable[[], bool],
                  restart: Callable[[], None]) -> None:
        """Let the supervisor watch a long-lived thread of a front end (the tray's poller):
        restarted, and reported in the health, should it die."""
        self._supervisor.add(name, alive, restart)

    def _start_worker(self, n: int) -> threading.Thread:
        t = threading.Thread(target=self._work, name=f"series-worker-{n + 1}", daemon=True)
        t.start()
        return t

    def _worker_alive(self, n: int) -> bool:
        return self._stop.is_set() or self._workers[n].is_alive()

    def _restart_worker(self, n: int) -> None:
        """A worker died: its series goes back to the queue (the attempt stays counted, so
        a series that keeps killing its worker ends quarantined) and a new worker starts."""
        dead = self._workers[n]
        with self._lock:
            series_id = self._held.pop(dead.name, None)
            if series_id is not None:
                self._working.discard(series_id)
        if series_id is not None:
            self._queue.put(series_id, 1.0)
        self._workers[n] = self._start_worker(n)

    def _part_restarted(self, name: str) -> None:
        self._emit(AgentEvent(EventKind.HEALTH, f"{name} stopped unexpectedly and was "
                              "restarted; if this repeats, send the log folder to support"))

    # -- what front ends call --------------------------------------------------------------

    def subscribe(self, callback: Callable[[AgentEvent], None]) -> None:
        """``callback`` is called from worker threads: keep it short, hand off to your UI."""
        with self._lock:
            self._subscribers.append(callback)

    def pause(self, seconds: float | None) -> None:
        """Stop taking new series, for ``seconds`` or until :meth:`resume`. Survives restarts."""
        until = 0.0 if seconds is None else time.time() + seconds
        self.ledger.set_setting(PAUSE_SETTING, repr(until))
        self.ledger.audit(AuditEvent.PAUSED, seconds=seconds)
        self._notify_pause_change()
        self._emit(AgentEvent(EventKind.PAUSED, "paused until resumed" if seconds is None
                              else f"paused for {seconds / 3600:.1f} h"))

    def resume(self) -> None:
        self.ledger.set_setting(PAUSE_SETTING, "")
        self.ledger.audit(AuditEvent.RESUMED)
        self._notify_pause_change()
        self._emit(AgentEvent(EventKind.RESUMED, "resumed"))

    def _notify_pause_change(self) -> None:
        with self._pause_changed:
            self._pause_changed.notify_all()
        self._queue.wake()

    def paused_until(self) -> float | None:
        return read_pause(self.ledger)

    def retry(self, series_id: int) -> str:
        """Send a quarantined series through the pipeline again; what happened, in words.

        Its quarantined copy goes through re-export recognition first (a copy identical to
        what was delivered ends delivered at once). A series given up on while incomplete
        has no copy: the export folder is looked at again instead.
        """
        try:
            before = self.ledger.get(series_id)
        except KeyError:
            return f"there is no series {series_id}"
        refused = self._retry_refusal(before)
        if refused:
            return refused
        try:
            row = self.pipeline.requeue(series_id)
        except SeriesProblem as problem:
            if problem.code == ProblemCode.MISSING and self._watcher is not None:
                self._watcher.watch_again(before.key)
                self.ledger.audit(AuditEvent.RETRIED, series_id, watch_again=True)
                return (f"series {series_id}: looking at the export folder again; it is "
                        "taken as soon as all of its files are complete")
            self._emit(AgentEvent(EventKind.QUARANTINED, str(problem), series_id))
            return f"series {series_id}: {problem}"
        if row.state == STAGED:
            self._queue.put(series_id)
            return f"series {series_id} {RETRY_STARTED}"
        if row.state == DELIVERED:
            self._emit(AgentEvent(EventKind.ALREADY_DELIVERED, row.reason, series_id))
        return f"series {series_id}: {row.state} - {row.reason}"

    def _retry_refusal(self, row: SeriesRow) -> str:
        """Why retrying ``row`` makes no sense, or "" when it does. A series this running
        agent kept back for a reason that depends only on the series and the settings
        would be kept back again, from the same copy: say what to do instead."""
        if row.state != QUARANTINED:
            return f"series {row.id} is {row.state}, not quarantined: nothing to retry"
        if row.id not in {r.id for r in self.ledger.open_quarantine()}:
            return (f"series {row.id} was exported again since (a newer version exists): "
                    "nothing to retry")
        if self._kept_back_here.get(row.id) == row.code and same_on_retry(row.code):
            return (f"series {row.id} would be kept back again for the same reason, from "
                    f"the same copy with the same settings: {row.reason}. What to do: "
                    f"{action_for(row.code)}")
        return ""

    def recent(self, limit: int = 50) -> list[SeriesSummary]:
        """The latest series (re-exported ones by the time of their re-export), with what
        to do about quarantined ones and, where shown, their local identity."""
        return recent_summaries(self.ledger, self.view, limit)

    def identity(self, series_id: int) -> LocalIdentity | None:
        """Who and what series ``series_id`` is, read now from its local copies (memory
        only; None when ``[display] local_identity`` is off or nothing local is left)."""
        try:
            return self.view.of_row(self.ledger.get(series_id))
        except KeyError:
            return None

    def set_quit_handler(self, handler: Callable[[], None] | None) -> None:
        """What ``clinic2cloud quit`` does: the tray ends its loop; by default, stop."""
        self._quit_handler = handler

    def request_quit(self) -> None:
        (self._quit_handler or self.stop)()

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._working) or len(self._queue) > 0

    def status(self) -> AgentStatus:
        today = start_of_today()
        counts = self.ledger.counts(since=today)
        with self._lock:
            working = len(self._working)
        waiting = tuple(self._waiting(p) for p in (
            self._watcher.pending if self._watcher else ()))
        queued = len(self._queue) + counts.get(SeriesState.STABLE, 0) + len(waiting) + (
            len(self._dicom.watcher.tracker) if self._dicom else 0)
        quarantined = len(self.ledger.open_quarantine())
        stuck = [w for w in waiting if w.attention]
        paused = self.paused_until()
        failing = self._supervisor.failing()
        if self._stopped.is_set():
            state, message = AgentState.STOPPED, "stopped"
        elif failing:
            state = AgentState.UNHEALTHY
            message = (f"{', '.join(failing)} keeps stopping despite restarts: exports may "
                       "not be processed. Restart Clinic2Cloud and send the log folder to "
                       "support")
        elif self._target_state is not None:
            state, message = self._target_state, self._target_message
        elif paused is not None:
            state, message = AgentState.PAUSED, "paused"
        elif working or len(self._queue):
            state, message = AgentState.WORKING, f"processing {working} series"
        elif stuck:
            state = AgentState.ATTENTION
            message = waiting_sentence(stuck[0]) + (
                f" (and {len(stuck) - 1} more)" if len(stuck) > 1 else "")
        elif quarantined:
            state = AgentState.ATTENTION
            message = f"{quarantined} series kept back (quarantined)"
        elif waiting:
            state, message = AgentState.WORKING, waiting_sentence(waiting[0])
        else:
            state, message = AgentState.IDLE, "watching for exports"
        return AgentStatus(
            state=state, queued=queued, working=working,
            delivered_today=counts.get(DELIVERED, 0),
            withheld_today=counts.get(WITHHELD, 0), quarantined=quarantined,
            paused_until=paused, message=message,
            recent=tuple(self.recent(10)), waiting=waiting, health=self._supervisor.health(),
            ignored=self._watcher.ignored if self._watcher else IgnoredFiles(),
            already_delivered_today=self.ledger.reexport_count(today),
            dicom=self.dicom_status(),
        )

    def _waiting(self, p: PendingExport) -> WaitingSeries:
        now = time.time()
        watch = self._cfg.watch
        return WaitingSeries(
            ref=p.key[:8], files=len(p.paths), incomplete=p.incomplete, since=p.since,
            quiet_for=max(0.0, now - p.last_change),
            attention=bool(p.incomplete) and now - p.since >= watch.attention_seconds,
            gives_up_at=p.last_change + watch.max_wait_seconds,
            local=self.view.of_export(p.paths))

    def dicom_status(self) -> NodeStatus | None:
        """The DICOM node's snapshot (listening, last association, refused callers), or
        None when ``[dicom] listen`` is off."""
        return self._dicom.status() if self._dicom is not None else None

    # -- the DICOM node --------------------------------------------------------------------

    def _series_key(self, study_uid: str, series_uid: str) -> str:
        return keyed_hash(self._install_key, "series", study_uid, series_uid)

    def _start_dicom_node(self) -> None:
        """Listen for C-STORE when configured; received series join the same pipeline."""
        if not self._cfg.dicom.listen:
            return
        from agent.dicomnode.scp import DicomNode

        node = DicomNode(self._cfg, self.ledger, key=self._install_key,
                         path_hash=self.pipeline.path_hash, series_key=self._series_key,
                         on_ready=self._series_ready, on_expired=self._series_expired)
        self.pipeline.export_roots.append(node.intake.folder)  # staged from there too
        node.start()
        self.subscribe(node.on_agent_event)
        self._dicom = node

    # -- from the watcher ------------------------------------------------------------------

    def _series_ready(self, key: str, files: dict[str, FileState]) -> None:
        try:
            taken = self.pipeline.take(key, files)
        except DiskFull as exc:
            self._set_target_state(AgentState.DISK_FULL, str(exc), EventKind.DISK_FULL)
            raise  # the watcher puts the series back to wait
        if self._target_state is AgentState.DISK_FULL:
            self._set_target_state(None, "", EventKind.DISK_FULL)  # staging worked again
        row = taken.row
        if taken.repeat:
            self._emit(AgentEvent(
                EventKind.ALREADY_DELIVERED,
                f"exported again: identical to version {row.version}, which was "
                f"{'delivered' if row.state == DELIVERED else 'already on its way'}; "
                "nothing sent", row.id))
            return
        self._exports[row.id] = list(files)
        if row.state == STAGED:
            self._queue.put(row.id)
        else:
            self._emit(AgentEvent(EventKind.QUARANTINED, row.reason, row.id))

    def _files_ignored(self, ignored: IgnoredFiles) -> None:
        self._ignored = ignored
        self._emit(AgentEvent(EventKind.IGNORED, ignored_sentence(ignored)))

    def _waiting_published(self, pending: tuple[PendingExport, ...]) -> None:
        """From the scanner: tell once (log, event) when an export needs attention."""
        now = time.time()
        keys = {p.key for p in pending}
        self._warned_waiting &= keys
        for p in pending:
            if (p.key in self._warned_waiting or not p.incomplete
                    or now - p.since < self._cfg.watch.attention_seconds):
                continue
            self._warned_waiting.add(p.key)
            w = self._waiting(p)
            log.warning("an export is incomplete: %s (series %s)", waiting_sentence(w),
                        p.key[:8])
            self._emit(AgentEvent(EventKind.WAITING, f"an export is incomplete: "
                                  f"{waiting_sentence(w)}"))

    def _known_paths(self) -> tuple[str, ...]:
        return self._watcher.known_paths() if self._watcher is not None else ()

    def _start_control(self) -> None:
        """Listen for ``clinic2cloud status|pause|resume|retry|quit`` (see agent.control)."""
        from agent.control import ControlServer

        try:
            self._control = ControlServer(self, self._cfg.paths, self.request_quit)
            self._control.start()
        except (OSError, Clinic2CloudError) as exc:
            self._control = None
            log.warning("the control endpoint is not available (%s): `clinic2cloud "
                        "status` reads the ledger instead, pause/quit only from the tray",
                        getattr(exc, "strerror", None) or type(exc).__name__)

    def _series_expired(self, key: str, files: dict[str, FileState]) -> None:
        row = self.ledger.open_version(
            key, [(self.pipeline.path_hash(p), s.size, s.mtime_ns) for p, s in files.items()])
        minutes = self._cfg.watch.max_wait_seconds / 60
        problem = SeriesProblem(
            f"the export never completed: a file was still being written when nothing had "
            f"changed for {minutes:.0f} minutes. Check that the viewer finished the export, "
            "then export the series again.", code=ProblemCode.INCOMPLETE)
        self.pipeline.quarantine(row.id, problem)
        self._emit(AgentEvent(EventKind.QUARANTINED, str(problem), row.id))

    # -- the workers -----------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            paused = self.paused_until()
            if paused is not None:
                # Wake when the pause ends by itself, or on resume/stop (they notify).
                with self._pause_changed:
                    if not self._stop.is_set() and self.paused_until() is not None:
                        self._pause_changed.wait(
                            min(60.0, (paused - time.time()) if paused else 60.0))
                continue
            series_id = self._queue.get()
            if series_id is None:
                return
            if self.paused_until() is not None:
                self._queue.put(series_id)
                continue
            me = threading.current_thread().name
            with self._lock:
                self._working.add(series_id)
                self._held[me] = series_id
            self._process(series_id)  # handles every Exception; a BaseException kills us
            with self._lock:
                self._working.discard(series_id)
                self._held.pop(me, None)

    def _process(self, series_id: int) -> None:
        try:
            outcome = self.pipeline.process(series_id, self._stop.is_set)
        except Interrupted:
            return
        except TargetUnavailable as exc:
            self._set_target_state(AgentState.OFFLINE, str(exc), EventKind.OFFLINE)
            delay = self._offline_delay * random.uniform(0.8, 1.2)
            self._offline_delay = min(self._offline_delay * 2, _OFFLINE_RETRY[1])
            self._queue.put(series_id, delay)
            return
        except DiskFull as exc:
            self._set_target_state(AgentState.DISK_FULL, str(exc), EventKind.DISK_FULL)
            self._queue.put(series_id, exc.retry_after or _TRANSIENT_RETRY)
            return
        except TransientFault as exc:
            # A passing condition of this series (waiting for the rest of its study, a
            # file still changing...).
            log.info("series %s waits: %s", series_id, exc)
            if exc.shown:
                self._note_waiting(series_id, str(exc))
            self._queue.put(series_id, exc.retry_after or _TRANSIENT_RETRY)
            return
        except FatalError as exc:
            # Credentials refused, a missing container, the installation broken: a person
            # must act; the series waits (nothing is quarantined for it).
            state, kind = next((st, k) for cls, st, k in _FATAL_STATES if isinstance(exc, cls))
            self._set_target_state(state, str(exc), kind)
            self._queue.put(series_id, _CREDENTIALS_RETRY)
            return
        except Exception as exc:  # noqa: BLE001 -- a worker must never die
            log_failure(log, f"unexpected error on series {series_id}; it will be retried", exc)
            self._queue.put(series_id, 30.0)
            return
        if self._target_state is not None:
            self._set_target_state(None, "", EventKind.ONLINE)
        self._offline_delay = _OFFLINE_RETRY[0]
        self._finished(outcome)

    def _note_waiting(self, series_id: int, why: str) -> None:
        """Why a series waits, on its ledger row (shown in status and the window), written
        once per change of reason (a retry every minute must not add an audit row each)."""
        try:
            row = self.ledger.get(series_id)
            if row.reason != why:
                self.ledger.set_state(series_id, row.state, reason=why)
        except Exception as exc:  # noqa: BLE001 -- only a display note; the series retries
            log_failure(log, f"could not note why series {series_id} waits", exc)

    def _finished(self, outcome: Outcome) -> None:
        exports = self._exports.pop(outcome.series_id, [])
        _log_ending(outcome)
        if outcome.state == DELIVERED:
            self._emit(AgentEvent(EventKind.DELIVERED, f"{outcome.file_count} files delivered",
                                  outcome.series_id))
            if self._cfg.watch.delete_after_delivery:
                for path in exports:
                    Path(path).unlink(missing_ok=True)
                if exports:
                    self.ledger.audit(AuditEvent.EXPORT_REMOVED, outcome.series_id,
                                      files=len(exports))
        elif outcome.state == WITHHELD:
            self._emit(AgentEvent(EventKind.WITHHELD, outcome.reason, outcome.series_id))
        elif outcome.state == QUARANTINED:
            self._kept_back_here[outcome.series_id] = outcome.code
            self._emit(AgentEvent(EventKind.QUARANTINED, outcome.reason, outcome.series_id))

    def _set_target_state(self, state: AgentState | None, message: str,
                          kind: EventKind) -> None:
        """Set (or with None, clear) the problem that holds work back: the target out of
        reach or refusing us, a full disk, a setup problem. Clearing says what recovered."""
        old = self._target_state
        self._target_state, self._target_message = state, message
        if state == old:
            return
        if state is None and old is not None:
            kind, message = _RECOVERED.get(old, (EventKind.ONLINE, "work resumed"))
        log.warning("%s", message)
        self._emit(AgentEvent(kind, message))

    def _emit(self, event: AgentEvent) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("event subscriber failed")


def read_pause(ledger: Ledger) -> float | None:
    """When the pause recorded in the ledger ends: None (not paused), 0.0 (until resumed)."""
    raw = ledger.setting(PAUSE_SETTING)
    if not raw:
        return None
    until = float(raw)
    if until and until <= time.time():
        return None  # the pause ended by itself
    return until


def _log_ending(outcome: Outcome) -> None:
    """One line per delivered series, for a headless operator (no PHI; the pipeline logs
    quarantined and withheld series itself)."""
    if outcome.state == DELIVERED:
        log.info("series %s delivered: %d files to %s%s", outcome.series_id,
                 outcome.file_count, outcome.location,
                 f" ({outcome.reason})" if outcome.reason else "")
