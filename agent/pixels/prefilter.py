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

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.pixels.labels import component_boxes
from agent.pixels.morph import AIR as _AIR
from agent.pixels.morph import (
    U8,
    Hats,
    _half,
    _long_runs,
    _pool,
    _workspace,
    stroke_hats,
    to_display,
)

__all__ = ["STROKE_THRESHOLD", "U8", "Hats", "Region", "candidate_regions", "stroke_hats",
           "to_display"]

#: Stroke contrast (of 255) that makes a pixel part of a stroke at all.
_SENSITIVE_THRESHOLD = 24
STROKE_THRESHOLD = _SENSITIVE_THRESHOLD
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
