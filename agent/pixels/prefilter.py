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
4. a line of at least two glyphs (or one word-shaped component) is a candidate region.

Recall matters more than precision: a false candidate costs one OCR call, a missed line is
a leak. The numbers are tuned on real MR of four vendors and on rendered text (see
``tests/pixels``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

U8 = npt.NDArray[np.uint8]

#: Half size of the top-hat box: strokes up to ~2*R pixels wide are kept.
_R = 3
#: Stroke contrast (of 255) that makes a pixel part of a stroke at all.
_SENSITIVE_THRESHOLD = 24
#: Background level (of 255) below which a line stands on air.
_AIR = 20
#: Over anatomy: the stroke contrast a line needs, and how uniform its colour must be
#: (spread of the brighter strokes, as a fraction of the contrast).
_ANATOMY_CONTRAST = 64
_UNIFORM = 0.3
#: Glyph height in cells (2 px each) that a component may have.
_MIN_H, _MAX_H = 3, 36


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

    def padded(self, margin: int, rows: int, cols: int) -> Region:
        top, left = max(0, self.top - margin), max(0, self.left - margin)
        bottom = min(rows, self.top + self.height + margin)
        right = min(cols, self.left + self.width + margin)
        return Region(self.frame, top, left, bottom - top, right - left, self.dark)


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


def _extreme(a: U8, axis: int, size: int, fn: np.ufunc, forward: bool) -> U8:
    """Running max/min over ``size`` pixels along ``axis``, by doubling: the window starts
    at each pixel (``forward``) or ends there. An erosion forward then a dilation backward
    is exactly an opening (the union of the boxes that hold the pixel), with no re-centring.
    """
    out = a.copy()
    span = 1
    while span < size:
        step = min(span, size - span)
        near = [slice(None)] * a.ndim
        far = [slice(None)] * a.ndim
        if forward:
            near[axis], far[axis] = slice(0, -step), slice(step, None)
        else:
            near[axis], far[axis] = slice(step, None), slice(0, -step)
        fn(out[tuple(near)], out[tuple(far)], out=out[tuple(near)])
        span += step
    return out


def _box(a: U8, fn: np.ufunc, size: int, forward: bool) -> U8:
    return _extreme(_extreme(a, 2, size, fn, forward), 1, size, fn, forward)


@dataclass
class Hats:
    """Top-hat images of a stack: how far each pixel stands out of a 7 x 7 opening
    (bright strokes) or below a closing (dark strokes), and those backgrounds."""

    bright: U8
    dark: U8
    opened: U8
    closed: U8


def stroke_hats(display: U8) -> Hats:
    size = 2 * _R + 1
    opened = _box(_box(display, np.minimum, size, True), np.maximum, size, False)
    closed = _box(_box(display, np.maximum, size, True), np.minimum, size, False)
    return Hats(display - opened, closed - display, opened, closed)  # no wrap: opened <= display


def _pool(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
    """OR over 2 x 2 cells (odd last row/column dropped into the previous cell)."""
    n, r, c = mask.shape
    r2, c2 = r // 2, c // 2
    m = mask[:, : r2 * 2, : c2 * 2].view(np.uint8)
    return m[:, ::2, ::2] | m[:, 1::2, ::2] | m[:, ::2, 1::2] | m[:, 1::2, 1::2]


def _components(cells: npt.NDArray[np.uint8]) -> list[tuple[int, int, int, int, int, int]]:
    """(frame, top, left, height, width, pixel count) of every 8-connected component."""
    n, r, c = cells.shape
    tall = np.zeros((n, r + 1, c), np.uint8)
    tall[:, :r] = cells
    img = sitk.GetImageFromArray(tall.reshape(n * (r + 1), c))
    labels = sitk.GetArrayFromImage(sitk.ConnectedComponent(img, True))
    ys, xs = np.nonzero(labels)
    if ys.size == 0:
        return []
    ids = labels[ys, xs].astype(np.int64)
    count = int(ids.max()) + 1
    top = np.full(count, np.iinfo(np.int64).max)
    left = np.full(count, np.iinfo(np.int64).max)
    bottom = np.full(count, -1)
    right = np.full(count, -1)
    np.minimum.at(top, ids, ys)
    np.minimum.at(left, ids, xs)
    np.maximum.at(bottom, ids, ys)
    np.maximum.at(right, ids, xs)
    sizes = np.bincount(ids, minlength=count)
    out = []
    for label in range(1, count):
        if sizes[label] == 0:
            continue
        frame, row = divmod(int(top[label]), r + 1)
        out.append((frame, row, int(left[label]), int(bottom[label] - top[label] + 1),
                    int(right[label] - left[label] + 1), int(sizes[label])))
    return out


def _glyph_like(h: int, w: int, count: int) -> bool:
    if not _MIN_H <= h <= _MAX_H or w > 40 * h:
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
                    continue
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


def _accept(hats: Hats, frame: int, top: int, left: int, h: int, w: int, members: int,
            dark: bool, sensitive: bool) -> bool:
    """Whether a line of glyph-like components is worth an OCR call.

    On air (a dark, flat background, where viewers put their annotations) a faint line
    counts; over anatomy, where tissue makes glyph-like blobs, only strokes of high contrast
    and uniform colour (as text is drawn) in a line of three or more glyphs do.
    """
    if sensitive:
        return True
    hat = (hats.dark if dark else hats.bright)[frame, top:top + h, left:left + w]
    strokes = hat[hat > _SENSITIVE_THRESHOLD]
    if strokes.size < 4:
        return False
    contrast = float(np.percentile(strokes, 90))
    if not dark:
        background = float(np.median(hats.opened[frame, top:top + h, left:left + w]))
        if background <= _AIR and contrast >= _SENSITIVE_THRESHOLD and (
                members >= 2 or w >= 2 * h):
            return True
    if contrast < _ANATOMY_CONTRAST or (members < 3 and w < 3 * h):
        return False
    spread = float(np.percentile(strokes, 90) - np.percentile(strokes, 75))
    return spread <= _UNIFORM * contrast


def _regions(hats: Hats, scale: int, sensitive: bool) -> list[Region]:
    """Candidate lines of both polarities (one labelling call for both: the dark strokes'
    cells are stacked after the bright ones')."""
    n = hats.bright.shape[0]
    cells = np.concatenate([_pool(hats.bright > _SENSITIVE_THRESHOLD),
                            _pool(hats.dark > _SENSITIVE_THRESHOLD)])
    glyphs = [(f, t, left, h, w) for f, t, left, h, w, count in _components(cells)
              if _glyph_like(h, w, count)]
    out = []
    for f, t, left, h, w, members in _lines(glyphs, sensitive):
        dark = f >= n
        frame = f - n if dark else f
        top, lft, hh, ww = t * 2, left * 2, h * 2, w * 2
        if _accept(hats, frame, top, lft, hh, ww, members, dark, sensitive):
            out.append(Region(frame, top * scale, lft * scale, hh * scale, ww * scale, dark))
    return out


def _half(display: U8) -> U8:
    n, r, c = display.shape
    d = display[:, : r // 2 * 2, : c // 2 * 2].astype(np.uint16)
    return ((d[:, ::2, ::2] + d[:, 1::2, ::2] + d[:, ::2, 1::2] + d[:, 1::2, 1::2]) // 4
            ).astype(np.uint8)


def candidate_regions(display: U8, *, sensitive: bool = False) -> list[Region]:
    """Regions of the 8-bit frames ``display`` (n, rows, cols) that may hold text.

    ``sensitive``: lower contrast and single glyphs count too (screen captures and derived
    images, where every frame is OCR'd anyway and recall is all that matters).
    """
    out: list[Region] = []
    for scale, stack in ((1, display), (2, _half(display))):
        if min(stack.shape[1:]) < 8:
            continue
        out += _regions(stroke_hats(stack), scale, sensitive)
    return out
