#!/usr/bin/env python
"""Benchmark: seconds the pixel checks add to a series (the ``pixels`` stage and the
verifier's pixel check), on a 200-slice MR series and on screen captures.

* MR: the GE 3D T1 of the shared corpus (``../shared/corpus``), 256 x 256, repeated to
  200 slices (new instance UIDs), de-identified once; then the pixels stage and the
  verifier's pixel check are timed on fresh copies of the de-identified files - clean, and
  with a name and a birth date burned into 3 slices. Without the corpus, pydicom's
  MR_small scaled to 256 x 256 is used (and said).
* Screen capture: a 1024 x 768 RGB secondary capture with six lines of text, two of them
  identifying.

Prints median wall seconds over ``--runs`` (default 3), with 2 worker processes (the
agent's default on 2 cores); ``--cpu``: one process, CPU seconds (steadier on a loaded
machine). ``--accuracy``: plantings still readable / ink left after the stage, false
redactions on the clean corpus (DICOM series and slices of the real heads), and what the
verifier's own search finds with the stage bypassed. Usage: ``python bench/bench_pixels.py``.

Measured 2026-12-01 (issue 13, small text), 2 cores shared with 7 other engineers (load
average 6-8, so wall times vary by 2x between runs), before -> after:

* ``--cpu``, 200-slice GE MR: clean 1.04 -> 1.41 CPU-s (stage 0.87 -> 1.00, verifier
  0.16 -> 0.41); text in 3 slices 1.29 -> 1.97; 1024 x 768 RGB capture 1.69 -> 2.25.
* wall, 2 processes, same series (loaded): clean 2.2-2.6 -> 2.4-4.4 s, text in 3 slices
  3.0-3.7 -> 3.4-5.9 s; capture 3.4-3.5 -> 3.1-4.9 s.
* ``--accuracy``: still readable after the stage (independent OCR, whole frame 3x): 6 of
  184 -> 0 of 190 readable plantings (225 planted; the matcher now also counts IDs and
  names cut by the edge, so the check finds 6 more readable to begin with); ink left
  (under 90 % of the planted ink inside redactions, read or not) in 6 of 225 (all in
  the middle of the frame or 24 px serif bold); false
  redactions on the clean corpus (10 DICOM series, 9 head stacks, 1765 frames): 0 -> 0;
  verifier with the stage bypassed: 127 of 135 small plantings (<= 12 px) found.

Measured 2026-12-01 (the pixel checks' CPU cost), one process, CPU seconds per 200-slice
series (stage + the verifier's per-file pixel checks on its parse + its OCR sample), load
average 8-10, old and new code alternated in the same minutes:

* ``bench/slices.py``'s real-size slices (what ``bench_process.py`` runs): 5.7-6.3 ->
  0.9-1.1 ms/file (stage 0.91-1.02 -> 0.12-0.17 CPU-s, verifier 0.19-0.24 -> 0.05);
* the GE 3D T1 (real anatomy on every slice, so every frame is searched): 8.1-8.2 ->
  4.5-5.0 ms/file (stage 1.19-1.28 -> 0.60-0.73 CPU-s);
* whole ``clinic2cloud process`` of 10 x 200 of those slices, one thread
  (``bench_process.py --stages``): pixels stage 4.53 -> 0.67 ms/file, verify stage 3.08 ->
  2.06 ms/file (its pixel part about 1 -> 0.2), total 26.0 -> 15.6 CPU-s;
* ``--accuracy`` unchanged: 0 of 190 still readable, 0 false redactions in 1765 frames,
  verifier 127 of 135 small plantings, ink left in 6 of 225.

Measured 2026-12-02 (session 5: the pixel checks on real anatomy), one process, CPU
seconds, load average 5-9 on 2 cores (old and new code alternated in the same minutes):

* ``--cpu``, 200-slice GE 3D T1 (every frame passes the gate): clean 0.45 -> 0.24 CPU-s
  (stage 0.29 -> 0.14, verifier 0.16 -> 0.10); text in 3 slices 0.53 -> 0.41.
* per real frame, 32-frame chunks: candidate regions 1.05-1.15 -> 0.73 ms (small-text
  path 0.60-0.69 -> 0.36: components from the set pixels, long runs opened only on busy
  lines; top-hats on kept work arrays - fresh ones cost page faults, a third of the
  CPU); the verifier's small-text search 0.55 -> 0.27 ms.
* whole ``clinic2cloud process`` of 2,000 real slices (10 series of the GE T1, one
  thread, ``bench_process.py``'s stage timing): pixels stage 3.01 -> 1.67 CPU-s (1.50 ->
  0.83 ms/file), verify stage 3.70 -> 2.74 (with E14's changes of the same hour).
* regions, gate, verifier boxes bit-identical to the old code on the clean corpus, the
  225 plantings and noisy stacks; ``--accuracy`` unchanged (0 of 190, 0 false
  redactions in 1765 frames, verifier 127 of 135, ink left in 6 of 225).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CORPUS = ROOT / ".." / "shared" / "corpus" / "dicom" / "dcm_qa_ge" / "05_3D_Ax_T1_MP_RAGE_R22"


def _series(dest: Path, n: int, burned: bool) -> list[Path]:
    from tests.pixels.helpers import burn, plant_identity

    dest.mkdir(parents=True)
    if CORPUS.is_dir():
        sources = sorted(CORPUS.iterdir())
    else:
        from pydicom.data import get_testdata_file

        print("(shared corpus absent: pydicom's MR_small scaled up instead)")
        sources = [Path(str(get_testdata_file("MR_small.dcm")))]
    out = []
    for i in range(n):
        ds = pydicom.dcmread(sources[i % len(sources)])
        if ds.Rows != 256:
            arr = np.kron(ds.pixel_array, np.ones((4, 4), ds.pixel_array.dtype))
            ds.Rows, ds.Columns = arr.shape
            ds.PixelData = arr.tobytes()
        plant_identity(ds)
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.10.1313.{i + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        if burned and i in (20, 100, 180):
            arr = ds.pixel_array.copy()
            burn(arr, "CANARYSSON, WILHELMINA", 4, 4, size=12)
            burn(arr, "DOB 12/03/1961", 4, 236, size=11)
            ds.PixelData = arr.tobytes()
        path = dest / f"{i:04d}.dcm"
        ds.save_as(path)
        out.append(path)
    return out


def _capture(dest: Path) -> list[Path]:
    from pydicom.data import get_testdata_file

    from tests.pixels.helpers import burn, plant_identity

    dest.mkdir(parents=True)
    ds = pydicom.dcmread(str(get_testdata_file("SC_rgb.dcm")))
    arr = np.full((768, 1024, 3), 30, np.uint8)
    rng = np.random.default_rng(0)
    arr[200:700, 250:800] = rng.integers(0, 200, (500, 550, 3), dtype=np.uint8)
    for k, text in enumerate(("Patient: CANARYSSON, WILHELMINA", "DOB 12.03.1961",
                              "Axial T1 post contrast", "W 400 L 40", "Se 4 Im 17",
                              "Zoom 150%")):
        burn(arr, text, 10, 10 + 30 * k, size=16)
    ds.Rows, ds.Columns = 768, 1024
    ds.PixelData = arr.tobytes()
    plant_identity(ds)
    path = dest / "sc.dcm"
    ds.save_as(path)
    return [path]


def _time(label: str, sources: list[Path], runs: int, tmp: Path, cpu: bool = False) -> None:
    from agent.config import replace
    from agent.deid import DeidStage
    from agent.deid.verify_pixels import PixelCheck
    from agent.pixels import PixelStage, text_checked
    from tests.pixels.helpers import SECRET, make_config, make_work

    cfg = make_config(tmp)
    if cpu:  # one process: its CPU seconds are every CPU second the checks cost
        cfg = replace(cfg, pipeline_workers=1)
    clock = time.process_time if cpu else time.perf_counter
    work = make_work(tmp / f"{label}-deid", sources)
    DeidStage(text_checked(cfg), SECRET)(work)
    deid = list(work.files)
    stage, check = PixelStage(cfg), PixelCheck(cfg)
    stage_s, check_s = [], []
    for run in range(runs + 1):  # the first run warms the pool and the engines
        copy = tmp / f"{label}-{run}"
        copy.mkdir()
        files = [Path(shutil.copy(p, copy / p.name)) for p in deid]
        w = make_work(tmp / f"{label}-w{run}", sources)
        w.files = files
        t0 = clock()
        stage(w)
        t1 = clock()
        check(sources, w.files)
        t2 = clock()
        if run:
            stage_s.append(t1 - t0)
            check_s.append(t2 - t1)
        redacted = sum(len(list(d.get("boxes", []))) for e, d in w.audit  # type: ignore
                       if e == "pixels-redacted")
    s, c = statistics.median(stage_s), statistics.median(check_s)
    unit = "CPU-s" if cpu else "s"
    print(f"{label:34s} {len(sources):4d} files  pixels stage {s:6.2f} {unit}  verifier pixel "
          f"check {c:5.2f} {unit}  added {s + c:6.2f} {unit}  (lines redacted {redacted})")


def _readable(reader: object, ident: object, frame: np.ndarray) -> bool:
    """The independent check of the tests (whole frame, 3x, both polarities)."""
    from tests.pixels.helpers import reads_identity

    return reads_identity(reader, ident, frame) is not None  # type: ignore[arg-type]


def _identity() -> object:
    from tests.pixels.helpers import planted_identity

    return planted_identity()


def _plantings() -> list[tuple[np.ndarray, tuple[object, ...]]]:
    """Real slices with the identity rendered in: 5 fonts x 5 sizes x 3 contrasts x 3
    positions (a corner, the bottom edge, the middle)."""
    return [(f, label) for f, label, _ in _planted()]


def _planted() -> list[tuple[np.ndarray, tuple[object, ...], np.ndarray]]:
    """The plantings of :func:`_plantings` with the mask of their ink."""
    from tests.pixels.helpers import FONTS, burn

    slices = sorted(CORPUS.iterdir())
    base = [pydicom.dcmread(slices[k]).pixel_array for k in (50, 70, 90)]
    texts = ("CANARYSSON, WILHELMINA", "ID 84213977", "DOB 12/03/1961")
    positions = ((4, 4), (120, 230), (70, 120))
    out: list[tuple[np.ndarray, tuple[object, ...], np.ndarray]] = []
    for font_name in (*FONTS, None):
        for size in (8, 10, 12, 16, 24):
            for contrast in (1.0, 0.6, 0.35):
                for k, (x, y) in enumerate(positions):
                    frame = base[k % 3].copy()
                    try:
                        burn(frame, texts[(size + k) % 3], x, min(y, 255 - size - 2),
                             size=size, font_name=font_name,
                             value=float(frame.max()) * contrast)
                    except AssertionError:
                        continue
                    out.append((frame, (font_name, size, contrast, (x, y)),
                                frame != base[k % 3]))
    return out


def _false_negatives(reader: object, ident: object) -> None:
    from agent.pixels.text import TextScanner, redact

    cases = _planted()
    before = 0
    misses = []
    inked = []
    for frame, label, ink in cases:
        stack = frame[None].copy()
        lines = TextScanner(reader, ident, redact_all=False).scan(  # type: ignore
            stack, 1, sensitive=False)
        redact(stack, lines)
        box = np.zeros(ink.shape, bool)
        for ln in lines:
            box[ln.top:ln.top + ln.height, ln.left:ln.left + ln.width] = True
        if (ink & box).sum() < 0.9 * ink.sum():
            inked.append(label)
        if not _readable(reader, ident, frame):
            continue
        before += 1
        if _readable(reader, ident, stack[0]):
            misses.append(label)
    print(f"false negatives: {len(misses)} of {before} readable plantings still readable "
          f"after redaction ({len(cases)} planted; {len(cases) - before} unreadable to OCR "
          "even before)")
    for m in misses:
        print("   missed:", m)
    print(f"ink left: {len(inked)} of {len(cases)} plantings have under 90 % of their ink "
          "inside redacted boxes (read or not)")
    for m in inked:
        print("   ink left:", m)


def _verifier_recall() -> None:
    """Small plantings (<= 12 px) the verifier's own glyph search and OCR find when the
    stage did nothing (what it would quarantine had the stage missed them)."""
    import tempfile

    from agent.deid import verify_glyphs as glyphs
    from agent.deid import verify_pixels as vp
    from agent.pixels.ocr import find_tessdata
    from tests.pixels.helpers import plant_identity

    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    plant_identity(ds)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "h.dcm"
        ds.save_as(path, enforce_file_format=False)
        needles = frozenset(vp._needles(path))
    api = vp._api(str(find_tessdata()) + "/")
    small = [(f, label) for f, label in _plantings() if int(label[1]) <= 12]  # type: ignore
    found = 0
    for frame, _label in small:
        boxes = sorted(glyphs.text_boxes(frame[None]), key=lambda b: -b[5])[:glyphs.PER_FRAME]
        found += any(vp._shows(vp._fold(glyphs.box_text(api, frame, b)), needles)
                     for b in boxes)
    print(f"verifier (stage bypassed): {found} of {len(small)} small plantings (<= 12 px) "
          "found")


def _clean_stacks() -> list[tuple[str, np.ndarray]]:
    """The clean corpus as frame stacks: every DICOM series (first 200 files), and the
    real heads (faces, necks) cut every 4th slice along each of their three axes."""
    import SimpleITK as sitk

    out = []
    for folder in sorted(p for p in CORPUS.parent.parent.glob("*/*") if p.is_dir()
                         and "Phoenix" not in p.name):
        arrs = []
        for f in sorted(folder.iterdir())[:200]:
            a = pydicom.dcmread(f).pixel_array
            arrs.append(a if a.ndim == 3 else a[None])
        out.append((folder.name, np.concatenate(arrs)))
    for head in sorted((CORPUS.parents[2] / "heads").glob("*.nii.gz")):
        vol = sitk.GetArrayFromImage(sitk.ReadImage(str(head))).astype(np.int16)
        for axis in range(3):
            out.append((f"{head.name}:{axis}", np.ascontiguousarray(
                np.moveaxis(vol, axis, 0)[::4])))
    return out


def _false_positives(reader: object, ident: object) -> None:
    from collections import Counter

    from agent.pixels.text import TextScanner

    stacks = _clean_stacks()
    frames_seen = fp_all = 0
    kinds: Counter[str] = Counter()
    for name, stack in stacks:
        frames_seen += len(stack)
        for redact_all in (False, True):
            lines = TextScanner(reader, ident, redact_all=redact_all).scan(  # type: ignore
                stack, 1, sensitive=False)
            if redact_all:
                fp_all += len(lines)
            else:
                kinds.update(ln.kind for ln in lines)
                if lines:
                    print(f"   {name}: {[(ln.frame, ln.kind) for ln in lines][:8]}")
    print(f"false redactions on the clean corpus ({len(stacks)} stacks: DICOM series and "
          f"head slices, {frames_seen} frames): {sum(kinds.values())} lines "
          f"{dict(kinds)}; {fp_all} with redact_all_text")


def accuracy() -> None:
    """False negatives (planted identity still readable after redaction) over fonts, sizes,
    contrasts and positions on real slices; false positives (lines redacted) on the clean
    corpus, matching identities and with redact_all_text."""
    from agent.pixels.ocr import Reader, find_tessdata

    if not CORPUS.is_dir():
        print("accuracy needs the shared corpus")
        return
    reader, ident = Reader(find_tessdata()), _identity()
    _false_positives(reader, ident)
    _false_negatives(reader, ident)
    _verifier_recall()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--cpu", action="store_true",
                        help="one process, CPU seconds (steadier than wall time on a "
                             "loaded machine)")
    parser.add_argument("--accuracy", action="store_true",
                        help="count OCR false negatives and positives instead of timing")
    args = parser.parse_args()
    if args.accuracy:
        accuracy()
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        _time("MR series, clean", _series(tmp / "clean", args.slices, False), args.runs, tmp,
              args.cpu)
        _time("MR series, text in 3 slices", _series(tmp / "burned", args.slices, True),
              args.runs, tmp, args.cpu)
        _time("screen capture 1024x768 RGB", _capture(tmp / "sc"), args.runs, tmp, args.cpu)


if __name__ == "__main__":
    main()
