"""Affine registration of the template head to a subject, at low resolution.

Only global transforms (rigid, then affine) are used on purpose: a deformable fit would shape
the average face after the patient's own face, and identity would leak back. The blend's
generous region and feathering absorb the residual mismatch instead.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from agent.deface import surfacefit
from agent.errors import DefaceFailed

#: Registration runs on isotropic images of this voxel size (mm).
WORK_SPACING = 4.0


@dataclass(frozen=True)
class Registration:
    """Maps subject physical points to template physical points (SimpleITK convention)."""

    transform: sitk.AffineTransform
    #: Dice overlap of the subject's and the mapped template's head masks, inside the FOV.
    dice: float
    #: Singular values of the linear part (template mm per subject mm).
    scales: tuple[float, float, float]
    #: Rotation away from the standard head orientation, in degrees.
    rotation_deg: float
    #: The subject on the isotropic work grid (for intensity calibration).
    work: sitk.Image
    seconds: float = 0.0
    #: The fit refined so that the skins meet (places the new face); ``None``: ``transform``.
    #: ``transform`` itself stays the intensity fit, which the brain drives: protection
    #: and regions follow it.
    surface_transform: sitk.AffineTransform | None = None

    @property
    def face_transform(self) -> sitk.AffineTransform:
        return self.surface_transform if self.surface_transform is not None \
            else self.transform


def to_work_grid(image: sitk.Image, spacing: float = WORK_SPACING) -> sitk.Image:
    """Resample to isotropic ``spacing`` in the image's own orientation (anti-aliased)."""
    old = np.array(image.GetSpacing())
    size = np.array(image.GetSize())
    new_size = np.maximum(1, np.round(old * size / spacing)).astype(int)
    # Anti-alias by block averaging (much cheaper than a Gaussian on a full volume), then a
    # light Gaussian for what the integer blocks left out.
    shrink = [max(1, int(spacing / s)) for s in old]
    smoothed = sitk.BinShrink(image, shrink) if max(shrink) > 1 else image
    rest = [max(0.0, (spacing - s) / 2.0) for s in smoothed.GetSpacing()]
    if max(rest) > 0.3:
        smoothed = sitk.SmoothingRecursiveGaussian(smoothed, [max(r, 0.01) for r in rest])
    ref = sitk.Image([int(v) for v in new_size], sitk.sitkFloat32)
    ref.SetSpacing([spacing] * 3)
    ref.SetDirection(image.GetDirection())
    # Keep the physical centre of the first voxel aligned with the volume's corner.
    corner = np.array(image.TransformContinuousIndexToPhysicalPoint([-0.5] * 3))
    d = np.array(image.GetDirection()).reshape(3, 3)
    ref.SetOrigin(tuple(corner + d @ np.full(3, spacing / 2.0)))
    return sitk.Resample(smoothed, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def head_mask(image: sitk.Image) -> sitk.Image:
    """Head (tissue) mask: Otsu threshold, largest connected component, holes closed."""
    arr = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(arr).all() or float(arr.max()) <= float(arr.min()):
        raise DefaceFailed("the image is empty or not finite; it cannot be defaced",
                           code="deface-input")
    # Otsu on the robust range: a few very bright voxels (vessels, fat) must not dominate.
    hi = float(np.percentile(arr, 99.5))
    clipped = sitk.Clamp(image, sitk.sitkFloat32, float(arr.min()), hi)
    mask = sitk.OtsuThreshold(clipped, 0, 1, 128)
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    largest = sitk.Cast(cc == 1, sitk.sitkUInt8)
    closed = sitk.BinaryMorphologicalClosing(largest, [2, 2, 2])
    return sitk.Cast(sitk.BinaryFillhole(closed), sitk.sitkUInt8)


def skin_mask(image: sitk.Image, fraction: float = 0.6) -> sitk.Image:
    """The head up to its skin: above ``fraction`` of Otsu's threshold (the skin is darker
    than what Otsu separates in MR), largest component, closed, cavities filled."""
    arr = sitk.GetArrayViewFromImage(image)
    hi = float(np.percentile(arr, 99.5))
    f = sitk.OtsuThresholdImageFilter()
    f.SetNumberOfHistogramBins(128)
    f.Execute(sitk.Clamp(image, sitk.sitkFloat32, float(arr.min()), hi))
    mask = sitk.BinaryThreshold(image, fraction * float(f.GetThreshold()), 1e30, 1, 0)
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    largest = sitk.Cast(cc == 1, sitk.sitkUInt8)
    closed = sitk.BinaryMorphologicalClosing(largest, [2, 2, 2])
    return sitk.Cast(sitk.BinaryFillhole(closed), sitk.sitkUInt8)


def centroid(mask: sitk.Image, missing: str = "no head found in the image") -> np.ndarray:
    """The physical centroid of ``mask``'s label 1; DefaceFailed(``missing``) when empty."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    if not stats.HasLabel(1):
        raise DefaceFailed(missing, code="deface-fit")
    return np.array(stats.GetCentroid(1))


#: Fraction of the work grid's masked voxels the intensity fit samples; below 1 a regular
#: grid with a fixed seed (the same voxels every run, the same fit to the bit on one
#: thread) and three times faster, but it moved fits by up to 0.4 mm, enough to tip a
#: padded real head over the QC gate's edge check: every voxel, then. (The QC gate's own
#: shift measure samples a quarter.)
SAMPLING = 1.0
#: The fraction :func:`agent.deface.qc.rigid_shift` samples.
SHIFT_SAMPLING = 0.25
SAMPLING_SEED = 1127


def _run(fixed: sitk.Image, moving: sitk.Image, init: sitk.Transform, fixed_mask: sitk.Image,
         iterations: int, levels: int = 2) -> float:
    """Optimise ``init`` in place (Mattes MI); ``levels`` 1 runs at 8 mm only, 2 adds 4 mm."""
    reg = sitk.ImageRegistrationMethod()
    reg.SetNumberOfThreads(1)  # one thread: the same input gives the same fit, to the bit
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricFixedMask(fixed_mask)
    # Sampled: on ITK's regular grid with a fixed seed for its jitter (a seed from the
    # clock, ITK's default, gave fits differing between runs).
    if SAMPLING < 1.0:
        reg.SetMetricSamplingStrategy(reg.REGULAR)
        reg.SetMetricSamplingPercentage(SAMPLING, SAMPLING_SEED)
    else:
        reg.SetMetricSamplingStrategy(reg.NONE)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=4.0, minStep=0.01, numberOfIterations=iterations,
        relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1][:levels])
    reg.SetSmoothingSigmasPerLevel([1.0, 0.0][:levels])
    reg.SetInitialTransform(init, inPlace=True)
    try:
        reg.Execute(fixed, moving)
    except RuntimeError as exc:
        raise DefaceFailed(f"template registration failed ({str(exc).splitlines()[-1]})",
                           code="deface-fit") from None
    return float(reg.GetMetricValue())


def _evaluate(fixed: sitk.Image, moving: sitk.Image, tx: sitk.Transform,
              fixed_mask: sitk.Image) -> float:
    reg = sitk.ImageRegistrationMethod()
    reg.SetNumberOfThreads(1)  # one thread: the same input gives the same fit, to the bit
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricFixedMask(fixed_mask)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetInitialTransform(tx, inPlace=False)
    try:
        return float(reg.MetricEvaluate(fixed, moving))
    except RuntimeError:
        return 0.0


def as_affine(tx: sitk.Euler3DTransform | sitk.Similarity3DTransform
              ) -> sitk.AffineTransform:
    """The same mapping as a general affine transform (the next, freer stage of a fit
    starts from it)."""
    out = sitk.AffineTransform(3)
    out.SetCenter(tx.GetCenter())
    out.SetMatrix(tx.GetMatrix())
    out.SetTranslation(tx.GetTranslation())
    return out


#: A head whose volume implies a scale this much above the one fitted (a child's head) is
#: also fitted from a start scaled to it: from scale 1 the optimiser stops short of a
#: child's size (the template's face then covers the child's without replacing the tissue
#: behind it).
SIZE_GAP = 0.12


def _head_volume(mask: sitk.Image) -> float:
    spacing = mask.GetSpacing()
    count = float(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    return count * spacing[0] * spacing[1] * spacing[2]


def _sized_alternative(fixed: sitk.Image, moving: sitk.Image, fmask: sitk.Image,
                       mmask: sitk.Image, metric_mask: sitk.Image,
                       fitted: sitk.AffineTransform, fc: np.ndarray,
                       mc: np.ndarray) -> sitk.AffineTransform:
    """``fitted``, or the fit from a start scaled by the heads' size ratio where that ratio
    exceeds the fitted scale by more than :data:`SIZE_GAP` and that fit matches better.
    The ratio alone is never trusted: a field of view that cuts the head or runs to the
    neck shrinks or grows the measured head, so both fits are compared on the same metric."""
    subject = _head_volume(fmask)
    if subject <= 0.0:
        return fitted
    size = (_head_volume(mmask) / subject) ** (1.0 / 3.0)
    reached = float(np.cbrt(abs(np.linalg.det(np.array(fitted.GetMatrix()).reshape(3, 3)))))
    if size <= reached * (1.0 + SIZE_GAP):
        # The fit reached the head's size (or the head measures larger than the template,
        # as a view running to the neck makes it; a large head is fitted from scale 1 well):
        # only a fit that stopped short of a small head is tried again.
        return fitted
    start = sitk.Similarity3DTransform()
    start.SetCenter(tuple(float(v) for v in fc))
    start.SetScale(float(size))
    start.SetTranslation(tuple(float(v) for v in mc - fc))
    _run(fixed, moving, start, metric_mask, 100)
    scaled = as_affine(start)
    _run(fixed, moving, scaled, metric_mask, 100)
    if _evaluate(fixed, moving, scaled, metric_mask) < _evaluate(fixed, moving, fitted,
                                                                 metric_mask):
        return scaled
    return fitted


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    inter = float(np.logical_and(a, b).sum())
    total = float(a.sum() + b.sum())
    return 2.0 * inter / total if total else 0.0


#: Modalities the defacer knows; anything else is a programming error.
MODALITIES = ("MR", "CT")


def check_modality(modality: str) -> str:
    """``modality`` upper-cased, or ValueError when the defacer has no path for it."""
    m = str(modality).upper()
    if m not in MODALITIES:
        raise ValueError(f"unknown defacing modality {modality!r} (expected MR or CT)")
    return m


#: Distances (mm) beyond this from the skin do not drive the surface fit.
SURFACE_BAND_MM = 16.0


def fov_margin_mask(image: sitk.Image, margin_mm: float) -> sitk.Image:
    """1 inside the field of view, at least ``margin_mm`` from its edges (where a cut
    head would show a false skin), 0 elsewhere."""
    size = np.array(image.GetSize())
    sp = np.array(image.GetSpacing())
    m = np.zeros(size[::-1], np.uint8)
    lo = np.ceil(margin_mm / sp).astype(int)
    hi = size - lo
    if np.all(hi > lo):
        m[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]] = 1
    out = sitk.GetImageFromArray(m)
    out.CopyInformation(image)
    return out


def surface_distance(mask: sitk.Image) -> sitk.Image:
    """Signed distance (mm, positive outside) to a head mask, clipped to the fit's band."""
    dist = sitk.SignedMaurerDistanceMap(mask, insideIsPositive=False, squaredDistance=False,
                                        useImageSpacing=True)
    return sitk.Clamp(sitk.Cast(dist, sitk.sitkFloat32), sitk.sitkFloat32,
                      -SURFACE_BAND_MM - 4.0, SURFACE_BAND_MM + 4.0)


def _skin_samples(fixed: sitk.Image, fmask: sitk.Image) -> surfacefit.Samples:
    """Work-grid points near the subject's skin with their signed distances, away from the
    field of view's edges (where a cut head shows a false skin)."""
    d_fixed = surface_distance(fmask)
    # A copy, not a view: the mask image is a temporary, and a view of it read freed
    # memory (the skin samples, and so the skin fit and the output, changed between runs).
    keep = sitk.GetArrayFromImage(fov_margin_mask(fixed, 10.0)) > 0
    samples = surfacefit.samples_from(d_fixed, keep, SURFACE_BAND_MM)
    if len(samples) < 500:
        raise DefaceFailed("too little of the head's skin lies inside the field of view to "
                           "place the template", code="deface-fit")
    return samples


def template_field(surface: sitk.Image) -> surfacefit.Field:
    """The template's skin distance as a sampled field (made once per image)."""
    return surfacefit.field_of(surface, SURFACE_BAND_MM + 4.0)


def refine_on_surface(fixed: sitk.Image, fmask: sitk.Image, surface: sitk.Image,
                      transform: sitk.AffineTransform, kind: str = "affine") -> None:
    """Refine ``transform`` in place so that the template's skin meets the subject's: the
    template's signed distance at each subject point near its skin should equal the
    subject's own (robust Gauss-Newton, :mod:`agent.deface.surfacefit`), away from the
    field of view's edges. Contrast-free (MR of any weighting, CT alike); a cut field of
    view or a head holder pulls little (Cauchy weights)."""
    samples = _skin_samples(fixed, fmask)
    pose = surfacefit.Pose.from_sitk(transform)
    pose, _ = surfacefit.refine(template_field(surface), samples, pose, kind, iterations=30)
    transform.SetParameters(pose.to_sitk().GetParameters())


def _fit_surface_only(fixed: sitk.Image, fmask: sitk.Image, surface: sitk.Image,
                      centre: np.ndarray, starts: list[np.ndarray]) -> sitk.AffineTransform:
    """Rigid, then one scale more, fit of the template's skin distance map to the
    subject's (CT): the best of ``starts`` (translations), refined."""
    samples = _skin_samples(fixed, fmask)
    field = template_field(surface)
    best: tuple[float, surfacefit.Pose] | None = None
    for translation in starts:
        pose = surfacefit.Pose(np.eye(3), np.asarray(centre, np.float64),
                               np.asarray(translation, np.float64))
        pose, value = surfacefit.refine(field, samples.subset(4), pose, "rigid",
                                        iterations=15)
        if best is None or value < best[0]:
            best = (value, pose)
    assert best is not None
    pose, _ = surfacefit.refine(field, samples, best[1], "rigid", iterations=30)
    # Then one scale more (a similarity): a CT often covers part of the head only, and a
    # full affine fitted to part of a skull stretches the template along what is missing.
    pose, _ = surfacefit.refine(field, samples, pose, "similarity", iterations=30)
    return pose.to_sitk()


#: The skin fit is trusted only on volumes at least this large (mm) in every direction...
SKIN_FIT_MIN_MM = 100.0
#: ... and only when it moves no point near the skin by more than this (mm) from the
#: intensity fit (a slab's skin constrains an affine fit in two directions only).
SKIN_FIT_MAX_MOVE_MM = 10.0


#: Remembered skin fits; each keeps its surface image, so that the id in its key is not reused.
_SKIN_FITS: OrderedDict[bytes, tuple[sitk.Image, sitk.AffineTransform | None]] = OrderedDict()
_SKIN_FITS_LOCK = threading.Lock()


def _skin_fit_key(work: sitk.Image, surface: sitk.Image, start: sitk.AffineTransform
                  ) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(sitk.GetArrayViewFromImage(work)).tobytes())
    h.update(repr((work.GetSize(), work.GetSpacing(), work.GetOrigin(), work.GetDirection(),
                   start.GetCenter(), start.GetParameters(), id(surface))).encode())
    return h.digest()


