"""The defacing QC gate: checks on the result, independent of how it was made; fails closed.

After a volume is defaced, before anything is written, three questions are asked of the
before/after pair:

* **Does the face survive?** The front surface of the fully replaced part (depth maps seen
  from the front on a patient-axis grid) must have moved: if most of it lies where the
  original surface was, the patient's nose and eyes are still there.
* **Is the new surface whole?** Holes, cracks and spikes (depth-map pixels far from their
  neighbourhood's median) are counted from the front and both sides at several skin
  thresholds; the defaced surface may not have clearly more than the original.
  Tissue in the outer planes of the field of view (a plate where a face is cut by the
  edge) may not grow either.
* **Does the head still register like the original?** A rigid fit of the defaced head to
  the original (whole head, mutual information) must move the brain by at most
  :data:`MAX_SHIFT_MM`: a new face that pulls a registration away would spoil every
  downstream analysis.

:func:`surface_defects` and :func:`edge_tissue` are also what the tests count.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from numpy.lib.stride_tricks import sliding_window_view

from agent.errors import DefaceFailed

#: Thresholds (fractions of the skin threshold) the surface is checked at.
LEVELS = (0.7, 1.0, 1.6)
#: A depth-map pixel this far (mm) from its neighbourhood's median is a defect.
DEFECT_MM = 6.0
#: Neighbourhood (pixels) of that median.
WINDOW = 7
#: The gate: at most this many new defect pixels (per view and level, beyond the original's)
#: plus this fraction of the region's surface pixels.
MAX_NEW_DEFECTS = 25
MAX_NEW_DEFECT_FRACTION = 0.01
#: More than this fraction of the fully replaced front surface unmoved (< 0.5 mm): the face
#: survived.
MAX_SURVIVAL = 0.6
#: Largest rigid shift (mm) of the brain when the defaced head is registered to the original.
MAX_SHIFT_MM = 2.0
#: Grid (mm) the checks run on.
QC_SPACING = 1.5


@dataclass
class QCReport:
    """What the gate measured; ``problems`` is empty when it passed."""

    defects_before: int = 0
    defects_after: int = 0
    surface_pixels: int = 0
    edge_tissue_before: int = 0
    edge_tissue_after: int = 0
    face_unmoved: float = 0.0
    face_pixels: int = 0
    shift_mm: float = 0.0
    problems: list[str] = field(default_factory=list)


def local_median(depth: np.ndarray, at: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Median of the ``window`` x ``window`` neighbourhood of each pixel where ``at``
    (bool, the map's shape) holds, in row order (NaN if any neighbour is NaN). Only
    those pixels' medians are computed: a defect count asks for a third of the map or
    less."""
    r = window // 2
    padded = np.pad(depth, r, mode="constant", constant_values=np.nan)
    win = sliding_window_view(padded, (window, window))[at]
    return np.median(win.reshape(len(win), -1), axis=-1)  # NaN at silhouette edges


def surface_defects(depth: np.ndarray, spacing_mm: float, where: np.ndarray | None = None
                    ) -> tuple[int, int]:
    """(defect pixels, surface pixels) of a depth map (in voxels of ``spacing_mm``):
    holes and spikes away from the silhouette's edge, optionally only ``where``."""
    ok = np.isfinite(depth)
    if where is not None:
        ok &= where
    med = local_median(depth, ok)
    fine = np.isfinite(med)
    bad = fine & (np.abs(depth[ok] - med) * spacing_mm > DEFECT_MM)
    return int(bad.sum()), int(fine.sum())


def _weight_box(before: sitk.Image, weight: sitk.Image
                ) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """Where ``weight`` (the whole grid of ``before``, or a box of it: the same voxels,
    its own origin) lies in ``before`` (z, y, x slices), and which of its voxels lie in the
    outer planes of ``before``'s field of view."""
    start = before.TransformPhysicalPointToIndex(weight.GetOrigin())
    size = weight.GetSize()
    full = before.GetSize()
    box = (slice(start[2], start[2] + size[2]), slice(start[1], start[1] + size[1]),
           slice(start[0], start[0] + size[0]))
    outer = np.zeros((size[2], size[1], size[0]), bool)
    for axis in range(3):
        n, lo = full[2 - axis], box[axis].start
        sl: list[slice | int] = [slice(None)] * 3
        if lo == 0:
            sl[axis] = 0
            outer[tuple(sl)] = True
        if box[axis].stop == n:
            sl[axis] = -1
            outer[tuple(sl)] = True
    return box, outer


