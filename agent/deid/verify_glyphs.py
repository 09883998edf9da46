"""The verifier's own search for small burned-in text (independent of :mod:`agent.pixels`).

The OCR sample of :mod:`agent.deid.verify_pixels` reads a few whole frames; text a few
pixels tall on one slice of two hundred is neither in the sample nor readable at a whole
frame's scale. So every decoded output frame is searched here for text-like boxes, by a
method unlike the stage's (which uses top-hats and connected glyphs): rows of dense, strong
horizontal intensity transitions - glyph strokes side by side - thresholded and labelled
(every other row, in tiles of 8 columns).
The best-scoring boxes of a series (near the frame's edge first, where viewers write) are
cut out, scaled up to a height Tesseract reads, and read in both polarities; the verifier
fails the series when one shows an identifier of the patient.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: A box: frame, top, left, height, width (pixels) and a score (higher: read first).
Box = tuple[int, int, int, int, int, float]

#: A transition between neighbouring pixels this strong (of 255) may be a glyph's edge.
_EDGE = 40
#: Transitions per window of this many pixels along a row that make a row text-dense.
_WINDOW, _DENSE = 12, 4
#: Columns labelled together.
_TILE = 8
#: Heights (pixels) of a text band, and the boxes kept per frame and read per series.
_MIN_H, _MAX_H = 4, 40
PER_FRAME = 4
PER_SERIES = 16


def _gray(frames: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Frames (n, rows, cols[, samples]) as 8-bit grey, each over its own range."""
    f = frames.astype(np.float32)
    if f.ndim == 4:
        f = f.mean(axis=3)
    lo = f.min(axis=(1, 2), keepdims=True)
    hi = f.max(axis=(1, 2), keepdims=True)
    scale = 255.0 / np.maximum(hi - lo, 1e-6)
    f -= lo  # in place: the same float32 arithmetic without two more copies of the stack
    f *= scale
    return f.astype(np.uint8)