def fit_skin(work: sitk.Image, surface: sitk.Image, start: sitk.AffineTransform
             ) -> sitk.AffineTransform | None:
    """The fit ``start`` refined so that the template's skin meets the subject's (what
    places the new face), or None when the volume cannot carry it (too small, too little
    skin, or a refinement that runs away from ``start``): the caller keeps ``start``.

    Deterministic, so remembered: the series' fit (:mod:`agent.deface.fitting`) and the
    defacing of the same volume ask the same question (0.5 CPU-s per 256^3 head)."""
    key = _skin_fit_key(work, surface, start)
    with _SKIN_FITS_LOCK:
        if key in _SKIN_FITS:
            _SKIN_FITS.move_to_end(key)
            found = _SKIN_FITS[key][1]
            return None if found is None else sitk.AffineTransform(found)
    fitted = _fit_skin(work, surface, start)
    with _SKIN_FITS_LOCK:
        _SKIN_FITS[key] = (surface, None if fitted is None else sitk.AffineTransform(fitted))
        while len(_SKIN_FITS) > 16:
            _SKIN_FITS.popitem(last=False)
    return fitted


def _fit_skin(work: sitk.Image, surface: sitk.Image, start: sitk.AffineTransform
              ) -> sitk.AffineTransform | None:
    extent = np.array(work.GetSize()) * np.array(work.GetSpacing())
    if extent.min() < SKIN_FIT_MIN_MM:
        return None
    try:
        samples = _skin_samples(work, skin_mask(work))
    except DefaceFailed:
        return None
    if len(samples) < 2000:
        return None
    start_pose = surfacefit.Pose.from_sitk(start)
    pose, _ = surfacefit.refine(template_field(surface), samples, start_pose, "affine",
                                iterations=30)
    pts = samples.points[::7]
    moved = np.linalg.norm(pose.apply(pts) - start_pose.apply(pts), axis=1)
    if float(moved.max()) > SKIN_FIT_MAX_MOVE_MM:
        return None
    return pose.to_sitk()


