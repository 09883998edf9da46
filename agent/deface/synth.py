"""The replacement face: template intensities mapped to the subject's, with its noise.

Intensity matching is a look-up table from template intensity to the subject's median
intensity at the same place after registration, learnt over the whole head outside the
brain. It is a global statistic (a few dozen numbers), so it carries the subject's contrast
(T1, T2, FLAIR, PD) but nothing of the shape of their face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

#: Number of equal-width template intensity bins in the look-up table.
BINS = 40
#: The skin threshold is this fraction of Otsu's threshold (also used by the renderer).
SKIN_FRACTION = 0.6
#: Fewer calibration samples than this in a bin: its value is interpolated from the others.
MIN_PER_BIN = 20


@dataclass(frozen=True)
class IntensityMap:
    """Template intensity -> subject intensity and subject noise level (per bin)."""

    template_levels: np.ndarray
    subject_levels: np.ndarray
    noise_levels: np.ndarray

    def apply(self, template_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mapped intensity, noise standard deviation) for each template value."""
        mean = np.interp(template_values, self.template_levels, self.subject_levels)
        noise = np.interp(template_values, self.template_levels, self.noise_levels)
        return mean.astype(np.float32), noise.astype(np.float32)


def learn_intensity_map(
    template_values: np.ndarray, subject_values: np.ndarray, residuals: np.ndarray
) -> IntensityMap:
    """Fit the look-up table on paired samples (1-D arrays of equal length).

    ``residuals`` are the subject's high-pass residuals at the same samples; their robust
    spread per bin is the noise level to synthesise there.
    """
    t = np.asarray(template_values, np.float64)
    s = np.asarray(subject_values, np.float64)
    r = np.asarray(residuals, np.float64)
    # Equal-width bins: the air alone would fill most equal-count bins.
    lo, hi = float(t.min()), float(np.percentile(t, 99.5))
    edges = np.unique(np.concatenate([np.linspace(lo, hi, BINS + 1), [float(t.max())]]))
    which = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, len(edges) - 2)
    levels, values, noises = [], [], []
    for b in range(len(edges) - 1):
        sel = which == b
        if sel.sum() < MIN_PER_BIN:
            continue
        levels.append(float(np.median(t[sel])))
        values.append(float(np.median(s[sel])))
        mad = float(np.median(np.abs(r[sel] - np.median(r[sel]))))
        noises.append(1.4826 * mad)
    if len(levels) < 3:
        raise ValueError("too few calibration samples")
    order = np.argsort(levels)
    return IntensityMap(
        template_levels=np.asarray(levels)[order],
        subject_levels=np.asarray(values)[order],
        noise_levels=np.asarray(noises)[order],
    )


def otsu(values: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold of a sample (robust range: the top 0.5 % is clipped)."""
    hi = float(np.percentile(values, 99.5))
    hist, edges = np.histogram(np.clip(values, None, hi), bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centres[int(np.argmax(between))])


def quantile_levels(template_values: np.ndarray, subject_values: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Monotonic template -> subject table by matching quantiles over the same region,
    separately below and above each image's skin threshold (a fraction of Otsu's).

    Matching the two populations separately pins the skin surface: the template's skin
    iso-surface becomes the subject's, whatever the partial-volume blur of either image.
    It does not depend on how exactly the template fits voxel by voxel.
    """
    t_thr = SKIN_FRACTION * otsu(template_values)
    s_thr = SKIN_FRACTION * otsu(subject_values)
    levels: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for t_sel, s_sel, q in (
        (template_values < t_thr, subject_values < s_thr, np.linspace(0, 100, 21)),
        (template_values >= t_thr, subject_values >= s_thr,
         np.concatenate([np.linspace(0, 90, 31), np.linspace(91, 100, 19)])),
    ):
        if t_sel.sum() < 10 or s_sel.sum() < 10:
            raise ValueError("too few air or tissue samples")
        levels.append(np.percentile(template_values[t_sel], q))
        values.append(np.percentile(subject_values[s_sel], q))
    tq, sq = np.concatenate(levels), np.concatenate(values)
    lv, index = np.unique(tq, return_inverse=True)
    out = np.bincount(index, weights=sq) / np.bincount(index)
    if len(lv) < 3:
        raise ValueError("too few distinct template intensities")
    return lv, np.maximum.accumulate(out)


def flat_noise(residual: np.ndarray, gradient: np.ndarray, where: np.ndarray) -> float:
    """Robust spread of ``residual`` in the flattest third of ``where`` (0 if too few)."""
    if where.sum() < 200:
        return 0.0
    g = gradient[where]
    r = residual[where][g <= np.percentile(g, 33)]
    return float(1.4826 * np.median(np.abs(r - np.median(r))))


def highpass(image: sitk.Image, sigma_voxels: float = 1.0) -> sitk.Image:
    """Image minus its Gaussian-smoothed self: mostly noise, a little edge."""
    sigma = [sigma_voxels * s for s in image.GetSpacing()]
    return sitk.Subtract(image, sitk.SmoothingRecursiveGaussian(image, sigma))


def unit_highpass_gain(sigma_voxels: float = 1.0) -> float:
    """Standard deviation of :func:`highpass` applied to unit white noise."""
    rng = np.random.default_rng(0)
    cube = sitk.GetImageFromArray(rng.standard_normal((32, 32, 32)).astype(np.float32))
    arr = sitk.GetArrayFromImage(highpass(cube, sigma_voxels))[4:-4, 4:-4, 4:-4]
    return float(arr.std())


_GAIN = unit_highpass_gain()


def noise_field(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Unit white noise scaled so its high-pass spread equals 1 (like the residuals)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape, dtype=np.float32) / np.float32(_GAIN)).astype(np.float32)