def _groups(grid: np.ndarray[Any, Any]) -> list[tuple[int, int, int, int, int]]:
    """(top, left, height, width, cells) of the 8-connected groups of a small 2-D grid, in
    the order of their first cell (raster order): runs of set cells per row, each joined
    to the runs it touches in the row above, diagonals included (a grid of a few
    thousand cells: ITK's labelling costs ~10 ms a call in set-up alone)."""
    padded = np.zeros((grid.shape[0], grid.shape[1] + 2), np.int8)
    padded[:, 1:-1] = grid != 0
    steps = np.diff(padded, axis=1)
    row, start = np.nonzero(steps == 1)
    end = np.nonzero(steps == -1)[1]  # same order: row by row, left to right (exclusive)
    if row.size == 0:
        return []
    span = grid.shape[1] + 2
    # Runs of the row above that touch run k: from the first ending at or after k's
    # start to the last starting at or before k's end (runs of a row are disjoint and
    # sorted, so those are consecutive).
    first = np.searchsorted(row * span + end, (row - 1) * span + start, side="left")
    last = np.searchsorted(row * span + start, (row - 1) * span + end, side="right") - 1
    count = np.maximum(last - first + 1, 0)
    below = np.repeat(np.arange(row.size), count)
    above = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count) + \
        np.repeat(first, count)
    group = np.arange(row.size)  # each run's group: the index of its first run
    while below.size:
        gb, ga = group[below], group[above]
        apart = gb != ga
        if not apart.any():
            break
        below, above, gb, ga = below[apart], above[apart], gb[apart], ga[apart]
        least = np.minimum(gb, ga)
        np.minimum.at(group, gb, least)
        np.minimum.at(group, ga, least)
        while True:  # every run straight to its group's first run
            up = group[group]
            if np.array_equal(up, group):
                break
            group = up
    order = np.argsort(group, kind="stable")
    g = group[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    top = np.minimum.reduceat(row[order], starts)
    bottom = np.maximum.reduceat(row[order], starts)
    left = np.minimum.reduceat(start[order], starts)
    right = np.maximum.reduceat(end[order], starts)
    cells = np.add.reduceat((end - start)[order], starts)
    return list(zip((top).tolist(), left.tolist(), (bottom - top + 1).tolist(),
                    (right - left).tolist(), cells.tolist(), strict=True))


def largest_steps(frames: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Per frame (n, rows, cols[, samples]): an upper bound of the largest step between
    neighbours along a searched row (every other one), in the 8-bit units of
    :func:`_gray` - computed on the raw samples, no float copy of the frames. A frame
    whose bound is under ``_EDGE`` has no transition, hence no text-like box."""
    n = frames.shape[0]
    if frames.ndim != 3 or frames.dtype.kind not in "ui" or frames.dtype.itemsize > 4:
        return np.full(n, 255.0)  # colour or float: searched whole, as before
    rows = frames[:, ::2]
    wide = np.int64 if frames.dtype.itemsize == 4 else np.int32
    step = np.subtract(rows[:, :, 1:], rows[:, :, :-1], dtype=wide)
    if step.size == 0:
        return np.zeros(n)
    largest = np.maximum(step.max(axis=(1, 2)), -step.min(axis=(1, 2))).astype(np.float64)
    lo = rows.min(axis=(1, 2)).astype(np.float32)
    hi = rows.max(axis=(1, 2)).astype(np.float32)
    scale = (255.0 / np.maximum(hi - lo, 1e-6)).astype(np.float32).astype(np.float64)
    # _gray truncates each value: two neighbours differ by at most step * scale + 1.
    out: np.ndarray[Any, Any] = largest * scale * (1 + 1e-6) + 1.01
    return out


def text_boxes(frames: np.ndarray[Any, Any], steps: np.ndarray[Any, Any] | None = None
               ) -> list[Box]:
    """Text-like boxes of every frame (at most ``PER_FRAME`` each, best first); ``steps``:
    :func:`largest_steps` of ``frames``, when known (frames without a transition are not
    searched)."""
    if frames.ndim < 3 or min(frames.shape[1:3]) < 32:
        return []
    if steps is None:
        steps = largest_steps(frames)
    searched = np.flatnonzero(~(steps < _EDGE))  # NaN (no bound): searched
    if searched.size == 0:
        return []
    if searched.size < frames.shape[0]:
        return [(int(searched[b[0]]), *b[1:]) for b in _text_boxes(frames[searched])]
    return _text_boxes(frames)


def _window_sums(edges: np.ndarray[Any, Any], width: int) -> np.ndarray[Any, Any]:
    """Per pixel of ``edges`` (0/1 along the last axis, uint8): the transitions among the
    ``width`` pixels ending there (valid from column ``width - 1`` on), by doubling - a
    few uint8 additions, not a running sum in a wider type."""
    sums = {1: edges}
    span = 1
    while 2 * span <= width:  # windows of 2, 4, 8, ... pixels
        wider = sums[span].copy()
        wider[..., span:] += sums[span][..., :-span]
        span *= 2
        sums[span] = wider
    total, have = sums[span].copy(), span
    for part in sorted(sums, reverse=True):  # the rest of the width, largest part first
        if have + part <= width:
            total[..., have:] += sums[part][..., :-have]
            have += part
    return total


def _text_boxes(frames: np.ndarray[Any, Any]) -> list[Box]:
    # Every other row: text 4 px tall still crosses two of them, at half the work.
    g = _gray(frames[:, ::2])
    n, rows, cols = g.shape
    edges = np.zeros((n, rows, cols), np.uint8)
    # |a - b| in uint8 without wrapping: the larger minus the smaller.
    a, b = g[:, :, 1:], g[:, :, :-1]
    edges[:, :, 1:] = (np.maximum(a, b) - np.minimum(a, b)) >= _EDGE
    dense = np.zeros((n, rows + 1, cols), np.uint8)  # an empty row between frames
    if cols > _WINDOW:
        dense[:, :rows, _WINDOW:] = _window_sums(edges, _WINDOW)[:, :, _WINDOW:] >= _DENSE
    # Grouped in tiles of _TILE columns (a box is cut out with a margin anyway): a tile
    # of 0/1 bytes is set when its 8 bytes read as one word are not zero.
    ct = cols // _TILE
    words = np.ascontiguousarray(dense[:, :, :ct * _TILE]).view(np.uint64)
    tiles = words != 0
    found: dict[int, list[Box]] = {}
    full_rows = frames.shape[1]
    for y, x, h, w, _count in _groups(tiles.reshape(n * (rows + 1), ct)):
        frame, top = divmod(y, rows + 1)
        tile_rows, tile_x = (top, top + h), (x * _TILE, (x + w) * _TILE)
        x, w = x * _TILE, w * _TILE
        left = max(0, x - _WINDOW)  # the window counts transitions behind a pixel
        w += x - left
        top, h = top * 2, h * 2 + 1  # back to the frame's rows
        if not _MIN_H <= h <= _MAX_H or w < 2 * h or w > 0.9 * cols:
            continue
        # Transitions per pixel: strokes side by side make many, tissue fewer.
        fill = float(edges[frame, tile_rows[0]:tile_rows[1], tile_x[0]:tile_x[1]].mean())
        edge = min(top, left, full_rows - top - h, cols - left - w) < 0.25 * min(full_rows,
                                                                                   cols)
        # On air (a dark box: text is the smaller part of it) and near the edge, where
        # viewers write, first.
        air = float(np.median(g[frame, top // 2:(top + h) // 2 + 1, left:left + w])) < 26
        score = fill * (2.0 if edge else 1.0) * (2.0 if air else 1.0)
        found.setdefault(frame, []).append((frame, top, left, h, w, score))
    out: list[Box] = []
    for boxes in found.values():
        out += sorted(boxes, key=lambda b: -b[5])[:PER_FRAME]
    return out


def crops(frame: np.ndarray[Any, Any], box: Box) -> list[np.ndarray[Any, Any]]:
    """The box cut from ``frame`` with a margin, scaled to a text height of about 40
    pixels (at least 3x), as dark text on light (both ways when the box does not say)."""
    from PIL import Image

    g = _gray(frame[None])[0]
    _, top, left, h, w, _ = box
    m = max(3, h // 2)
    cut = g[max(0, top - m):top + h + m, max(0, left - m):left + w + m]
    lo, hi = int(cut.min()), int(cut.max())
    if hi > lo:
        cut = ((cut.astype(np.float32) - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    scale = max(3, min(5, round(40 / max(h, 1))))
    big = np.asarray(Image.fromarray(cut).resize((cut.shape[1] * scale, cut.shape[0] * scale),
                                                 Image.Resampling.LANCZOS))
    light = np.pad(255 - big, 16, constant_values=255)  # light text made dark on light
    dark = np.pad(big, 16, constant_values=255)
    # Text is the smaller part of its box: a dark box holds light text, a light box dark
    # text; only a box in between is read both ways.
    median = float(np.median(cut))
    return [light] if median < 80 else [dark] if median > 175 else [light, dark]


def best_boxes(outputs: list[Path], boxes: list[tuple[Box, ...]]) -> dict[Path, list[Box]]:
    """The series' ``PER_SERIES`` most text-like boxes, by file."""
    ranked = sorted(((b[5], i, b) for i, bs in enumerate(boxes) for b in bs),
                    key=lambda t: (-t[0], t[1]))[:PER_SERIES]
    out: dict[Path, list[Box]] = {}
    for _score, i, box in ranked:
        out.setdefault(outputs[i], []).append(box)
    return out


def box_text(reader: Any, frame: np.ndarray[Any, Any], box: Box) -> str:
    """What OCR reads in one text-like box (see :func:`crops`), as one line."""
    import tesserocr
    from PIL import Image

    reader.SetPageSegMode(tesserocr.PSM.SINGLE_BLOCK)
    try:
        texts = []
        for page in crops(frame, box):
            reader.SetImage(Image.fromarray(page))
            texts.append(str(reader.GetUTF8Text()))
        return " ".join(texts)
    finally:
        reader.SetPageSegMode(tesserocr.PSM.SPARSE_TEXT)
