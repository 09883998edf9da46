"""What happens to one series, top to bottom: stage, de-identify, deface, verify, deliver.

Every step is persisted in the ledger before the next begins, so a crash or kill -9 at any
moment leaves a state to resume from: a ``staged`` series is processed again from its
staged copy (processing is deterministic), a ``verified`` one is delivered from the
outputs it left (``ready.json``), and the target recognises content it already holds.

The processing stages are pluggable (:class:`~agent.work.Stage`), but the pipeline refuses
to run without the de-identification and verification stages: no series is ever delivered
without them.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from agent.config import Config
from agent.diskspace import free_space_problem, out_of_space, work_full
from agent.errors import (
    DefaceFailed,
    FatalError,
    InstallationBroken,
    SeriesProblem,
    TransientFault,
    Withheld,
    is_library_panic,
)
from agent.exportlook import LookCache
from agent.integrity import check_deliverable
from agent.keys import keyed_hash
from agent.ledger import (
    DELIVERED,
    PROCESSED,
    QUARANTINED,
    STAGED,
    VERIFIED,
    WITHHELD,
    Ledger,
    SeriesRow,
)
from agent.limits import check_decoded_size
from agent.logs import log_failure
from agent.procpool import running_pool
from agent.series import FileState
from agent.staging import Staging, atomic_write
from agent.sync.base import Delivery, DeliveryFile, Target
from agent.sync.manifest import (
    ManifestChanges,
    ManifestFields,
    build_manifest,
    content_digest,
    describe_files,
)
from agent.sync.place import clone_or_copy
from agent.vocab import FINAL, ProblemCode, SeriesState, Undecided
from agent.work import Ready, ReadyFile, SeriesWork, Stage

log = logging.getLogger(__name__)

REQUIRED_STAGES = ("deidentify", "verify")


class Interrupted(Exception):
    """The agent is shutting down; the series resumes from its persisted state next time."""


@dataclass(frozen=True)
class Outcome:
    """How one series ended (for the one-shot summary and notifications). No PHI."""

    series_id: int
    #: A :class:`~agent.vocab.SeriesState` ending, or :data:`~agent.vocab.Undecided.FAILED`
    #: (one-shot only: the target could not be reached, nothing was decided).
    state: SeriesState | Undecided
    reason: str = ""
    code: str = ""
    location: str = ""
    file_count: int = 0
    modality: str = ""
    patient: str = ""


def outcome_of(row: SeriesRow) -> Outcome:
    """The summary of a series row, for the one-shot report and notifications."""
    return Outcome(series_id=row.id, state=row.state, reason=row.reason, code=row.code,
                   location=row.location, file_count=row.file_count,
                   modality=row.modality, patient=row.patient)


def export_path_hash(installation_key: bytes, path: str | Path) -> str:
    """The ledger's name for an export file: a keyed hash (paths often hold names)."""
    return keyed_hash(installation_key, "path", str(path))


def build_stages(cfg: Config, site_secret: bytes) -> list[Stage]:
    """The standard stages: select, de-identify, deface (when enabled), pixels, verify."""
    from agent.deid import DeidStage, VerifyStage
    from agent.pixels import PixelStage, text_checked
    from agent.policy import SelectStage

    stages: list[Stage] = [SelectStage(cfg), DeidStage(text_checked(cfg), site_secret)]
    if cfg.results.enabled:  # the cloud loop: record what restores identity to results
        from agent.results import relink_stage

        stages.append(relink_stage(cfg, site_secret))
    if cfg.deface.enabled:
        from agent.deface import DefaceStage

        stages.append(DefaceStage(cfg))
    stages.append(PixelStage(cfg))
    stages.append(VerifyStage(cfg))
    return stages


