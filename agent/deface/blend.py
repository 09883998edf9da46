"""Surface-aware blending: the new face meets the patient's head without a crack or a ridge.

Blending two intensities whose skin surfaces lie a few millimetres apart draws a crack (both
half-weighted below the skin threshold) or a ridge (both above it). So the surfaces are
blended, not the intensities: with ``d_s`` the signed distance to the patient's skin and
``d_t`` that to the (placed) template's skin, both in mm and positive outside, the new skin
is the zero level of ``d_b = (1 - w) d_s + w d_t`` - a smooth morph from the patient's
surface at the region's edge (w = 0) to the template's inside it (w = 1). Each image is then
moved along its own surface normal so that its skin lands on ``d_b = 0`` before the
intensities are mixed, and near the new skin the template side takes the patient's own skin
profile (intensity against depth, learnt where the patient is kept), so the new face has the
sharpness and brightness of the patient's skin, not the blur of an average.

Everything here works on the replacement box in its own voxel grid (numpy, z-y-x arrays).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

#: Displacements along the normals are applied within this distance (mm) of either skin.
BAND_MM = 24.0
#: Largest move (mm) of a voxel along a normal.
MAX_SHIFT_MM = 16.0
#: The patient's skin profile is used within this depth (mm) of the new skin; beyond
#: twice this the (moved) template's own values.
PROFILE_MM = 4.0
#: No new tissue within this distance (mm) of the field of view's edge where the patient
#: had none: the new face curves away from the edge instead of being cut by it (a plate).
EDGE_MM = 4.0
#: Near the edge the patient's skin is known only smoothed by this much (mm): the new face
#: keeps the patient's footprint on the edge, never the detail of a cut ear or nose.
EDGE_SMOOTH_MM = 5.0
#: New tissue at least this thick (mm) over the protection region inside the replaced area.
COVER_MM = 3.0


def smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def signed_distance(mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Signed distance (mm) to the boundary of ``mask`` (z-y-x bool), positive outside.

    ``spacing`` is (x, y, z) as SimpleITK orders it.
    """
    if not mask.any():
        return np.full(mask.shape, 1e3, np.float32)
    if mask.all():
        return np.full(mask.shape, -1e3, np.float32)
    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    img.SetSpacing(spacing)
    dist = sitk.SignedMaurerDistanceMap(img, insideIsPositive=False, squaredDistance=False,
                                        useImageSpacing=True)
    return sitk.GetArrayFromImage(dist).astype(np.float32)


def head_surface_mask(values: np.ndarray, level: float, spacing: tuple[float, float, float]
                      ) -> np.ndarray:
    """Tissue of the head: above ``level`` after a light smoothing, specks of noise
    dropped (components under 1 % of the largest), enclosed cavities filled."""
    img = sitk.GetImageFromArray(values.astype(np.float32))
    img.SetSpacing(spacing)
    smooth = sitk.SmoothingRecursiveGaussian(img, [0.6 * s for s in spacing])
    mask = smooth > level
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    arr = sitk.GetArrayFromImage(cc)
    if arr.max() == 0:
        return np.zeros(values.shape, bool)
    sizes = np.bincount(arr.ravel())
    keep = np.nonzero(sizes[1:] >= 0.01 * sizes[1])[0] + 1
    kept = sitk.GetImageFromArray(np.isin(arr, keep).astype(np.uint8))
    kept.SetSpacing(spacing)
    return sitk.GetArrayFromImage(sitk.BinaryFillhole(kept)).astype(bool)


def edge_distance(shape_full: tuple[int, int, int], box: tuple[slice, slice, slice],
                  spacing_zyx: np.ndarray) -> np.ndarray:
    """Distance (mm) of each box voxel to the nearest face of the whole field of view."""
    out: np.ndarray | None = None
    for axis in range(3):
        idx = np.arange(box[axis].start, box[axis].stop, dtype=np.float32)
        d = np.minimum(idx + 0.5, shape_full[axis] - 0.5 - idx) * np.float32(spacing_zyx[axis])
        shape = [1, 1, 1]
        shape[axis] = len(idx)
        d = d.reshape(shape)
        out = d if out is None else np.minimum(out, d)
    assert out is not None
    return np.broadcast_to(out, tuple(s.stop - s.start for s in box)).astype(np.float32)


def smoothed(arr: np.ndarray, spacing: tuple[float, float, float], sigma_mm: float
             ) -> np.ndarray:
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    img.SetSpacing(spacing)
    return sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(img, [sigma_mm] * 3))


def keep_off_the_edge(d_t: np.ndarray, d_s: np.ndarray, edge: np.ndarray,
                      edge_mm: float = EDGE_MM) -> np.ndarray:
    """The template's distance changed so that, within ``edge_mm`` of the field of view's
    edge, it has tissue only where the patient has, less ``edge_mm - edge`` (its skin
    curves away from the edge elsewhere, and the footprint on the edge can only shrink)."""
    c = edge_mm - edge
    constrained = np.maximum(d_t, np.minimum(np.maximum(d_s, d_t) + c, c))
    g = smoothstep((edge_mm + 10.0 - edge) / 10.0)
    return (d_t + g * (constrained - d_t)).astype(np.float32)


#: The rim correction: how far (mm) it reaches, and its largest offset.
RIM_SIGMA_MM = 16.0
MAX_RIM_OFFSET_MM = 12.0


