"""The results service: watch for results of delivered series, bring them home.

With ``[results] enabled`` the agent runs one ``results-poller`` thread. Each delivered
series whose identity is in the re-link store becomes *expected* (ledger:
``results-expected``). The poller looks under the delivery's location in the results
container - every ``poll_seconds`` at first, backing off to ``max_poll_seconds`` - and:

* results complete (their ``manifest.json``): download, verify each file's SHA-256
  (``results-received``), re-identify locally (``results-reidentified``), deliver to the
  results folder and/or PACS (``results-delivered``), notify :data:`EventKind.RESULTS`;
* a final failure recorded by the worker (job failed, delivery invalid): ``results-failed``,
  notified (:data:`EventKind.RESULTS_FAILED`); a retry can be asked for;
* nothing after ``timeout_minutes``: ``results-timeout``, notified; still watched, rarely;
* results that do not verify or cannot be re-linked: ``results-invalid``, notified.

The ledger holds locations (pseudonyms), codes and hashes only. Storage out of reach is
waited out with backoff, never recorded against a series. Results already delivered are
never fetched again unless a person asks (:meth:`ResultsService.retry`).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent.config import Config
from agent.errors import Clinic2CloudError
from agent.ledger import Ledger
from agent.logs import log_failure
from agent.results.deliver import to_folder, to_pacs
from agent.results.fetch import ResultsInvalid, ResultsSource, open_results
from agent.results.reidentify import NotRelinkable, is_dicom, reidentify_file
from agent.results.relink import RelinkStore, StudyIdentity
from agent.results.tracker import Expected, Tracker
from agent.status import AgentEvent
from agent.vocab import AuditEvent, EventKind, ResultsState, SeriesState

log = logging.getLogger(__name__)

ENABLED_SINCE = "results_enabled_since"
_PURGE_EVERY = 86400.0


#: Results in these states are also sent to the cloud worker again when a person retries.
REPROCESSED = frozenset({ResultsState.FAILED, ResultsState.TIMED_OUT})


def relink_path(cfg: Config) -> Path:
    return cfg.paths.state_dir / "relink.sqlite3"


class ResultsService:
    """See the module docstring. ``emit`` hands events to the agent's subscribers."""

    def __init__(self, cfg: Config, ledger: Ledger, site_secret: bytes,
                 emit: Callable[[AgentEvent], None], *,
                 source: ResultsSource | None = None) -> None:
        self.cfg = cfg
        self.ledger = ledger
        self._emit = emit
        self.store = RelinkStore(relink_path(cfg), site_secret)
        self.tracker = Tracker(cfg.paths.state_dir / "results.sqlite3")
        if source is None:
            client, where = open_results(cfg)
            source = ResultsSource(client, where)
        self.source = source
        self._incoming = cfg.paths.state_dir / "results-incoming"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._storage_problem = ""
        self._backoff = cfg.results.poll_seconds
        self._last_purge = 0.0

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        if not self.ledger.setting(ENABLED_SINCE):
            self.ledger.set_setting(ENABLED_SINCE, repr(time.time()))
        self._reconcile()
        self._thread = threading.Thread(target=self._run, name="results-poller", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._thread is None or not self._thread.is_alive():
            self.tracker.close()
            self.store.close()
            self.source.client.close()

    def _reconcile(self) -> None:
        """Delivered series the agent did not get to expect (a crash right after delivery)."""
        since = float(self.ledger.setting(ENABLED_SINCE) or 0)
        for row in self.ledger.in_state(SeriesState.DELIVERED):
            if row.updated >= since and row.location:
                self.expect(row.id)

    # -- from the agent ----------------------------------------------------------------

    def on_event(self, event: AgentEvent) -> None:
        if event.kind == EventKind.DELIVERED and event.series_id is not None:
            self.expect(event.series_id)

    def expect(self, series_id: int) -> bool:
        """Wait for the results of a delivered series (when its identity can be restored)."""
        row = self.ledger.get(series_id)
        if not row.location or self.store.study_by_pseudonym(row.study) is None:
            return False
        if not self.tracker.expect(row.location, series_id):
            return False
        self.ledger.audit(AuditEvent.RESULTS_EXPECTED, series_id, location=row.location)
        self._wake.set()
        return True

    def retry(self, series_id: int) -> ResultsState | None:
        """Look for (and fetch) the results of ``series_id`` again; the state its results
        were in (failed and timed-out ones are also sent to the worker again), or None when
        no results of that series are expected here."""
        e = self.tracker.for_series(series_id)
        if e is None:
            return None
        previous = e.state
        reprocess = previous in REPROCESSED
        if reprocess:
            self._ask_reprocessing(e.location)
        self.tracker.restart(e.location)
        self.ledger.audit(AuditEvent.RESULTS_RETRIED, series_id, location=e.location,
                          previous=previous, reprocess=reprocess)
        self._wake.set()
        return previous

    def _ask_reprocessing(self, location: str) -> None:
        """A queue message asking the worker to process ``location`` again (needs
        ``[target] queue_name``; with Event Grid only, the cloud team re-runs the job)."""
        if not self.cfg.target.queue_name:
            log.info("results of %s: no queue configured; only looking again", location)
            return
        from agent.sync.azure_auth import resolve
        from agent.sync.azure_queue import ManifestNotifier

        notifier = ManifestNotifier(resolve(self.cfg.target), self.cfg.target.queue_name,
                                    retry_budget=8.0)
        try:
            notifier.notify(location, f"{location}/manifest.json", "", reprocess=True)
        finally:
            notifier.close()

    def identity_of(self, series_id: int) -> StudyIdentity | None:
        """The local identity behind a series' results, for a local view at display time."""
        row = self.ledger.get(series_id)
        return self.store.study_by_pseudonym(row.study) if row.study else None

    # -- the poller --------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._maybe_purge()
            try:
                for e in self.tracker.due(time.time()):
                    if self._stop.is_set():
                        return
                    self.look(e)
                if self._storage_problem:
                    log.info("results storage reachable again")
                self._storage_problem = ""
                self._backoff = self.cfg.results.poll_seconds
            except Clinic2CloudError as exc:
                if str(exc) != self._storage_problem:
                    log.warning("results: %s", exc)
                self._storage_problem = str(exc)
                self._backoff = min(self._backoff * 2, self.cfg.results.max_poll_seconds)
                self._sleep(self._backoff)
                continue
            except Exception as exc:  # noqa: BLE001 - the poller must not die
                log_failure(log, "results poller: unexpected error; retrying", exc)
                self._sleep(self.cfg.results.max_poll_seconds)
                continue
            nxt = self.tracker.next_due()
            self._sleep(self.cfg.results.max_poll_seconds if nxt is None
                        else max(0.05, nxt - time.time()))

    def _sleep(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _maybe_purge(self) -> None:
        days = self.cfg.results.relink_retention_days
        if days and time.time() - self._last_purge > _PURGE_EVERY:
            self._last_purge = time.time()
            removed = self.store.purge(days)
            if removed:
                self.ledger.audit(AuditEvent.RELINK_PURGED, rows=removed, older_than_days=days)

    def _next_look(self, e: Expected) -> float:
        r = self.cfg.results
        delay = r.poll_seconds * (1.5 ** max(0, e.looks - 5))
        return time.time() + min(delay, r.max_poll_seconds)

    def look(self, e: Expected) -> None:
        """One look at one location (module docstring). Raises storage errors."""
        seen = self.source.look(e.location)
        if seen.manifest:
            self._bring_home(e)
            return
        if seen.failure is not None:
            attempts = int(seen.failure.get("attempts") or 0)
            code = str(seen.failure.get("code") or "job-failed")[:40]
            if seen.failure.get("final"):
                reason = str(seen.failure.get("message") or "the processing job failed")[:300]
                self._fail(e, ResultsState.FAILED, AuditEvent.RESULTS_FAILED, code,
                           f"cloud processing failed: {reason}", attempts=attempts)
                return
            if attempts != e.attempts:
                self.ledger.audit(AuditEvent.RESULTS_ATTEMPT_FAILED, e.series_id,
                                  location=e.location, code=code, attempts=attempts)
            self.tracker.looked(e.location, self._next_look(e), attempts=attempts)
            return
        overdue = time.time() - e.since > self.cfg.results.timeout_minutes * 60
        if overdue and e.state == ResultsState.WAITING:
            self._fail(e, ResultsState.TIMED_OUT, AuditEvent.RESULTS_TIMEOUT, "timeout",
                       f"no results after {self.cfg.results.timeout_minutes:.0f} minutes; "
                       "still watching. Ask the cloud team to check the worker",
                       next_look=time.time() + self.cfg.results.max_poll_seconds)
            return
        self.tracker.looked(e.location, self._next_look(e))

    def _fail(self, e: Expected, state: ResultsState, event: AuditEvent, code: str,
              reason: str, *, attempts: int = 0, next_look: float | None = None) -> None:
        self.tracker.set_state(e.location, state, code=code, reason=reason,
                               next_look=next_look)
        self.ledger.audit(event, e.series_id, location=e.location, code=code,
                          attempts=attempts)
        log.warning("results of %s: %s", e.location, reason)
        self._emit(AgentEvent(EventKind.RESULTS_FAILED,
                              f"Results for {e.location.split('/')[1]}: {reason}",
                              e.series_id))

    def _bring_home(self, e: Expected) -> None:
        _, patient, study, series = e.location.split("/")
        work = self._incoming / str(e.series_id)
        try:
            got = self.source.download(e.location, work / "download")
            content = str(got.manifest.get("content_sha256", ""))
            self.ledger.audit(AuditEvent.RESULTS_RECEIVED, e.series_id, location=e.location,
                              files=len(got.files), content_sha256=content)
            staged = work / "reidentified"
            shutil.rmtree(staged, ignore_errors=True)
            identity: StudyIdentity | None = None
            objects = 0
            for rel in got.files:
                src, dst = got.folder / rel, staged / rel
                if is_dicom(src):
                    identity = reidentify_file(src, dst, self.store, patient_pseudonym=patient,
                                               study_pseudonym=study)
                    objects += 1
                else:
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dst)
            identity = identity or self.store.study_by_pseudonym(study)
            if identity is None:
                raise NotRelinkable("the re-link store does not know this study (recorded "
                                    "elsewhere, or removed by retention)")
            self.ledger.audit(AuditEvent.RESULTS_REIDENTIFIED, e.series_id,
                              location=e.location, objects=objects)
        except (ResultsInvalid, NotRelinkable) as exc:
            shutil.rmtree(work, ignore_errors=True)
            self._fail(e, ResultsState.INVALID, AuditEvent.RESULTS_INVALID, "results-invalid",
                       f"results not accepted: {exc}")
            return
        self._deliver(e, identity, staged, series, content)
        shutil.rmtree(work, ignore_errors=True)

    def _deliver(self, e: Expected, identity: StudyIdentity, staged: Path, series: str,
                 content: str) -> None:
        r = self.cfg.results
        final = to_folder(staged, Path(r.folder).expanduser(), identity, series) \
            if r.folder else staged
        pacs = "none"
        if r.pacs:
            dicoms = [p for p in sorted(final.rglob("*")) if p.is_file() and is_dicom(p)]
            sent, not_sent = to_pacs(dicoms, self.cfg)
            pacs = f"{sent} sent" + (f", {not_sent} not sent" if not_sent else "")
            if not_sent:
                self.ledger.audit(AuditEvent.RESULTS_PACS_INCOMPLETE, e.series_id,
                                  location=e.location, sent=sent, not_sent=not_sent)
                self._emit(AgentEvent(EventKind.RESULTS_FAILED,
                                      f"Results for {e.location.split('/')[1]}: {not_sent} "
                                      "object(s) not accepted by the PACS; retry later",
                                      e.series_id))
        self.tracker.set_state(e.location, ResultsState.DELIVERED, content_sha256=content)
        self.ledger.audit(AuditEvent.RESULTS_DELIVERED, e.series_id, location=e.location,
                          content_sha256=content, folder=bool(r.folder), pacs=pacs)
        log.info("results of %s delivered (folder: %s, PACS: %s)", e.location,
                 bool(r.folder), pacs)
        self._emit(AgentEvent(EventKind.RESULTS,
                              f"Results ready for {identity.patient_pseudonym} (local)",
                              e.series_id))
