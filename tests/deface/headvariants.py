"""Real heads (the corpus' T1s) made into the heads a held-out set plausibly holds: an
infant's, a child's and a large adult's, under a strong bias field, in other contrasts
(T2-, FLAIR-, PD-like, post-contrast), with part of the head outside the field of view,
tilted, off-centre in a large field of view, and as a 1 mm sagittal 3-D T1 of 176 slices.

Each variant is the head image and its face mask on the variant's grid: the face is found
once on the source head (by :func:`tests.deface.test_deface_heads.regions`, an intensity
fit of the MNI template independent of the defacer's skin fit) and carried through the
same resampling. ``python -m tests.deface.headvariants OUT`` runs every variant through the
defacing stage and prints its ending.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .test_deface_heads import read_head, regions


@dataclass
class Head:
    """A head image (real values) and its face and brain masks (bool, z-y-x, same grid)."""

    image: sitk.Image
    face: np.ndarray
    brain: np.ndarray


def source(name: str = "otsu_t1", shrink: int = 2) -> Head:
    """A corpus head on a coarser grid (``shrink`` voxels to one), with its face."""
    image = read_head(name)
    if shrink > 1:
        image = sitk.Shrink(image, [shrink] * 3)
    r = regions(image, 25.0)  # skin of these 8-bit T1 heads is above 25
    return Head(image=image, face=r.face, brain=r.brain)


def _mask_image(head: Head, mask: np.ndarray) -> sitk.Image:
    img = sitk.GetImageFromArray(mask.astype(np.float32))
    img.CopyInformation(head.image)
    return img


def centre_of(image: sitk.Image) -> np.ndarray:
    return np.array(image.TransformContinuousIndexToPhysicalPoint(
        [(s - 1) / 2.0 for s in image.GetSize()]))


def resampled(head: Head, ref: sitk.Image, tx: sitk.Transform | None = None) -> Head:
    """``head`` on grid ``ref``; ``tx`` maps ``ref``'s points to the source's."""
    t = tx or sitk.Transform()
    img = sitk.Resample(head.image, ref, t, sitk.sitkLinear, 0.0, sitk.sitkFloat32)

    def carry(mask: np.ndarray) -> np.ndarray:
        return sitk.GetArrayFromImage(sitk.Resample(_mask_image(head, mask), ref, t,
                                                    sitk.sitkLinear, 0.0)) > 0.5
    return Head(image=img, face=carry(head.face), brain=carry(head.brain))


def box(head: Head, grow: float, direction: np.ndarray | None = None,
        spacing: float | None = None, shift: tuple[float, float, float] = (0, 0, 0)
        ) -> sitk.Image:
    """A grid ``grow`` times the source's extent (in each direction), centred on the
    source's centre plus ``shift`` (mm), with its own direction and spacing if given."""
    src = head.image
    d = np.array(src.GetDirection()).reshape(3, 3) if direction is None else direction
    sp = np.array(src.GetSpacing()) if spacing is None else np.full(3, spacing)
    extent = np.array(src.GetSize()) * np.array(src.GetSpacing())
    extent = np.abs(d.T @ np.array(src.GetDirection()).reshape(3, 3)) @ extent * grow
    size = np.ceil(extent / sp).astype(int)
    ref = sitk.Image([int(v) for v in size], sitk.sitkFloat32)
    ref.SetSpacing(tuple(float(v) for v in sp))
    ref.SetDirection(tuple(d.ravel()))
    centre = centre_of(src) + np.array(shift)
    ref.SetOrigin(tuple(centre - d @ (sp * (size - 1) / 2.0)))
    return ref


def scaled(head: Head, factor: float) -> Head:
    """A smaller (child) or larger head: every distance from the centre times ``factor``."""
    tx = sitk.AffineTransform(3)
    tx.SetCenter(tuple(centre_of(head.image)))
    tx.SetMatrix(tuple((np.eye(3) / factor).ravel()))
    return resampled(head, box(head, max(1.0, factor) * 1.05), tx)


