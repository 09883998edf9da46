"""A coarse grid over the replacement box: block means down, linear interpolation back up.

The blend's geometry (distances to the skins, their normals, the template's values, the
weights) varies over millimetres - the template itself is on a 2 mm grid - so it is
computed on a grid a small integer factor coarser than the scan (about
:data:`GEOMETRY_MM`), and only what needs the scan's own resolution (the patient's voxels,
moved along the surface normals, and the noise) is done on the fine grid. On a 0.7 mm head
the coarse grid has an eighth of the voxels.

Coarse voxel ``j`` along an axis with factor ``f`` is the block of fine voxels
``f j .. f j + f - 1`` (the last block is padded by repeating the box's last plane); its
centre lies at fine continuous index ``f j + (f - 1) / 2``. :class:`Upsampler` interpolates
linearly between those centres (the nearest centre's value beyond them), separably over the
whole box, and reads the fine voxels that need it (the region).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

#: Target voxel size (mm) of the coarse grid.
GEOMETRY_MM = 1.5


def factors_for(spacing_zyx: np.ndarray | tuple[float, ...]) -> tuple[int, int, int]:
    """Integer factors per axis (z, y, x) that bring ``spacing_zyx`` (mm) near GEOMETRY_MM;
    1 along thick slices."""
    f = [max(1, int(round(GEOMETRY_MM / float(s)))) for s in spacing_zyx]
    return f[0], f[1], f[2]


def coarse_shape(shape: tuple[int, ...], factors: tuple[int, int, int]) -> tuple[int, int, int]:
    out = [-(-int(n) // int(f)) for n, f in zip(shape, factors, strict=True)]
    return out[0], out[1], out[2]


def _padded(arr: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    pad = [(0, c * f - n) for n, c, f in zip(arr.shape, coarse_shape(arr.shape, factors),
                                             factors, strict=True)]
    return np.pad(arr, pad, mode="edge") if any(p[1] for p in pad) else arr


def _reduce_blocks(arr: np.ndarray, factors: tuple[int, int, int], dtype: type,
                   combine: np.ufunc) -> np.ndarray:
    """``combine`` over each block, one axis after the other: strided planes added
    pairwise (several times faster than a reduction over a 6-D view's inner axes)."""
    a = _padded(arr, factors)
    for axis in range(3):
        f = factors[axis]
        if f == 1:
            continue
        sl: list[slice] = [slice(None)] * 3
        sl[axis] = slice(0, None, f)
        acc: np.ndarray = a[tuple(sl)].astype(dtype, copy=True)
        for k in range(1, f):
            sl[axis] = slice(k, None, f)
            combine(acc, a[tuple(sl)], out=acc)
        a = acc
    return a


def block_mean(arr: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Mean of each block (float32)."""
    if factors == (1, 1, 1):
        return arr.astype(np.float32)
    out = _reduce_blocks(arr, factors, np.float32, np.add)
    out /= np.float32(np.prod(factors))
    return out


def block_any(mask: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """True where any voxel of the block is."""
    if factors == (1, 1, 1):
        return mask.astype(bool)
    return _reduce_blocks(mask.astype(bool, copy=False), factors, np.bool_, np.logical_or)


class Upsampler:
    """Linear interpolation of coarse fields over the whole fine box: separable (one axis
    after the other, each a weighted pair of planes), a few passes over the box where eight
    gathers per voxel cost twice as much on a head's region (a third of its box); the
    values needed are then read at their flat indices (:meth:`at`)."""

    def __init__(self, shape: tuple[int, ...], factors: tuple[int, int, int]) -> None:
        self.fine = tuple(int(v) for v in shape)
        self.shape = coarse_shape(self.fine, factors)
        self._axes: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for axis in range(3):
            f, nc, n = factors[axis], self.shape[axis], self.fine[axis]
            c = (np.arange(n, dtype=np.float32) - np.float32((f - 1) / 2.0)) / np.float32(f)
            c = np.clip(c, 0.0, float(nc - 1))
            lo = np.minimum(np.floor(c).astype(np.int64), max(nc - 2, 0))
            hi = lo + 1 if nc > 1 else lo
            view = [1, 1, 1]
            view[axis] = n
            self._axes.append((lo, hi, (c - lo).astype(np.float32).reshape(view)))

    def full(self, field: np.ndarray) -> np.ndarray:
        """``field`` (on the coarse grid) at every voxel of the fine box (float32)."""
        a = field.astype(np.float32, copy=False)
        for axis in (2, 1, 0):  # the largest pass last
            lo, hi, t = self._axes[axis]
            low = np.take(a, lo, axis=axis)
            high = np.take(a, hi, axis=axis)
            high -= low
            high *= t
            low += high
            a = low
        return a

    def at(self, field: np.ndarray, flat: np.ndarray) -> np.ndarray:
        """``field`` at the fine voxels ``flat`` (flat indices into the box)."""
        return np.take(self.full(field).ravel(), flat)


def reference(fine: sitk.Image, factors: tuple[int, int, int]) -> sitk.Image:
    """The coarse grid of the box ``fine`` (an empty float32 image): its voxel centres at
    the block centres, same direction."""
    fz, fy, fx = factors
    size = fine.GetSize()
    shape = coarse_shape((size[2], size[1], size[0]), factors)
    ref = sitk.Image([shape[2], shape[1], shape[0]], sitk.sitkFloat32)
    sp = fine.GetSpacing()
    ref.SetSpacing((sp[0] * fx, sp[1] * fy, sp[2] * fz))
    ref.SetDirection(fine.GetDirection())
    ref.SetOrigin(fine.TransformContinuousIndexToPhysicalPoint(
        ((fx - 1) / 2.0, (fy - 1) / 2.0, (fz - 1) / 2.0)))
    return ref


def edge_distance(shape_full: tuple[int, int, int], box: tuple[slice, slice, slice],
                  factors: tuple[int, int, int], spacing_zyx: np.ndarray) -> np.ndarray:
    """Distance (mm) of each coarse voxel's centre to the nearest face of the whole field
    of view (the box's voxels start at ``box``'s starts in the full volume)."""
    shape = coarse_shape(tuple(s.stop - s.start for s in box), factors)
    out: np.ndarray | None = None
    for axis in range(3):
        f = factors[axis]
        idx = box[axis].start + f * np.arange(shape[axis], dtype=np.float32) + (f - 1) / 2.0
        d = np.minimum(idx + 0.5, shape_full[axis] - 0.5 - idx) * np.float32(spacing_zyx[axis])
        d = np.maximum(d, 0.0)
        view = [1, 1, 1]
        view[axis] = shape[axis]
        d = d.reshape(view)
        out = d if out is None else np.minimum(out, d)
    assert out is not None
    return np.broadcast_to(out, shape).astype(np.float32)


def _grow(mask: np.ndarray, axis: int) -> np.ndarray:
    out = mask.copy()
    lo = [slice(None)] * mask.ndim
    hi = [slice(None)] * mask.ndim
    lo[axis], hi[axis] = slice(0, -1), slice(1, None)
    out[tuple(lo)] |= mask[tuple(hi)]
    out[tuple(hi)] |= mask[tuple(lo)]
    return out


def dilate_ball(mask: np.ndarray) -> np.ndarray:
    """``mask`` (bool, z-y-x) dilated by ITK's ball of radius 1 (the 18 voxels sharing a
    face or an edge): the union of the three 3 x 3 squares in the axis planes, each
    separable, at a few passes over the array (sitk.BinaryDilate is many times slower)."""
    gy, gx = _grow(mask, 1), _grow(mask, 2)
    out = _grow(gx, 1)
    out |= _grow(gx, 0)
    out |= _grow(gy, 0)
    return out
