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


def head_surface_mask(values: np.ndarray, level: float, spacing: tuple[float, float, float],
                      sigma_mm: tuple[float, float, float] | None = None) -> np.ndarray:
    """Tissue of the head: above ``level`` after a light smoothing (default 0.6 voxels;
    ``sigma_mm`` along x, y, z), specks of noise dropped (components under 1 % of the
    largest), enclosed cavities filled."""
    img = sitk.GetImageFromArray(values.astype(np.float32, copy=False))
    img.SetSpacing(spacing)
    sigma = sigma_mm if sigma_mm is not None else tuple(0.6 * s for s in spacing)
    smooth = sitk.SmoothingRecursiveGaussian(img, [max(float(v), 0.01) for v in sigma])
    mask = smooth > level
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    arr = sitk.GetArrayFromImage(cc)
    if arr.max() == 0:
        return np.zeros(values.shape, bool)
    sizes = np.bincount(arr.ravel())
    lut = np.zeros(len(sizes), np.uint8)  # label -> kept (a table: np.isin sorts)
    lut[np.nonzero(sizes[1:] >= 0.01 * sizes[1])[0] + 1] = 1
    kept = sitk.GetImageFromArray(lut[arr])
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
    """``arr`` smoothed by a Gaussian of ``sigma_mm``; computed on a grid coarser by the
    largest integer factor that keeps at least 3 voxels per sigma (a wide Gaussian loses
    nothing on it), then interpolated back, so a 16 mm Gaussian of a 1 mm box costs
    a few hundredths of what it would at full resolution."""
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    img.SetSpacing(spacing)
    factors = [max(1, min(int(sigma_mm / (3.0 * s)), n // 4))
               for s, n in zip(spacing, img.GetSize(), strict=True)]
    if max(factors) == 1:
        return sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(img, [sigma_mm] * 3))
    coarse = sitk.SmoothingRecursiveGaussian(sitk.BinShrink(img, factors), [sigma_mm] * 3)
    back = sitk.Resample(coarse, img, sitk.Transform(), sitk.sitkLinear, 0.0,
                         sitk.sitkFloat32)
    # Beyond the coarse grid's outer voxel centres, the nearest value (not zero).
    return _fill_border(sitk.GetArrayFromImage(back), coarse, img)


def _fill_border(values: np.ndarray, coarse: sitk.Image, fine: sitk.Image) -> np.ndarray:
    """Voxels of ``fine`` outside the hull of ``coarse``'s voxel centres take the value of
    the nearest voxel inside it (per axis: an edge pad)."""
    out = values
    for axis_xyz in range(3):
        axis = 2 - axis_xyz  # numpy order z, y, x
        n = fine.GetSize()[axis_xyz]
        sp_f, sp_c = fine.GetSpacing()[axis_xyz], coarse.GetSpacing()[axis_xyz]
        o_f, o_c = fine.GetOrigin()[axis_xyz], coarse.GetOrigin()[axis_xyz]
        last_c = o_c + (coarse.GetSize()[axis_xyz] - 1) * sp_c
        lo = int(np.ceil((o_c - o_f) / sp_f - 1e-6))
        hi = int(np.floor((last_c - o_f) / sp_f + 1e-6))
        lo, hi = max(lo, 0), min(hi, n - 1)
        if lo > 0:
            idx = [slice(None)] * 3
            idx[axis] = slice(0, lo)
            src = [slice(None)] * 3
            src[axis] = slice(lo, lo + 1)
            out[tuple(idx)] = out[tuple(src)]
        if hi < n - 1:
            idx = [slice(None)] * 3
            idx[axis] = slice(hi + 1, n)
            src = [slice(None)] * 3
            src[axis] = slice(hi, hi + 1)
            out[tuple(idx)] = out[tuple(src)]
    return out


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
    num = smoothed(delta, spacing, RIM_SIGMA_MM)
    den = smoothed(rim.astype(np.float32), spacing, RIM_SIGMA_MM)
    peak = float(den.max())
    conf = np.clip(den / (0.15 * peak), 0.0, 1.0) if peak > 0 else np.zeros_like(den)
    offset = np.where(den > 1e-6, num / np.maximum(den, 1e-6), 0.0) * conf
    return (-np.clip(offset, -MAX_RIM_OFFSET_MM, MAX_RIM_OFFSET_MM)).astype(np.float32)


def _gradient_at(dist: np.ndarray, flat: np.ndarray, spacing_zyx: np.ndarray
                 ) -> np.ndarray:
    """Gradient (3, N; along z, y, x, per mm) of ``dist`` at flat indices ``flat``: central
    differences inside, one-sided on the box's faces (as numpy.gradient)."""
    shape = dist.shape
    d = dist.ravel()
    coords = np.unravel_index(flat, shape)
    strides = (shape[1] * shape[2], shape[2], 1)
    out = np.empty((3, len(flat)), np.float32)
    for axis in range(3):
        c = coords[axis]
        up = np.where(c < shape[axis] - 1, flat + strides[axis], flat)
        down = np.where(c > 0, flat - strides[axis], flat)
        steps = ((c < shape[axis] - 1).astype(np.float32) + (c > 0)) * np.float32(
            spacing_zyx[axis])
        out[axis] = (d[up] - d[down]) / np.maximum(steps, np.float32(1e-6))
    return out


def _sample(arr: np.ndarray, cidx: np.ndarray) -> np.ndarray:
    """Trilinear samples of ``arr`` at continuous z-y-x indices (3, N), clamped to the box."""
    shape = np.array(arr.shape)
    hi = (shape - 1).astype(np.float32).reshape(3, 1)
    c = np.clip(cidx, 0.0, hi)
    f = np.minimum(np.floor(c).astype(np.int64), np.maximum(shape - 2, 0).reshape(3, 1))
    t = (c - f).astype(np.float32)
    flat = arr.ravel()
    base = (f[0] * shape[1] + f[1]) * shape[2] + f[2]
    # Offsets of the 8 corners; on a 1-voxel-thick axis the "next" corner is the same voxel.
    step = [int(shape[1] * shape[2]) if shape[0] > 1 else 0,
            int(shape[2]) if shape[1] > 1 else 0, 1 if shape[2] > 1 else 0]
    out = np.zeros(cidx.shape[1], np.float32)
    got = np.empty(cidx.shape[1], flat.dtype)
    for dz in (0, 1):
        wz = t[0] if dz else 1.0 - t[0]
        for dy in (0, 1):
            wy = wz * (t[1] if dy else 1.0 - t[1])
            for dx in (0, 1):
                wx = wy * (t[2] if dx else 1.0 - t[2])
                # The corner's values: the array shifted by the corner's offset, read at
                # the base indices (no index array per corner).
                np.take(flat[dz * step[0] + dy * step[1] + dx * step[2]:], base, out=got)
                out += wx * got
    return out


def move_onto(values: np.ndarray, dist: np.ndarray, target: np.ndarray, where: np.ndarray,
              spacing_zyx: np.ndarray) -> np.ndarray:
    """``values`` (at ``where``) resampled so that the level ``dist = 0`` moves to
    ``target = 0``: the value at x is taken from x + (target - dist)(x) n(x), n the unit
    normal of ``dist``; only within BAND_MM of either surface, at most MAX_SHIFT_MM."""
    out = values[where].astype(np.float32)
    near = (np.maximum(np.abs(dist), np.abs(target)) < BAND_MM) & where
    flat = np.flatnonzero(near)
    if not len(flat):
        return out
    grads = _gradient_at(dist, flat, spacing_zyx)
    norm = np.sqrt((grads ** 2).sum(axis=0))
    # A distance map is a distance only where its gradient has unit length (not where it
    # was clipped, nor on a medial ridge): elsewhere nothing moves.
    ok = norm > 0.7
    flat, grads, norm = flat[ok], grads[:, ok], norm[ok]
    normals = grads / np.maximum(norm, 0.3)
    d_here, t_here = dist.ravel()[flat], target.ravel()[flat]
    taper = smoothstep((BAND_MM - np.maximum(np.abs(d_here), np.abs(t_here))) / 6.0)
    shift = np.clip(t_here - d_here, -MAX_SHIFT_MM, MAX_SHIFT_MM) * taper
    idx = np.stack(np.unravel_index(flat, near.shape)).astype(np.float32)
    cidx = idx + normals * (shift / spacing_zyx.reshape(3, 1).astype(np.float32))
    moved = _sample(values, cidx)
    # Positions of these voxels among ``where``'s (both in raster order).
    rank = np.cumsum(where.ravel()) - 1
    out[rank[flat]] = moved
    return out


def coarse_signed_distance(mask: np.ndarray, spacing: tuple[float, float, float],
                           factor: int = 2) -> np.ndarray:
    """:func:`signed_distance` computed on a grid ``factor`` times coarser (any voxel of a
    block in the mask marks it) and interpolated back: within a coarse voxel of the exact
    one, at an eighth of the cost; for fields that need no finer accuracy."""
    if factor <= 1 or min(mask.shape) < 4 * factor:
        return signed_distance(mask, spacing)
    img = sitk.GetImageFromArray(mask.astype(np.float32))
    img.SetSpacing(spacing)
    coarse = sitk.BinShrink(img, [factor] * 3)
    cmask = sitk.GetArrayViewFromImage(coarse) > 0.5
    d = signed_distance(cmask, tuple(float(v) for v in coarse.GetSpacing()))  # type: ignore[arg-type]
    dimg = sitk.GetImageFromArray(d)
    dimg.CopyInformation(coarse)
    back = sitk.Resample(dimg, img, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return _fill_border(sitk.GetArrayFromImage(back), coarse, img)


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
