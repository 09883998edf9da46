"""Siemens mosaics: every slice of a volume tiled into one image, row by row.

How many tiles hold slices is in the private headers: the CSA image header's
``NumberOfImagesInMosaic`` (0029,xx10) or (0019,xx0A) of ``SIEMENS MR HEADER``. Both are
private, so de-identification drops them: :func:`hints_from` reads them from the staged
originals. Where no original holds them (a PACS or an anonymiser dropped every private
element), the tiling is read from the pixels - the one under which neighbouring tiles look
like neighbouring slices, the Acquisition Matrix preferred where it agrees - or, where
that is not certain, the series is refused saying so (:func:`_layout_from_pixels`).

Geometry (as scanners and converters such as dcm2niix and nibabel read it): Image Position
(Patient) of a mosaic is where the top-left pixel would be if the mosaic were one slice
with the slices' pixel spacing, centred on the first slice; tile ``i`` lies ``i`` slice
steps along the CSA ``SliceNormalVector`` (else the cross product of the orientation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from agent.deface import csa
from agent.deface.planes import is_projection, number, plane_of, volume_key
from agent.deface.volumes import Plane, Slice
from agent.errors import DefaceFailed

_SIEMENS_MR_HEADER = "SIEMENS MR HEADER"


@dataclass(frozen=True)
class Layout:
    """How one mosaic is tiled."""

    count: int  # tiles holding slices
    grid: int  # tiles per row (and per column)
    rows: int  # pixels per tile
    cols: int
    normal: tuple[float, float, float] | None = None


@dataclass
class Hints:
    """Mosaic facts read from the originals: per Instance Number and for the series."""

    count: int | None = None
    normal: tuple[float, float, float] | None = None
    by_instance: dict[str, tuple[int, tuple[float, float, float] | None]] = field(
        default_factory=dict)
    #: Tilings read from the pixels, by (rows, columns): decided once, on the series' first
    #: mosaic of that size (a b0 or a first time point shows the most tissue).
    from_pixels: dict[tuple[int, int], Layout] = field(default_factory=dict)


def is_mosaic(ds: Dataset) -> bool:
    values = ds.get("ImageType") or []
    values = [values] if isinstance(values, str) else list(values)
    return any(str(v).strip().upper() == "MOSAIC" for v in values)


def _own(ds: Dataset) -> tuple[int | None, tuple[float, float, float] | None]:
    """Tile count and slice normal from the object's own private headers."""
    tags = csa.header(ds)
    count = csa.number(tags, "NumberOfImagesInMosaic")
    vec = csa.vector(tags, "SliceNormalVector")
    normal = (vec[0], vec[1], vec[2]) if vec else None
    if count is None:
        for block in range(0x10, 0x100):
            creator = ds.get((0x0019, block))
            if creator is not None and str(creator.value).strip() == _SIEMENS_MR_HEADER:
                elem = ds.get((0x0019, (block << 8) | 0x0A))
                try:
                    count = float(elem.value) if elem is not None else None
                except (TypeError, ValueError):
                    count = None
                break
    return (int(count) if count and count > 0 else None), normal


#: Header-less mosaics whose pixels are tried for the series' tiling, at most.
PIXEL_TRIES = 8


def hints_from(sources: list[Path]) -> Hints:
    """Read the mosaic facts of the staged originals (headers only; mosaics only). Where
    none holds a private header, the tiling is read from the pixels of the first of them
    (by Instance Number) that tells it for certain: a b0 or first time point does, a noisy
    b1000 may not, and all mosaics of one size in a series share one tiling."""
    hints = Hints()
    bare: list[tuple[float, Path]] = []
    for path in sources:
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - an unreadable original gives no hint
            continue
        if not is_mosaic(ds):
            continue
        count, normal = _own(ds)
        if count is None:
            bare.append((number(ds.get("InstanceNumber")), path))
            continue
        hints.by_instance[str(ds.get("InstanceNumber", ""))] = (count, normal)
        if hints.count is None:
            hints.count, hints.normal = count, normal
    if hints.count is None:
        for _, path in sorted(bare)[:PIXEL_TRIES]:
            try:
                ds = pydicom.dcmread(str(path))
                size = (int(ds.Rows), int(ds.Columns))
                if size not in hints.from_pixels:
                    hints.from_pixels[size] = _layout_from_pixels(ds)
            except Exception:  # noqa: BLE001 - undecodable or uncertain: try the next one
                continue
    return hints


