"""The new face's values in the replacement box: the skins morphed, the images moved onto
the morphed skin, mixed, the patient's noise added (the method: :mod:`agent.deface.blend`).

The geometry - both skins' signed distances, the rim correction, the field-of-view edge,
the cover over the protection region, the morphed skin ``d_b``, the displacements along the
normals, and the template's own values moved onto ``d_b`` - is computed on the coarse grid
of :mod:`agent.deface.coarse` (about 1.5 mm): the template carries nothing finer (2 mm) and
a distance field is smooth. On the scan's own grid, inside the region only: the morphed
skin and the displacements interpolated back, the patient's voxels sampled at their
displaced positions (their own resolution is kept), the patient's skin profile, the mix
and the noise. float32 throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from agent.deface import blend, coarse, ct, synth
from agent.deface.template import Template

#: Smoothing (mm) of a CT's distance to its protection region before the cover over it.
CT_COVER_SMOOTH_MM = 2.5
#: The patient's skin is thresholded after a Gaussian of this many of the scan's voxels.
SKIN_SIGMA_VOXELS = 0.6


def skin_sigma(spacing_xyz: tuple[float, ...], factors: tuple[int, int, int]
               ) -> tuple[float, float, float]:
    """The Gaussian (mm, x, y, z) that, after the coarse grid's block means (a box of
    ``f`` voxels: variance (f^2 - 1) / 12 voxels^2), smooths the skin as much as
    SKIN_SIGMA_VOXELS does on the scan's own grid."""
    out = []
    for s, f in zip(spacing_xyz, factors[::-1], strict=True):
        var = SKIN_SIGMA_VOXELS ** 2 - (f * f - 1) / 12.0
        out.append(float(np.sqrt(max(var, 0.0))) * float(s))
    return out[0], out[1], out[2]


@dataclass(frozen=True)
class Placement:
    """How the template is placed in the box, and the intensity levels it is shown at."""

    transform: sitk.AffineTransform  # subject mm -> template mm (the face fit)
    scale: float  # its one overall scale (template mm per subject mm)
    imap: synth.IntensityMap
    level: float  # the patient's skin threshold
    ct_mode: bool
    #: CT only: (skin threshold, median tissue, bright tissue) of the template's values.
    template_levels: tuple[float, float, float] = (0.0, 0.0, 0.0)


def normal_shift(dist: np.ndarray, target: np.ndarray, spacing_zyx: np.ndarray
                 ) -> np.ndarray:
    """Displacement (3, ...; mm along z, y, x) that brings the level ``dist = 0`` onto
    ``target = 0`` along the unit normal of ``dist``: the value at x is to be taken from
    x + shift(x) (see :func:`agent.deface.blend.move_onto`; within BAND_MM of either
    surface, at most MAX_SHIFT_MM, nothing where ``dist`` is not a distance)."""
    grads = np.stack(np.gradient(dist, *[float(s) for s in spacing_zyx])).astype(np.float32)
    norm = np.sqrt((grads ** 2).sum(axis=0))
    band = np.maximum(np.abs(dist), np.abs(target))
    ok = (band < blend.BAND_MM) & (norm > 0.7)
    taper = blend.smoothstep((blend.BAND_MM - band) / 6.0)
    shift = np.where(ok, np.clip(target - dist, -blend.MAX_SHIFT_MM, blend.MAX_SHIFT_MM)
                     * taper, 0.0).astype(np.float32)
    return (grads * (shift / np.maximum(norm, 0.3))).astype(np.float32)


def _sample_moved(values: np.ndarray, disp_mm: np.ndarray, spacing_zyx: np.ndarray
                  ) -> np.ndarray:
    """``values`` sampled at each voxel plus ``disp_mm`` (same grid), trilinear."""
    idx = np.indices(values.shape, dtype=np.float32).reshape(3, -1)
    cidx = idx + disp_mm.reshape(3, -1) / spacing_zyx.reshape(3, 1)
    return blend._sample(values, cidx).reshape(values.shape)


