"""Face replacement on one volume: register, synthesise, blend, check.

:func:`deface_image` works on real-world intensities and returns the new values only inside
the bounding box of the replacement region, with a blend weight; the writers
(:mod:`agent.deface.dicomio`, :mod:`agent.deface.api`) quantise them into the original data
type and write only voxels whose weight is positive, so every other voxel - the whole
brain protection region in particular - keeps its original bits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from agent.deface import coarse, ct, morph, qc, synth
from agent.deface.register import (
    Registration,
    check_modality,
    fit_skin,
    one_thread,
    register_template,
    to_work_grid,
)
from agent.deface.render import skin_threshold
from agent.deface.template import (
    BRAIN,
    FACE,
    PROTECT,
    WRAP,
    Template,
    derived,
    warm_in_background,
)
from agent.errors import DefaceFailed
from agent.vocab import ProblemCode

#: Registration QC bounds.
MIN_DICE = 0.80
#: Up to 2.4 (template mm per subject mm): the corpus heads fit at 1.08-1.25, a child of
#: 0.8 adult head size near 1.6, an infant's head of 0.55-0.7 at 1.5-2.1 (a newborn's head
#: is about 0.6 of an adult's across); at 1.75 such heads were refused or left to the
#: brain fit, which replaced 40 % of a 0.7 head's face tissue.
SCALE_RANGE = (0.72, 2.4)
MAX_ROTATION_DEG = 40.0
#: At least this fraction of the template's face tissue must fall inside the field of view.
MIN_FACE_IN_FOV = 0.30
#: At least this fraction of voxels whose weight is >= 0.25 must actually change.
MIN_CHANGED = 0.85


@dataclass
class DefaceReport:
    """Numbers describing one defacing: what was replaced and how well the template fit."""

    voxels_replaced: int = 0
    voxels_in_region: int = 0
    fraction_changed: float = 0.0
    face_in_fov: float = 0.0
    dice: float = 0.0
    scales: tuple[float, float, float] = (1.0, 1.0, 1.0)
    rotation_deg: float = 0.0
    brain_voxels_changed: int = 0
    seconds_register: float = 0.0
    seconds: float = 0.0
    shape: tuple[int, int, int] = (0, 0, 0)
    notes: list[str] = field(default_factory=list)
    #: The QC gate's measurements.
    qc: qc.QCReport = field(default_factory=qc.QCReport)

    def as_dict(self) -> dict[str, object]:
        """Plain numbers for JSON output (the CLI's ``--json``, the ledger)."""
        return dataclasses.asdict(self)


@dataclass
class DefaceResult:
    """New values inside ``box`` (numpy slices of the subject's z, y, x array)."""

    box: tuple[slice, slice, slice]
    values: np.ndarray
    weight: np.ndarray
    protect: np.ndarray
    #: Voxels of the box that are tissue before or after (air replaced by air may not change).
    tissue: np.ndarray
    registration: Registration
    report: DefaceReport


class TemplateDoesNotFit(DefaceFailed):
    """The template could not be fitted: not a head, or a head the method cannot handle."""

    code = ProblemCode.DEFACE_FIT


@derived
def template_maps(template: Template) -> tuple[sitk.Image, sitk.Image]:
    """(replacement weight 0..1, protection mask 0/1) on the template grid, float32.

    The weight is the template's smooth field (it already falls to 0 towards the protection
    region); the wrap-around air behind the head is added with a short feather.
    """
    lab = template.label_array()
    weight = sitk.GetArrayFromImage(template.weight).astype(np.float32)
    wrap = ((lab & WRAP) > 0) & ((lab & PROTECT) == 0)
    if wrap.any():
        img = sitk.GetImageFromArray(wrap.astype(np.uint8))
        img.CopyInformation(template.labels)
        dist = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
            img, insideIsPositive=True, squaredDistance=False, useImageSpacing=True))
        ramp = np.clip(dist / 6.0, 0.0, 1.0)
        weight = np.maximum(weight, np.where(wrap, ramp * ramp * (3 - 2 * ramp), 0.0))
    weight[(lab & PROTECT) > 0] = 0.0
    w = sitk.GetImageFromArray(weight.astype(np.float32))
    w.CopyInformation(template.labels)
    p = sitk.GetImageFromArray(((lab & PROTECT) > 0).astype(np.float32))
    p.CopyInformation(template.labels)
    return w, p


