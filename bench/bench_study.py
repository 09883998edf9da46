"""Seconds per study: a 6-series head study through the face decision, one fit per study
against one fit per series.

The study is made from Colin27 (Debian mricron-data) in the shapes a scanner writes: a 3-D
T1 (1 mm, classic files), a 3-D FLAIR (1 mm, one enhanced object), a DWI (2 x 2 x 4 mm,
b0 + 6 directions, classic), a BOLD run (3.5 mm Siemens mosaics, 30 volumes), an ASL
(3.5 x 3.5 x 6 mm, one enhanced object per volume, 10 volumes) and a tri-planar
localizer, all in one study and Frame of Reference. Timed: the ``select`` and ``deface``
stages on each series in arrival order (the localizer is withheld by ``select``), with

* one fit per study: one :class:`~agent.deface.studyfit.StudyFits` for the study, so the
  T1's fit places the face in every other series;
* one fit per series: every series fits the template on its own volume (what the agent did
  before; the EPI series need the brain fit).

Then the whole one-shot pipeline (``process_folder``: select, de-identify, deface, pixels,
verify, deliver) on the same study, for scale. Wall and CPU seconds; the machine is shared,
so run it a few times and read the medians.

    python bench/bench_study.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.deface import conftest as colin_data  # noqa: E402 - after the path is set
from tests.deface.builders import write_classic_4d, write_enhanced, write_mosaic  # noqa: E402
from tests.deface.dicom_writer import write_mr_series  # noqa: E402


def epi_like(case: colin_data.Case, factor: float = 1.0) -> sitk.Image:
    arr = sitk.GetArrayFromImage(case.image)
    img = sitk.GetImageFromArray(np.where(case.brain, arr * factor, arr * 0.08)
                                 .astype(np.float32))
    img.CopyInformation(case.image)
    return img


def one_study(colin: colin_data.Colin, root: Path) -> list[tuple[str, list[Path]]]:
    from pydicom.uid import generate_uid

    study, frame = generate_uid(), generate_uid()
    mk = colin_data.make_case
    t1 = mk(colin, "axial", (1.0, 1.0, 1.0))
    flair = mk(colin, "sagittal", (1.0, 1.0, 1.0))
    dwi = mk(colin, "axial", (2.0, 2.0, 4.0))
    bold = mk(colin, "axial", (3.5, 3.5, 3.5))
    asl = mk(colin, "axial", (3.5, 3.5, 6.0))
    loc = mk(colin, "coronal", (2.0, 2.0, 8.0))
    series = [
        ("3D T1", write_mr_series(t1.image, root / "t1")),
        ("3D FLAIR", write_enhanced([flair.image], root / "flair", study=study, frame=frame)),
        ("DWI", write_classic_4d([epi_like(dwi, 1.0 - 0.08 * v) for v in range(7)],
                                 root / "dwi", key="bvalue", study=study, frame=frame)),
        ("BOLD", write_mosaic([epi_like(bold, 1.0 + 0.002 * v) for v in range(30)],
                              root / "bold", study=study, frame=frame)),
        ("ASL", write_enhanced([epi_like(asl, 1.0 + 0.01 * (v % 2)) for v in range(10)],
                               root / "asl", study=study, frame=frame, description="asl")),
        ("localizer", write_classic_4d([loc.image], root / "loc", key=None,
                                       study=study, frame=frame, description="localizer")),
    ]
    for _, files in series:
        for p in files:
            ds = pydicom.dcmread(p)
            ds.StudyInstanceUID, ds.FrameOfReferenceUID = study, frame
            if p.parent.name == "loc":
                ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
            ds.save_as(p)
    return series


def time_stages(series: list[tuple[str, list[Path]]], work_root: Path, shared: bool
                ) -> tuple[float, float, dict[str, float]]:
    from agent.config import load_config
    from agent.deface import DefaceStage, fitting
    from agent.deface.studyfit import StudyFits
    from agent.errors import Withheld
    from agent.policy import SelectStage
    from agent.work import SeriesWork

    fitting._MEMO.clear()  # no fit remembered from an earlier round
    cfg = load_config(None)
    select = SelectStage(cfg)
    study_fits = StudyFits(work_root / "fits")
    per: dict[str, float] = {}
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for n, (name, files) in enumerate(series):
        t = time.perf_counter()
        fits = study_fits if shared else StudyFits(work_root / f"fits-{n}")
        stage = DefaceStage(cfg, fits)
        stage.intake_closed()
        out = work_root / f"w{n}-{int(shared)}"
        out.mkdir(parents=True)
        work = SeriesWork(key=f"{n:02d}" * 32, version=1, source_files=files, workdir=out)
        work.study_pseudonym, work.series_pseudonym = "STUDY", f"SERIES-{n}"
        try:
            select(work)
            stage(work)
        except Withheld:
            pass
        per[name] = time.perf_counter() - t
    return time.perf_counter() - wall0, time.process_time() - cpu0, per


def time_pipeline(src: Path, out: Path) -> float:
    from agent.config import load_config
    from agent.oneshot import process_folder

    t = time.perf_counter()
    summary = process_folder(load_config(None), src, out)
    took = time.perf_counter() - t
    states = sorted(str(o.state) for o in summary.series)
    print(f"  process_folder: {took:.1f} s  ({', '.join(states)})")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-pipeline", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("CLINIC2CLOUD_HOME", tempfile.mkdtemp(prefix="bench-study-"))
    colin = colin_data.colin.__wrapped__()  # type: ignore[attr-defined]
    print(f"cores: {os.cpu_count()}, load: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
        root = Path(tmp)
        series = one_study(colin, root / "export")
        print("study:", ", ".join(f"{name} ({len(files)} files)" for name, files in series))
        results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        for r in range(args.repeat):
            for shared in (True, False):
                wall, cpu, per = time_stages(series, root / f"run{r}", shared)
                results[shared].append((wall, cpu))
                label = "one fit per study " if shared else "one fit per series"
                print(f"  {label}: {wall:6.1f} s wall, {cpu:6.1f} s cpu  "
                      + "  ".join(f"{k} {v:.1f}" for k, v in per.items()))
        for shared in (True, False):
            walls = [w for w, _ in results[shared]]
            cpus = [c for _, c in results[shared]]
            label = "one fit per study " if shared else "one fit per series"
            print(f"{label}: median {statistics.median(walls):.1f} s wall, "
                  f"{statistics.median(cpus):.1f} s cpu per study")
        if not args.no_pipeline:
            time_pipeline(root / "export", root / "out")


if __name__ == "__main__":
    main()
