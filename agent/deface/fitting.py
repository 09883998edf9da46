"""Which volume the template is fitted on, and the fit with its quality checks.

A study's fit is best found on a fine volume that covers the whole head (a 3-D T1); a
series without such a partner is fitted on its own best volume. :func:`score` ranks
volumes as fit sources (finer voxels and more coverage score higher); :func:`fittable`
says whether a volume can carry a fit at all (enough slices and coverage in every
direction). :func:`fit_volume` fits the template head with
:func:`~agent.deface.register.register_template` - and, on anything but a fine whole-head
volume, also the template brain (:mod:`agent.deface.brainfit`, for EPI that shows little
but the brain) - and checks the result:

* the overlap of head masks is measured only where both images have data - the subject's
  field of view *and* the template's (a long field of view down to the shoulders is not a
  worse fit of the head);
* the overlap, the scales and the rotation must pass the defacing core's bounds;
* the brain of the fitted template must land on tissue of the subject.

A fit that fails any of these is no fit: the caller decides what that means (another
volume, the study's fit, waiting for a partner, quarantine).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import SimpleITK as sitk

from agent.deface import core
from agent.deface.brainfit import brain_image, brain_mask, fit_brain, metric
from agent.deface.ct import head_mask as ct_head_mask
from agent.deface.masks import tissue_mask, work_grid
from agent.deface.presence import coherent_tissue
from agent.deface.register import Registration, register_template, to_work_grid
from agent.deface.studyfit import Fit
from agent.deface.template import (
    BRAIN,
    Template,
    derived,
    load_template,
    warm_in_background,
)
from agent.deface.volumes import Volume
from agent.errors import DefaceFailed

log = logging.getLogger(__name__)

#: A volume carries a fit when it covers at least this much (mm) in every direction with
#: at least this many slices.
MIN_COVERAGE_MM = 80.0
MIN_FIT_SLICES = 10
#: Coarser than this (mm, geometric mean voxel edge): never a fit source.
MAX_VOXEL_MM = 5.5
#: Fraction of the fitted template brain (inside the field of view) that must be tissue.
MIN_BRAIN_ON_TISSUE = 0.85


@dataclass(frozen=True)
class Candidate:
    volume: Volume
    score: float


def voxel_edge(volume: Volume) -> float:
    dr, dc = volume.plane.spacing
    dz = max(volume.median_step(), volume.plane.thickness, 0.1)
    return float((dr * dc * dz) ** (1.0 / 3.0))


def score(volume: Volume) -> float:
    """Quality as a fit source: 1 / voxel edge, times the covered fraction of a head."""
    ext = volume.extent_mm()
    coverage = float(np.prod([min(1.0, e / 180.0) for e in ext])) ** (1.0 / 3.0)
    return coverage / voxel_edge(volume)


def fittable(volume: Volume) -> bool:
    ext = volume.extent_mm()
    return (len(volume.slices) >= MIN_FIT_SLICES and min(ext) >= MIN_COVERAGE_MM
            and voxel_edge(volume) <= MAX_VOXEL_MM)


def candidates(volumes: list[Volume]) -> list[Candidate]:
    """Fittable volumes, best first (the first volume of a time series breaks ties)."""
    out = [Candidate(v, score(v)) for v in volumes if fittable(v) and not v.projection]
    order = {id(v): i for i, v in enumerate(volumes)}
    out.sort(key=lambda c: (-round(c.score, 3), order[id(c.volume)]))
    return out


@lru_cache(maxsize=2)
def template_id(template: Template) -> str:
    """A short hash of the template's voxels: a stored fit belongs to one template."""
    h = hashlib.sha256(sitk.GetArrayViewFromImage(template.head).tobytes())
    h.update(template.label_array().tobytes())
    return h.hexdigest()[:16]