def _sub_reference(image: sitk.Image, box: tuple[slice, slice, slice]) -> sitk.Image:
    """An empty image with the geometry of ``image`` restricted to ``box`` (z, y, x slices)."""
    start = [box[2].start, box[1].start, box[0].start]
    size = [box[2].stop - box[2].start, box[1].stop - box[1].start, box[0].stop - box[0].start]
    ref = sitk.Image([int(v) for v in size], sitk.sitkFloat32)
    ref.SetSpacing(image.GetSpacing())
    ref.SetDirection(image.GetDirection())
    ref.SetOrigin(image.TransformIndexToPhysicalPoint([int(v) for v in start]))
    return ref


def _bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice]:
    """The smallest box (z, y, x slices) holding every True voxel of a non-empty mask
    (from its projections: a tenth of the time of listing the voxels)."""
    plane: np.ndarray = np.any(mask, axis=0)
    hits = (np.flatnonzero(mask.any(axis=(1, 2))), np.flatnonzero(np.any(plane, axis=1)),
            np.flatnonzero(np.any(plane, axis=0)))
    z, y, x = (slice(int(h[0]), int(h[-1]) + 1) for h in hits)
    return z, y, x


def similarity_part(tx: sitk.AffineTransform) -> sitk.AffineTransform:
    """The closest rotation times one isotropic scale, same centre and translation."""
    mat = np.array(tx.GetMatrix()).reshape(3, 3)
    u, s, vt = np.linalg.svd(mat)
    rot = u @ vt
    if np.linalg.det(rot) < 0:  # pragma: no cover - a reflection never fits a head
        raise DefaceFailed("the template fit is mirrored", code="deface-fit")
    scale = float(np.prod(s) ** (1.0 / 3.0))
    out = sitk.AffineTransform(3)
    out.SetCenter(tx.GetCenter())
    out.SetTranslation(tx.GetTranslation())
    out.SetMatrix(tuple((rot * scale).ravel()))
    return out


def face_in_fov(image: sitk.Image, template: Template, reg: Registration) -> float:
    """Fraction of the template's face tissue that maps inside the subject's volume."""
    lab = template.label_array()
    head = sitk.GetArrayViewFromImage(template.head)
    level = 0.15 * float(np.percentile(head[head > 0], 95))
    sel = ((lab & FACE) > 0) & ((lab & PROTECT) == 0) & (head > level)
    idx = np.argwhere(sel)[:, ::-1][::7].astype(np.float64)  # x, y, z; a sample is enough
    if not len(idx):
        return 0.0
    tdir = np.array(template.head.GetDirection()).reshape(3, 3)
    pts_t = (tdir @ (idx * np.array(template.head.GetSpacing())).T).T + template.head.GetOrigin()
    tx = reg.transform
    mat = np.array(tx.GetMatrix()).reshape(3, 3)
    c = np.array(tx.GetCenter())
    t = np.array(tx.GetTranslation())
    pts_s = (np.linalg.inv(mat) @ (pts_t - c - t).T).T + c
    sdir = np.array(image.GetDirection()).reshape(3, 3)
    cidx = (np.linalg.inv(sdir) @ (pts_s - image.GetOrigin()).T).T / np.array(image.GetSpacing())
    size = np.array(image.GetSize())
    inside = np.all((cidx >= -0.5) & (cidx <= size - 0.5), axis=1)
    return float(inside.mean())


