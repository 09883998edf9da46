"""Fitting the template by its brain: for EPI, DWI and ASL that show little but the brain.

Fat-suppressed echo-planar images show the brain brightly and the scalp and face hardly at
all; the head template's skin surface has nothing to lock onto, and an affine fit of the
whole head to such a slab slides and squashes (errors of 5-8 cm measured on the corpus'
ASL against the fit of its own study's 3-D T1). Fitting the template's *brain* (its head
image masked to the MNI brain) with a similarity transform - rotation, translation, one
scale - puts the brain on the brain, and the face follows the template's anatomy: about
5 mm of error at the face on Colin27 made EPI-like (brain only, 3.5 mm, slabs of 100 to
130 mm) and 7 mm on the corpus' ASL. Several starts along the head-foot axis are tried,
because a slab could lie anywhere between the skull base and the vertex.

Only a starting point for the checks in :mod:`agent.deface.fitting`: the fit must put the
template brain on the subject's tissue, and the subject's tissue inside the template brain.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import SimpleITK as sitk

from agent.deface.masks import tissue_mask, work_grid
from agent.deface.register import as_affine, centroid, to_work_grid
from agent.deface.template import BRAIN, Template
from agent.errors import DefaceFailed

#: Offsets (mm) along the head-foot axis tried as starts; the best two are optimised.
STARTS_MM = (-40.0, -20.0, 0.0, 20.0, 40.0)
KEEP = 2
ITERATIONS = 80


@lru_cache(maxsize=2)
def brain_image(template: Template) -> sitk.Image:
    """The template head with everything but the brain faded out (2 mm soft edge)."""
    brain = sitk.GetImageFromArray(((template.label_array() & BRAIN) > 0).astype(np.float32))
    brain.CopyInformation(template.labels)
    return sitk.Multiply(template.head, sitk.SmoothingRecursiveGaussian(brain, 2.0))


@lru_cache(maxsize=2)
def brain_mask(template: Template) -> sitk.Image:
    """The template brain's tissue on the work grid (uint8)."""
    return tissue_mask(to_work_grid(brain_image(template)))


def metric(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform,
           mask: sitk.Image) -> float:
    """Mattes mutual information of ``moving`` under ``transform`` with ``fixed`` over
    ``mask`` (negative: lower is better); 0 when they do not overlap."""
    try:
        return float(_method(mask, transform, in_place=False).MetricEvaluate(fixed, moving))
    except RuntimeError:
        return 0.0


def _method(mask: sitk.Image, transform: sitk.Transform, *, in_place: bool = True
            ) -> sitk.ImageRegistrationMethod:
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricFixedMask(mask)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetInitialTransform(transform, inPlace=in_place)
    return reg


def fit_brain(image: sitk.Image, template: Template) -> sitk.AffineTransform:
    """Subject physical -> template physical, as an affine transform (see module doc)."""
    fixed = work_grid(image)
    moving = brain_image(template)
    fmask = tissue_mask(fixed)
    metric_mask = sitk.BinaryDilate(fmask, [2, 2, 2])
    fc = centroid(fmask, "no tissue found in the image")
    mc = centroid(brain_mask(template), "no tissue found in the image")
    starts: list[tuple[float, sitk.Similarity3DTransform]] = []
    for dz in STARTS_MM:
        tx = sitk.Similarity3DTransform()
        tx.SetCenter(tuple(float(v) for v in fc))
        offset = mc - fc
        offset[2] += dz
        tx.SetTranslation(tuple(float(v) for v in offset))
        starts.append((metric(fixed, moving, tx, metric_mask), tx))
    if not starts:
        raise DefaceFailed("the template brain cannot be compared with this image",
                           code="deface-fit")
    starts.sort(key=lambda s: s[0])
    best: tuple[float, sitk.Similarity3DTransform] | None = None
    for _, tx in starts[:KEEP]:
        reg = _method(metric_mask, tx)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(0.25, seed=7)
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=2.0, minStep=0.02, numberOfIterations=ITERATIONS,
            relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
        reg.SetOptimizerScalesFromPhysicalShift()
        try:
            reg.Execute(fixed, moving)
        except RuntimeError:
            continue
        value = float(reg.GetMetricValue())
        if best is None or value < best[0]:
            best = (value, tx)
    if best is None:
        raise DefaceFailed("the template brain could not be fitted", code="deface-fit")
    return as_affine(best[1])
