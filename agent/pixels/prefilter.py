"""Where in a stack of frames text may be: a fast, high-recall pre-filter before OCR.

OCR costs tens of milliseconds per region; a 200-slice MR series must not wait seconds for
it. Text is told apart from anatomy by its shape, not by the header: glyphs are thin
strokes of high local contrast, a few to a few dozen pixels tall, standing side by side on
a line. The filter works on every frame at once (numpy over the whole stack):

1. each frame is scaled to 8 bits over its own range (what a viewer's full window shows);
2. a white and a black morphological top-hat (7 x 7 box, separable, by repeated doubling)
   keep structures thinner than the box that stand out from their surroundings: strokes,
   bright on dark and dark on bright; a half-resolution pass does the same for large fonts;
3. the stroke mask is pooled into 2 x 2 cells, its connected components labelled in one
   call (frames stacked with an empty row between them, so no component spans two frames),
   and components of glyph or word size are grouped into lines;
4. a line of at least two glyphs (or one word-shaped component) is a candidate region;
5. small text (glyphs 4 to 16 pixels tall, where 2 x 2 cells fuse a word into one block)
   is labelled again at full resolution, 4-connected, after long vertical and horizontal
   runs (edges of the head, ruler lines) are cut out of the stroke mask so that text
   touching them still stands alone.

A line of three or more glyphs on a flat background (air, or a label box) is *text-like*
(``Region.textlike``): the stage redacts it even when OCR cannot read it with confidence
(fail closed) - there, redaction fills background with background and hides no anatomy.

Recall matters more than precision: a false candidate costs one OCR call, a missed line is
a leak. The numbers are tuned on real MR of four vendors and on rendered text (see
``tests/pixels``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from agent.pixels.labels import component_boxes

U8 = npt.NDArray[np.uint8]

#: Half size of the top-hat box: strokes up to ~2*R pixels wide are kept.
_R = 3
#: Stroke contrast (of 255) that makes a pixel part of a stroke at all.
_SENSITIVE_THRESHOLD = 24
STROKE_THRESHOLD = _SENSITIVE_THRESHOLD
#: Background level (of 255) below which a line stands on air.
_AIR = 20
#: Over anatomy: the stroke contrast a line needs, and how uniform its colour must be
#: (spread of the brighter strokes, as a fraction of the contrast).
_ANATOMY_CONTRAST = 64
_UNIFORM = 0.3
#: Glyph height in cells (2 px each) that a component may have.
_MIN_H, _MAX_H = 3, 36
#: Small text at full resolution: glyph heights (pixels), and the runs of stroke pixels
#: (vertical, horizontal) long enough to be no glyph of that size.
_SMALL_MIN, _SMALL_MAX = 4, 20
_LONG_V, _LONG_H = 2 * _SMALL_MAX + 2, 64
#: Fail-closed redaction only in frames at least this large (pixels) and in this outer
#: fraction of them: an EPI tile of 64 x 64 has no room for annotations beside anatomy.
_MIN_FRAME = 128
_BAND = 0.25
#: Spread of a flat background (of 255, 10th to 90th percentile): air or a label box.
_FLAT = 10


@dataclass(frozen=True)
class Region:
    """A rectangle of one frame that may hold a line of text (pixel coordinates)."""

    frame: int
    top: int
    left: int
    height: int
    width: int
    #: True when the strokes are darker than their surroundings.
    dark: bool = False
    #: A line of 3+ glyphs on a flat background: text even when OCR cannot read it.
    textlike: bool = False

    def padded(self, margin: int, rows: int, cols: int) -> Region:
        top, left = max(0, self.top - margin), max(0, self.left - margin)
        bottom = min(rows, self.top + self.height + margin)
        right = min(cols, self.left + self.width + margin)
        return Region(self.frame, top, left, bottom - top, right - left, self.dark,
                      self.textlike)


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
    tissue, and never above ``_AIR``."""
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
    return min(float(_AIR), float(np.argmax(between)) / 2, 2 + tissue / 20)


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