def _dice_where_both(fixed: sitk.Image, fmask: sitk.Image, template: Template,
                     tmask: sitk.Image, tx: sitk.Transform) -> float:
    """Dice of the subject's tissue and the fitted template mask ``tmask`` (on the
    template's work grid), over the subject's voxels that map inside the template's grid."""
    ones = sitk.Image(template.head.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(template.head)
    # Copies, not views: a view of an image nobody holds reads freed memory.
    inside = sitk.GetArrayFromImage(
        sitk.Resample(ones, fixed, tx, sitk.sitkNearestNeighbor, 0)) > 0
    warped = sitk.GetArrayFromImage(
        sitk.Resample(tmask, fixed, tx, sitk.sitkNearestNeighbor, 0)) > 0
    subject = sitk.GetArrayViewFromImage(fmask) > 0
    a, b = subject & inside, warped & inside
    total = float(a.sum() + b.sum())
    return 2.0 * float((a & b).sum()) / total if total else 0.0


@derived
def template_head_mask(template: Template) -> sitk.Image:
    return tissue_mask(to_work_grid(template.head))


def brain_on_tissue(fixed: sitk.Image, fmask: sitk.Image, tx: sitk.Transform,
                    template: Template) -> float:
    """Fraction of the fitted template's brain, inside the field of view, that falls on
    the subject's tissue (a fit that puts the brain in air is wrong)."""
    tissue = sitk.GetArrayViewFromImage(fmask) > 0
    brain = sitk.GetImageFromArray(((template.label_array() & BRAIN) > 0).astype(np.uint8))
    brain.CopyInformation(template.labels)
    mapped = sitk.GetArrayFromImage(  # (a copy: a view of a temporary reads freed memory)
        sitk.Resample(brain, fixed, tx, sitk.sitkNearestNeighbor, 0)) > 0
    return float(tissue[mapped].mean()) if mapped.any() else 0.0


def shape_of(tx: sitk.AffineTransform) -> tuple[tuple[float, float, float], float]:
    """(singular values, rotation in degrees) of a transform's linear part."""
    mat = np.array(tx.GetMatrix()).reshape(3, 3)
    u, sv, vt = np.linalg.svd(mat)
    rot = u @ vt
    angle = float(np.degrees(np.arccos(np.clip((np.trace(rot) - 1) / 2, -1.0, 1.0))))
    return (float(sv[0]), float(sv[1]), float(sv[2])), angle


def check(dice: float, scales: tuple[float, float, float], rotation: float) -> str:
    """Why a fit fails the core's bounds ("" when it passes)."""
    if dice < core.MIN_DICE:
        return f"the head template does not fit (overlap {dice:.2f} < {core.MIN_DICE})"
    if not (core.SCALE_RANGE[0] <= min(scales) and max(scales) <= core.SCALE_RANGE[1]):
        return (f"the head template fits only at an implausible scale "
                f"({min(scales):.2f}-{max(scales):.2f})")
    if rotation > core.MAX_ROTATION_DEG:
        return f"the head template fits only rotated by {rotation:.0f} degrees"
    return ""


@dataclass(frozen=True)
class FitResult:
    fit: Fit | None
    why: str = ""
    #: How well the fitted template explains the image (:func:`_agreement`); measured
    #: only where it decides between a head and a brain fit (0.0 otherwise).
    agreement: float = 0.0
    #: The fitted transform as the registration found it (the agreement is measured on it).
    tx: sitk.Transform | None = dataclasses.field(default=None, compare=False, repr=False)


_MEMO: OrderedDict[str, FitResult] = OrderedDict()
_MEMO_SIZE = 16
_MEMO_LOCK = threading.Lock()


def _memo_key(image: sitk.Image, template: Template, modality: str) -> str:
    # The voxels' buffer itself, not a bytes copy of it (the same digest).
    h = hashlib.sha256(np.ascontiguousarray(sitk.GetArrayViewFromImage(image)).data.cast("B"))
    h.update(repr((image.GetSpacing(), image.GetOrigin(), image.GetDirection())).encode())
    h.update(template_id(template).encode())
    h.update(modality.encode())
    return h.hexdigest()


def fit_volume(volume: Volume, *, source: str, template: Template | None = None,
               modality: str = "MR") -> FitResult:
    """Fit the template head to ``volume``; a fit that fails a check is returned as None
    with the reason (see the module docstring).

    The same voxels in the same place give the same fit (registration is deterministic):
    recent results are remembered, so a series tried again - after waiting for a partner,
    or exported twice - is not fitted twice.
    """
    template = template or load_template()
    warm_in_background(template)  # (while this volume is fitted)
    image = fit_source(volume.fit_image())
    key = _memo_key(image, template, modality)
    with _MEMO_LOCK:
        if key in _MEMO:
            _MEMO.move_to_end(key)
            found = _MEMO[key]
            return _named(found, source) if found.fit is not None else found
    result = _fit(volume, image, source, template, modality)
    with _MEMO_LOCK:
        _MEMO[key] = result
        while len(_MEMO) > _MEMO_SIZE:
            _MEMO.popitem(last=False)
    return result


def fit_source(image: sitk.Image) -> sitk.Image:
    """The image the template is fitted to. A phase or field map alone (noise across its
    range around the head, :func:`~agent.deface.presence.coherent_tissue`) shows the head
    only as the region where its values are smooth: it is fitted by that silhouette,
    filled and softened to the template's scale; anything else as it is."""
    tissue = coherent_tissue(image)
    if tissue is None:
        return image
    filled = sitk.BinaryFillhole(tissue)
    soft = sitk.SmoothingRecursiveGaussian(sitk.Cast(filled, sitk.sitkFloat32) * 1000.0,
                                           2.0)
    soft.CopyInformation(image)
    return soft


#: Whole head: at least this much (mm) in every direction, no voxel side above 3 mm.
WHOLE_HEAD_MM = 160.0


def whole_head(volume: Volume) -> bool:
    sides = (*volume.plane.spacing, volume.median_step())
    return min(volume.extent_mm()) >= WHOLE_HEAD_MM and max(sides) <= 3.0


def _fit(volume: Volume, image: sitk.Image, source: str, template: Template,
         modality: str) -> FitResult:
    """The head fit, and on anything but a fine whole-head volume also the brain fit
    (:mod:`agent.deface.brainfit`); each checked as the module docstring says.

    When both pass, the one whose template explains the image better wins: the brain
    template's mutual information with the image under the brain fit against the head
    template's under the head fit. On the corpus' ASL and on Colin27 made EPI-like the
    brain wins by 1.2-1.8 times; on T1 slabs with their scalp the head wins (0.66-0.79).
    """
    head = _try(volume, image, template, "head", modality)
    if modality == "CT":  # bone and air in HU: the head fit only (the core's CT path)
        return _named(head, source) if head.fit is not None else head
    if head.fit is not None and whole_head(volume):
        return _named(head, source)
    brain = _try(volume, image, template, "brain", modality)
    if head.fit is not None and brain.fit is not None:
        # The agreements are measured only here, where both fits pass and they decide
        # (each costs a metric evaluation over the whole work grid).
        head = _measured(head, image, template.head)
        brain = _measured(brain, image, brain_image(template))
        chosen = brain if brain.agreement <= head.agreement else head
        log.info("head and brain fits both pass; the %s template explains the image better",
                 "brain" if chosen is brain else "head")
        return _named(chosen, source)
    if head.fit is not None:
        return _named(head, source)
    if brain.fit is not None:
        return _named(brain, source)
    return FitResult(None, head.why)


def _measured(result: FitResult, image: sitk.Image, moving: sitk.Image) -> FitResult:
    assert result.tx is not None  # every passing fit carries its transform
    return dataclasses.replace(result, agreement=_agreement(image, result.tx, moving))


def _agreement(image: sitk.Image, tx: sitk.Transform, moving: sitk.Image) -> float:
    """Mattes mutual information (negative: lower is better) of ``moving`` under ``tx``
    with the image, over its tissue."""
    fixed = work_grid(image)
    return metric(fixed, moving, tx, sitk.BinaryDilate(tissue_mask(fixed), [2, 2, 2]))


def _named(result: FitResult, source: str) -> FitResult:
    assert result.fit is not None
    return dataclasses.replace(result, fit=dataclasses.replace(result.fit, source=source))


def _try(volume: Volume, image: sitk.Image, template: Template, method: str,
         modality: str) -> FitResult:
    try:
        if method == "head":
            tx = register_template(image, template.head, modality=modality).transform
            tmask = template_head_mask(template)
        else:
            tx = fit_brain(image, template)
            tmask = brain_mask(template)
        fixed = work_grid(image)
        # CT: the head as the CT path finds it (HU, skull filled), not an MR tissue mask.
        fmask = ct_head_mask(image, fixed) if modality == "CT" else tissue_mask(fixed)
        dice = _dice_where_both(fixed, fmask, template, tmask, tx)
        on_tissue = brain_on_tissue(fixed, fmask, tx, template)
    except DefaceFailed as exc:
        return FitResult(None, str(exc))
    except (RuntimeError, ValueError) as exc:
        return FitResult(None, f"the {method} fit failed ({type(exc).__name__})")
    scales, rotation = shape_of(tx)
    why = check(dice, scales, rotation)
    if not why and on_tissue < MIN_BRAIN_ON_TISSUE:
        why = (f"the fitted template's brain lies on tissue for only {100 * on_tissue:.0f}% "
               "of its volume")
    log.info("%s fit on %s: overlap %.2f, brain on tissue %.2f, scales %.2f-%.2f, rotation "
             "%.0f deg%s", method, volume.label or "volume", dice, on_tissue, min(scales),
             max(scales), rotation, f": {why}" if why else "")
    if why:
        return FitResult(None, why)
    seen = face_in_fov(image, template, tx)
    return FitResult(Fit.from_transform(
        tx, dice=dice, scales=scales, rotation_deg=rotation, score=score(volume),
        face_seen=seen, method=method, template=template_id(template)), tx=tx)


def face_in_fov(image: sitk.Image, template: Template, tx: sitk.AffineTransform) -> float:
    """The core's measure of how much of the face lies in the view."""
    reg = Registration(transform=tx, dice=1.0, scales=(1.0, 1.0, 1.0), rotation_deg=0.0,
                       work=image)
    return core.face_in_fov(image, template, reg)
