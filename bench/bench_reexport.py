"""What re-export recognition costs: fingerprinting an export (SOP Instance UID + a digest
of the source dataset) next to copying it into the work area, on the real vendor corpus.

    python bench/bench_reexport.py [--corpus DIR]

For each corpus series: files, MB, the time to plan it as a first export, as an identical
re-export (recognised: nothing new), as a second copy in another folder (one series, not a
duplicate), and the time ``shutil.copyfile`` takes to stage it, for scale. Cached reads:
the numbers are the CPU cost of hashing, the disk read is the same one staging does.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.reexport import plan_export
from agent.series import FileState

KEY = b"bench-key-bench-key-bench-key-12"
SERIES = ("dcm_qa_ge/05_3D_Ax_T1_MP_RAGE_R22", "dcm_qa_philips/601_WIP_dti_ax",
          "dcm_qa_xa30/5_anat-T1w_acq-tfl", "dcm_qa_mosaic/ep2d_Asc_2",
          "dcm_qa_ge/2_fMRI_Multiphase_Des")


def states(files: list[Path]) -> dict[str, FileState]:
    return {str(f): FileState(f.stat().st_size, f.stat().st_mtime_ns) for f in files}


def timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


def one(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "LICENSE")
    mb = sum(f.stat().st_size for f in files) / 1e6
    first = plan_export(states(files), KEY, {})
    t_first = timed(lambda: plan_export(states(files), KEY, {}))
    known = {i.uid_hash: (i.content_hash, 1) for i in first.chosen}
    again = plan_export(states(files), KEY, known, {1: 1})
    assert again.nothing_new, folder
    t_again = timed(lambda: plan_export(states(files), KEY, known, {1: 1}))
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "copy"
        shutil.copytree(folder, copy)
        both = files + sorted(p for p in copy.rglob("*") if p.is_file() and p.name != "LICENSE")
        t_both = timed(lambda: plan_export(states(both), KEY, known, {1: 1}))
        merged = plan_export(states(both), KEY, known, {1: 1})
        assert merged.nothing_new and merged.duplicates == len(first.chosen), folder
        staged = Path(tmp) / "staged"
        staged.mkdir()
        t_copy = timed(lambda: [shutil.copyfile(f, staged / f"{n:06d}.dcm")
                                for n, f in enumerate(files)])
    return (f"{folder.parent.name}/{folder.name:<32} {len(files):>5} files {mb:>7.1f} MB  "
            f"plan {t_first * 1e3:>7.1f} ms ({len(files) / t_first:>6.0f} files/s, "
            f"{mb / t_first:>6.0f} MB/s)  re-export {t_again * 1e3:>7.1f} ms  "
            f"two copies {t_both * 1e3:>7.1f} ms  staging copy {t_copy * 1e3:>7.1f} ms")


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(root / ".." / "shared" / "corpus" / "dicom"))
    args = parser.parse_args()
    corpus = Path(args.corpus)
    if not corpus.is_dir():
        print(f"no corpus at {corpus}: nothing to measure")
        return 0
    for name in SERIES:
        if (corpus / name).is_dir():
            print(one(corpus / name), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