def rim_offset(d_s: np.ndarray, d_t: np.ndarray, weight: np.ndarray, protect: np.ndarray,
               spacing: tuple[float, float, float]) -> np.ndarray:
    """A smooth offset (mm) to add to ``d_t`` so the template's skin meets the patient's
    along the region's rim (forehead, temples, cheeks, neck: where 0 < weight < 0.6).

    It is the template's distance at the patient's skin there, spread by a Gaussian of
    RIM_SIGMA_MM (normalised convolution) and faded where no rim is near: a field that
    varies over centimetres, learnt outside the face, so it carries no facial detail - it
    only removes the step the rim would otherwise show.
    """
    rim = (np.abs(d_s) < 1.5) & (weight > 0.02) & (weight < 0.6) & ~protect
    if rim.sum() < 50:
        return np.zeros(d_s.shape, np.float32)
    delta = np.where(rim, np.clip(d_t, -MAX_RIM_OFFSET_MM, MAX_RIM_OFFSET_MM), 0.0)
    sigma = [RIM_SIGMA_MM] * 3

    def smooth(arr: np.ndarray) -> np.ndarray:
        img = sitk.GetImageFromArray(arr.astype(np.float32))
        img.SetSpacing(spacing)
        return sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(img, sigma))

    num, den = smooth(delta), smooth(rim.astype(np.float32))
    peak = float(den.max())
    conf = np.clip(den / (0.15 * peak), 0.0, 1.0) if peak > 0 else np.zeros_like(den)
    offset = np.where(den > 1e-6, num / np.maximum(den, 1e-6), 0.0) * conf
    return (-np.clip(offset, -MAX_RIM_OFFSET_MM, MAX_RIM_OFFSET_MM)).astype(np.float32)


def _normals(dist: np.ndarray, spacing_zyx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unit gradient, gradient length) of a distance map per voxel, along z, y, x."""
    grads = np.stack(np.gradient(dist, *[float(s) for s in spacing_zyx]), axis=0)
    norm = np.sqrt((grads ** 2).sum(axis=0))
    return (grads / np.maximum(norm, 0.3)).astype(np.float32), norm


def _sample(arr: np.ndarray, cidx: np.ndarray) -> np.ndarray:
    """Trilinear samples of ``arr`` at continuous z-y-x indices (3, N), clamped to the box."""
    hi = np.array(arr.shape, np.float32).reshape(3, 1) - 1.0
    c = np.clip(cidx, 0.0, hi)
    f = np.minimum(np.floor(c).astype(np.int64), (hi - 1).astype(np.int64).clip(0))
    t = (c - f).astype(np.float32)
    out = np.zeros(cidx.shape[1], np.float32)
    for dz in (0, 1):
        wz = t[0] if dz else 1.0 - t[0]
        for dy in (0, 1):
            wy = t[1] if dy else 1.0 - t[1]
            for dx in (0, 1):
                wx = t[2] if dx else 1.0 - t[2]
                zi = np.minimum(f[0] + dz, arr.shape[0] - 1)
                yi = np.minimum(f[1] + dy, arr.shape[1] - 1)
                xi = np.minimum(f[2] + dx, arr.shape[2] - 1)
                out += wz * wy * wx * arr[zi, yi, xi]
    return out


def move_onto(values: np.ndarray, dist: np.ndarray, target: np.ndarray, where: np.ndarray,
              spacing_zyx: np.ndarray) -> np.ndarray:
    """``values`` (at ``where``) resampled so that the level ``dist = 0`` moves to
    ``target = 0``: the value at x is taken from x + (target - dist)(x) n(x), n the unit
    normal of ``dist``; only within BAND_MM of either surface, at most MAX_SHIFT_MM."""
    out = values[where].astype(np.float32)
    near = (np.maximum(np.abs(dist), np.abs(target)) < BAND_MM) & where
    if not near.any():
        return out
    normals, norm = _normals(dist, spacing_zyx)
    # A distance map is a distance only where its gradient has unit length (not where it
    # was clipped, nor on a medial ridge): elsewhere nothing moves.
    near &= norm > 0.7
    normals = normals[:, near]
    taper = smoothstep((BAND_MM - np.maximum(np.abs(dist[near]), np.abs(target[near]))) / 6.0)
    shift = np.clip(target[near] - dist[near], -MAX_SHIFT_MM, MAX_SHIFT_MM) * taper
    idx = np.stack(np.nonzero(near)).astype(np.float32)
    cidx = idx + normals * (shift / spacing_zyx.reshape(3, 1).astype(np.float32))
    moved = _sample(values, cidx)
    sub = np.nonzero(near[where])[0]
    out[sub] = moved
    return out


def skin_profile(values: np.ndarray, dist: np.ndarray, select: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Median intensity against signed distance to the skin (mm), -12..+10 in 0.5 mm bins,
    over ``select`` (where the patient is kept); empty bins interpolated."""
    edges = np.arange(-12.0, 10.01, 0.5)
    centres = (edges[:-1] + edges[1:]) / 2.0
    d = dist[select]
    v = values[select]
    inside = (d >= edges[0]) & (d < edges[-1])
    d, v = d[inside], v[inside]
    which = np.clip(np.searchsorted(edges, d, side="right") - 1, 0, len(centres) - 1)
    order = np.argsort(which, kind="stable")
    which, v = which[order], v[order]
    bounds = np.searchsorted(which, np.arange(len(centres) + 1))
    med = np.full(len(centres), np.nan)
    for b in range(len(centres)):
        chunk = v[bounds[b]:bounds[b + 1]]
        if len(chunk) >= 20:
            med[b] = float(np.median(chunk))
    ok = np.isfinite(med)
    if ok.sum() < 4:
        raise ValueError("too few samples for the skin profile")
    med = np.interp(centres, centres[ok], med[ok])
    return centres, med