def default_surface(template_head: sitk.Image) -> sitk.Image | None:
    """The skin distance map of the installed template when ``template_head`` is its head
    (callers that pass the head alone still get the skin fit), else None."""
    from agent.deface.template import load_template

    try:
        t = load_template()
    except DefaceFailed:
        return None
    return t.surface if template_head is t.head else None


@contextmanager
def one_thread() -> Iterator[None]:
    """ITK on one thread for the duration: its multi-threaded registration metrics sum in
    a varying order, and the same input must give the same fit (and so the same bytes)."""
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


_TEMPLATE_WORK: dict[int, tuple[sitk.Image, sitk.Image, sitk.Image]] = {}
_TEMPLATE_WORK_LOCK = threading.Lock()


def template_work(template_head: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    """The template head on the work grid and its head mask, made once per image (a
    second thread asking meanwhile waits for it)."""
    with _TEMPLATE_WORK_LOCK:
        found = _TEMPLATE_WORK.get(id(template_head))
        if found is not None and found[0] is template_head:
            return found[1], found[2]
        if len(_TEMPLATE_WORK) >= 4:
            _TEMPLATE_WORK.clear()
        moving = to_work_grid(template_head)
        mmask = head_mask(moving)
        # The image is kept so that its id is not reused while cached.
        _TEMPLATE_WORK[id(template_head)] = (template_head, moving, mmask)
        return moving, mmask


def register_template(subject: sitk.Image, template_head: sitk.Image, *,
                      modality: str = "MR", surface: sitk.Image | None = None
                      ) -> Registration:
    """Fit the template head to ``subject``; see :func:`_register` (run on one thread)."""
    with one_thread():
        return _register(subject, template_head, modality=modality, surface=surface)


def _register(subject: sitk.Image, template_head: sitk.Image, *,
              modality: str = "MR", surface: sitk.Image | None = None) -> Registration:
    """Fit the template head to ``subject`` (any orientation, physical LPS space).

    ``modality`` ("MR" or "CT") selects how the head is found and what the fit compares.
    ``surface``: the template's skin distance map; when given, the fit is refined so that
    the skins meet (the defacer always gives it; without it the fit is intensity-only).

    Initialisation: head-mask centroids, then the same with the tops of the heads aligned
    (the field of view often cuts the chin or the neck, which moves the centroid); the start
    with the better rigid similarity is refined to an affine transform.
    """
    import time

    t0 = time.perf_counter()
    ct = check_modality(modality) == "CT"
    surface = surface if surface is not None else default_surface(template_head)
    if ct and surface is None:
        raise ValueError("a CT fit needs the template's surface distance map")
    fixed = to_work_grid(subject)
    moving, mmask = template_work(template_head)
    if ct:
        from agent.deface.ct import head_mask as ct_head_mask

        fmask = ct_head_mask(subject, fixed)
    else:
        fmask = head_mask(fixed)
    # Dilate the metric mask so the skin/air boundary drives the fit.
    metric_mask = sitk.BinaryDilate(fmask, [3, 3, 3])
    fc, mc = centroid(fmask), centroid(mmask)

    def top(mask: sitk.Image) -> float:
        idx = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)[:, ::-1]
        pts = np.array([mask.TransformIndexToPhysicalPoint([int(v) for v in p])
                        for p in idx[:: max(1, len(idx) // 4000)]])
        return float(np.percentile(pts[:, 2], 99.5))  # LPS z: superior

    starts = [mc - fc]
    offset = mc - fc
    offset[2] = top(mmask) - top(fmask)
    starts.append(offset)
    skin_fit: sitk.AffineTransform | None = None
    if ct:
        assert surface is not None
        affine = _fit_surface_only(fixed, fmask, surface, fc, starts)
    else:
        # Pick the start with the better similarity, then rigid, then affine.
        best: tuple[float, sitk.Euler3DTransform] | None = None
        for translation in starts:
            rigid = sitk.Euler3DTransform()
            rigid.SetCenter(tuple(fc))
            rigid.SetTranslation(tuple(float(v) for v in translation))
            value = _evaluate(fixed, moving, rigid, metric_mask)
            if best is None or value < best[0]:
                best = (value, rigid)
        assert best is not None
        _run(fixed, moving, best[1], metric_mask, 100)
        affine = as_affine(best[1])
        _run(fixed, moving, affine, metric_mask, 100)
        affine = _sized_alternative(fixed, moving, fmask, mmask, metric_mask, affine,
                                    fc, mc)
        if surface is not None:
            skin_fit = fit_skin(fixed, surface, affine)

    mat = np.array(affine.GetMatrix()).reshape(3, 3)
    u, s, vt = np.linalg.svd(mat)
    rot = u @ vt
    angle = float(np.degrees(np.arccos(np.clip((np.trace(rot) - 1) / 2, -1.0, 1.0))))
    warped = sitk.Resample(mmask, fixed, affine, sitk.sitkNearestNeighbor, 0)
    dice = _dice(sitk.GetArrayViewFromImage(fmask) > 0, sitk.GetArrayViewFromImage(warped) > 0)
    return Registration(
        transform=affine,
        dice=dice,
        scales=(float(s[0]), float(s[1]), float(s[2])),
        rotation_deg=angle,
        work=fixed,
        seconds=time.perf_counter() - t0,
        surface_transform=skin_fit,
    )