def edge_tissue(values: np.ndarray, level: float, where: np.ndarray, planes: int = 1) -> int:
    """Voxels above ``level`` in the outer ``planes`` of the array, inside ``where``."""
    outer = np.zeros(values.shape, bool)
    for axis in range(3):
        sl: list[slice] = [slice(None)] * 3
        sl[axis] = slice(0, planes)
        outer[tuple(sl)] = True
        sl[axis] = slice(values.shape[axis] - planes, values.shape[axis])
        outer[tuple(sl)] = True
    return int(((values > level) & outer & where).sum())


def lps_grid(image: sitk.Image, spacing: float = QC_SPACING) -> sitk.Image:
    """An axis-aligned (patient LPS) empty grid covering ``image``."""
    size = np.array(image.GetSize())
    corners = np.array([
        image.TransformContinuousIndexToPhysicalPoint([float(c) for c in (i, j, k)])
        for i in (-0.5, size[0] - 0.5) for j in (-0.5, size[1] - 0.5)
        for k in (-0.5, size[2] - 0.5)
    ])
    lo, hi = corners.min(0), corners.max(0)
    n = np.maximum(1, np.ceil((hi - lo) / spacing)).astype(int)
    ref = sitk.Image([int(v) for v in n], sitk.sitkFloat32)
    ref.SetSpacing([spacing] * 3)
    ref.SetOrigin(tuple(lo + spacing / 2))
    return ref


def depth(volume: np.ndarray, level: float, view: str) -> np.ndarray:
    """Depth map (voxels) on an LPS z-y-x array: ``front`` (from anterior), ``left``,
    ``right``; NaN where the ray meets nothing."""
    axis, reverse = {"front": (1, False), "left": (2, True), "right": (2, False)}[view]
    vol = np.flip(volume, axis) if reverse else volume
    hit = vol > level
    first = np.argmax(hit, axis=axis).astype(np.float32)
    first[~hit.any(axis=axis)] = np.nan
    return first


def check(before: sitk.Image, after: sitk.Image, weight: sitk.Image, level: float,
          *, shift: bool = True, levels: tuple[float, ...] | None = None,
          before_work: sitk.Image | None = None) -> QCReport:
    """Measure ``after`` against ``before`` (real values, same grid); ``weight`` is the
    replacement weight on that grid or on a box of it (0 where nothing was replaced).
    ``levels``: the thresholds of the surface checks (default: LEVELS times ``level``);
    ``before_work``: ``before`` on the registration's work grid when it was made already."""
    thresholds = levels or tuple(f * level for f in LEVELS)
    report = QCReport()
    ref = lps_grid(before)
    ident = sitk.Transform()
    low = float(np.min(sitk.GetArrayViewFromImage(before)))
    b = sitk.GetArrayFromImage(sitk.Resample(before, ref, ident, sitk.sitkLinear, low,
                                             sitk.sitkFloat32))
    a = sitk.GetArrayFromImage(sitk.Resample(after, ref, ident, sitk.sitkLinear, low,
                                             sitk.sitkFloat32))
    w = sitk.GetArrayFromImage(sitk.Resample(weight, ref, ident, sitk.sitkLinear, 0.0,
                                             sitk.sitkFloat32))
    # The shift (a registration, ITK without the GIL) is measured on a thread of its own
    # while the surfaces are counted here: on two cores the gate takes the longer of the
    # two, not their sum. Both are deterministic; neither reads what the other writes.
    pool = ThreadPoolExecutor(max_workers=1) if shift else None
    shifted = pool.submit(rigid_shift, before, after, before_work) if pool else None
    try:
        _surfaces(report, before, after, weight, level, thresholds, b, a, w)
        if shifted is not None:
            report.shift_mm = shifted.result()
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    _judge(report)
    return report


