"""Every 2-D image of a series as a plane in patient space, and the series as volumes.

Whatever the shape on disk - one file per slice, a Siemens mosaic tiling every slice of a
volume into one image, an enhanced object holding a whole volume (or a whole 4-D series)
as frames - each image becomes a :class:`Slice`: where its pixels are stored (object,
frame, tile) and where they lie (:class:`Plane`, from Image Orientation/Position and Pixel
Spacing, never from file order or names).

Slices are then grouped into :class:`Volume` s - one per time point, diffusion direction,
echo or image type - by the coarsest split of the series' own attributes under which no
volume holds two images at one position (:func:`split_volumes`). A volume's slices are
sorted along the normal and cut into *blocks*, runs of evenly spaced, aligned slices: each
block is an exact 3-D image in its native geometry (what defacing writes back into), and
:meth:`Volume.fit_image` resamples the blocks onto one regular grid when there are several
(gaps, uneven spacing, gantry tilt) - only for fitting and measuring, never for writing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

#: Two positions closer than this (mm) along the normal are the same slice position.
POSITION_TOL = 0.05
#: Relative tolerance on slice steps inside one block, and on direction cosines.
STEP_TOL = 0.02
ORIENT_TOL = 1e-3


@dataclass(frozen=True)
class Plane:
    """Geometry of one 2-D image: the centre of its first pixel and its axes (patient LPS)."""

    origin: tuple[float, float, float]
    #: Direction of increasing column index (first triplet of Image Orientation).
    row: tuple[float, float, float]
    #: Direction of increasing row index (second triplet).
    col: tuple[float, float, float]
    #: (between rows, between columns) in mm: Pixel Spacing as DICOM orders it.
    spacing: tuple[float, float]
    #: (rows, columns).
    shape: tuple[int, int]
    thickness: float = 0.0

    @property
    def normal(self) -> np.ndarray:
        return np.cross(np.array(self.row), np.array(self.col))

    @property
    def depth(self) -> float:
        return float(np.array(self.origin) @ self.normal)

    def offset(self) -> tuple[float, float]:
        """The origin's position along the row and column axes (shear between slices)."""
        o = np.array(self.origin)
        return float(o @ np.array(self.row)), float(o @ np.array(self.col))

    def corners(self) -> np.ndarray:
        """The four corners of the image (pixel edges), patient coordinates, (4, 3)."""
        o, r, c = np.array(self.origin), np.array(self.row), np.array(self.col)
        dr, dc = self.spacing
        rows, cols = self.shape
        pts = []
        for i in (-0.5, rows - 0.5):
            for j in (-0.5, cols - 0.5):
                pts.append(o + r * j * dc + c * i * dr)
        return np.array(pts)


@dataclass(frozen=True)
class Slice:
    """One 2-D image of a series: where its pixels are stored and where they lie."""

    obj: int  # index of the object (file) in the series
    frame: int  # frame of a multi-frame object (0 for single-frame)
    tile: int  # tile of a mosaic (-1: not a mosaic)
    plane: Plane
    slope: float = 1.0
    intercept: float = 0.0
    #: The series' own attributes that tell volumes apart, in preference order (name, text).
    key: tuple[tuple[str, str], ...] = ()
    #: Order of acquisition or numbering (instance number, frame number) for the last resort.
    order: float = 0.0
    #: A projection (MIP): every pixel is the maximum along a ray through the patient.
    projection: bool = False