def deface_image(image: sitk.Image, template: Template, *, seed: int = 0,
                 registration: Registration | None = None, modality: str = "MR"
                 ) -> DefaceResult:
    """Replace face, ears and wrap-around air of ``image`` (real-world values, float32).

    Raises :class:`TemplateDoesNotFit` when the template does not fit (not a head, or a head
    the method cannot handle) and :class:`DefaceFailed` when a check fails; SimpleITK and
    numpy errors become DefaceFailed too (never a face delivered on an internal error).
    """
    modality = check_modality(modality)
    try:
        return _deface_image(image, template, seed, registration, modality)
    except (RuntimeError, ValueError, MemoryError) as exc:
        raise DefaceFailed(
            f"defacing failed inside the image processing ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else ''}); "
            "the series is held back", code="deface-error") from None


def content_seed(image: sitk.Image, seed: int) -> int:
    """A noise seed from the volume's bytes and geometry, plus ``seed``: the same input
    always gets the same new face, to the bit (a re-export is not a new delivery)."""
    h = hashlib.blake2b(digest_size=8)
    # The voxels' buffer itself (a bytes copy of a 256^3 head took longer than its hash).
    h.update(np.ascontiguousarray(sitk.GetArrayViewFromImage(image)).data.cast("B"))
    h.update(repr((image.GetSize(), image.GetSpacing(), image.GetOrigin(),
                   image.GetDirection())).encode())
    h.update(int(seed).to_bytes(8, "little", signed=True))
    return int.from_bytes(h.digest(), "little")


def _deface_image(image: sitk.Image, template: Template, seed: int,
                  given: Registration | None, modality: str = "MR") -> DefaceResult:
    t0 = time.perf_counter()
    warm_in_background(template)  # (the maps the region needs, while the fit runs)
    if image.GetPixelID() != sitk.sitkFloat32:  # (a cast copies the whole volume)
        image = sitk.Cast(image, sitk.sitkFloat32)
    report = DefaceReport(shape=tuple(int(v) for v in image.GetSize()[::-1]))  # type: ignore[arg-type]
    if given is None:
        reg = register_template(image, template.head, modality=modality,
                                surface=template.surface)
    else:  # the fit of another series of the study: reuse it, with this volume's data
        reg = dataclasses.replace(given, work=to_work_grid(image), seconds=0.0)
        if reg.surface_transform is None and modality == "MR":
            # The new face is placed on this volume's own skin when it can carry that fit.
            with one_thread():
                skin = fit_skin(reg.work, template.surface, reg.transform)
            if skin is not None:
                reg = dataclasses.replace(reg, surface_transform=skin)
    _check_fit(reg, report)
    report.face_in_fov = face_in_fov(image, template, reg)
    if report.face_in_fov < MIN_FACE_IN_FOV:
        raise DefaceFailed(
            f"only {100 * report.face_in_fov:.0f}% of the face lies inside the field of view; "
            "the face cannot be replaced reliably", code="deface-fov")

    box, ref, weight, protect = _region(image, template, reg)
    if modality == "CT":
        grown = ct.cavity_in_box(image, ref)
        if grown is not None:
            protect |= grown
            weight[grown] = 0.0

    # The new face is placed by the head's global linear fit (rotation, translation and the
    # head's overall proportions, learnt on the whole head's skin): a warp of the lowest
    # order, carrying no facial detail. The similarity part alone (one scale) misplaces the
    # face by several millimetres on heads whose proportions differ from the template's.
    sim = reg.face_transform
    scale = float(np.cbrt(abs(np.linalg.det(np.array(sim.GetMatrix()).reshape(3, 3)))))
    sub_img = sitk.RegionOfInterest(image, ref.GetSize(),
                                    [box[2].start, box[1].start, box[0].start])
    subject = sitk.GetArrayFromImage(sub_img)
    ct_mode = modality == "CT"
    if ct_mode:
        # Outside the reconstruction circle nothing is written.
        weight[ct.padding_mask(subject, None)] = 0.0
    imap = _calibrate(template, reg, sub_img, subject, protect, modality)
    region = weight > 0
    if ct_mode:
        level = ct.skin_level(sitk.GetArrayViewFromImage(reg.work))
    else:
        level = skin_threshold(reg.work)
    place = morph.Placement(transform=sim, scale=scale, imap=imap, level=level,
                            ct_mode=ct_mode,
                            template_levels=_template_levels(template) if ct_mode
                            else (0.0, 0.0, 0.0))
    values, tissue = morph.blend_box(image, template, place, box, ref, subject, weight,
                                     protect, content_seed(image, seed))
    report.voxels_in_region = int(region.sum())
    levels = (level - 200.0, level, level + 300.0) if ct_mode else None
    report.qc = run_qc(image, box, values, weight, level, levels, before_work=reg.work)
    qc.enforce(report.qc)
    report.seconds = time.perf_counter() - t0
    return DefaceResult(box=box, values=values, weight=weight, protect=protect,
                        tissue=tissue, registration=reg, report=report)