def _surfaces(report: QCReport, before: sitk.Image, after: sitk.Image, weight: sitk.Image,
              level: float, thresholds: tuple[float, ...], b: np.ndarray, a: np.ndarray,
              w: np.ndarray) -> None:
    """The surface, edge and survival measures of :func:`check` into ``report``."""
    for view in ("front", "left", "right"):
        near = depth(np.where(w > 0.02, 1.0, 0.0).astype(np.float32), 0.5, view)
        for thr in thresholds:
            d_b, d_a = depth(b, thr, view), depth(a, thr, view)
            # Only where the ray reaches the region before it reaches either surface.
            first = np.fmin(d_b, d_a)
            where = np.isfinite(near) & ~(near > first + 2)
            nb, _ = surface_defects(d_b, QC_SPACING, where)
            na, total = surface_defects(d_a, QC_SPACING, where)
            report.defects_before += nb
            report.defects_after += na
            report.surface_pixels += total
    box, outer = _weight_box(before, weight)
    arr_b = sitk.GetArrayViewFromImage(before)[box]
    arr_a = sitk.GetArrayViewFromImage(after)[box]
    region = sitk.GetArrayViewFromImage(weight) > 0
    report.edge_tissue_before = edge_tissue(arr_b, level, region & outer)
    report.edge_tissue_after = edge_tissue(arr_a, level, region & outer)
    # Face survival: the fully replaced front surface.
    core = depth(np.where(w > 0.9, 1.0, 0.0).astype(np.float32), 0.5, "front")
    d_b, d_a = depth(b, level, "front"), depth(a, level, "front")
    sel = np.isfinite(core) & np.isfinite(d_b) & np.isfinite(d_a) & (d_b >= core - 1)
    report.face_pixels = int(sel.sum())
    if report.face_pixels:
        report.face_unmoved = float((np.abs(d_a - d_b)[sel] * QC_SPACING < 0.5).mean())


def _judge(r: QCReport) -> None:
    allowed = r.defects_before + MAX_NEW_DEFECTS + MAX_NEW_DEFECT_FRACTION * r.surface_pixels
    if r.defects_after > allowed:
        r.problems.append(f"the new face surface has holes or spikes ({r.defects_after} "
                          f"defect pixels against {r.defects_before} before)")
    if r.edge_tissue_after > 1.2 * r.edge_tissue_before + 50:
        r.problems.append("the new face is cut by the edge of the field of view "
                          f"({r.edge_tissue_after} voxels against {r.edge_tissue_before})")
    if r.face_pixels >= 200 and r.face_unmoved > MAX_SURVIVAL:
        r.problems.append(f"{100 * r.face_unmoved:.0f}% of the face surface did not move: "
                          "the original face may still be recognisable")
    if r.shift_mm > MAX_SHIFT_MM:
        r.problems.append(f"the defaced head registers {r.shift_mm:.1f} mm away from the "
                          "original")


def enforce(report: QCReport) -> None:
    """Raise DefaceFailed (quarantine) when the gate found a problem."""
    if report.problems:
        raise DefaceFailed("defacing QC failed: " + "; ".join(report.problems)
                           + "; the series is held back", code="deface-qc")


def rigid_shift(before: sitk.Image, after: sitk.Image,
                before_work: sitk.Image | None = None) -> float:
    """Largest displacement (mm) of the head's central region when ``after`` is rigidly
    registered to ``before`` on a 4 mm grid (whole head, mutual information, a quarter of
    the voxels on a fixed regular grid, one thread: the same pair gives the same number)."""
    from agent.deface.register import SAMPLING_SEED, SHIFT_SAMPLING, one_thread, to_work_grid

    fixed = before_work if before_work is not None else to_work_grid(before)
    moving = to_work_grid(after)
    reg = sitk.ImageRegistrationMethod()
    reg.SetNumberOfThreads(1)
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricSamplingStrategy(reg.REGULAR)
    reg.SetMetricSamplingPercentage(SHIFT_SAMPLING, SAMPLING_SEED)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=0.01, numberOfIterations=60, relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    size = np.array(fixed.GetSize())
    centre = fixed.TransformContinuousIndexToPhysicalPoint([float(v) for v in (size - 1) / 2])
    tx = sitk.Euler3DTransform()
    tx.SetCenter(centre)
    reg.SetInitialTransform(tx, inPlace=True)
    try:
        with one_thread():
            reg.Execute(fixed, moving)
    except RuntimeError:
        return float("inf")
    extent = size * np.array(fixed.GetSpacing()) / 4.0
    worst = 0.0
    for corner in np.array(np.meshgrid(*[[-1, 1]] * 3)).reshape(3, -1).T:
        p = np.array(centre) + corner * extent
        worst = max(worst, float(np.linalg.norm(np.array(tx.TransformPoint(tuple(p))) - p)))
    return worst