def _components(cells: npt.NDArray[np.uint8], full: bool = True, low: int = 0,
                high: int = 1 << 30) -> list[tuple[int, int, int, int, int, int]]:
    """(frame, top, left, height, width, pixel count) of every 8-connected (``full``) or
    4-connected component shaped like a glyph of ``low`` to ``high`` rows
    (:func:`_glyph_like`)."""
    r = cells.shape[1]
    boxes = component_boxes(cells, full)
    if boxes is None:
        return []
    top, left, h, w, sizes = boxes
    fill = sizes / (h * w).astype(np.float64)
    # _glyph_like, on every component at once (most are tissue, not glyphs).
    shaped = np.flatnonzero((h >= low) & (h <= high) & (w <= 40 * h) & (fill >= 0.12)
                            & (fill <= 0.95))
    out = []
    for k in shaped.tolist():
        frame, row = divmod(int(top[k]), r + 1)
        out.append((frame, row, int(left[k]), int(h[k]), int(w[k]), int(sizes[k])))
    return out


def _glyph_like(h: int, w: int, count: int, low: int = _MIN_H, high: int = _MAX_H) -> bool:
    if not low <= h <= high or w > 40 * h:
        return False
    fill = count / float(h * w)
    return 0.12 <= fill <= 0.95


def _lines(glyphs: list[tuple[int, int, int, int, int]], single: bool
           ) -> list[tuple[int, int, int, int, int, int]]:
    """Group glyph boxes (frame, top, left, h, w) of one frame into lines of text."""
    glyphs = sorted(glyphs, key=lambda g: (g[0], g[2]))
    used = [False] * len(glyphs)
    lines = []
    for i, (frame, top, left, h, w) in enumerate(glyphs):
        if used[i]:
            continue
        used[i] = True
        members = 1
        ltop, lbottom, lleft, lright = top, top + h, left, left + w
        changed = True
        while changed:
            changed = False
            for j in range(i + 1, len(glyphs)):
                if used[j]:
                    continue
                f2, t2, l2, h2, w2 = glyphs[j]
                if f2 != frame:
                    break  # sorted by frame: no later glyph is on this one
                lh = lbottom - ltop
                overlap = min(lbottom, t2 + h2) - max(ltop, t2)
                if overlap < 0.5 * min(lh, h2) or max(lh, h2) > 2.5 * min(lh, h2):
                    continue
                gap = max(l2 - lright, lleft - (l2 + w2))
                if gap > 2.0 * max(lh, h2):
                    continue
                used[j] = True
                members += 1
                ltop, lbottom = min(ltop, t2), max(lbottom, t2 + h2)
                lleft, lright = min(lleft, l2), max(lright, l2 + w2)
                changed = True
        lh, lw = lbottom - ltop, lright - lleft
        if members >= 2 or single or lw >= 2 * lh:
            lines.append((frame, ltop, lleft, lh, lw, members))
    return lines


@dataclass(frozen=True)
class _Line:
    """A line of glyph-like components in one polarity, in pixels of the searched stack."""

    frame: int
    top: int
    left: int
    h: int
    w: int
    members: int
    dark: bool
    #: Members shaped like single glyphs (see _glyph_count), when known.
    glyphs: int = 0


def _by_frame(glyphs: list[tuple[int, int, int, int, int]]
              ) -> dict[int, list[tuple[int, int, int, int, int]]]:
    out: dict[int, list[tuple[int, int, int, int, int]]] = {}
    for g in glyphs:
        out.setdefault(g[0], []).append(g)
    return out