@dataclass
class Volume:
    """Slices of one volume, sorted along the normal, with their stored values."""

    slices: list[Slice]
    stored: np.ndarray  # (slices, rows, columns), the objects' stored data type
    #: [start, stop) runs of evenly spaced, aligned slices.
    blocks: list[tuple[int, int]] = field(default_factory=list)
    label: str = ""

    @property
    def plane(self) -> Plane:
        return self.slices[0].plane

    @property
    def projection(self) -> bool:
        """A projection (MIP) series: every pixel a maximum along a ray."""
        return all(s.projection for s in self.slices)

    def real(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Real-world values (rescale applied per slice), float32."""
        sl = self.slices[start:stop]
        slope = np.array([s.slope for s in sl], np.float32)[:, None, None]
        icpt = np.array([s.intercept for s in sl], np.float32)[:, None, None]
        return self.stored[start:stop].astype(np.float32) * slope + icpt

    def step(self, start: int, stop: int) -> float:
        """Slice step of a block; a lone slice counts its thickness (or the median step)."""
        if stop - start > 1:
            return (self.slices[stop - 1].plane.depth - self.slices[start].plane.depth) / (
                stop - start - 1)
        return max(self.slices[start].plane.thickness, self.median_step(), 1.0)

    def median_step(self) -> float:
        depths = np.array([s.plane.depth for s in self.slices])
        steps = np.diff(depths)
        return float(np.median(steps)) if len(steps) else 0.0

    def block_image(self, index: int) -> sitk.Image:
        """Block ``index`` as an exact 3-D image in its native geometry (real values). A
        block tilted against its planes (CT gantry tilt) has a sheared direction matrix:
        its third axis runs from slice to slice, so every voxel stays where it is."""
        start, stop = self.blocks[index]
        first = self.slices[start].plane
        if stop - start > 1:
            travel = np.array(self.slices[stop - 1].plane.origin) - np.array(first.origin)
            axis = travel / np.linalg.norm(travel)
            step = float(np.linalg.norm(travel)) / (stop - start - 1)
            return _image(self.real(start, stop), first, step, axis)
        return _image(self.real(start, stop), first, self.step(start, stop))

    def is_regular(self) -> bool:
        return len(self.blocks) == 1

    def fit_image(self) -> sitk.Image:
        """One regular 3-D image of the volume: exact with one block, else the blocks
        resampled onto a grid spanning them (for fitting and measuring only)."""
        if self.is_regular():
            return self.block_image(0)
        first = self.slices[0].plane
        depth0 = first.depth
        extent = self.slices[-1].plane.depth - depth0
        step = max(self.median_step(), 0.5)
        n = int(np.floor(extent / step + 1e-6)) + 1
        ref = _image(np.zeros((n, *first.shape), np.float32), first, step)
        acc = np.zeros((n, *first.shape), np.float32)
        filled = np.zeros(acc.shape, bool)
        for b in range(len(self.blocks)):
            res = sitk.GetArrayFromImage(sitk.Resample(
                self.block_image(b), ref, sitk.Transform(), sitk.sitkLinear, float("nan"),
                sitk.sitkFloat32))
            ok = np.isfinite(res) & ~filled
            acc[ok] = res[ok]
            filled |= ok
        out = sitk.GetImageFromArray(acc)
        out.CopyInformation(ref)
        return out

    def extent_mm(self) -> tuple[float, float, float]:
        """Field of view (mm): along rows, along columns, along the normal."""
        p = self.plane
        depth = self.slices[-1].plane.depth - self.slices[0].plane.depth
        depth += max(p.thickness, self.median_step(), 1.0)
        return p.shape[1] * p.spacing[1], p.shape[0] * p.spacing[0], depth


def _image(values: np.ndarray, plane: Plane, step: float,
           axis: np.ndarray | None = None) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(values, np.float32))
    img.SetSpacing((plane.spacing[1], plane.spacing[0], max(abs(step), 1e-3)))
    img.SetOrigin(plane.origin)
    third = plane.normal if axis is None else axis
    img.SetDirection(tuple(float(v) for v in np.column_stack(
        [plane.row, plane.col, third]).ravel()))
    return img


# -- grouping ----------------------------------------------------------------------------

def _positions(slices: Sequence[Slice]) -> list[tuple[int, int, int]]:
    """A hashable slice position: depth along the normal and in-plane offset, quantised."""
    out = []
    for s in slices:
        a, b = s.plane.offset()
        out.append((round(s.plane.depth / POSITION_TOL), round(a / 0.1), round(b / 0.1)))
    return out


def _unique_positions(group: Sequence[Slice]) -> bool:
    pos = _positions(group)
    return len(set(pos)) == len(pos)


def _partition(slices: Sequence[Slice], names: Sequence[str]) -> list[list[Slice]]:
    groups: dict[tuple[str, ...], list[Slice]] = {}
    for s in slices:
        values = dict(s.key)
        groups.setdefault(tuple(values.get(n, "") for n in names), []).append(s)
    return [groups[k] for k in sorted(groups, key=_natural)]


def _natural(key: tuple[str, ...]) -> tuple[tuple[float, str], ...]:
    """Numbers in their numeric order (time point 2 before 10, b 500 before 1000), then
    text; an absent value first."""
    out = []
    for v in key:
        try:
            number = float(v)
            out.append((number, "") if number == number else (float("inf"), v))
        except ValueError:
            out.append((float("-inf") if not v else float("inf"), v))
    return tuple(out)


def _ordinal_split(group: Sequence[Slice]) -> list[list[Slice]]:
    """Last resort: the i-th image (in acquisition order) at each position is volume i."""
    by_pos: dict[tuple[int, int, int], list[Slice]] = {}
    for s, p in zip(group, _positions(group), strict=True):
        by_pos.setdefault(p, []).append(s)
    k = max(len(v) for v in by_pos.values())
    out: list[list[Slice]] = [[] for _ in range(k)]
    for items in by_pos.values():
        items.sort(key=lambda s: (s.order, s.obj, s.frame))
        for i, s in enumerate(items):
            out[i].append(s)
    return out


def split_stacks(slices: Sequence[Slice]) -> list[list[Slice]]:
    """Slices grouped by orientation, matrix and pixel spacing (a multi-stack series, or a
    series with images in several planes, has several). Orientations within
    :data:`ORIENT_TOL` of a stack's first slice are that stack's: the last digits scanners
    write vary from slice to slice, and rounding would cut a stack where they cross a
    rounding boundary."""
    groups: list[tuple[Plane, list[Slice]]] = []
    for s in slices:
        for first, members in groups:
            if _same_grid(first, s.plane):
                members.append(s)
                break
        else:
            groups.append((s.plane, [s]))
    return [members for _, members in groups]


def _same_grid(a: Plane, b: Plane) -> bool:
    if a.shape != b.shape:
        return False
    if any(abs(x - y) > ORIENT_TOL for x, y in zip((*a.row, *a.col), (*b.row, *b.col),
                                                    strict=True)):
        return False
    return all(abs(x - y) <= 1e-4 * max(x, y) for x, y in zip(a.spacing, b.spacing,
                                                               strict=True))


def split_volumes(slices: Sequence[Slice]) -> list[list[Slice]]:
    """The volumes of one stack (slices of one orientation and grid).

    The key attributes are added, in preference order, only while they refine the split and
    until each volume holds each position at most once and there are as many volumes as
    images at the most crowded position. Whatever stays ambiguous is split by acquisition
    order (:func:`_ordinal_split`).
    """
    if _unique_positions(slices):
        return [list(slices)]
    crowd = max(_count_per_position(slices).values())
    names: list[str] = []
    candidates = [n for n, _ in slices[0].key]
    for other in slices[1:]:
        candidates += [n for n, _ in other.key if n not in candidates]
    groups = [list(slices)]
    for name in candidates:
        trial = _partition(slices, [*names, name])
        if len(trial) == len(groups) or len(trial) > crowd:
            continue  # no refinement, or splits what belongs together
        names.append(name)
        groups = trial
        if len(groups) == crowd and all(_unique_positions(g) for g in groups):
            break
    out: list[list[Slice]] = []
    for g in groups:
        out.extend([g] if _unique_positions(g) else _ordinal_split(g))
    return out


def _count_per_position(slices: Sequence[Slice]) -> dict[tuple[int, int, int], int]:
    counts: dict[tuple[int, int, int], int] = {}
    for p in _positions(slices):
        counts[p] = counts.get(p, 0) + 1
    return counts


#: A stack slanted more than this against its planes' normal is no tilted volume.
MAX_TILT_COS = 0.5


def blocks_of(slices: Sequence[Slice]) -> list[tuple[int, int]]:
    """Runs of slices one constant step apart (``slices`` sorted): along the normal, or
    along a slanted axis (a gantry tilt, up to 60 degrees)."""
    if not slices:
        return []
    blocks: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(slices) + 1):
        if i < len(slices) and _continues(slices, start, i):
            continue
        blocks.append((start, i))
        start = i
    return blocks


def _continues(slices: Sequence[Slice], start: int, i: int) -> bool:
    """Whether slice ``i`` extends the block starting at ``start`` by the same step."""
    a, b = slices[i - 1].plane, slices[i].plane
    step = np.array(b.origin) - np.array(a.origin)
    depth = float(step @ a.normal)
    if depth <= POSITION_TOL or depth < MAX_TILT_COS * float(np.linalg.norm(step)):
        return False
    if i - start < 2:
        return True
    first = np.array(slices[start + 1].plane.origin) - np.array(slices[start].plane.origin)
    return float(np.linalg.norm(step - first)) <= STEP_TOL * float(np.linalg.norm(first)) + 0.01


def build_volumes(slices: Sequence[Slice], pixels: Callable[[Slice], np.ndarray]
                  ) -> list[Volume]:
    """Every volume of the series' slices (all stacks), each sorted along its normal."""
    volumes: list[Volume] = []
    for stack in split_stacks(slices):
        for group in split_volumes(stack):
            group = sorted(group, key=lambda s: s.plane.depth)
            stored = np.stack([pixels(s) for s in group])
            volumes.append(Volume(slices=group, stored=stored, blocks=blocks_of(group)))
    _label(volumes)
    return volumes


def _label(volumes: list[Volume]) -> None:
    """Name each volume by the attributes that differ between the volumes (no PHI)."""
    keys = [dict(v.slices[0].key) for v in volumes]
    names = [n for n in (keys[0] if keys else {}) if n != "object"
             and len({k.get(n, "") for k in keys}) > 1]
    for i, (v, k) in enumerate(zip(volumes, keys, strict=True)):
        v.label = ", ".join(f"{n}={k.get(n, '')}" for n in names[:3]) or f"volume {i + 1}"
