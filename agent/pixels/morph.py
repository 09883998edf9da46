"""The morphology under the text pre-filter (:mod:`agent.pixels.prefilter`), on whole
stacks of 8-bit frames at once: each frame scaled to 8 bits over its own range, running
extremes by doubling, the white and black top-hats of a 7 x 7 box, 2 x 2 pooling, openings
by a line, and the half-resolution stack.

Work arrays of the top-hats are kept per thread for the next chunk of the same shape (a
fresh array of a few megabytes costs the kernel's page faults on first touch: on real
slices a third of the search's CPU).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]

#: Half size of the top-hat box: strokes up to ~2*R pixels wide are kept.
_R = 3
#: Background level (of 255) below which a line stands on air.
AIR = 20


def to_display(frames: npt.NDArray[np.generic]) -> U8:
    """Every frame (n, rows, cols) scaled to 0..255 over its own minimum and maximum."""
    n = frames.shape[0]
    flat = frames.reshape(n, -1)
    lo = flat.min(axis=1).astype(np.float32)
    hi = flat.max(axis=1).astype(np.float32)
    scale = (255.0 / np.maximum(hi - lo, 1e-6)).astype(np.float32)
    out = np.empty(frames.shape, np.uint8)
    for i in range(n):  # frame by frame: no float copy of the whole stack in memory
        f = (frames[i].astype(np.float32) - lo[i]) * scale[i]
        np.clip(f, 0, 255, out=f)
        out[i] = f.astype(np.uint8)
    return out


def _extreme(a: U8, axis: int, size: int, fn: np.ufunc, forward: bool,
             buffers: tuple[U8, U8] | None = None) -> U8:
    """Running max/min over ``size`` pixels along ``axis``, by doubling: the window starts
    at each pixel (``forward``) or ends there. An erosion forward then a dilation backward
    is exactly an opening (the union of the boxes that hold the pixel), with no re-centring.

    Each doubling writes into the other of two ``buffers`` (arrays shaped like ``a``; new
    ones when not given): an update in place would overlap its own input, which numpy
    resolves with a hidden copy, and a fresh array per step costs the kernel's page
    faults. ``a`` is written only when it is one of the buffers; the result is one of them.
    """
    first, second = buffers if buffers is not None else (np.empty_like(a), np.empty_like(a))
    n = a.shape[axis]
    src: U8 = a
    span = 1
    while span < size:
        step = min(span, size - span)
        span += step
        if step >= n:  # no pixel has a neighbour that far: nothing changes
            continue
        dst = second if src is first else first
        head = (slice(None),) * axis + (slice(0, n - step),)
        tail = (slice(None),) * axis + (slice(step, n),)
        if forward:  # out[i] = fn(in[i], in[i + step]); the last ``step`` are kept
            fn(src[head], src[tail], out=dst[head])
            kept = (slice(None),) * axis + (slice(n - step, n),)
        else:  # out[i] = fn(in[i], in[i - step]); the first ``step`` are kept
            fn(src[tail], src[head], out=dst[tail])
            kept = (slice(None),) * axis + (slice(0, step),)
        dst[kept] = src[kept]
        src = dst
    if src is a and a is not first and a is not second:
        first[...] = a
        src = first
    return src


def _box(a: U8, fn: np.ufunc, size: int, forward: bool,
         buffers: tuple[U8, U8] | None = None) -> U8:
    if buffers is None:
        buffers = (np.empty_like(a), np.empty_like(a))
    return _extreme(_extreme(a, 2, size, fn, forward, buffers), 1, size, fn, forward,
                    buffers)


@dataclass
class Hats:
    """Top-hat images of a stack: how far each pixel stands out of a 7 x 7 opening
    (bright strokes) or below a closing (dark strokes), and those backgrounds."""

    bright: U8
    dark: U8
    opened: U8
    closed: U8
    #: The frames themselves (the air level of a frame is read from them when needed).
    display: U8
    _air: dict[int, float] = field(default_factory=dict)

    def air(self, frame: int) -> float:
        """The level (of 255) below which a background of ``frame`` is air."""
        level = self._air.get(frame)
        if level is None:
            level = self._air[frame] = _air_level(self.display[frame])
        return level


def _air_level(frame: U8) -> float:
    """The level below which a background is air: half Otsu's threshold between air and
    tissue, and never above ``AIR``."""
    bins = np.arange(256, dtype=np.float64)
    hist = np.bincount(frame.ravel(), minlength=256).astype(np.float64)
    w0 = np.cumsum(hist)
    m0 = np.cumsum(hist * bins)
    total, mean = w0[-1], m0[-1]
    w1 = total - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean * w0 / total - m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = 0
    # A twentieth of the brightest tissue too: a frame scaled to one bright spot shows
    # its tissue dim, but still above 1/20 of its own 99th percentile.
    tissue = float(np.searchsorted(w0, 0.99 * total))
    return min(float(AIR), float(np.argmax(between)) / 2, 2 + tissue / 20)


#: Work arrays kept per thread for the next chunk of the same shape: a fresh array of a
#: few megabytes costs the kernel's page faults on first touch (measured: a third of the
#: search's CPU on real slices). Only stacks up to this size are kept.
_KEEP_BYTES = 4 << 20
_work = threading.local()


def _workspace(shape: tuple[int, ...], count: int) -> list[U8]:
    """``count`` uint8 work arrays of ``shape`` for one search of this thread (the same
    arrays again for the next stack of that shape: no caller keeps them past its call)."""
    kept: dict[tuple[int, ...], list[U8]] = getattr(_work, "arrays", None) or {}
    arrays = kept.get(shape, [])
    while len(arrays) < count:
        arrays.append(np.empty(shape, np.uint8))
    if int(np.prod(shape)) <= _KEEP_BYTES:
        kept.pop(shape, None)  # the last three shapes: full, both masks', half resolution
        _work.arrays = {**dict(list(kept.items())[-2:]), shape: arrays}
    return arrays[:count]


def stroke_hats(display: U8, work: list[U8] | None = None) -> Hats:
    """The top-hats of ``display``; ``work``: four arrays of its shape to hold them (see
    :func:`_workspace`; new ones when not given)."""
    size = 2 * _R + 1
    if work is None:
        work = [np.empty_like(display) for _ in range(4)]
    # Two buffers per polarity for every step; the one not holding the background ends
    # up holding the top-hat (no wrap: opened <= display <= closed).
    light = (work[0], work[1])
    opened = _box(_box(display, np.minimum, size, True, light), np.maximum, size, False,
                  light)
    bright = np.subtract(display, opened, out=light[1] if opened is light[0] else light[0])
    shade = (work[2], work[3])
    closed = _box(_box(display, np.maximum, size, True, shade), np.minimum, size, False,
                  shade)
    dark = np.subtract(closed, display, out=shade[1] if closed is shade[0] else shade[0])
    return Hats(bright, dark, opened, closed, display)


def _pool(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
    """OR over 2 x 2 cells (odd last row/column dropped into the previous cell)."""
    n, r, c = mask.shape
    r2, c2 = r // 2, c // 2
    m = mask[:, : r2 * 2, : c2 * 2].view(np.uint8)
    return m[:, ::2, ::2] | m[:, 1::2, ::2] | m[:, ::2, 1::2] | m[:, 1::2, 1::2]


def _line_opening(cells: npt.NDArray[np.uint8], axis: int, length: int
                  ) -> npt.NDArray[np.uint8]:
    buffers = (np.empty_like(cells), np.empty_like(cells))
    return _extreme(_extreme(cells, axis, length, np.minimum, True, buffers), axis, length,
                    np.maximum, False, buffers)


def _long_runs(cells: npt.NDArray[np.uint8], axis: int, length: int
               ) -> npt.NDArray[np.uint8]:
    """The opening of ``cells`` (n, r, c; 0/1) by a line of ``length`` along ``axis`` (1:
    columns, 2: rows), windows cut at the frame's far end as :func:`_extreme` cuts them.

    Only the lines (columns or rows) that can keep a cell are opened: one with at least
    ``length`` cells set, or with its last cell set (a window cut by the far end is
    shorter). Any other line has no window of set cells, so its opening is empty - on
    anatomy, nearly every line, as strokes there are sparse specks."""
    count = cells.sum(axis=axis, dtype=np.intp)
    last = cells[:, -1, :] if axis == 1 else cells[:, :, -1]
    busy = (count >= length) | (last != 0)
    if busy.sum() * 8 > busy.size:  # many: the whole stack at once costs less
        return _line_opening(cells, axis, length)
    frame, across = np.nonzero(busy)
    out = np.zeros_like(cells)
    if frame.size == 0:
        return out
    lines = cells[frame, :, across] if axis == 1 else cells[frame, across, :]
    opened = _line_opening(lines, 1, length)
    if axis == 1:
        out[frame, :, across] = opened
    else:
        out[frame, across, :] = opened
    return out


def _half(display: U8) -> U8:
    """Each 2 x 2 cell's mean, rounded down (odd last row and column left out)."""
    n, r, c = display.shape
    d = display[:, : r // 2 * 2, : c // 2 * 2]
    pairs = np.add(d[:, ::2], d[:, 1::2], dtype=np.uint16)  # rows first: half the data
    quads = pairs[:, :, ::2] + pairs[:, :, 1::2]
    quads >>= 2
    return quads.astype(np.uint8)