def tilted(head: Head, axis: tuple[float, float, float], degrees: float) -> Head:
    """The head turned about its centre (pitch: about left-right; roll: about
    front-back), in a field of view big enough to hold it."""
    tx = sitk.VersorRigid3DTransform()
    tx.SetCenter(tuple(centre_of(head.image)))
    tx.SetRotation(axis, float(np.deg2rad(degrees)))
    return resampled(head, box(head, 1.25), tx.GetInverse())


def off_centre(head: Head) -> Head:
    """A large field of view (1.7 times the head's) with the head 50 mm right and 35 mm
    forward of its centre."""
    return resampled(head, box(head, 1.7, shift=(-50.0, -35.0, 10.0)))


def sagittal(head: Head, spacing: float, slices: int | None = None) -> Head:
    """A sagittal 3-D acquisition (rows anterior->posterior, columns superior->inferior,
    slices right->left) as Siemens and GE write an MPRAGE; ``slices`` fixes their count."""
    d = np.column_stack([[0, 1, 0], [0, 0, -1], [-1, 0, 0]]).astype(float)
    ref = box(head, 1.0, direction=d, spacing=spacing)
    if slices is not None:
        size = list(ref.GetSize())
        size[:2] = [int(round(256 / spacing))] * 2
        size[2] = slices
        big = sitk.Image(size, sitk.sitkFloat32)
        big.SetSpacing(ref.GetSpacing())
        big.SetDirection(ref.GetDirection())
        sp = np.array(ref.GetSpacing())
        big.SetOrigin(tuple(centre_of(head.image) - d @ (sp * (np.array(size) - 1) / 2.0)))
        ref = big
    return resampled(head, ref)


def _tissue_extent(head: Head, axis: int) -> tuple[int, int]:
    """First and last index (array axis: 0 z, 1 y, 2 x) holding tissue."""
    arr = sitk.GetArrayViewFromImage(head.image)
    tissue = arr > 25.0
    other = tuple(a for a in range(3) if a != axis)
    levels = np.flatnonzero(tissue.any(axis=other))
    return int(levels[0]), int(levels[-1])


def cropped(head: Head, axis: int, keep: tuple[int, int]) -> Head:
    """The head with the field of view cut to indices ``keep`` along array ``axis``."""
    lo, hi = keep
    index, size = [0, 0, 0], list(head.image.GetSize())
    k = 2 - axis  # array axis -> image axis
    index[k], size[k] = lo, hi - lo
    img = sitk.RegionOfInterest(head.image, size, index)
    sl = [slice(None)] * 3
    sl[axis] = slice(lo, hi)
    return Head(image=img, face=head.face[tuple(sl)], brain=head.brain[tuple(sl)])


def _axis_towards(head: Head, lps: np.ndarray) -> tuple[int, int]:
    """Array axis pointing most along ``lps`` and its sign (+1: index grows that way)."""
    d = np.array(head.image.GetDirection()).reshape(3, 3)
    k = int(np.argmax(np.abs(d.T @ lps)))
    return 2 - k, int(np.sign(d[:, k] @ lps))


def vertex_cut(head: Head, mm: float) -> Head:
    """The top ``mm`` of the head outside the field of view."""
    axis, sign = _axis_towards(head, np.array([0.0, 0.0, 1.0]))
    lo, hi = _tissue_extent(head, axis)
    n = int(round(mm / head.image.GetSpacing()[2 - axis]))
    size = head.face.shape[axis]
    return cropped(head, axis, (0, hi + 1 - n) if sign > 0 else (lo + n, size))


def front_cut(head: Head, behind_tip_mm: float) -> Head:
    """The field of view ends ``behind_tip_mm`` behind the nose tip (0: at the tip)."""
    axis, sign = _axis_towards(head, np.array([0.0, -1.0, 0.0]))  # LPS: anterior is -y
    lo, hi = _tissue_extent(head, axis)
    n = int(round(behind_tip_mm / head.image.GetSpacing()[2 - axis]))
    size = head.face.shape[axis]
    return cropped(head, axis, (0, hi + 1 - n) if sign > 0 else (lo + n, size))


