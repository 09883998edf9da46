#!/usr/bin/env python
"""Benchmark: wall time and peak memory of defacing one head series, read to written.

A 256 x 256 x 256 voxel head (Colin27 from the Debian package mricron-data, resampled onto
256^3 voxels spanning Colin's own field of view, 0.71 x 0.85 x 0.71 mm: a head that fills
the volume as a real scan does, cut where Colin's own scan is cut; ``--shape X Y Z --pad``
puts it on 1 mm voxels instead, zero-padded around Colin's field of view) is written once as
a DICOM MR series and as NIfTI; then, each in a fresh subprocess so peak memory is measured
per run:

* ``clinic2cloud``: :func:`agent.deface.deface_path` on the DICOM series (read, deface,
  write DICOM) and on the NIfTI file;
* ``quickshear`` (pip install quickshear; needs nibabel), the alternative we can run here
  (pydeface and mri_deface need FSL/FreeSurfer), on the NIfTI file with Colin's own brain
  mask (ch2bet) given: it cuts the face off, we replace it.

With ``--ct``: the corpus' head CT (ct_shear, a tilted skull phantom) resampled onto a
512 x 512 x 300 grid (0.45 mm, int16 HU) is defaced from NIfTI instead (read, fit on the
skin surface, HU synthesis, QC gate, write).

Prints the median wall time, the median CPU time (user + system, all threads: steadier
than wall time on a shared machine), peak RSS and the ratio. Usage:
``python bench/bench_deface.py [--runs 5] [--threads 2] [--shape 256 256 256] [--pad] [--ct]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLIN = Path("/usr/share/mricron/templates")
SHAPE = (256, 256, 256)  # x, y, z voxels

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
kind, src, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if kind == "clinic2cloud":
    from agent.deface import deface_path
    deface_path(src, out)
else:  # quickshear's own command line, in this process (so its memory is measured)
    import nibabel as nb
    import quickshear
    defaced = quickshear.quickshear(nb.load(str(src)), nb.load(sys.argv[4]))
    defaced.to_filename(str(out))
wall = time.perf_counter() - t0
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu = usage.ru_utime + usage.ru_stime
try:  # VmHWM restarts at exec (ru_maxrss would carry the parent's high-water mark)
    status = open("/proc/self/status").read()
    peak = int(status.split("VmHWM:")[1].split()[0]) / 1024.0
except (OSError, IndexError, ValueError):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(json.dumps({"wall": wall, "cpu": cpu, "peak_mb": peak}))
"""

def make_inputs(work: Path, shape: tuple[int, int, int] = SHAPE, pad: bool = False
                ) -> tuple[Path, Path, Path]:
    import numpy as np
    import SimpleITK as sitk

    sys.path.insert(0, str(ROOT))
    from tests.deface.dicom_writer import write_mr_series

    head = sitk.ReadImage(str(COLIN / "ch2.nii.gz"), sitk.sitkFloat32)
    bet = sitk.ReadImage(str(COLIN / "ch2bet.nii.gz"), sitk.sitkFloat32)
    size = np.array(head.GetSize())
    centre = np.array(head.TransformContinuousIndexToPhysicalPoint(
        [float(v) for v in (size - 1) / 2.0]))
    # 1 mm voxels (padded), or Colin's own field of view divided into ``shape`` voxels.
    spacing = np.ones(3) if pad else size * np.array(head.GetSpacing()) / np.array(shape)
    ref = sitk.Image(list(shape), sitk.sitkFloat32)
    ref.SetSpacing(tuple(float(v) for v in spacing))
    ref.SetOrigin(tuple(centre - (np.array(shape) - 1) / 2.0 * spacing))
    img = sitk.Resample(head, ref, sitk.Transform(), sitk.sitkLinear, 0.0) * 8.0
    mask = sitk.Resample(bet, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0) > 0
    write_mr_series(img, work / "dicom", bits_stored=12)
    nii, mask_nii = work / "head.nii.gz", work / "brain.nii.gz"
    sitk.WriteImage(sitk.Cast(img, sitk.sitkInt16), str(nii))
    sitk.WriteImage(sitk.Cast(mask, sitk.sitkUInt8), str(mask_nii))
    return work / "dicom", nii, mask_nii