def layout(ds: Dataset, hints: Hints) -> Layout | None:
    """The tiling of a mosaic object, or None when ``ds`` is not a mosaic."""
    if not is_mosaic(ds):
        return None
    rows, cols = int(ds.Rows), int(ds.Columns)
    count, normal = _own(ds)
    if count is None:
        count, normal = hints.by_instance.get(str(ds.get("InstanceNumber", "")),
                                              (hints.count, hints.normal)) \
            if hints.count else (None, None)
    if count is None:
        if (rows, cols) not in hints.from_pixels:
            hints.from_pixels[(rows, cols)] = _layout_from_pixels(ds)
        return hints.from_pixels[(rows, cols)]
    grid = math.ceil(math.sqrt(count))
    if grid < 1 or rows % grid or cols % grid:
        return None
    return Layout(count=count, grid=grid, rows=rows // grid, cols=cols // grid, normal=normal)


#: The right tiling puts neighbouring slices side by side, and neighbouring slices of a head
#: look alike: its tiles correlate with the next tile at least this well (median). On the
#: corpus' mosaics the right tiling scores 0.88-0.90 and every other one 0.70 or less
#: (a coarser tiling holding several slices per tile), a finer one about 0.
MIN_NEIGHBOUR_CORRELATION = 0.8
#: ... and better than any other tiling by this much, else the tiling is not certain.
MARGIN = 0.1
#: Tiles smaller than this (pixels) are no slices of a head.
MIN_TILE = 16


def _layout_from_pixels(ds: Dataset) -> Layout:
    """No private header anywhere in the series: the tiling is read from the pixels, the
    Acquisition Matrix only preferred where the pixels agree with it (an interpolated
    reconstruction makes tiles twice its size). Raises where no tiling is certain: a
    wrong tiling would place every slice wrongly, and its face with it."""
    arr = np.asarray(ds.pixel_array)
    rows, cols = int(ds.Rows), int(ds.Columns)
    scores: dict[int, tuple[float, int]] = {}
    for grid in range(2, min(rows, cols) // MIN_TILE + 1):
        if rows % grid == 0 and cols % grid == 0:
            found = _tiling_score(arr, grid)
            if found is not None:
                scores[grid] = found
    ranked = sorted(scores, key=lambda g: -scores[g][0])
    matrix = _matrix_grid(ds)
    best = ranked[0] if ranked else None
    if matrix in scores and best is not None and scores[matrix][0] >= scores[best][0] - 0.02:
        best = matrix
    if best is None or scores[best][0] < MIN_NEIGHBOUR_CORRELATION or any(
            scores[g][0] > scores[best][0] - MARGIN for g in ranked if g != best):
        raise DefaceFailed(
            "a Siemens mosaic of the series does not say how many slices it holds (its "
            "private header was removed before the export) and its tiling cannot be told "
            "for certain from its pixels; export the series from the scanner or PACS with "
            "its private headers and retry", code="deface-input")
    count = scores[best][1]
    return Layout(count=count, grid=best, rows=rows // best, cols=cols // best)


def _matrix_grid(ds: Dataset) -> int | None:
    """Tiles per row if a tile is as large as the Acquisition Matrix says."""
    try:
        size = max(int(v) for v in ds.AcquisitionMatrix)
    except (AttributeError, TypeError, ValueError):
        return None
    rows, cols = int(ds.Rows), int(ds.Columns)
    if size <= 0 or rows % size or cols % size or rows // size != cols // size:
        return None
    return rows // size


def _tiling_score(arr: np.ndarray, grid: int) -> tuple[float, int] | None:
    """(median correlation of each tile with the next, tiles holding a slice) of one
    tiling, or None where it cannot be a mosaic's: its empty tiles must all come last."""
    r, c = arr.shape[0] // grid, arr.shape[1] // grid
    tiles = arr.reshape(grid, r, grid, c).transpose(0, 2, 1, 3).reshape(grid * grid, r * c)
    filled = np.flatnonzero(tiles.any(axis=1))
    if len(filled) < 3 or filled[-1] + 1 != len(filled):
        return None
    x = tiles[:len(filled)].astype(np.float64)
    x -= x.mean(axis=1, keepdims=True)
    norms = np.sqrt((x * x).sum(axis=1))
    denom = norms[:-1] * norms[1:]
    corr = np.where(denom > 0, (x[:-1] * x[1:]).sum(axis=1) / np.maximum(denom, 1e-12), 0.0)
    return float(np.median(corr)), len(filled)


def tile_slices(obj: int, ds: Dataset, lay: Layout) -> list[Slice]:
    """One slice per tile holding a slice, with its own plane."""
    plane = plane_of(ds, (lay.rows, lay.cols))
    if plane is None:
        raise DefaceFailed("a mosaic of the series has no usable position or orientation",
                           code="deface-geometry")
    row, col = np.array(plane.row), np.array(plane.col)
    dr, dc = plane.spacing
    first = (np.array(plane.origin) + row * dc * (int(ds.Columns) - lay.cols) / 2.0
             + col * dr * (int(ds.Rows) - lay.rows) / 2.0)
    normal = np.array(lay.normal) if lay.normal is not None else plane.normal
    normal = normal / (np.linalg.norm(normal) or 1.0)
    try:
        step = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 0.0)
    except (TypeError, ValueError):
        step = 0.0
    if step <= 0:
        raise DefaceFailed("a mosaic of the series gives no slice spacing",
                           code="deface-geometry")
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    icpt = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    key = volume_key(obj, ds)
    out = []
    for i in range(lay.count):
        origin = first + normal * step * i
        p = Plane(origin=(float(origin[0]), float(origin[1]), float(origin[2])),
                  row=plane.row, col=plane.col, spacing=plane.spacing,
                  shape=(lay.rows, lay.cols), thickness=plane.thickness)
        out.append(Slice(obj=obj, frame=0, tile=i, plane=p, slope=slope, intercept=icpt,
                         key=key, order=number(ds.get("InstanceNumber")) * 1000 + i,
                         projection=is_projection(ds.get("ImageType"))))
    return out


def tile(arr: np.ndarray, lay: Layout, index: int) -> np.ndarray:
    """The pixels of tile ``index`` (a view into the mosaic)."""
    r, c = divmod(index, lay.grid)
    return arr[r * lay.rows:(r + 1) * lay.rows, c * lay.cols:(c + 1) * lay.cols]


def put_tile(arr: np.ndarray, lay: Layout, index: int, values: np.ndarray) -> None:
    tile(arr, lay, index)[...] = values
