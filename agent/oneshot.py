"""``clinic2cloud process SRC --out DIR``: every series under SRC through the pipeline, once.

The same pipeline as the agent, without waiting for stability: the files are taken as
they are, and a series with an incomplete file is quarantined. Work area and ledger live
in a temporary folder; the keys are the installation's, so pseudonyms match the agent's.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from agent import procpool
from agent.config import Config
from agent.deid.stage import POOL_THRESHOLD
from agent.dicomfiles import is_complete, why_incomplete
from agent.errors import CredentialsError, SeriesProblem, TargetUnavailable, TransientFault
from agent.exportlook import LookCache, look
from agent.keys import installation_secret, keyed_hash, site_secret
from agent.ledger import STAGED, Ledger
from agent.pipeline import Outcome, Pipeline, build_stages, outcome_of
from agent.series import FileState
from agent.sync.folder import FolderTarget
from agent.vocab import ProblemCode, SeriesState, Undecided
from agent.watcher import scan_folder
from agent.work import Stage


@dataclass
class Summary:
    series: list[Outcome] = field(default_factory=list)
    ignored_files: int = 0
    seconds: float = 0.0

    @property
    def delivered(self) -> int:
        return sum(o.state == SeriesState.DELIVERED for o in self.series)

    @property
    def withheld(self) -> int:
        return sum(o.state == SeriesState.WITHHELD for o in self.series)

    @property
    def quarantined(self) -> int:
        return sum(o.state == SeriesState.QUARANTINED for o in self.series)

    @property
    def ok(self) -> bool:
        """Every series ended as it should: delivered, or withheld by a stated policy."""
        return bool(self.series) and self.delivered + self.withheld == len(self.series)

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "delivered": self.delivered,
            "withheld": self.withheld,
            "quarantined": self.quarantined,
            "failed": len(self.series) - self.delivered - self.withheld - self.quarantined,
            "ignored_files": self.ignored_files,
            "seconds": round(self.seconds, 3),
            "series": [dataclasses.asdict(o) for o in self.series],
        }


def group_series(src: Path, series_key: Callable[[str, str], str]
                 ) -> tuple[dict[str, dict[str, FileState]], int]:
    """Files under ``src`` grouped by series key; and how many were not DICOM images."""
    survey = survey_export(src, series_key)
    return survey.groups, survey.ignored


@dataclass
class Survey:
    """What an export folder holds: its series, files that are not images we process, and
    the files that are not whole. Paths stay in memory (they may hold names)."""

    groups: dict[str, dict[str, FileState]] = field(default_factory=dict)
    ignored: int = 0
    incomplete: set[str] = field(default_factory=set)


def survey_export(src: Path, series_key: Callable[[str, str], str],
                  listing: Mapping[str, FileState] | None = None,
                  looks: LookCache | None = None) -> Survey:
    """Every file under ``src`` (or of its ``listing``) read once: grouped by series,
    whole or not. What was read is kept in ``looks`` (staging then reads no file again
    to plan its copy)."""
    survey = Survey()
    for path, state in sorted((scan_folder(src) if listing is None else listing).items()):
        try:
            found = look(Path(path), src)
            header, complete = found.header, found.complete
            if header is not None and complete is None:
                complete = is_complete(Path(path), src)
        except OSError:
            header = None
        if header is None:
            survey.ignored += 1
            continue
        if looks is not None:
            looks.put(path, found)
            state = found.state  # what was read; staging checks the file still has it
        if not complete:
            survey.incomplete.add(path)
        key = series_key(header.study_uid, header.series_uid)
        survey.groups.setdefault(key, {})[path] = state
    return survey


def _incomplete(files: Mapping[str, FileState], incomplete: set[str], src: Path
                ) -> SeriesProblem:
    """Which file of the series is not whole and how (by its place in the series, never
    its name: export names often hold the patient's)."""
    names = sorted(files)
    first = next(i for i, p in enumerate(names) if p in incomplete)
    how = why_incomplete(Path(names[first]), src) or "is not whole"
    others = sum(p in incomplete for p in names) - 1
    also = f" (and {others} other file{'s' * (others > 1)})" if others else ""
    return SeriesProblem(
        f"unreadable DICOM: file {first + 1} of {len(names)} of the series{also} {how}; "
        "export the series again (if the viewer was still writing it, wait until it has "
        "finished)", code=ProblemCode.INCOMPLETE)


def attempt(pipeline: Pipeline, series_id: int, last: bool = False) -> Outcome:
    """Process a staged series to its ending, or say why it has none yet (``last``: no
    second attempt follows, a series still waiting is reported as such)."""
    try:
        return pipeline.process(series_id)
    except (TargetUnavailable, CredentialsError) as exc:
        return Outcome(series_id=series_id, state=Undecided.FAILED, reason=str(exc),
                       code="target")
    except TransientFault as exc:  # e.g. waiting for another series of its study
        if last:  # still waiting (a full disk, a file still changing): say so
            return Outcome(series_id=series_id, state=Undecided.FAILED, reason=str(exc),
                           code="waiting")
        return Outcome(series_id=series_id, state=Undecided.DEFERRED, reason=str(exc))


def _warm_pool(cfg: Config, files: int) -> None:
    """Start the process pool's workers while the export folder is read, for an export
    large enough to use them (start-up blocks the caller until the fork server has
    imported the stages: not this thread). The ``process`` command has usually started
    them already, forked from itself (agent.cli)."""
    if cfg.worker_count > 1 and files >= POOL_THRESHOLD:
        procpool.warm_in_background()  # (once: nothing if the pool is up)


def process_folder(cfg: Config, src: Path, out: Path,
                   stages: Sequence[Stage] | None = None) -> Summary:
    started = time.monotonic()
    install_key = installation_secret(cfg.paths.installation_secret)
    site_key = site_secret(cfg.site.secret_file, cfg.paths.installation_secret)
    with tempfile.TemporaryDirectory(prefix="clinic2cloud-") as tmp:
        paths = dataclasses.replace(cfg.paths, state_dir=Path(tmp))
        run_cfg = dataclasses.replace(cfg, paths=paths)
        # The pool's fork server imports the stages while this process imports them too
        # (building the stages) and reads the export.
        listing = scan_folder(src)
        if stages is None:
            _warm_pool(cfg, len(listing))
        ledger = Ledger(paths.ledger, install_key, durable=False)  # removed with ``tmp``
        pipeline = Pipeline(run_cfg, ledger,
                            FolderTarget(out, group_readable=cfg.target.group_readable),
                            stages if stages is not None else build_stages(run_cfg, site_key),
                            install_key)
        pipeline.export_roots = [src]
        # Its work area is removed at exit and never resumed from: staged files may be
        # links to the exported ones, checked unchanged before delivery (agent.staging).
        pipeline.link_exports = True
        survey = survey_export(
            src, lambda study, series: keyed_hash(install_key, "series", study, series),
            listing, pipeline.looks)
        summary = Summary(ignored_files=survey.ignored)
        staging_turn = threading.Lock()

        def one(item: tuple[str, dict[str, FileState]]) -> Outcome:
            key, files = item
            if any(p in survey.incomplete for p in files):
                row = ledger.open_version(key, [(pipeline.path_hash(p), s.size, s.mtime_ns)
                                                for p, s in files.items()])
                row = pipeline.quarantine(row.id, _incomplete(files, survey.incomplete, src))
                return outcome_of(row)
            try:
                # One series staged at a time: the copies share this process (and the
                # disk), and the first series staged whole reaches the pool soonest.
                with staging_turn:
                    row = pipeline.stage(key, files)
            except TransientFault as exc:  # a file changed while taken, the disk is full
                return Outcome(series_id=0, state=Undecided.FAILED, reason=str(exc),
                               code="staging")
            if row.state != STAGED:
                return outcome_of(row)
            return attempt(pipeline, row.id)

        with ThreadPoolExecutor(procpool.series_in_flight(cfg.worker_count),
                                thread_name_prefix="series-worker") as pool:
            summary.series = list(pool.map(one, sorted(survey.groups.items())))
            # Series that waited for others (a study's structural series) go once more, now
            # that every series of the run has been seen; no stage waits any longer.
            for stage in pipeline.stages:
                closing = getattr(stage, "intake_closed", None)
                if callable(closing):
                    closing()
            deferred = [o.series_id for o in summary.series if o.state == Undecided.DEFERRED]
            again = dict(zip(deferred, pool.map(functools.partial(attempt, pipeline, last=True),
                                                deferred), strict=True))
        summary.series = [again.get(o.series_id, o) for o in summary.series]
        ledger.close()
    summary.seconds = time.monotonic() - started
    return summary


__all__ = ["Summary", "Survey", "group_series", "process_folder", "survey_export"]