def make_ct(work: Path, shape: tuple[int, int, int] = (512, 512, 300)) -> Path:
    """The corpus head CT on a ``shape`` grid of 0.45 mm voxels, as an int16 NIfTI."""
    import numpy as np
    import SimpleITK as sitk

    sys.path.insert(0, str(ROOT))
    from tests.deface.ctheads import CT_SHEAR, read_sheared_nifti

    head = read_sheared_nifti(CT_SHEAR)
    size = np.array(head.GetSize())
    centre = np.array(head.TransformContinuousIndexToPhysicalPoint(
        [float(v) for v in (size - 1) / 2.0]))
    ref = sitk.Image(list(shape), sitk.sitkInt16)
    ref.SetSpacing((0.45, 0.45, 0.45))
    ref.SetOrigin(tuple(centre - (np.array(shape) - 1) / 2.0 * 0.45))
    img = sitk.Resample(head, ref, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkInt16)
    path = work / "ct.nii.gz"
    sitk.WriteImage(img, str(path))
    return path


def run(kind: str, src: Path, out: Path, extra: list[str], threads: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=str(threads),
               OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    proc = subprocess.run([sys.executable, "-c", CHILD, kind, str(src), str(out), *extra],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-quickshear", action="store_true")
    ap.add_argument("--ct", action="store_true", help="the 512 x 512 x 300 head CT instead")
    ap.add_argument("--shape", type=int, nargs=3, default=list(SHAPE), metavar=("X", "Y", "Z"),
                    help="voxels of the test volume; e.g. 230 230 200")
    ap.add_argument("--pad", action="store_true",
                    help="1 mm voxels, Colin zero-padded (the 2026-11 bench's input)")
    args = ap.parse_args()
    shape = (args.shape[0], args.shape[1], args.shape[2])
    if not (COLIN / "ch2.nii.gz").is_file():
        raise SystemExit("Colin27 not found: apt-get install mricron-data")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        cases: list[tuple[str, str, Path, Path, list[str]]]
        if args.ct:
            ct = make_ct(work)
            print(f"inputs: head CT 512 x 512 x 300, made in {time.perf_counter() - t:.1f} s")
            cases = [("clinic2cloud CT NIfTI", "clinic2cloud", ct, work / "ct_out.nii.gz", [])]
        else:
            dicom, nii, mask = make_inputs(work, shape, args.pad)
            print(f"inputs: {shape} voxels, made in {time.perf_counter() - t:.1f} s")
            cases = [("clinic2cloud DICOM", "clinic2cloud", dicom, work / "out_dicom", []),
                     ("clinic2cloud NIfTI", "clinic2cloud", nii, work / "out.nii.gz", [])]
            try:
                import quickshear  # noqa: F401
                if not args.no_quickshear:
                    cases.append(("quickshear NIfTI", "quickshear", nii, work / "qs.nii.gz",
                                  [str(mask)]))
            except ImportError:
                print("quickshear not installed (pip install quickshear): no comparison")
        results: dict[str, dict[str, float]] = {}
        for label, kind, src, out, extra in cases:
            runs = [run(kind, src, out, extra, args.threads) for _ in range(args.runs)]
            results[label] = {
                "median_s": statistics.median(r["wall"] for r in runs),
                "median_cpu_s": statistics.median(r["cpu"] for r in runs),
                "peak_mb": max(r["peak_mb"] for r in runs),
            }
            print(f"{label:22s} median {results[label]['median_s']:6.2f} s   "
                  f"cpu {results[label]['median_cpu_s']:6.2f} s   "
                  f"peak {results[label]['peak_mb']:7.0f} MB   ({args.runs} runs)")
        if "quickshear NIfTI" in results:
            q = results["quickshear NIfTI"]["median_s"]
            for label in ("clinic2cloud DICOM", "clinic2cloud NIfTI"):
                print(f"{label} / quickshear: {results[label]['median_s'] / q:.2f}x")
        print(json.dumps(results))


if __name__ == "__main__":
    main()
