"""Which frames of a stack can hold a stroke at all: an exact bound, at 1/16 of the work.

The text pre-filter (:mod:`agent.pixels.prefilter`) finds glyphs among the pixels that
stand out of a 7 x 7 opening (bright strokes) or below a 7 x 7 closing (dark strokes) by
more than its threshold, at full and at half resolution. A frame with no such pixel has no
candidate line, whatever the later rules, so the whole search - top-hats, long-run cuts,
labelling, lines - can be skipped for it. Most MR and CT slices of a series never reach
the threshold on air and smooth tissue; this module tells which frames do, from 4 x 4
blocks of the raw samples, without a float copy of the stack.

Why the bound holds (the prefilter's opening is ``max over 7-windows W containing p of
min(W)``, windows cut at the frame's far end):

* every window of 8 x 8 pixels that starts on the 4-pixel grid and contains ``p`` also
  contains a 7 x 7 window that contains ``p`` (cut at the frame's end as the prefilter
  cuts it), so its minimum is at most the opening at ``p``; the largest such minimum over
  the (up to four) 8 x 8 windows that contain ``p``'s block is a lower bound of the opening
  of every pixel of the block;
* so ``block maximum - that bound`` is an upper bound of the bright top-hat of every pixel
  of the block, and the mirror image (smallest window maximum - block minimum) of the dark
  one;
* the 8-bit scaling of each frame over its own range is monotonic, so it commutes with
  minima and maxima: the bound is computed on raw samples and scaled afterwards, with the
  very arithmetic of :func:`agent.pixels.prefilter.to_display`;
* a half-resolution pixel (the floor of a 2 x 2 mean) lies between the minimum and the
  maximum of its four pixels: the same bound over 8 x 8 blocks and 16 x 16 windows holds for
  the half-resolution pass. Blocks and windows taken larger than needed (a frame's last
  odd row) only loosen the bound.

A frame whose bound stays at or under the threshold everywhere has no stroke pixel, hence
no candidate; every other frame is searched exactly as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from agent.pixels.prefilter import STROKE_THRESHOLD

_BLOCK = 4


def _blocks(frames: npt.NDArray[Any], fn: np.ufunc) -> npt.NDArray[Any]:
    """``fn`` over the 4 x 4 blocks of ``frames`` (n, rows, cols; both multiples of 4)."""
    n, rows, cols = frames.shape
    by_rows: npt.NDArray[Any] = fn.reduce(frames.reshape(n, rows // _BLOCK, _BLOCK, cols),
                                          axis=2)
    parts = [by_rows[:, :, k::_BLOCK] for k in range(_BLOCK)]
    out: npt.NDArray[Any] = fn(fn(parts[0], parts[1]), fn(parts[2], parts[3]))
    return out


def _run(a: npt.NDArray[Any], fn: np.ufunc, m: int, axis: int, ahead: bool
         ) -> npt.NDArray[Any]:
    """``fn`` over runs of ``m`` blocks along ``axis``: per block, over it and the
    ``m - 1`` after it (``ahead``: the window of ``m`` blocks starting there, cut by the
    frame's end as the pre-filter's windows are), or before it (the windows of ``m``
    blocks that contain a block are those starting up to ``m - 1`` before it, none
    before the frame's start)."""
    out = a.copy()
    n = a.shape[axis]
    for k in range(1, min(m, n)):
        head = (slice(None),) * axis + (slice(0, n - k),)
        tail = (slice(None),) * axis + (slice(k, n),)
        if ahead:
            out[head] = fn(out[head], a[tail])
        else:
            out[tail] = fn(out[tail], a[head])
    return out


def _largest_hats(high: npt.NDArray[Any], low: npt.NDArray[Any], m: int
                  ) -> npt.NDArray[np.float64]:
    """Per frame: an upper bound (raw units) of its largest bright or dark top-hat, from
    block maxima and minima (n, R, C) and windows of ``m`` x ``m`` blocks."""
    win_min = _run(_run(low, np.minimum, m, 1, True), np.minimum, m, 2, True)
    win_max = _run(_run(high, np.maximum, m, 1, True), np.maximum, m, 2, True)
    opened = _run(_run(win_min, np.maximum, m, 1, False), np.maximum, m, 2, False)
    closed = _run(_run(win_max, np.minimum, m, 1, False), np.minimum, m, 2, False)
    # Differences in a wider type: int16 extremes would wrap.
    wide: type[np.generic] = np.int64 if high.dtype.itemsize >= 4 else np.int32
    if high.dtype.kind == "f":
        wide = np.float64
    bright = np.subtract(high, opened, dtype=wide).max(axis=(1, 2))
    dark = np.subtract(closed, low, dtype=wide).max(axis=(1, 2))
    out: npt.NDArray[np.float64] = np.maximum(bright, dark).astype(np.float64)
    return out


def may_hold_strokes(frames: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """For each frame of ``frames`` (n, rows, cols; raw samples of one image shape):
    False when no pixel of it can be a stroke of the pre-filter, at full or at half
    resolution (so it holds no candidate line); True when it may."""
    n, rows, cols = frames.shape
    if n == 0:
        return np.zeros(0, bool)
    if min(rows, cols) < 4 * _BLOCK or frames.dtype.kind not in "uif":
        return np.ones(n, bool)
    pad_r, pad_c = -rows % _BLOCK, -cols % _BLOCK
    if pad_r or pad_c:  # the last block's own edge repeated: its extremes do not change
        frames = np.pad(frames, ((0, 0), (0, pad_r), (0, pad_c)), mode="edge")
    high, low = _blocks(frames, np.maximum), _blocks(frames, np.minimum)
    # Full resolution: windows of 8 pixels (2 blocks) on the 4-pixel grid; half
    # resolution: a block is 2 x 2 half-pixels, windows of 8 half-pixels on the 2-grid.
    largest = np.maximum(_largest_hats(high, low, 2), _largest_hats(high, low, 4))
    # In display units (to_display: floor((v - lo) * scale), lo and scale as float32) a
    # top-hat over the threshold needs a raw difference over (threshold - 1) / scale.
    lo = low.min(axis=(1, 2)).astype(np.float32)
    hi = high.max(axis=(1, 2)).astype(np.float32)
    scale = (255.0 / np.maximum(hi - lo, 1e-6)).astype(np.float32).astype(np.float64)
    bound = largest * scale * (1 + 1e-6)
    # Not a number (float samples with NaN): searched, as before.
    out: npt.NDArray[np.bool_] = ~(bound <= STROKE_THRESHOLD - 1.01)
    return out