def blend_box(image: sitk.Image, template: Template, place: Placement,
              box: tuple[slice, slice, slice], ref: sitk.Image, subject: np.ndarray,
              weight: np.ndarray, protect: np.ndarray, seed: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """(new values in the box, tissue mask: above the skin level before or after)."""
    sp_xyz = tuple(float(v) for v in image.GetSpacing())
    sp_zyx = np.array(sp_xyz[::-1], np.float32)
    f = coarse.factors_for(sp_zyx)
    shape = subject.shape
    cref = coarse.reference(ref, f)
    csp_xyz = tuple(float(v) for v in cref.GetSpacing())
    csp_zyx = np.array(csp_xyz[::-1], np.float32)
    level = place.level

    # The patient's skin, the template's (placed like its values: template mm -> subject
    # mm), and where the template's values have their skin (d_raw = 0).
    w_c = coarse.block_mean(weight, f)
    p_c = coarse.block_any(protect, f)
    sub_c = coarse.block_mean(subject, f)
    d_s = blend.signed_distance(
        blend.head_surface_mask(sub_c, level, csp_xyz, skin_sigma(sp_xyz, f)), csp_xyz)  # type: ignore[arg-type]
    d_raw = sitk.GetArrayFromImage(sitk.Resample(
        template.surface, cref, place.transform, sitk.sitkLinear, 31.75,
        sitk.sitkFloat32)) / np.float32(place.scale)
    d_t = d_raw + blend.rim_offset(d_s, d_raw, w_c, p_c, csp_xyz)  # type: ignore[arg-type]
    full = tuple(int(v) for v in image.GetSize()[::-1])
    edge = coarse.edge_distance(full, box, f, sp_zyx)  # type: ignore[arg-type]
    pad = ct.padding_mask(subject, None) if place.ct_mode else None
    if pad is not None and pad.any():  # the reconstruction circle is an edge too
        pad_c = coarse.block_any(pad, f)
        edge = np.minimum(edge, np.maximum(-blend.signed_distance(~pad_c, csp_xyz), 0.0))  # type: ignore[arg-type]
    # The footprint on the edge: the patient's, smoothed (no detail of a cut ear), but
    # never more than 1.5 mm beyond the patient's own.
    d_edge = np.maximum(blend.smoothed(d_s, csp_xyz, blend.EDGE_SMOOTH_MM), d_s - 1.5)  # type: ignore[arg-type]
    edge_mm = max(blend.EDGE_MM, 1.5 * max(csp_xyz))
    d_t = blend.keep_off_the_edge(d_t, d_edge, edge, edge_mm)
    d_b = ((1.0 - w_c) * d_s + w_c * d_t).astype(np.float32)
    del d_t
    # What is kept (the protection region) stays covered: where the template's skin would
    # run deeper than the protection region, new tissue covers it instead of a hole.
    d_p = blend.signed_distance(p_c, csp_xyz)  # type: ignore[arg-type]
    if place.ct_mode:
        # A CT's protection holds the cranium found on a 2 mm grid: the cover over it is
        # rounded, not terraced along that grid's cells.
        d_p = blend.smoothed(d_p, csp_xyz, CT_COVER_SMOOTH_MM)  # type: ignore[arg-type]
    d_b = np.minimum(d_b, d_p - blend.COVER_MM).astype(np.float32)
    d_b = blend.keep_off_the_edge(d_b, d_edge, edge, edge_mm)  # the cover obeys it too
    del d_p, d_edge, edge

    # The template's values, moved onto the new skin (on the coarse grid: they carry
    # nothing finer).
    tvals = sitk.GetArrayFromImage(sitk.Resample(
        template.head, cref, place.transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    if place.ct_mode:
        t_mean = ct.template_to_hu(tvals, d_raw, *place.template_levels,
                                   air_hu=float(place.imap.subject_levels[0]))
    else:
        t_mean, _ = place.imap.apply(tvals)
    t_moved_c = _sample_moved(t_mean, normal_shift(d_raw, d_b, csp_zyx), csp_zyx)
    del tvals, t_mean, d_raw
    disp_c = normal_shift(d_s, d_b, csp_zyx)

    # The scan's own grid, inside the region.
    region = weight > 0
    flat = np.flatnonzero(region)
    up = coarse.Upsampler(shape, f)
    db = up.at(d_b, flat)
    t_moved = up.at(t_moved_c, flat)
    del t_moved_c
    wr = weight.ravel()[flat]
    # The patient's own voxels, moved onto the new skin, where they still count (w < 1).
    s_moved = subject.ravel()[flat].astype(np.float32)
    part = np.flatnonzero(wr < 1.0)
    if len(part):
        moving = flat[part]
        cidx = np.stack(np.unravel_index(moving, shape)).astype(np.float32)
        for axis in range(3):
            cidx[axis] += up.at(disp_c[axis], moving) / sp_zyx[axis]
        s_moved[part] = blend._sample(subject, cidx)
        del cidx, moving
    del disp_c
    keep = (~region | (weight < 0.2)) & ~protect
    if keep.sum() < 2000:
        keep = ~protect
    # The patient's skin profile, learnt where the patient is kept (a few of its voxels per
    # coarse voxel are plenty for its medians).
    kept = np.flatnonzero(keep)[::max(1, int(np.prod(f)) // 2)]
    del keep
    centres, prof = blend.skin_profile(subject.ravel()[kept],
                                       up.at(d_s, kept),
                                       np.ones(len(kept), bool))
    del kept
    if place.ct_mode:
        prof = ct.cap_profile(prof, float(place.imap.subject_levels[0]))
    m = blend.smoothstep((np.abs(db) - blend.PROFILE_MM) / blend.PROFILE_MM)
    t_side = (1.0 - m) * np.interp(db, centres, prof).astype(np.float32) + m * t_moved
    mixed = (1.0 - wr) * s_moved + wr * t_side
    # Noise: the template side is noise-free; add the patient's noise so that the sum has
    # the patient's noise level whatever the weights.
    imap = place.imap
    if place.ct_mode:
        sd = np.where(db > 0, float(imap.noise_levels[0]), float(imap.noise_levels[-1]))
    else:
        _, sd = imap.apply(t_side)
        sd = np.where(db > 0, float(imap.noise_levels[0]), sd)
    gain = np.sqrt(np.clip(1.0 - (1.0 - wr) ** 2, 0.0, 1.0))
    mixed = mixed + gain * sd.astype(np.float32) * synth.noise_field(mixed.shape, seed)
    arr = sitk.GetArrayViewFromImage(image)
    lo, hi = float(arr.min()), float(arr.max())
    values = subject.astype(np.float32, copy=True)
    values.ravel()[flat] = np.clip(mixed, lo, hi)
    tissue = (subject > level) | (values > level)
    return values, tissue
