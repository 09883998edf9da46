"""The Agent: the one facade over the engine that the tray and the CLI call.

It owns the ledger, the target, the pipeline, the export watcher and the named worker
threads. Front ends read :meth:`Agent.status`, subscribe to :class:`AgentEvent` s, and
ask for pause, resume, retry and stop; they never touch the engine's parts.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import Config
from agent.errors import ConfigError, FatalError, SeriesProblem, TargetUnavailable
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
from agent.logs import log_failure
from agent.pipeline import Interrupted, Outcome, Pipeline, build_stages
from agent.series import FileState
from agent.status import AgentEvent, AgentState, AgentStatus, SeriesSummary
from agent.sync import Target, open_target
from agent.vocab import AuditEvent, EventKind, ProblemCode, SeriesState
from agent.watcher import ExportWatcher
from agent.work import Stage
from agent.workqueue import ScheduledQueue

if TYPE_CHECKING:
    from agent.dicomnode.scp import DicomNode
    from agent.dicomnode.status import NodeStatus
    from agent.results.service import ResultsService

log = logging.getLogger(__name__)

PAUSE_SETTING = "paused_until"
_OFFLINE_RETRY = (5.0, 300.0)     # first and largest delay while the target is out of reach
_CREDENTIALS_RETRY = 600.0        # credentials rarely fix themselves: look again rarely


class Agent:
    """Watch, process and deliver, until :meth:`stop`."""

    def __init__(self, cfg: Config, *, stages: Sequence[Stage] | None = None,
                 target: Target | None = None) -> None:
        self._cfg = cfg
        paths = cfg.paths
        paths.state_dir.mkdir(parents=True, exist_ok=True)
        self._install_key = installation_secret(paths.installation_secret)
        self._site_key = site_secret(cfg.site.secret_file, paths.installation_secret)
        self.ledger = Ledger(paths.ledger)
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
        self._instance = InstanceLock(paths.runtime_file)
        self._target_state: AgentState | None = None
        self._target_message = ""
        self._offline_delay = _OFFLINE_RETRY[0]
        self._started = False
        self.results = self._results_service()

    @property
    def config(self) -> Config:
        return self._cfg

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start watching and processing; returns at once. Raises AlreadyRunning."""
        folder = Path(self._cfg.watch.folder).expanduser() if self._cfg.watch.folder else None
        if folder is not None and not folder.is_dir():
            raise ConfigError(f"[watch.folder] {folder} does not exist or is not a folder")
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
        for n in range(self._cfg.worker_count):
            t = threading.Thread(target=self._work, name=f"series-worker-{n + 1}", daemon=True)
            t.start()
            self._workers.append(t)
        if folder is not None:
            self._watcher = ExportWatcher(
                self._cfg.watch,
                series_key=self._series_key,
                path_hash=self.pipeline.path_hash,
                handled=self.ledger.handled_files(),
                on_ready=self._series_ready,
                on_expired=self._series_expired,
            )
            self._watcher.start()
        if self.results is not None:
            self.results.start()
        log.info("agent started: %d workers, target %s", len(self._workers),
                 self.target.description)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop within ``timeout`` seconds; work in flight resumes on the next start."""
        if self._stopped.is_set():
            return
        deadline = time.monotonic() + timeout
        self._stop.set()
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

    def retry_results(self, series_id: int) -> bool:
        """Look for (and bring home) the results of a delivered series again."""
        return self.results is not None and self.results.retry(series_id)

    def results_identity(self, series_id: int) -> str | None:
        """Who a series' results belong to, read from the local re-link store at display
        time (tray notifications: "Results ready for <patient> (local)"). Never log it."""
        if self.results is None:
            return None
        identity = self.results.identity_of(series_id)
        return None if identity is None else identity.display_name

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
        raw = self.ledger.setting(PAUSE_SETTING)
        if not raw:
            return None
        until = float(raw)
        if until and until <= time.time():
            return None  # the pause ended by itself
        return until

    def retry(self, series_id: int) -> None:
        """Send a quarantined series through the pipeline again."""
        try:
            row = self.pipeline.requeue(series_id)
        except SeriesProblem as problem:
            self._emit(AgentEvent(EventKind.QUARANTINED, str(problem), series_id))
            return
        if row.state == STAGED:
            self._queue.put(series_id)

    def recent(self, limit: int = 50) -> list[SeriesSummary]:
        return [self._summary(r) for r in self.ledger.recent(limit)]

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._working) or len(self._queue) > 0

    def status(self) -> AgentStatus:
        counts = self.ledger.counts(since=_start_of_today())
        with self._lock:
            working = len(self._working)
        queued = len(self._queue) + counts.get(SeriesState.STABLE, 0) + (
            len(self._watcher.tracker) if self._watcher else 0) + (
            len(self._dicom.watcher.tracker) if self._dicom else 0)
        quarantined = counts.get(QUARANTINED, 0)
        paused = self.paused_until()
        if self._stopped.is_set():
            state, message = AgentState.STOPPED, "stopped"
        elif self._target_state is not None:
            state, message = self._target_state, self._target_message
        elif paused is not None:
            state, message = AgentState.PAUSED, "paused"
        elif working or len(self._queue):
            state, message = AgentState.WORKING, f"processing {working} series"
        elif quarantined:
            state = AgentState.ATTENTION
            message = f"{quarantined} series kept back (quarantined)"
        else:
            state, message = AgentState.IDLE, "watching for exports"
        return AgentStatus(
            state=state, queued=queued, working=working,
            delivered_today=counts.get(DELIVERED, 0),
            withheld_today=counts.get(WITHHELD, 0), quarantined=quarantined,
            paused_until=paused, message=message,
            recent=tuple(self.recent(10)),
            dicom=self.dicom_status(),
        )

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
        node.start()
        self.subscribe(node.on_agent_event)
        self._dicom = node

    # -- from the watcher ------------------------------------------------------------------

    def _series_ready(self, key: str, files: dict[str, FileState]) -> None:
        row = self.pipeline.stage(key, files)
        self._exports[row.id] = list(files)
        if row.state == STAGED:
            self._queue.put(row.id)
        else:
            self._emit(AgentEvent(EventKind.QUARANTINED, row.reason, row.id))

    def _series_expired(self, key: str, files: dict[str, FileState]) -> None:
        row = self.ledger.open_version(
            key, [(self.pipeline.path_hash(p), s.size, s.mtime_ns) for p, s in files.items()])
        minutes = self._cfg.watch.max_wait_seconds / 60
        problem = SeriesProblem(
            f"the export never completed: a file was still incomplete after {minutes:.0f} "
            "minutes. Export the series again from the viewer.", code=ProblemCode.INCOMPLETE)
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
            with self._lock:
                self._working.add(series_id)
            try:
                self._process(series_id)
            finally:
                with self._lock:
                    self._working.discard(series_id)

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
        except FatalError as exc:
            # Wrong or expired credentials, a missing container: a person must act.
            self._set_target_state(AgentState.CREDENTIALS, str(exc), EventKind.CREDENTIALS)
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

    def _finished(self, outcome: Outcome) -> None:
        exports = self._exports.pop(outcome.series_id, [])
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
            self._emit(AgentEvent(EventKind.QUARANTINED, outcome.reason, outcome.series_id))

    def _set_target_state(self, state: AgentState | None, message: str,
                          kind: EventKind) -> None:
        changed = state != self._target_state
        self._target_state, self._target_message = state, message
        if changed:
            log.warning("target: %s", message or "reachable again")
            self._emit(AgentEvent(kind, message or "the storage is reachable again"))

    def _emit(self, event: AgentEvent) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("event subscriber failed")

    @staticmethod
    def _summary(row: SeriesRow) -> SeriesSummary:
        return SeriesSummary(
            id=row.id, state=row.state, updated=row.updated, modality=row.modality,
            patient_pseudonym=row.patient, reason=row.reason, location=row.location,
            file_count=row.file_count, render=row.render, version=row.version)


def _start_of_today() -> float:
    t = time.localtime()
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1))