class Pipeline(Staging):
    """Moves series through their states. Thread-safe: workers call :meth:`process`
    concurrently for different series."""

    def __init__(self, cfg: Config, ledger: Ledger, target: Target, stages: Sequence[Stage],
                 installation_key: bytes) -> None:
        names = [s.name for s in stages]
        missing = [n for n in REQUIRED_STAGES if n not in names]
        if missing:
            raise FatalError(f"refusing to run without the {', '.join(missing)} stage")
        self.cfg = cfg
        self.ledger = ledger
        self.target = target
        self.stages = list(stages)
        self._key = installation_key
        self.work_root = cfg.paths.work
        self.quarantine_root = cfg.paths.quarantine
        #: The folders series are taken from (the watched export folder; the DICOM node's
        #: intake adds its own): nothing outside them is opened.
        self.export_roots = (
            [Path(cfg.watch.folder).expanduser()] if cfg.watch.folder else [])
        self.looks = LookCache()
        self._linked = {}

    # -- paths -----------------------------------------------------------------------------

    def path_hash(self, path: str | Path) -> str:
        """Keyed hash of an export path: export paths often hold patient names."""
        return export_path_hash(self._key, path)

    def workdir(self, series_id: int) -> Path:
        return self.work_root / str(series_id)

    def staged_files(self, series_id: int) -> list[Path]:
        return sorted((self.workdir(series_id) / "source").glob("*.dcm"))

    # -- 2..4. process, verify, deliver ----------------------------------------------------

    def process(self, series_id: int, should_stop: Callable[[], bool] = lambda: False) -> Outcome:
        """Run a staged series to its end: delivered, withheld or quarantined.

        Raises :class:`~agent.errors.TransientFault` (the target out of reach, a full disk:
        the series keeps its state and is retried), :class:`~agent.errors.FatalError`
        (credentials refused, the installation broken) and :class:`Interrupted`. A series
        during whose processing the agent died ``[limits] max_crashes`` times is
        quarantined as the likely cause.
        """
        row = self.ledger.get(series_id)
        if row.state in FINAL:
            return outcome_of(row)
        started = self.ledger.begin_attempt(series_id)
        if started > self.cfg.limits.max_crashes:
            return outcome_of(self.quarantine(series_id, SeriesProblem(
                f"the agent stopped {started - 1} times while processing this series (a "
                "crash, or the system ending it for lack of memory); it was kept back so "
                "the other series go on. Send the log folder to support; Retry sends it "
                "through again.", code=ProblemCode.POISON)))
        # The attempt ends for every outcome the agent survives, exceptions included; a
        # crash, a kill or a worker thread's death skips this and the attempt stays counted.
        try:
            outcome = self._attempt(series_id, should_stop)
        except Exception:
            self.ledger.end_attempt(series_id)
            raise
        self.ledger.end_attempt(series_id)
        return outcome

    def _attempt(self, series_id: int, should_stop: Callable[[], bool]) -> Outcome:
        row = self.ledger.get(series_id)
        workdir = self.workdir(series_id)
        ready = workdir / "ready.json"
        try:
            if row.state != VERIFIED or not ready.is_file():
                self._run_stages(row, should_stop)
            if should_stop():
                raise Interrupted
            return self._deliver(series_id, json.loads(ready.read_text(encoding="utf-8")))
        except SeriesProblem as problem:
            return outcome_of(self.quarantine(series_id, problem))
        except Withheld as held:
            return outcome_of(self.withhold(series_id, held))

    def _run_stages(self, row: SeriesRow, should_stop: Callable[[], bool]) -> None:
        workdir = self.workdir(row.id)
        out = workdir / "out"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        sources = self.staged_files(row.id)
        if not sources:
            raise SeriesProblem("the staged copy of the series is missing; export it again",
                                code="missing")
        check_decoded_size(sources, self.cfg.limits)
        work = SeriesWork(key=row.key, version=row.version, source_files=sources, workdir=out)
        for stage in self.stages:
            if should_stop():
                raise Interrupted
            if stage.name == "verify":
                self.ledger.set_state(row.id, PROCESSED, modality=work.modality,
                                      patient=work.patient_pseudonym,
                                      study=work.study_pseudonym, series=work.series_pseudonym)
            self._run_stage(stage, work, row)
        self._write_ready(row, work)

    def _run_stage(self, stage: Stage, work: SeriesWork, row: SeriesRow) -> None:
        """One stage; library errors become a quarantine, a full disk a retry."""
        try:
            stage(work)
            self._record(row.id, work)
        except (Withheld, TransientFault, Interrupted):
            self._record(row.id, work)
            raise
        except FatalError:
            raise
        except SeriesProblem as problem:
            self._record(row.id, work)
            raise self._reconsidered(problem) from None
        except OSError as exc:
            if out_of_space(exc):
                raise work_full(self.work_root) from None
            self._unexpected(stage, row, exc)
        except Exception as exc:  # noqa: BLE001 -- a bug or a library error not converted: fail closed
            self._unexpected(stage, row, exc)
        except BaseException as exc:
            if not is_library_panic(exc):
                raise
            self._unexpected(stage, row, exc)

    def _reconsidered(self, problem: SeriesProblem) -> Exception:
        """What a stage's SeriesProblem really is: a broken installation (stop, quarantine
        nothing), a full work area (wait), or the series' problem (quarantine)."""
        if problem.code == ProblemCode.DEFACE_TEMPLATE:
            return InstallationBroken(str(problem))
        if out_of_space(problem) or free_space_problem(self.work_root):
            return work_full(self.work_root)
        return problem

    @staticmethod
    def _unexpected(stage: Stage, row: SeriesRow, exc: BaseException) -> None:
        log_failure(log, f"stage {stage.name} failed on series {row.id}", exc)
        raise SeriesProblem(
            f"the {stage.name} step failed unexpectedly ({type(exc).__name__}); "
            "the series was kept back. Please send the log folder to support.",
            code="internal") from None

    def _record(self, series_id: int, work: SeriesWork) -> None:
        """Write the audit events a stage left in ``work.audit`` (no PHI by contract)."""
        self.ledger.audit_many(series_id, list(work.audit))
        work.audit.clear()

    def _write_ready(self, row: SeriesRow, work: SeriesWork) -> None:
        """Persist the verified outputs: a restart delivers them without reprocessing."""
        if not work.patient_pseudonym or not work.series_pseudonym:
            raise SeriesProblem("de-identification did not name the series, so it was kept "
                                "back; press Retry, and send the log folder to support if it "
                                "happens again", code="internal")
        if work.render is not None and work.render.is_file():
            self.cfg.paths.renders.mkdir(parents=True, exist_ok=True)
            render = self.cfg.paths.renders / f"{row.id}.png"
            shutil.copyfile(work.render, render)
        else:
            render = None
        files = [ReadyFile(path=f.name, local=str(f)) for f in sorted(work.files)]
        changes = self._changes(row.id, work)
        fields = ManifestFields(
            site=self.cfg.site.name, patient=work.patient_pseudonym,
            study=work.study_pseudonym, series=work.series_pseudonym, modality=work.modality,
            deidentification_codes=sorted(set(work.codes)), defaced=work.defaced)
        if changes:
            fields["changes"] = changes
        ready = Ready(series_path=f"{self.cfg.site.name}/{work.destination}", files=files,
                      manifest=fields)
        if work.face.get("decision") == "no-face":  # issue 10: the reason, on the record
            ready["note"] = f"delivered without defacing: {work.face.get('reason', '')}"
            ready["note_code"] = work.face.get("code", "")
        atomic_write(self.workdir(row.id) / "ready.json", json.dumps(ready).encode())
        self.ledger.set_state(row.id, VERIFIED, file_count=len(files), modality=work.modality,
                              patient=work.patient_pseudonym, study=work.study_pseudonym,
                              series=work.series_pseudonym,
                              render=str(render) if render else "")

    def _changes(self, series_id: int, work: SeriesWork) -> ManifestChanges | None:
        """What changed since the version before, in delivered file names; None for a
        first version (or a series staged before re-export recognition existed)."""
        try:
            doc = json.loads((self.workdir(series_id) / "changes.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        if doc.get("since_version") is None:
            return None
        delivered = {staged: out for out, staged in work.source_of.items()}
        for field_name in ("added", "changed"):
            doc[field_name] = sorted(delivered[n] for n in doc.get(field_name, [])
                                     if n in delivered)
        return cast(ManifestChanges, doc)

    def _deliver(self, series_id: int, ready: Ready) -> Outcome:
        self.check_links(series_id)  # (staged links: the originals read held still)
        row = self.ledger.get(series_id)
        read = check_deliverable([Path(f["local"]) for f in ready["files"]], running_pool())
        files: tuple[DeliveryFile, ...] = describe_files(
            [(f["path"], Path(f["local"])) for f in ready["files"]], read)
        digest = content_digest(files)
        earlier = self.ledger.delivered_content(row.key)
        if digest in earlier:
            done = self.ledger.set_state(
                series_id, DELIVERED, reason="identical to an earlier delivery; nothing sent",
                content_sha256=digest, location=earlier[digest])
            self._cleanup(series_id)
            return outcome_of(done)
        manifest = build_manifest(files, ledger_head=self.ledger.head(),
                                  **ready["manifest"], version=row.version)
        # The outputs are verified and never written again (only removed): linkable.
        delivery = Delivery(series_key=row.key, series_path=ready["series_path"],
                            version=row.version, files=files, manifest=manifest,
                            linkable=True)
        receipt = self.target.deliver(delivery)
        done = self.ledger.set_state(series_id, DELIVERED, content_sha256=digest,
                                     location=receipt.location, reason=ready.get("note", ""),
                                     code=ready.get("note_code", ""))
        self.ledger.audit("confirmed", series_id, bytes=receipt.bytes_sent,
                          already_present=receipt.already_present)
        self._cleanup(series_id)
        return outcome_of(done)

    # -- quarantine ------------------------------------------------------------------------

    def quarantine(self, series_id: int, problem: SeriesProblem) -> SeriesRow:
        """Keep the staged copy locally (it is the clinic's own data) and record why."""
        qdir = self.quarantine_root / str(series_id)
        source = self.workdir(series_id) / "source"
        try:
            if source.is_dir():
                shutil.rmtree(qdir, ignore_errors=True)
                qdir.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(source), str(qdir))
            qdir.mkdir(parents=True, exist_ok=True)
            atomic_write(qdir / "reason.txt", f"{problem.code}: {problem}\n".encode())
            render = self.workdir(series_id) / "out" / "render.png"
            if isinstance(problem, DefaceFailed) and render.is_file():
                shutil.copyfile(render, qdir / "render.png")
        except OSError as exc:
            log_failure(log, f"could not move series {series_id} to quarantine", exc)
        shutil.rmtree(self.workdir(series_id), ignore_errors=True)
        log.warning("series %s quarantined: %s", series_id, problem)
        return self.ledger.set_state(series_id, QUARANTINED, reason=str(problem),
                                     code=problem.code)

    def withhold(self, series_id: int, held: Withheld) -> SeriesRow:
        """End a series as withheld by policy: nothing is kept (the export folder still holds
        it), nobody is alarmed, the reason is recorded."""
        shutil.rmtree(self.workdir(series_id), ignore_errors=True)
        log.info("series %s withheld (%s): %s", series_id, held.code, held)
        return self.ledger.set_state(series_id, WITHHELD, reason=str(held), code=held.code)

    def requeue(self, series_id: int) -> SeriesRow:
        """Put a quarantined series back to ``staged`` (the tray's Retry).

        The quarantined copy goes through re-export recognition like a new export: two
        copies of one instance become one, and a copy identical to what was delivered
        ends ``delivered`` at once (nothing sent) instead of being quarantined again.
        Raises SeriesProblem (code ``missing``) when no local copy is left.
        """
        row = self.ledger.get(series_id)
        if row.state != QUARANTINED:
            return row
        qdir = self.quarantine_root / str(series_id)
        copies = sorted(qdir.glob("*.dcm"))
        if not copies:
            raise SeriesProblem("the quarantined copy is gone; export the series again",
                                code=ProblemCode.MISSING)
        files = {str(f): FileState(f.stat().st_size, f.stat().st_mtime_ns) for f in copies}
        try:
            plan = self._plan(row.key, files, exclude=series_id, root=self.quarantine_root)
        except (OSError, ValueError):
            raise SeriesProblem("the quarantined copy cannot be read any more; export the "
                                "series again", code=ProblemCode.UNREADABLE) from None
        source = self.workdir(series_id) / "source"
        shutil.rmtree(source, ignore_errors=True)
        source.mkdir(parents=True)
        names = {inst.path: f"{n:06d}.dcm" for n, inst in enumerate(plan.chosen)}
        for path, name in names.items():
            clone_or_copy(Path(path), source / name)
        self._record_plan(series_id, plan, names)
        staged = self.ledger.set_state(series_id, STAGED, reason="retried by the user")
        if plan.repeats is None:
            return staged
        earlier = self.ledger.get(plan.repeats)
        if earlier.state != DELIVERED:
            return staged  # identical to a version still on its way: process it anyway
        done = self.ledger.set_state(
            series_id, DELIVERED, location=earlier.location,
            content_sha256=earlier.content_sha256,
            reason=f"identical to version {earlier.version}, which was delivered; "
                   "nothing sent")
        self._cleanup(series_id)
        shutil.rmtree(qdir, ignore_errors=True)
        return done

    def _cleanup(self, series_id: int) -> None:
        shutil.rmtree(self.workdir(series_id), ignore_errors=True)


