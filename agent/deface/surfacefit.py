"""Fitting the template's skin to a subject's: signed distance maps, points, Gauss-Newton.

The subject is reduced to sample points near its skin, each with its signed distance to
that skin (mm, positive outside); the template is its skin's signed distance map,
sampled with its gradient. A transform is good when, at every sample point, the template's
distance equals the subject's: the residual ``D_t(T(x)) - d_s(x)`` is minimised over
rigid, similarity or affine ``T`` by Gauss-Newton with Levenberg damping and a Cauchy
(robust) weight, so a head holder, a cut field of view or a missing face pulls little.

Everything is numpy on a fixed sample set: the same input gives the same fit to the bit,
whatever the number of threads (no multi-threaded sums), and a fit takes tens of
milliseconds. Contrast-free: MR of any weighting and CT alike.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

#: Cauchy scale (mm) of the robust weight.
ROBUST_MM = 4.0
#: Sample points farther than this (mm) from the subject's skin are not used.
BAND_MM = 16.0
#: Residual (mm) a point mapping outside the template's grid counts as.
OUTSIDE_MM = 20.0


@dataclass(frozen=True)
class Field:
    """A scalar field on a grid, sampled trilinearly at physical points with its gradient."""

    #: (voxels, 4), raster order (x fastest): value, then d/dx, d/dy, d/dz (physical mm).
    data: np.ndarray
    shape: tuple[int, int, int]  # x, y, z sizes
    to_index: np.ndarray  # 3x3: physical offset -> continuous (x, y, z) index
    origin: np.ndarray

    @classmethod
    def from_image(cls, image: sitk.Image, clip: float | None = None) -> Field:
        arr = sitk.GetArrayFromImage(image).astype(np.float32)
        if clip is not None:
            np.clip(arr, -clip, clip, out=arr)
        m = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
        inv = np.linalg.inv(m)
        # Gradient per index step along z, y, x, then to physical: grad_p = inv^T grad_i.
        gz, gy, gx = np.gradient(arr)
        data = np.empty((arr.size, 4), np.float32)
        data[:, 0] = arr.ravel()
        if np.count_nonzero(inv - np.diag(np.diag(inv))) == 0:
            # An axis-aligned grid (the shipped template's): each physical component is
            # one index component scaled - the same numbers as the product below (its
            # other terms are exact zeros), without its full-size float64 copies.
            for j, g in enumerate((gx, gy, gz)):
                data[:, 1 + j] = (g.ravel() * inv[j, j]).astype(np.float32)
        else:
            gi = np.stack([gx.ravel(), gy.ravel(), gz.ravel()])
            data[:, 1:] = (inv.T @ gi).astype(np.float32).T
        nz, ny, nx = arr.shape
        return cls(data=data, shape=(nx, ny, nz), to_index=inv,
                   origin=np.array(image.GetOrigin(), np.float64))

    def _corners(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = (points - self.origin) @ self.to_index.T  # x, y, z continuous indices
        size = np.array(self.shape)
        inside = np.all((idx >= 0) & (idx <= size - 1), axis=1)
        c = np.clip(idx, 0, size - 1)
        f = np.minimum(np.floor(c).astype(np.intp), np.maximum(size - 2, 0))
        t = (c - f).astype(np.float32)
        base = (f[:, 2] * size[1] + f[:, 1]) * size[0] + f[:, 0]
        return base, t, inside

    def _offsets(self) -> list[tuple[int, int, int, int]]:
        nx, ny, _ = self.shape
        return [(dz, dy, dx, (dz * ny + dy) * nx + dx)
                for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)]

    def sample(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values (N,), gradients (N, 3), inside (N,) bool) at physical points (N, 3)."""
        base, t, inside = self._corners(points)
        out = np.zeros((len(points), 4), np.float32)
        for dz, dy, dx, off in self._offsets():
            w = ((t[:, 2] if dz else 1.0 - t[:, 2]) * (t[:, 1] if dy else 1.0 - t[:, 1])
                 * (t[:, 0] if dx else 1.0 - t[:, 0]))
            out += w[:, None] * self.data[base + off]
        return out[:, 0], out[:, 1:], inside

    def values(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(values, inside) at physical points: the value channel only."""
        base, t, inside = self._corners(points)
        col = self.data[:, 0]
        out = np.zeros(len(points), np.float32)
        for dz, dy, dx, off in self._offsets():
            w = ((t[:, 2] if dz else 1.0 - t[:, 2]) * (t[:, 1] if dy else 1.0 - t[:, 1])
                 * (t[:, 0] if dx else 1.0 - t[:, 0]))
            out += w * col[base + off]
        return out, inside


@dataclass
class Pose:
    """``T(x) = A (x - c) + c + t`` (subject physical -> template physical)."""

    matrix: np.ndarray
    centre: np.ndarray
    translation: np.ndarray

    def apply(self, points: np.ndarray) -> np.ndarray:
        return (points - self.centre) @ self.matrix.T + self.centre + self.translation

    def copy(self) -> Pose:
        return Pose(self.matrix.copy(), self.centre.copy(), self.translation.copy())

    def to_sitk(self) -> sitk.AffineTransform:
        tx = sitk.AffineTransform(3)
        tx.SetCenter(tuple(float(v) for v in self.centre))
        tx.SetMatrix(tuple(float(v) for v in self.matrix.ravel()))
        tx.SetTranslation(tuple(float(v) for v in self.translation))
        return tx

    @classmethod
    def from_sitk(cls, tx: sitk.Transform) -> Pose:
        a = sitk.AffineTransform(3)
        a.SetCenter(tx.GetCenter())  # type: ignore[attr-defined]
        a.SetMatrix(tx.GetMatrix())  # type: ignore[attr-defined]
        a.SetTranslation(tx.GetTranslation())  # type: ignore[attr-defined]
        return cls(np.array(a.GetMatrix(), np.float64).reshape(3, 3),
                   np.array(a.GetCenter(), np.float64), np.array(a.GetTranslation(), np.float64))


def _rotation(omega: np.ndarray) -> np.ndarray:
    """Rotation matrix of a rotation vector (Rodrigues)."""
    theta = float(np.linalg.norm(omega))
    if theta < 1e-12:
        return np.eye(3)
    k = omega / theta
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * (kx @ kx)


def rotation_about(axis: np.ndarray, degrees: float) -> np.ndarray:
    a = np.asarray(axis, np.float64)
    return _rotation(a / np.linalg.norm(a) * np.radians(degrees))


@dataclass(frozen=True)
class Samples:
    """Subject points (physical, N x 3) and their signed distances to the subject's skin."""

    points: np.ndarray
    distances: np.ndarray

    def subset(self, step: int) -> Samples:
        return Samples(self.points[::step], self.distances[::step])

    def __len__(self) -> int:
        return len(self.points)


def samples_from(distance: sitk.Image, keep: np.ndarray, band_mm: float = BAND_MM
                 ) -> Samples:
    """Voxel centres of ``distance`` (signed distance, mm) within ``band_mm`` of the skin and
    in ``keep`` (z, y, x bool), in a fixed (raster) order."""
    d = sitk.GetArrayViewFromImage(distance)
    sel = keep & (np.abs(d) < band_mm)
    zyx = np.argwhere(sel)
    m = np.array(distance.GetDirection()).reshape(3, 3) * np.array(distance.GetSpacing())
    pts = zyx[:, ::-1].astype(np.float64) @ m.T + np.array(distance.GetOrigin())
    return Samples(pts, d[sel].astype(np.float32))


def _weights(r: np.ndarray, scale: float) -> np.ndarray:
    return (1.0 / (1.0 + (r / scale) ** 2)).astype(np.float64)


def cost(field: Field, samples: Samples, pose: Pose, scale: float = ROBUST_MM) -> float:
    """Mean Cauchy loss (mm^2) of the residuals; points off the template count as outliers."""
    v, inside = field.values(pose.apply(samples.points))
    r = np.where(inside, v - samples.distances, OUTSIDE_MM).astype(np.float64)
    return float(np.mean(0.5 * scale * scale * np.log1p((r / scale) ** 2)))


def refine(field: Field, samples: Samples, pose: Pose, kind: str, iterations: int = 20,
           scale: float = ROBUST_MM, tol: float = 1e-4) -> tuple[Pose, float]:
    """Gauss-Newton/Levenberg refinement of ``pose`` (a copy is returned with its cost).

    ``kind``: "rigid" (rotation, translation), "similarity" (and one scale) or "affine".
    """
    pose = pose.copy()
    lam = 1e-3
    best = cost(field, samples, pose, scale)
    pts = samples.points
    for _ in range(iterations):
        y = (pts - pose.centre) @ pose.matrix.T  # A (x - c)
        v, g, inside = field.sample(y + pose.centre + pose.translation)
        r = (v - samples.distances).astype(np.float64)
        w = _weights(r, scale) * inside
        g = g.astype(np.float64)
        if kind == "affine":
            xc = pts - pose.centre
            jac = np.concatenate([(g[:, :, None] * xc[:, None, :]).reshape(-1, 9), g], axis=1)
        else:
            cols = [np.cross(y, g)]
            if kind == "similarity":
                cols.append(np.sum(g * y, axis=1, keepdims=True))
            cols.append(g)
            jac = np.concatenate(cols, axis=1)
        jw = jac * w[:, None]
        # einsum's own loops, not BLAS: a threaded BLAS may sum in another order on
        # another machine, and the same input must give the same fit to the bit.
        h = np.einsum("ni,nj->ij", jw, jac)
        b = np.einsum("ni,n->i", jw, r)
        improved = False
        for _ in range(6):
            step = -np.linalg.solve(h + lam * np.diag(np.diag(h) + 1e-9), b)
            trial = _update(pose, step, kind)
            c = cost(field, samples, trial, scale)
            if c < best:
                gain = best - c
                pose, best, improved = trial, c, True
                lam = max(lam / 3.0, 1e-7)
                break
            lam *= 8.0
        if not improved or gain < tol * max(best, 1e-6):
            break
    return pose, best


def _update(pose: Pose, step: np.ndarray, kind: str) -> Pose:
    out = pose.copy()
    if kind == "affine":
        out.matrix = pose.matrix + step[:9].reshape(3, 3)
        out.translation = pose.translation + step[9:]
        return out
    scale = float(np.exp(step[3])) if kind == "similarity" else 1.0
    out.matrix = scale * _rotation(step[:3]) @ pose.matrix
    out.translation = pose.translation + step[-3:]
    return out


_FIELDS: dict[int, tuple[sitk.Image, Field]] = {}
_FIELDS_LOCK = threading.Lock()


def field_of(surface: sitk.Image, clip: float) -> Field:
    """:meth:`Field.from_image` of a template's distance map, made once per image (a
    second thread asking meanwhile waits for it)."""
    key = id(surface)
    with _FIELDS_LOCK:
        found = _FIELDS.get(key)
        if found is not None and found[0] is surface:
            return found[1]
        if len(_FIELDS) >= 4:
            _FIELDS.clear()
        field = Field.from_image(surface, clip=clip)
        _FIELDS[key] = (surface, field)  # the image is kept so that its id is not reused
        return field
