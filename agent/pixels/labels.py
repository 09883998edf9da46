"""Connected components of a stack of stroke masks, and their boxes.

The pre-filter (:mod:`agent.pixels.prefilter`) labels the stroke pixels of every frame of a
chunk at once. On real anatomy those are sparse - a few thousand specks in 32 frames of
256 x 256 once the long runs are cut - so the components are found from the set pixels
alone (union-find over neighbour pairs, in numpy), not by scanning every pixel of the
stack as an image labeller does; a dense mask (a screen capture, a noisy frame) goes to
ITK's labeller, which costs by the pixel but does not mind how many are set. Both give
the same components, in the same order (by their first pixel in raster order).

Frames are stacked with an empty row after each, so that no component spans two frames;
rows are counted in that stack (``frame * (rows + 1) + row``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

#: Above this fraction of set pixels the image labeller costs less than the pairs.
_SPARSE = 0.08

Boxes = tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.intp],
              npt.NDArray[np.intp], npt.NDArray[np.intp]]


def _roots(where: npt.NDArray[np.intp], xs: npt.NDArray[np.intp], cols: int, full: bool
           ) -> npt.NDArray[np.intp]:
    """Per set pixel (``where``: positions in the stack, ascending; ``xs``: columns): the
    index of its component's first pixel, by hooking the roots of neighbour pairs onto
    the smaller one and halving paths until no pair is split."""
    n = where.size
    first: list[npt.NDArray[np.intp]] = []
    second: list[npt.NDArray[np.intp]] = []
    # The neighbours after a pixel in raster order (those before it are found from them).
    offsets = [(1, xs != cols - 1), (cols, None)]
    if full:
        offsets += [(cols - 1, xs != 0), (cols + 1, xs != cols - 1)]
    for offset, ok in offsets:
        target = where + offset
        k = np.minimum(np.searchsorted(where, target), n - 1)
        hit = where[k] == target
        if ok is not None:
            hit &= ok
        first.append(np.flatnonzero(hit))
        second.append(k[hit])
    a, b = np.concatenate(first), np.concatenate(second)
    root = np.arange(n)
    while a.size:
        ra, rb = root[a], root[b]
        split = ra != rb
        if not split.any():
            break
        a, b, ra, rb = a[split], b[split], ra[split], rb[split]
        low = np.minimum(ra, rb)
        np.minimum.at(root, ra, low)
        np.minimum.at(root, rb, low)
        while True:  # every pixel straight to its root
            up = root[root]
            if np.array_equal(up, root):
                break
            root = up
    return root


def _set_pixels(cells: npt.NDArray[np.uint8]) -> npt.NDArray[np.intp]:
    """Flat indices of the set pixels, ascending. The mask read eight bytes at a time
    first: np.flatnonzero tests a sparse uint8 stack byte by byte, several times slower."""
    flat = cells.reshape(-1)
    if flat.size % 8 or not flat.flags.c_contiguous:
        return np.flatnonzero(flat)
    words = np.flatnonzero(flat.view(np.uint64))
    word, byte = np.nonzero(flat.reshape(-1, 8)[words])
    out: npt.NDArray[np.intp] = words[word] * 8 + byte
    return out


def _itk_labels(cells: npt.NDArray[np.uint8], full: bool) -> npt.NDArray[Any]:
    """ITK's labels of the frames stacked with an empty row after each (imported on first
    use: most workers never need it). One thread: the pool's workers already fill the
    cores, and a second thread costs CPU to split the work."""
    import SimpleITK as sitk

    n, r, c = cells.shape
    tall = np.zeros((n, r + 1, c), np.uint8)
    tall[:, :r] = cells
    labeller = sitk.ConnectedComponentImageFilter()
    labeller.SetFullyConnected(full)
    labeller.SetNumberOfThreads(1)
    labels: npt.NDArray[Any] = sitk.GetArrayFromImage(
        labeller.Execute(sitk.GetImageFromArray(tall.reshape(n * (r + 1), c))))
    return labels


def component_boxes(cells: npt.NDArray[np.uint8], full: bool, sparse: bool | None = None
                    ) -> Boxes | None:
    """(top row in the stack, left, height, width, pixel count) of every 8-connected
    (``full``) or 4-connected component of the frames ``cells`` (n, rows, cols), in the
    order of their first pixels; None when no pixel is set. ``sparse``: force one way
    (tests compare them)."""
    n, r, c = cells.shape
    flat = _set_pixels(cells)
    if flat.size == 0:
        return None
    frame_rows, xs = np.divmod(flat, c)
    ys = frame_rows + frame_rows // r  # an empty row after each frame
    where = ys * c + xs
    if sparse is None:
        sparse = flat.size <= _SPARSE * cells.size
    if sparse:
        ids = _roots(where, xs, c, full)
    else:
        ids = _itk_labels(cells, full).ravel()[where].astype(np.intp)
    # Sorted by component (stable: rows stay in order within one), then per-component
    # reductions: np.minimum.at over every pixel is many times slower.
    order = np.argsort(ids, kind="stable")
    ids, ys, xs = ids[order], ys[order], xs[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], ids.size] - 1
    top, bottom = ys[starts], ys[ends]
    left = np.minimum.reduceat(xs, starts)
    right = np.maximum.reduceat(xs, starts)
    return top, left, bottom - top + 1, right - left + 1, ends - starts + 1