@derived
def _template_levels(template: Template) -> tuple[float, float, float]:
    """(skin threshold, median tissue, bright tissue) of the template's MR intensities."""
    head = sitk.GetArrayViewFromImage(template.head)
    inside = sitk.GetArrayViewFromImage(template.surface) < -1.0
    vals = head[inside]
    return (synth.SKIN_FRACTION * synth.otsu(head[head > 0]), float(np.median(vals)),
            float(np.percentile(vals, 95)))


def run_qc(image: sitk.Image, box: tuple[slice, slice, slice], values: np.ndarray,
           weight: np.ndarray, level: float, levels: tuple[float, ...] | None = None,
           before_work: sitk.Image | None = None) -> qc.QCReport:
    """The QC gate's measurements of this result (see :mod:`agent.deface.qc`).

    ``values`` are the box's new values where ``weight`` is positive and the original's
    elsewhere. The weight goes to the gate as the box alone (zero outside it)."""
    start = [box[2].start, box[1].start, box[0].start]
    new_box = sitk.GetImageFromArray(np.where(weight > 0, values, sitk.GetArrayViewFromImage(
        image)[box]).astype(np.float32))
    new_box.SetSpacing(image.GetSpacing())
    new_box.SetDirection(image.GetDirection())
    new_box.SetOrigin(image.TransformIndexToPhysicalPoint([int(v) for v in start]))
    after = sitk.Paste(image, new_box, new_box.GetSize(), [0, 0, 0], start)
    w_img = sitk.GetImageFromArray(weight.astype(np.float32, copy=False))
    w_img.CopyInformation(new_box)
    return qc.check(image, after, w_img, level, levels=levels, before_work=before_work)


def _check_fit(reg: Registration, report: DefaceReport) -> None:
    report.dice, report.scales, report.rotation_deg = reg.dice, reg.scales, reg.rotation_deg
    report.seconds_register = reg.seconds
    if reg.dice < MIN_DICE:
        raise TemplateDoesNotFit(
            f"the head template does not fit this image (overlap {reg.dice:.2f} < {MIN_DICE})")
    if not (SCALE_RANGE[0] <= min(reg.scales) and max(reg.scales) <= SCALE_RANGE[1]):
        raise TemplateDoesNotFit(
            "the head template fits only at an implausible scale "
            f"({min(reg.scales):.2f}-{max(reg.scales):.2f})")
    if reg.rotation_deg > MAX_ROTATION_DEG:
        raise TemplateDoesNotFit(
            f"the head template fits only rotated by {reg.rotation_deg:.0f} degrees")