# Contrasts. The 8-bit T1: background < 25, CSF ~ 25-60, grey matter ~ 60-100, white matter
# ~ 100-140, fat and vessels brighter. Each remap keeps the background black.
def _remap(head: Head, knots: list[float], values: list[float]) -> Head:
    arr = sitk.GetArrayFromImage(head.image).astype(np.float64)
    top = float(np.percentile(arr[arr > 25.0], 99))
    out = np.interp(arr / top, knots, values) * 1000.0
    img = sitk.GetImageFromArray(out.astype(np.float32))
    img.CopyInformation(head.image)
    return Head(image=img, face=head.face, brain=head.brain)


#: name -> (knots in T1 intensity / its 99th percentile, new intensity / 1000).
CONTRASTS: dict[str, tuple[list[float], list[float]]] = {
    # T2: fluid brightest, grey over white, fat mid-bright (fast spin echo).
    "t2": ([0.0, 0.1, 0.2, 0.35, 0.55, 0.75, 1.0, 1.5], [0, 0.05, 1.0, 0.9, 0.55, 0.35, 0.6, 0.6]),
    # FLAIR: fluid dark, grey bright, white matter grey, fat bright.
    "flair": ([0.0, 0.1, 0.2, 0.35, 0.55, 0.75, 1.0, 1.5], [0, 0.05, 0.15, 0.3, 0.8, 0.5, 0.9,
                                                          0.9]),
    # PD: little contrast between tissues, fluid a little brighter than white matter.
    "pd": ([0.0, 0.1, 0.2, 0.45, 0.75, 1.0, 1.5], [0, 0.1, 0.75, 0.85, 0.7, 0.8, 0.8]),
}


def contrast(head: Head, name: str) -> Head:
    knots, values = CONTRASTS[name]
    return _remap(head, knots, values)


def post_contrast(head: Head) -> Head:
    """T1 after gadolinium: the dura (a shell around the brain) and the sagittal sinus
    twice as bright as white matter."""
    arr = sitk.GetArrayFromImage(head.image).astype(np.float64)
    top = float(np.percentile(arr[arr > 25.0], 99))
    bimg = sitk.GetImageFromArray(head.brain.astype(np.uint8))
    bimg.CopyInformation(head.image)
    dist = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        bimg, insideIsPositive=False, squaredDistance=False, useImageSpacing=True))
    dura = (dist > 3.0) & (dist < 6.0) & (arr > 25.0)
    arr[dura] = 2.0 * top
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    img.CopyInformation(head.image)
    return Head(image=img, face=head.face, brain=head.brain)


def bias_field(head: Head, low: float = 0.5, high: float = 1.5) -> Head:
    """A smooth multiplicative field running from ``low`` to ``high`` across the head
    (a ramp along a diagonal, bent by a quadratic term, as a surface coil gives)."""
    arr = sitk.GetArrayFromImage(head.image).astype(np.float64)
    z, y, x = (np.linspace(-1.0, 1.0, n) for n in arr.shape)
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    field = (xx + yy + zz) / 3.0 + 0.3 * (xx**2 - yy**2)
    field = low + (field - field.min()) / np.ptp(field) * (high - low)
    img = sitk.GetImageFromArray((arr * field).astype(np.float32))
    img.CopyInformation(head.image)
    return Head(image=img, face=head.face, brain=head.brain)


def variants(base: Head) -> dict[str, Callable[[], Head]]:
    """Every variant of ``base`` (a 2 mm head), by name."""
    return {
        "infant-0.6": lambda: scaled(base, 0.6),
        "child-0.7": lambda: scaled(base, 0.7),
        "child-0.8": lambda: scaled(base, 0.8),
        "child-0.85": lambda: scaled(base, 0.85),
        "adult-1.18": lambda: scaled(base, 1.18),
        "bias-0.5-1.5": lambda: bias_field(base),
        "t2-like": lambda: contrast(base, "t2"),
        "flair-like": lambda: contrast(base, "flair"),
        "pd-like": lambda: contrast(base, "pd"),
        "post-contrast": lambda: post_contrast(base),
        "vertex-cut-20mm": lambda: vertex_cut(base, 20.0),
        "fov-ends-at-nose-tip": lambda: front_cut(base, 0.0),
        "fov-ends-mid-nose": lambda: front_cut(base, 10.0),
        "pitch-28": lambda: tilted(base, (1.0, 0.0, 0.0), 28.0),
        "roll-28": lambda: tilted(base, (0.0, 1.0, 0.0), 28.0),
        "off-centre-large-fov": lambda: off_centre(base),
        "sagittal-2mm": lambda: sagittal(base, 2.0),
    }


