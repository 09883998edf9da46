"""Defacing from a mapped region: a smooth, intensity- and noise-matched surrogate face.

For the series that are not fine structural volumes - EPI, DWI and ASL at 3-4 mm, thick 2-D
stacks, short stacks, single slices in any orientation - the study's fit (or the series'
own) places the template's face-and-ears region in each block's native grid. Inside it the
voxels are replaced by the template head, smoothed to the block's resolution and mapped to
this volume's intensities (quantiles over the head outside the brain, learnt on the
volume itself, air and tissue separately, as :func:`~agent.deface.synth.quantile_levels`
does), plus noise at the volume's own noise level, blended with the feathered region
weight. Voxels of the brain protection region are never written.

Everything that depends only on a block's geometry (region weight, protection, template
intensities) is computed once per geometry and reused by every volume of a 4-D series.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import SimpleITK as sitk

from agent.deface import synth
from agent.deface.core import DefaceReport, DefaceResult, similarity_part
from agent.deface.register import Registration, head_mask
from agent.deface.template import BRAIN, PROTECT, REPLACE, Template
from agent.errors import DefaceFailed

#: Air outside the template head reads below this (the template's own background is 0).
_TEMPLATE_AIR = 1.0
_CACHE_SIZE = 16


def _label_image(template: Template, bits: int) -> sitk.Image:
    img = sitk.GetImageFromArray(((template.label_array() & bits) > 0).astype(np.float32))
    img.CopyInformation(template.labels)
    return img


#: Width (mm) of the feathered edge of the surrogate's region. Shorter than the template
#: face's: at 3-4 mm voxels a 10 mm feather would leave the eyes, which lie a few
#: millimetres from the brain's protection margin, mostly unreplaced.
FEATHER_MM = 4.0


@lru_cache(maxsize=4)
def region_weight(template: Template, bits: int = REPLACE) -> sitk.Image:
    """The replacement weight (0..1) on the template grid: 0 outside the region (the
    label ``bits``) and in the protection region, rising to 1 at :data:`FEATHER_MM`
    inside (smoothstep)."""
    lab = template.label_array()
    region = ((lab & bits) > 0) & ((lab & PROTECT) == 0)
    img = sitk.GetImageFromArray(region.astype(np.uint8))
    img.CopyInformation(template.labels)
    dist = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        img, insideIsPositive=True, squaredDistance=False, useImageSpacing=True))
    half = float(min(template.labels.GetSpacing())) / 2.0
    ramp = np.clip((dist + half) / FEATHER_MM, 0.0, 1.0)
    weight = np.where(region, ramp * ramp * (3.0 - 2.0 * ramp), 0.0).astype(np.float32)
    out = sitk.GetImageFromArray(weight)
    out.CopyInformation(template.labels)
    return out


@dataclass
class RegionMaps:
    """The region in one block's grid: a box and, inside it, weight, protection and the
    smoothed template intensities."""

    box: tuple[slice, slice, slice]
    weight: np.ndarray
    protect: np.ndarray
    template: np.ndarray


class Surrogate:
    """Region maps per block geometry, for one fit and one template."""

    def __init__(self, template: Template, transform: sitk.AffineTransform) -> None:
        self.template = template
        self.transform = transform
        self.placement = similarity_part(transform)
        self._weight = region_weight(template)
        self._protect = _label_image(template, PROTECT)
        self._cache: OrderedDict[tuple[object, ...], RegionMaps | None] = OrderedDict()
        self._geometry: dict[tuple[object, ...], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def calibrate(self, image: sitk.Image) -> Calibration:
        """:func:`calibrate` for one volume, with what depends only on the geometry (the
        template resampled, the air away from the head) computed once per geometry."""
        key = ("calibration", image.GetSize(), image.GetSpacing(), image.GetOrigin(),
               image.GetDirection())
        cached = self._geometry.get(key)
        if cached is None:
            t_vals = sitk.GetArrayFromImage(sitk.Resample(
                self.template.head, image, self.transform, sitk.sitkLinear, -1.0,
                sitk.sitkFloat32))
            brain = sitk.GetArrayFromImage(sitk.Resample(
                _label_image(self.template, BRAIN), image, self.transform,
                sitk.sitkNearestNeighbor, 1.0))
            cached = (t_vals, (t_vals >= 0) & (brain <= 0), _air(image))
            self._geometry = {key: cached}  # one geometry at a time: 4-D series come in order
        t_vals, outside, air = cached
        subject = sitk.GetArrayFromImage(image)
        return calibration(t_vals, subject, outside, _noise_in(subject, air))

    def maps(self, block: sitk.Image) -> RegionMaps | None:
        """The region in ``block``'s grid; None when the region misses the block."""
        key = (block.GetSize(), block.GetSpacing(), block.GetOrigin(), block.GetDirection())
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        maps = self._compute(block)
        self._cache[key] = maps
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return maps

    def _compute(self, block: sitk.Image) -> RegionMaps | None:
        ref = sitk.Image(block.GetSize(), sitk.sitkFloat32)
        ref.CopyInformation(block)
        weight = sitk.GetArrayFromImage(sitk.Resample(
            self._weight, ref, self.transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
        # Any trace of the (linearly interpolated) protection region protects.
        protect = sitk.GetArrayFromImage(sitk.Resample(
            self._protect, ref, self.transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)) > 0
        weight[protect] = 0.0
        if not (weight > 0).any():
            return None
        idx = np.argwhere(weight > 0)
        lo, hi = idx.min(0), idx.max(0) + 1
        box = (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])),
               slice(int(lo[2]), int(hi[2])))
        sigma = float(max(block.GetSpacing()[:2]))
        head = smoothed_head(self.template, round(sigma, 1))
        tvals = sitk.GetArrayFromImage(sitk.Resample(
            head, ref, self.placement, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
        return RegionMaps(box=box, weight=weight[box], protect=protect[box],
                          template=tvals[box])


_SMOOTHED: dict[tuple[int, float], sitk.Image] = {}


def smoothed_head(template: Template, sigma: float) -> sitk.Image:
    """The template head blurred to about a block's in-plane resolution (cached)."""
    key = (id(template), sigma)
    if key not in _SMOOTHED:
        if len(_SMOOTHED) > 8:
            _SMOOTHED.clear()
        _SMOOTHED[key] = sitk.SmoothingRecursiveGaussian(template.head, max(sigma, 1.0))
    return _SMOOTHED[key]


@dataclass(frozen=True)
class Calibration:
    """Template intensity -> this volume's intensity, its noise, its skin level."""

    levels: np.ndarray
    values: np.ndarray
    noise: float
    skin: float


def calibrate(image: sitk.Image, transform: sitk.AffineTransform, template: Template
              ) -> Calibration:
    """Learn the intensity map and noise of one volume (its regular fit image)."""
    return Surrogate(template, transform).calibrate(image)


def calibration(template: np.ndarray, subject: np.ndarray, outside_brain: np.ndarray,
                noise: float) -> Calibration:
    """Quantile map template -> subject over ``outside_brain`` (everything, when that is
    almost nothing), with the subject's skin level."""
    sel = outside_brain & np.isfinite(subject)
    if sel.sum() < 50:  # the image holds almost nothing outside the brain: use it all
        sel = (template >= 0) & np.isfinite(subject)
    try:
        levels, values = synth.quantile_levels(template[sel], subject[sel])
    except ValueError:
        raise DefaceFailed("too little of the head is in this series to match the "
                           "template's intensities", code="deface-fit") from None
    skin = synth.SKIN_FRACTION * synth.otsu(subject[sel])
    return Calibration(levels=levels, values=values, noise=noise, skin=skin)


def _air(image: sitk.Image) -> np.ndarray:
    """Voxels of air well away (6 mm) from the head; none when no head is found."""
    try:
        mask = head_mask(image)
    except DefaceFailed:
        return np.zeros(sitk.GetArrayViewFromImage(image).shape, bool)
    radius = [max(1, int(round(6.0 / s))) if n > 2 else 0
              for s, n in zip(image.GetSpacing(), image.GetSize(), strict=True)]
    return sitk.GetArrayFromImage(sitk.BinaryDilate(mask, radius)) == 0


def _noise_in(subject: np.ndarray, air: np.ndarray) -> float:
    """Noise level (Gaussian sigma) from the air away from the head: magnitude MR noise in
    air is Rayleigh-distributed, its robust spread about 0.65 sigma. A masked background
    (all zeros) has none, and none is added."""
    sample = subject[air]
    if sample.size < 200:
        return 0.0
    mad = float(np.median(np.abs(sample - np.median(sample))))
    return 1.4826 * mad / 0.65


def fill(block: sitk.Image, maps: RegionMaps, calib: Calibration, seed: int,
         registration: Registration) -> DefaceResult:
    """New values for one block inside its region (a DefaceResult for the writers)."""
    subject = sitk.GetArrayFromImage(block)[maps.box]
    region = maps.weight > 0
    mean = np.interp(maps.template, calib.levels, calib.values).astype(np.float32)
    rng = np.random.default_rng(seed)
    new = mean + np.float32(calib.noise) * rng.standard_normal(mean.shape, np.float32)
    values = subject.copy()
    values[region] += maps.weight[region] * (new[region] - subject[region])
    tissue = (subject > calib.skin) | (values > calib.skin)
    report = DefaceReport(voxels_in_region=int(region.sum()),
                          shape=tuple(int(v) for v in block.GetSize()[::-1]))  # type: ignore[arg-type]
    return DefaceResult(box=maps.box, values=values.astype(np.float32), weight=maps.weight,
                        protect=maps.protect, tissue=tissue, registration=registration,
                        report=report)