def _region(image: sitk.Image, template: Template, reg: Registration
            ) -> tuple[tuple[slice, slice, slice], sitk.Image, np.ndarray, np.ndarray]:
    """(box, its empty reference image, weight, protection) in the subject's grid.

    Regions and protection follow the full affine fit of the head.
    """
    w_t, p_t = template_maps(template)
    # Where the weight is positive, found first on a grid 4 times coarser, then resampled at
    # full resolution inside that box (and a margin) only.
    size = np.array(image.GetSize())
    factor = 4 if size.min() >= 32 else 1
    look = sitk.Image([int(v) for v in np.maximum(size // factor, 1)], sitk.sitkUInt8)
    look.SetSpacing(tuple(float(v) * factor for v in image.GetSpacing()))
    look.SetDirection(image.GetDirection())
    look.SetOrigin(image.TransformContinuousIndexToPhysicalPoint(
        [(factor - 1) / 2.0] * 3))
    w_coarse = sitk.GetArrayFromImage(sitk.Resample(
        w_t, look, reg.transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    if not (w_coarse > 0).any():
        raise DefaceFailed("the replacement region does not overlap the image",
                           code="deface-fov")
    cbox = _bounding_box(w_coarse > 0)
    margin = 2
    lo = [max(0, (b.start - margin) * factor) for b in cbox]
    hi = [min(int(n), (b.stop + margin) * factor) for b, n in zip(cbox, size[::-1], strict=True)]
    if factor > 1 and (lo != [0, 0, 0] or hi != [int(n) for n in size[::-1]]):
        outer: tuple[slice, slice, slice] = (slice(lo[0], hi[0]), slice(lo[1], hi[1]),
                                             slice(lo[2], hi[2]))
    else:
        outer = (slice(0, int(size[2])), slice(0, int(size[1])), slice(0, int(size[0])))
    weight_outer = sitk.GetArrayFromImage(sitk.Resample(
        w_t, _sub_reference(image, outer), reg.transform, sitk.sitkLinear, 0.0,
        sitk.sitkFloat32))
    if not (weight_outer > 0).any():
        raise DefaceFailed("the replacement region does not overlap the image",
                           code="deface-fov")
    inner = _bounding_box(weight_outer > 0)
    full = [int(n) for n in size[::-1]]
    touches = any((i.start == 0 and o.start > 0) or (i.stop == o.stop - o.start and o.stop < n)
                  for o, i, n in zip(outer, inner, full, strict=True))
    if touches:  # the coarse look missed part of the region: the whole volume, then
        outer = (slice(0, full[0]), slice(0, full[1]), slice(0, full[2]))
        weight_outer = sitk.GetArrayFromImage(sitk.Resample(
            w_t, _with_geometry(image), reg.transform, sitk.sitkLinear, 0.0,
            sitk.sitkFloat32))
        inner = _bounding_box(weight_outer > 0)
    box = tuple(slice(o.start + i.start, o.start + i.stop)
                for o, i in zip(outer, inner, strict=True))
    box = (box[0], box[1], box[2])
    ref = _sub_reference(image, box)
    weight = weight_outer[inner]
    del weight_outer
    # Protection: any trace of the (linearly interpolated) protection mask protects.
    protect = sitk.GetArrayFromImage(sitk.Resample(
        p_t, ref, reg.transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)) > 0
    # One more voxel all round: the margin holds whatever the grid's resolution.
    protect = coarse.dilate_ball(protect)
    weight[protect] = 0.0
    return box, ref, weight, protect


def _with_geometry(image: sitk.Image) -> sitk.Image:
    ref = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    ref.CopyInformation(image)
    return ref


def _calibrate(template: Template, reg: Registration, sub_img: sitk.Image,
               subject: np.ndarray, protect: np.ndarray, modality: str = "MR"
               ) -> synth.IntensityMap:
    """Learn template -> subject intensities and the subject's noise level.

    Intensities: quantiles over the whole head outside the brain on the low-resolution work
    grid (the face region alone can be mostly air). Noise: the high-pass residual of the
    full-resolution subject near the region, in its flattest places only (elsewhere the
    residual is anatomy, not noise), separately in air and in tissue.
    """
    work = reg.work
    t_work = sitk.GetArrayFromImage(sitk.Resample(
        template.head, work, reg.transform, sitk.sitkLinear, -1.0, sitk.sitkFloat32))
    brain = sitk.GetArrayFromImage(sitk.Resample(template.labels, work, reg.transform,
                                                 sitk.sitkNearestNeighbor, BRAIN))
    s_work = sitk.GetArrayFromImage(work)
    sel = (t_work >= 0) & ((brain & BRAIN) == 0)
    try:
        levels, values = synth.quantile_levels(t_work[sel], s_work[sel])
    except ValueError:
        raise DefaceFailed("too little head tissue to match the template's intensities",
                           code="deface-fit") from None
    t_thr = synth.SKIN_FRACTION * synth.otsu(t_work[sel])
    s_thr = synth.SKIN_FRACTION * synth.otsu(s_work[sel])
    if modality == "CT":
        s_thr = ct.skin_level(s_work)
    # A central block of at most ~64^3 voxels is plenty for two noise levels.
    size = np.array(sub_img.GetSize())
    block = np.minimum(size, 64)
    start = (size - block) // 2
    roi = sitk.RegionOfInterest(sub_img, [int(v) for v in block], [int(v) for v in start])
    sl = tuple(slice(int(a), int(a + b)) for a, b in zip(start[::-1], block[::-1], strict=True))
    residual = sitk.GetArrayFromImage(synth.highpass(roi))
    grad = sitk.GetArrayFromImage(sitk.GradientMagnitudeRecursiveGaussian(
        roi, float(np.mean(roi.GetSpacing()))))
    sub, keep = subject[sl], ~protect[sl]
    noise_air = synth.flat_noise(residual, grad, keep & (sub < s_thr))
    noise_tissue = synth.flat_noise(residual, grad, keep & (sub >= s_thr))
    if modality == "CT":
        # CT: air and tissue noise differ; the table's first and last entries carry them.
        air = float(np.median(s_work[s_work < s_thr])) if (s_work < s_thr).any() else -1000.0
        return synth.IntensityMap(np.array([0.0, 1.0]), np.array([air, 40.0]),
                                  np.array([noise_air, noise_tissue]))
    # MR noise is the same in air and tissue (Rayleigh in air: its spread is about 0.65 of
    # the Gaussian sigma). The air gives the cleaner estimate; fine anatomy inflates the
    # tissue one. A masked (noise-free) background leaves only the tissue estimate, halved.
    if noise_air > 0:
        noise_tissue = min(noise_tissue, noise_air / 0.65)
    else:
        noise_tissue *= 0.5
    noise = np.where(levels < t_thr, noise_air, noise_tissue)
    return synth.IntensityMap(levels, values, noise)


def check_output(original: np.ndarray, output: np.ndarray, result: DefaceResult) -> None:
    """Fail closed unless the brain is bit-identical and the region was really replaced.

    ``original`` and ``output`` are the full arrays in the stored data type.
    """
    box = result.box
    diff_all = original != output
    diff = diff_all[box]
    region = result.weight > 0
    changed_outside = int(np.count_nonzero(diff_all)) - int(np.count_nonzero(diff & region))
    del diff_all
    brain_changed = int(np.count_nonzero(diff & result.protect))
    result.report.brain_voxels_changed = brain_changed
    if brain_changed or changed_outside:
        raise DefaceFailed(
            f"internal error: {brain_changed + changed_outside} voxels outside the replacement "
            "region changed; the series is held back", code="deface-qc")
    strong = (result.weight >= 0.25) & result.tissue
    result.report.voxels_replaced = int(np.count_nonzero(diff))
    frac = float(diff[strong].mean()) if strong.any() else 0.0
    result.report.fraction_changed = frac
    if frac < MIN_CHANGED:
        raise DefaceFailed(
            f"only {100 * frac:.0f}% of the face region changed after defacing "
            f"(at least {100 * MIN_CHANGED:.0f}% required)", code="deface-qc")