def seen_replaced(head: Head, before: np.ndarray, after: np.ndarray) -> float:
    """Of the rays from the front that pass through the face, the fraction whose first
    tissue voxel (what a surface rendering of the delivered volume shows) was replaced.
    Old tissue kept behind a new face in front of it is not seen."""
    axis, sign = _axis_towards(head, np.array([0.0, -1.0, 0.0]))  # LPS: anterior is -y
    level = 0.1 * float(np.percentile(before[before > 0], 99))
    flip = (lambda a: np.flip(a, axis)) if sign > 0 else (lambda a: a)
    tissue, changed = flip(after > level), flip(before != after)
    first = np.expand_dims(np.argmax(tissue, axis=axis), axis)
    seen = np.take_along_axis(changed, first, axis=axis).squeeze(axis)
    rays = flip(head.face).any(axis=axis) & tissue.any(axis=axis)
    return float(seen[rays].mean())


@dataclass
class Ending:
    """How a variant ended in the defacing stage."""

    ending: str  # "delivered defaced", "delivered undefaced", "quarantined"
    detail: str  # the quarantine code and message, or the face decision's reason
    face: float | None = None  # fraction of the face's voxels replaced
    seen: float | None = None  # fraction of the face's front surface replaced
    brain_changed: int = 0


def run_stage(head: Head, folder: Path) -> Ending:
    """``head`` written as a DICOM MR series and put through the defacing stage:
    (ending, code or reason, fraction of the face replaced)."""
    from agent.config import Config
    from agent.deface import DefaceStage
    from agent.deface.studyfit import StudyFits
    from agent.errors import SeriesProblem
    from agent.work import SeriesWork

    from .dicom_writer import write_mr_series
    from .helpers import read_stored

    files = write_mr_series(head.image, folder / "in")
    (folder / "work").mkdir(parents=True, exist_ok=True)
    work = SeriesWork(key="cd" * 32, version=1, source_files=files, workdir=folder / "work")
    stage = DefaceStage(Config(), StudyFits(folder / "fits"))
    stage.intake_closed()
    try:
        stage(work)
    except SeriesProblem as exc:
        return Ending("quarantined", f"{exc.code}: {exc}")
    if not work.defaced:
        return Ending("delivered undefaced", work.face.get("reason", ""), 0.0, 0.0)
    before, _ = read_stored(folder / "in")
    after, _ = read_stored(folder / "work" / "deface")
    changed = before != after
    return Ending("delivered defaced", work.face.get("reason", ""),
                  face=float(changed[head.face].mean()),
                  seen=seen_replaced(head, before, after),
                  brain_changed=int(changed[head.brain].sum()))


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    only = set(argv[1:])
    base = source()
    makers = variants(base)
    makers["t1-neck-1.6mm"] = lambda: source("t1_neck", shrink=1)
    makers["sagittal-1mm-176"] = lambda: sagittal(source(shrink=1), 1.0, slices=176)
    for name, make in makers.items():
        if only and name not in only:
            continue
        t0 = time.process_time()
        head = make()
        e = run_stage(head, out / name)
        fractions = "-" if e.face is None else f"{e.face:.2f} / {e.seen:.2f}"
        print(f"{name} | {head.image.GetSize()} | {e.ending} | {fractions} | "
              f"brain {e.brain_changed} | {e.detail[:160]} | "
              f"{time.process_time() - t0:.1f} cpu-s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