def _glyph_count(glyphs: list[tuple[int, int, int, int, int]], line: _Line) -> int:
    """Members of ``line`` shaped like one glyph (or two touching: no wider than 2.5
    heights), counted only when such members span at least half of the line: a row of
    artefact dots or a streak is one long component with a few specks beside it."""
    inside = [g for g in glyphs if line.top <= g[1]
              and g[1] + g[3] <= line.top + line.h and line.left <= g[2]
              and g[2] + g[4] <= line.left + line.w]
    narrow = [g for g in inside if g[4] <= 2.5 * g[3]]
    if len(narrow) < 3 or sum(g[4] for g in narrow) * 2 < line.w:
        return 0
    # Letters stand on one baseline; blobs of tissue do not line up so.
    bottoms = sorted(g[1] + g[3] for g in narrow)
    base = bottoms[len(bottoms) // 2]
    tol = max(1.0, 0.12 * line.h)
    return sum(1 for b in bottoms if abs(b - base) <= tol)


def _background(hats: Hats, line: _Line) -> tuple[float, float, float]:
    """Median, level (98th percentile for bright strokes, 2nd for dark: the background nearly
    everywhere) and spread (10th to 90th percentile) of a line's background, taken over
    the line and a margin of its height around it."""
    m = line.h
    back = (hats.closed if line.dark else hats.opened)[
        line.frame, max(0, line.top - m):line.top + line.h + m,
        max(0, line.left - m):line.left + line.w + m]
    p2, lo, mid, hi, p98 = np.percentile(back, (2, 10, 50, 90, 98))
    return float(mid), float(p2 if line.dark else p98), float(hi - lo)


def _near_edge(line: _Line, shape: tuple[int, ...]) -> bool:
    """Whether the line lies within the outer quarter of the frame (rows or columns)."""
    rows, cols = shape[0], shape[1]
    if min(rows, cols) < _MIN_FRAME:
        return False
    return (line.top + line.h <= rows * _BAND or line.top >= rows * (1 - _BAND)
            or line.left + line.w <= cols * _BAND or line.left >= cols * (1 - _BAND))


def _accept(hats: Hats, line: _Line, sensitive: bool) -> tuple[bool, bool]:
    """Whether a line of glyph-like components is worth an OCR call, and whether it is
    text-like (see the module doc).

    On air (a dark, flat background, where viewers put their annotations) a faint line
    counts; over anatomy, where tissue makes glyph-like blobs, only strokes of high contrast
    and uniform colour (as text is drawn) in a line of three or more glyphs do.
    """
    frame, top, left, h, w, members, dark = (line.frame, line.top, line.left, line.h,
                                             line.w, line.members, line.dark)
    hat = (hats.dark if dark else hats.bright)[frame, top:top + h, left:left + w]
    strokes = hat[hat > _SENSITIVE_THRESHOLD]
    if strokes.size < 4:
        return sensitive, False
    contrast = float(np.percentile(strokes, 90))
    median, level, spread = _background(hats, line)
    # Bright text on air, or dark text on a white label, near the edge of the frame, where
    # viewers write: never over anatomy.
    # Air: below the frame's air level, or far below strokes drawn over it (faint
    # stripes of signal in the air of a scan are still no tissue next to 200 of 255).
    air = max(hats.air(frame), contrast / 8)
    flat = spread <= _FLAT and (level >= 255 - _AIR if dark else level <= air)
    # Strokes of a quarter of the range at least: the speckle of noisy air is fainter.
    textlike = (flat and line.glyphs >= 3 and contrast >= max(2 * spread, _ANATOMY_CONTRAST)
                and _near_edge(line, hats.bright.shape[1:]))
    if sensitive or textlike:
        return True, textlike
    if not dark and median <= _AIR and contrast >= _SENSITIVE_THRESHOLD and (
            members >= 2 or w >= 2 * h):
        return True, False
    if contrast < _ANATOMY_CONTRAST or (members < 3 and w < 3 * h):
        return False, False
    uniform = float(np.percentile(strokes, 90) - np.percentile(strokes, 75))
    return uniform <= _UNIFORM * contrast, False


def _regions(hats: Hats, scale: int, sensitive: bool) -> list[Region]:
    """Candidate lines of both polarities (one labelling call for both: the dark strokes'
    cells are stacked after the bright ones')."""
    n = hats.bright.shape[0]
    cells = np.concatenate([_pool(hats.bright > _SENSITIVE_THRESHOLD),
                            _pool(hats.dark > _SENSITIVE_THRESHOLD)])
    glyphs = [(f, t, left, h, w) for f, t, left, h, w, count
              in _components(cells, True, _MIN_H, _MAX_H) if _glyph_like(h, w, count)]
    return _keep(hats, _typed(glyphs, _lines(glyphs, sensitive), n, 2), scale, sensitive)


def _typed(glyphs: list[tuple[int, int, int, int, int]],
           found: list[tuple[int, int, int, int, int, int]], n: int, cell: int
           ) -> list[_Line]:
    """Lines of the stacked polarities (frame >= n: dark strokes) in pixels, with their
    glyph counts; ``cell``: pixels per labelled cell."""
    per_frame = _by_frame(glyphs)
    out = []
    for f, t, left, h, w, m in found:
        count = _glyph_count(per_frame.get(f, []), _Line(f, t, left, h, w, m, f >= n)
                             ) if m >= 3 else 0
        out.append(_Line(f - n if f >= n else f, t * cell, left * cell, h * cell,
                         w * cell, m, f >= n, count))
    return out


def _keep(hats: Hats, lines: list[_Line], scale: int, sensitive: bool) -> list[Region]:
    out = []
    for ln in lines:
        ok, textlike = _accept(hats, ln, sensitive)
        if ok:
            out.append(Region(ln.frame, ln.top * scale, ln.left * scale, ln.h * scale,
                              ln.w * scale, ln.dark, textlike))
    return out


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


def _without_long_runs(mask: npt.NDArray[np.bool_], cut_here: bool = False
                       ) -> npt.NDArray[np.uint8]:
    """The stroke mask with vertical and horizontal runs too long for small glyphs cut
    out (``cut_here``: in ``mask`` itself). The runs are found on 2 x 2 cells (an opening
    by a line is the union of the runs at least that long), a quarter of the work, and cut
    out cell by cell."""
    cells = _pool(mask)
    keep = ~(_long_runs(cells, 1, _LONG_V // 2) | _long_runs(cells, 2, _LONG_H // 2)
             ) & np.uint8(1)
    out = mask.view(np.uint8) if cut_here else mask.view(np.uint8).copy()
    n, r, c = keep.shape
    # Each cell's four pixels at once: its flag twice side by side (a 16-bit 0x0101 seen
    # as two bytes) over both of its rows, the frames' even part seen as (cell row, dy,
    # column) - a view; an inner axis of 2 would make numpy loop byte by byte.
    pairs = (keep.astype(np.uint16) * np.uint16(0x0101)).view(np.uint8)
    rows = np.reshape(out[:, :2 * r, :2 * c], (n, r, 2, 2 * c), copy=False)
    rows &= pairs[:, :, None, :]
    return out


def _small_regions(hats: Hats, sensitive: bool) -> list[Region]:
    """Lines of small glyphs, labelled at full resolution (4-connected)."""
    n, r, c = hats.bright.shape
    # Both polarities in one stack (frame by frame, the cut is the same), in work arrays.
    mask = _workspace((2 * n, r, c), 1)[0].view(np.bool_)
    np.greater(hats.bright, _SENSITIVE_THRESHOLD, out=mask[:n])
    np.greater(hats.dark, _SENSITIVE_THRESHOLD, out=mask[n:])
    cells = _without_long_runs(mask, cut_here=True)
    glyphs = [(f, t, left, h, w) for f, t, left, h, w, count
              in _components(cells, False, _SMALL_MIN, _SMALL_MAX)
              if _glyph_like(h, w, count, _SMALL_MIN, _SMALL_MAX)]
    found = [ln for ln in _lines(glyphs, False) if ln[5] >= 3 or ln[4] >= 3 * ln[3]]
    return _keep(hats, _typed(glyphs, found, n, 1), 1, sensitive)


def _half(display: U8) -> U8:
    """Each 2 x 2 cell's mean, rounded down (odd last row and column left out)."""
    n, r, c = display.shape
    d = display[:, : r // 2 * 2, : c // 2 * 2]
    pairs = np.add(d[:, ::2], d[:, 1::2], dtype=np.uint16)  # rows first: half the data
    quads = pairs[:, :, ::2] + pairs[:, :, 1::2]
    quads >>= 2
    return quads.astype(np.uint8)


def candidate_regions(display: U8, *, sensitive: bool = False) -> list[Region]:
    """Regions of the 8-bit frames ``display`` (n, rows, cols) that may hold text.

    ``sensitive``: lower contrast and single glyphs count too (screen captures and derived
    images, where every frame is OCR'd anyway and recall is all that matters).
    """
    out: list[Region] = []
    for scale, stack in ((1, display), (2, _half(display))):
        if min(stack.shape[1:]) < 8:
            continue
        hats = stroke_hats(stack, _workspace(stack.shape, 4))
        # Full resolution: glyphs up to _SMALL_MAX pixels, one by one; half resolution
        # in 2 x 2 cells: glyphs from 12 pixels up (the two overlap).
        out += _small_regions(hats, sensitive) if scale == 1 else _regions(hats, scale,
                                                                           sensitive)
    return out
