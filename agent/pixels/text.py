"""Burned-in text: find lines (pre-filter), read them (OCR), decide what to redact.

A line is redacted whole when any of its words shows an identifier of the study (or, with
``redact_all_text``, when it holds any word at all): OCR misreads parts of a line as often
as it reads them, and a surname left next to a redacted first name is still a leak.
Screen captures and derived images (``sensitive``) are read twice: their candidate lines,
and the whole frame with Tesseract's own sparse-text layout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from PIL import Image

from agent.pixels.gate import may_hold_strokes
from agent.pixels.identity import StudyIdentity, fold
from agent.pixels.ocr import Reader, Word
from agent.pixels.prefilter import U8, Region, candidate_regions, to_display

#: Text height (pixels) Tesseract reads best; crops are scaled up towards it (at least
#: 3x for small text, whose strokes are a pixel wide).
_TARGET_HEIGHT = 36
_MIN_CONFIDENCE = 30.0
#: A reading OCR is sure of: every word at least this confident (Tesseract's 0-100).
_SURE = 75.0


@dataclass(frozen=True)
class Line:
    """A line to redact: where (frame, box in pixels) and why (kind), never the text."""

    frame: int
    top: int
    left: int
    height: int
    width: int
    kind: str
    dark: bool = False


def display_stack(samples: npt.NDArray[np.generic], samples_per_pixel: int
                  ) -> tuple[U8, int]:
    """8-bit frames to search, and how many of them each image frame has (1, or 4 for
    colour: luminance and each channel, so colour-on-colour text is seen too)."""
    if samples_per_pixel == 1:
        return to_display(samples), 1
    rgb = samples.astype(np.float32)
    lum = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    planes = [lum, rgb[..., 0], rgb[..., 1], rgb[..., 2]]
    n = samples.shape[0]
    stack = np.stack(planes, axis=1).reshape(n * 4, *samples.shape[1:3])
    return to_display(stack), 4


def _overlap(a: Region, b: Region) -> bool:
    return (a.left < b.left + b.width and b.left < a.left + a.width
            and a.top < b.top + b.height and b.top < a.top + a.height)


def _union(a: Region, b: Region) -> Region:
    top, left = min(a.top, b.top), min(a.left, b.left)
    bottom = max(a.top + a.height, b.top + b.height)
    right = max(a.left + a.width, b.left + b.width)
    return Region(a.frame, top, left, bottom - top, right - left, a.dark,
                  a.textlike or b.textlike)


def _merge(regions: Iterable[Region]) -> list[Region]:
    """Overlapping regions of one frame and polarity become one (fewer OCR calls)."""
    out: list[Region] = []
    for r in sorted(regions, key=lambda r: (r.frame, r.top, r.left)):
        merged = True
        while merged:
            merged = False
            for i, o in enumerate(out):
                if (o.frame == r.frame and o.dark == r.dark and o.textlike == r.textlike
                        and _overlap(o, r)):
                    r = _union(o, r)
                    del out[i]
                    merged = True
                    break
        out.append(r)
    return out


def _same_line(line: Region, other: Region) -> bool:
    """``other`` continues ``line`` sideways (rows overlap by half, gap under 3 heights)."""
    if other.frame != line.frame:
        return False
    rows = min(line.top + line.height, other.top + other.height) - max(line.top, other.top)
    if rows < 0.5 * min(line.height, other.height):
        return False
    gap = max(other.left - (line.left + line.width), line.left - (other.left + other.width))
    return gap <= 3 * max(line.height, other.height)


def _bright_text(crop: U8) -> bool:
    """Whether the text of a crop is brighter than its background (which is most of it)."""
    lo, hi = int(crop.min()), int(crop.max())
    return float(np.median(crop)) < (lo + hi) / 2


#: Cap height (pixels) below which text counts as small.
_SMALL_TEXT = 8


def _sure(words: list[Word]) -> bool:
    """Whether OCR is sure of what it read: a word of 3+ letters or digits among them, and
    4 in 5 of the characters read in confident words (a short token such as "T1" often
    comes with a low confidence however clear it is)."""
    read = [(len(fold(w.text)), w.confidence >= _SURE) for w in words]
    total = sum(n for n, _ in read)
    sure = sum(n for n, ok in read if ok)
    return any(n >= 3 and ok for n, ok in read) and sure >= 0.8 * total


def _prepare(crop: U8, dark: bool, scale: int) -> U8:
    """Dark text on white, stretched to full contrast, scaled, with a white margin."""
    img = crop if dark else 255 - crop
    lo, hi = int(img.min()), int(img.max())
    if hi > lo:
        img = ((img.astype(np.float32) - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    if scale > 1:
        pil = Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale),
                                          Image.Resampling.BICUBIC)
        img = np.asarray(pil)
    return np.pad(img, 12, constant_values=255)


class TextScanner:
    """Reads the text of one series' frames against its identity."""

    def __init__(self, reader: Reader, identity: StudyIdentity | Callable[[], StudyIdentity],
                 *, redact_all: bool) -> None:
        self.reader = reader
        #: The study's identity, or what reads it (headers of the originals) when OCR first
        #: reads something: most series have no candidate line at all.
        self._identity = identity
        self.redact_all = redact_all
        self._cache: dict[bytes, str | None] = {}
        #: OCR calls made (the benchmark and tests read it).
        self.calls = 0

    @property
    def identity(self) -> StudyIdentity:
        if not isinstance(self._identity, StudyIdentity):
            self._identity = self._identity()
        return self._identity

    def _verdict(self, words: list[Word]) -> str | None:
        words = [w for w in words if w.confidence >= _MIN_CONFIDENCE or len(w.text) >= 4]
        text = " ".join(w.text for w in words)
        kind = self.identity.match(text) if self.identity else None
        if kind is None and self.redact_all and any(len(fold(w.text)) >= 2 for w in words):
            kind = "text"
        return kind

    def _read_region(self, plane: U8, region: Region) -> str | None:
        rows, cols = plane.shape
        r = region.padded(max(2, region.height // 4), rows, cols)
        crop = plane[r.top:r.top + r.height, r.left:r.left + r.width]
        key = hashlib.blake2b(crop.tobytes() + repr(crop.shape).encode(),
                              digest_size=16).digest()
        if key in self._cache:
            return self._cache[key]
        scale = max(1, min(6, round(_TARGET_HEIGHT / max(region.height, 1))))
        if region.height <= 2 * _SMALL_TEXT:
            scale = max(scale, 3)
        self.calls += 1
        words = self.reader.read(_prepare(crop, region.dark, scale))
        verdict = self._verdict(words)
        sure = _sure(words)
        if verdict is None and (not sure or _bright_text(crop) == region.dark):
            # Not read with confidence, or the crop says the other polarity (text over
            # anatomy, inverted text): read it the other way too.
            self.calls += 1
            other = self.reader.read(_prepare(crop, not region.dark, scale))
            verdict = self._verdict(other)
            sure = sure or _sure(other)
        if verdict is None and region.textlike and not sure:
            # Text on a flat background OCR cannot read with confidence: redacted, as it
            # may show what we cannot read (fail closed; it hides no anatomy there).
            verdict = "unread"
        self._cache[key] = verdict
        return verdict

    def scan(self, samples: npt.NDArray[np.generic], samples_per_pixel: int, *,
             sensitive: bool) -> list[Line]:
        """Lines to redact in ``samples`` (frames, rows, cols[, samples]).

        Frames that cannot hold a stroke (:func:`agent.pixels.gate.may_hold_strokes`, an
        exact bound) have no candidate line and are not searched; screen captures and
        derived images (``sensitive``) are, whole."""
        if sensitive or samples_per_pixel != 1 or samples.ndim != 3:
            return self._scan(samples, samples_per_pixel, sensitive=sensitive)
        maybe = np.flatnonzero(may_hold_strokes(samples))
        if maybe.size == 0:
            return []
        if maybe.size == samples.shape[0]:
            return self._scan(samples, 1, sensitive=False)
        return [replace(line, frame=int(maybe[line.frame]))
                for line in self._scan(samples[maybe], 1, sensitive=False)]

    def _scan(self, samples: npt.NDArray[np.generic], samples_per_pixel: int, *,
              sensitive: bool) -> list[Line]:
        display, per_frame = display_stack(samples, samples_per_pixel)
        rows, cols = display.shape[1:]
        regions = _merge(candidate_regions(display, sensitive=sensitive))
        hits: list[tuple[Region, str]] = []
        for region in regions:
            kind = self._read_region(display[region.frame], region)
            if kind is not None:
                hits.append((region, kind))
        lines: list[Line] = []
        for region, kind in hits:
            # The rest of the line goes too: OCR may have read only part of it.
            line = region
            grown = True
            while grown:
                grown = False
                for other in regions:
                    if kind == "unread" and not other.textlike:
                        continue  # what was not read grows only over text on air
                    if other is not line and _same_line(line, other) and not (
                            other.left >= line.left and other.left + other.width
                            <= line.left + line.width):
                        line = _union(line, other)
                        grown = True
            r = line.padded(max(2, line.height // 4), rows, cols)
            lines.append(Line(r.frame // per_frame, r.top, r.left, r.height, r.width, kind,
                              not _bright_text(display[r.frame, r.top:r.top + r.height,
                                                       r.left:r.left + r.width])))
        if sensitive:
            for f in range(0, display.shape[0], per_frame):
                lines += self._whole_frame(display[f], f // per_frame)
        return lines

    def _whole_frame(self, plane: U8, frame: int) -> list[Line]:
        """Tesseract's own layout over a whole frame (screen captures): lines by word
        boxes, each line judged as a whole."""
        scale = 2 if max(plane.shape) < 1000 else 1
        dark_text = float(plane.mean()) > 127
        img = _prepare(plane, dark_text, scale)
        self.calls += 1
        words = self.reader.read(img, block=False)
        out: list[Line] = []
        for group in _group_lines(words):
            kind = self._verdict(group)
            if kind is None:
                continue
            top = min(w.top for w in group)
            left = min(w.left for w in group)
            bottom = max(w.top + w.height for w in group)
            right = max(w.left + w.width for w in group)
            pad = max(2, (bottom - top) // 4)

            def back(v: int, limit: int) -> int:
                return int(min(max((v - 12) / scale, 0), limit))

            t, b = back(top - pad, plane.shape[0]), back(bottom + pad, plane.shape[0])
            left_, right_ = back(left - pad, plane.shape[1]), back(right + pad, plane.shape[1])
            out.append(Line(frame, t, left_, max(1, b - t + 1), max(1, right_ - left_ + 1),
                            kind, not dark_text))
        return out


def _group_lines(words: list[Word]) -> list[list[Word]]:
    lines: list[list[Word]] = []
    for w in sorted(words, key=lambda w: (w.top, w.left)):
        cy = w.top + w.height / 2
        for line in lines:
            ref = line[-1]
            if abs(ref.top + ref.height / 2 - cy) < 0.6 * max(ref.height, w.height):
                line.append(w)
                break
        else:
            lines.append([w])
    return lines


def redact(samples: npt.NDArray[np.generic], lines: list[Line]) -> None:
    """Fill every line's box with its background, in place (all samples of a pixel)."""
    for line in lines:
        box = samples[line.frame, line.top:line.top + line.height,
                      line.left:line.left + line.width]
        if box.size == 0:
            continue
        flat = box.reshape(-1, box.shape[-1]) if box.ndim == 3 else box.reshape(-1, 1)
        order = np.sort(flat, axis=0)
        fill = order[int((len(order) - 1) * (0.8 if line.dark else 0.1))]
        box[...] = fill if box.ndim == 3 else fill[0]
