"""Pipeline stage ``deidentify``: every staged file of one series through the engine."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from agent.config import Config, DeidConfig
from agent.deid.engine import Engine, FileResult
from agent.deid.pool import chunked, make_pool
from agent.errors import SeriesProblem
from agent.procpool import WORTH_POOLING
from agent.vocab import ProblemCode
from agent.work import SeriesWork

log = logging.getLogger(__name__)

#: Below this many files a process pool costs more (interpreter start-up) than it saves.
POOL_THRESHOLD = WORTH_POOLING


def _run_chunk(
    args: tuple[str, bytes, DeidConfig, list[Path], Path],
) -> list[FileResult | None]:
    site, secret, options, files, out_dir = args
    engine = Engine.shared(site, secret, options)
    return [engine.deidentify_file(f, out_dir) for f in files]


def deidentify_pairs(
    files: list[Path], out_dir: Path, *, site_name: str, site_secret: bytes,
    options: DeidConfig, processes: int = 1,
) -> list[tuple[Path, FileResult]]:
    """De-identify ``files`` into ``out_dir``: (source, result) pairs; DICOMDIRs are
    dropped. Raises SeriesProblem."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if processes > 1 and len(files) >= POOL_THRESHOLD:
        chunks = chunked(files, processes)
        with make_pool(processes) as pool:
            parts = list(pool.map(
                _run_chunk, [(site_name, site_secret, options, c, out_dir) for c in chunks]
            ))
        pairs = [p for chunk, part in zip(chunks, parts, strict=True)
                 for p in zip(chunk, part, strict=True)]
    else:
        pairs = list(zip(files, _run_chunk((site_name, site_secret, options, files, out_dir)),
                         strict=True))
    return [(src, r) for src, r in pairs if r is not None]


def deidentify_files(
    files: list[Path], out_dir: Path, *, site_name: str, site_secret: bytes,
    options: DeidConfig, processes: int = 1,
) -> list[FileResult]:
    """De-identify ``files`` into ``out_dir``; DICOMDIRs are dropped. Raises SeriesProblem."""
    return [r for _src, r in deidentify_pairs(
        files, out_dir, site_name=site_name, site_secret=site_secret, options=options,
        processes=processes)]


class DeidStage:
    """Writes ``work.workdir/deid/<new SOP Instance UID>.dcm`` for every staged file."""

    name = "deidentify"

    def __init__(self, cfg: Config, site_secret: bytes) -> None:
        self.cfg = cfg
        self.secret = site_secret
        self.processes = max(1, min(cfg.worker_count, os.cpu_count() or 1))

    def __call__(self, work: SeriesWork) -> None:
        out_dir = work.workdir / "deid"
        if out_dir.exists():
            shutil.rmtree(out_dir)  # a previous attempt's partial outputs
        pairs = deidentify_pairs(
            list(work.files), out_dir, site_name=self.cfg.site.name, site_secret=self.secret,
            options=self.cfg.deid, processes=self.processes,
        )
        results = [r for _src, r in pairs]
        if not results:
            raise SeriesProblem(
                "the series holds no DICOM objects to deliver (only index or empty files); "
                "check the export in the viewer and export the series again",
                code=ProblemCode.NOT_DICOM)
        self._check_one_series(results)
        first = results[0]
        work.files = sorted(r.path for r in results)
        work.source_of = {r.path.name: src.name for src, r in pairs}
        work.patient_pseudonym = first.patient_pseudonym
        work.study_pseudonym = first.study_pseudonym
        work.series_pseudonym = first.series_pseudonym
        work.modality = first.modality
        work.series_description = first.series_description
        work.codes = list(first.codes)
        log.info("de-identified %d files of series %s", len(results), work.key)

    @staticmethod
    def _check_one_series(results: list[FileResult]) -> None:
        keys = {(r.patient_pseudonym, r.study_pseudonym, r.series_pseudonym) for r in results}
        if len(keys) > 1:
            raise SeriesProblem(
                "the staged files belong to more than one patient, study or series, so the "
                "series was held back; export each series on its own and, if it happens "
                "again, send the log folder to support", code=ProblemCode.MIXED_SERIES)
        names = [r.path.name for r in results]
        if len(set(names)) != len(names):
            raise SeriesProblem(
                "two different files of the series share a SOP Instance UID; remove the "
                "older export of this series from the export folder and press Retry",
                code=ProblemCode.DUPLICATE)
