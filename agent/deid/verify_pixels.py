"""The verifier's pixel checks: independent of the ``pixels`` stage, failing closed.

Written apart from :mod:`agent.pixels` (it imports nothing of it but the place of
Tesseract's language data): the verifier's own parser (:mod:`agent.deid.verify_parse`)
for header values and native pixel data, its own marker walk, bit test, identifier forms
and OCR call, so that a mistake in the cleaner is not repeated here. Per output file:

* native Pixel Data holds its samples and at most one zero pad byte;
* every sample's bits outside Bits Stored / High Bit are in canonical form (zero, or the
  sign repeated for signed data) - compressed frames are decoded (pydicom's handlers) to
  see it;
* compressed frames carry no JPEG COM or APPn segment beyond the codec's own (JFIF
  without thumbnail, Adobe, JPEG-LS mrfx), no JPEG 2000 COM marker, nothing after EOI/EOC;
* OCR over a sample of frames (every frame of a capture or derived image, up to
  ``_CAPTURE_FRAMES``; ``_VOLUME_FRAMES`` spread over a volume series) shows none of the
  patient's names, IDs or birth date;
* nor does OCR of the series' most text-like boxes (:mod:`agent.deid.verify_glyphs`:
  searched on every decoded frame, the best ``PER_SERIES`` read scaled up, both
  polarities) - small text a whole-frame reading cannot see.

Any finding raises :class:`~agent.errors.LeakFound`; a frame that cannot be decoded is a
finding too.
"""

from __future__ import annotations

import re
import struct
import threading
import unicodedata
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.encaps import generate_frames
from pydicom.pixels.utils import pixel_array

from agent.config import Config
from agent.deid.verify_glyphs import Box, best_boxes, box_text, largest_steps, text_boxes
from agent.deid.verify_parse import Parsed, ParseError, parse
from agent.errors import LeakFound

_NATIVE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99",
           "1.2.840.10008.1.2.2")
_VOLUME_FRAMES = 3
#: A volume frame is read whole only with a step between neighbours (along every other
#: row) of this much of its range (of 255) somewhere: fainter marks do not survive
#: Tesseract's binarisation of a stretched frame, and such frames (smooth tissue, noise in
#: air) are most slices of a series. The small-text search needs 40 (verify_glyphs).
_OCR_STEP = 12
_CAPTURE_FRAMES = 16
_CAPTURE_CLASSES = ("1.2.840.10008.5.1.4.1.1.7",)


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return re.sub(r"[^0-9a-z]", "", text.replace("0", "o").replace("1", "l"))


def _needles(source: Path) -> set[str]:
    """Folded forms of the patient's names, IDs and birth date (the original header)."""
    ds = pydicom.dcmread(str(source), stop_before_pixels=True, force=True)
    out: set[str] = set()
    for kw in ("PatientName", "OtherPatientNames", "PatientBirthName"):
        for part in re.split(r"[\^ ,\-]+", str(ds.get(kw, "") or "")):
            if len(part) >= 4:
                out.add(_fold(part))
    for kw in ("PatientID", "OtherPatientIDs", "AccessionNumber"):
        raw = str(ds.get(kw, "") or "")
        value = _fold(raw)
        if len(value) >= 5:
            out.add(value)
        # An image shows the number, seldom the prefix ("ID 84213977" of "PID-84213977").
        out |= {_fold(run) for run in re.findall(r"\d{6,}", raw)}
    birth = str(ds.get("PatientBirthDate", "") or "")
    if len(birth) == 8 and birth.isdigit():
        y, m, d = birth[:4], birth[4:6], birth[6:]
        out |= {_fold(f) for f in (birth, f"{d}{m}{y}", f"{m}{d}{y}", f"{d}{m}{y[2:]}")}
    return {n for n in out if len(n) >= 4}


_CODEC_APPS = ((0xE0, b"JFIF\x00", 14), (0xEE, b"Adobe", 12), (0xE8, b"mrfx", 5))


def _app_finding(marker: int, body: bytes) -> list[str]:
    if marker == 0xFE:
        return ["JPEG comment (COM) segment"]
    if 0xE0 <= marker <= 0xEF and not any(
            marker == m and body.startswith(sig) and len(body) == size
            for m, sig, size in _CODEC_APPS):
        return [f"JPEG application segment APP{marker - 0xE0}"]
    return []


def _skip_scan(frame: bytes, pos: int) -> int:
    while pos + 1 < len(frame):
        nxt = frame[pos + 1]
        if frame[pos] == 0xFF and nxt >= 0x80 and nxt != 0xFF and not 0xD0 <= nxt <= 0xD7:
            return pos
        pos += 1
    return len(frame)


def _jpeg_findings(frame: bytes) -> list[str]:
    if not frame.startswith(b"\xff\xd8"):
        return ["bytes before the JPEG start-of-image marker"]
    out: list[str] = []
    pos, n = 2, len(frame)
    while pos + 4 <= n:
        if frame[pos] != 0xFF:
            return out + ["JPEG marker structure broken"]
        marker = frame[pos + 1]
        if marker == 0xD9:
            tail = frame[pos + 2:]
            return out + (["bytes after the JPEG end-of-image marker"]
                          if len(tail) > 1 or tail.strip(b"\x00") else [])
        if marker in (0x01, 0xFF) or 0xD0 <= marker <= 0xD8:
            pos += 2 if marker != 0xFF else 1
            continue
        (length,) = struct.unpack(">H", frame[pos + 2:pos + 4])
        out += _app_finding(marker, frame[pos + 4:pos + 2 + length])
        pos += 2 + length
        if marker == 0xDA:
            pos = _skip_scan(frame, pos)
    return out


def _j2k_findings(frame: bytes) -> list[str]:
    if not frame.startswith(b"\xff\x4f\xff\x51"):
        return ["JPEG 2000 frame is not a bare codestream"]
    out = []
    pos = 2
    while pos + 4 <= len(frame):
        marker, length = struct.unpack(">HH", frame[pos:pos + 4])
        if marker == 0xFF90:
            break
        if marker == 0xFF64:
            out.append("JPEG 2000 comment (COM) marker")
        pos += 2 + length
    end = frame.rfind(b"\xff\xd9")
    if end < 0 or frame[end + 2:].strip(b"\x00") or len(frame) - end - 2 > 1:
        out.append("bytes after the JPEG 2000 end-of-codestream marker")
    return out


def _bit_findings(words: np.ndarray[Any, Any], bits_alloc: int, stored: int, high: int,
                  signed: bool) -> list[str]:
    if stored >= bits_alloc or bits_alloc not in (8, 16, 32):
        return []
    u = np.ascontiguousarray(words).view(f"u{bits_alloc // 8}")
    if stored - 1 <= high < bits_alloc:
        # In the samples' own width: every value below fits it (low + stored = high + 1 <=
        # bits_alloc); a 64-bit copy of a series' samples costs several times as much.
        kind = u.dtype
    else:  # a layout no scanner writes: wide arithmetic, whatever the header says
        kind = np.dtype(np.uint64)
        u = u.astype(np.uint64)
    low = high - stored + 1
    value = (u >> kind.type(low)) & kind.type((1 << stored) - 1)
    expected = value << kind.type(low)
    if signed:
        negative = (value >> kind.type(stored - 1)) & kind.type(1)
        above = kind.type(((1 << bits_alloc) - 1) ^ ((1 << (high + 1)) - 1))
        expected |= negative * above
    if not np.array_equal(expected, u):
        return ["sample bits outside Bits Stored / High Bit are not clear"]
    return []


_US = {0x00280002: "spp", 0x00280010: "rows", 0x00280011: "cols", 0x00280100: "ba",
       0x00280101: "bs", 0x00280102: "hb", 0x00280103: "pr", 0x00280006: "planar"}


@dataclass
class _Image:
    """What the checks need of one output, read by the verifier's own parser."""

    path: Path
    parsed: Parsed
    ts: str
    values: dict[str, int]
    frames: int
    capture: bool

    @property
    def pixels(self) -> bytes:
        start, end = self.parsed.pixel_span
        return self.parsed.stream[start:end]

    def layout(self) -> tuple[int, int, int, bool]:
        ba = self.values.get("ba", 0)
        bs = self.values.get("bs", ba)
        return ba, bs, self.values.get("hb", bs - 1), self.values.get("pr", 0) == 1


def _read(path: Path, parsed: Parsed | None = None) -> _Image | None:
    """The output at ``path`` (``parsed``: its bytes already parsed by the verifier)."""
    if parsed is None:
        parsed = parse(path.read_bytes())
    if parsed.pixel_span[0] < 0:
        return None
    little = parsed.transfer_syntax != "1.2.840.10008.1.2.2"
    values: dict[str, int] = {}
    texts: dict[int, str] = {}
    for elem in parsed.elements:
        if elem.depth:
            continue
        if elem.tag in _US and elem.value_end - elem.value_start >= 2:
            values[_US[elem.tag]] = struct.unpack_from("<H" if little else ">H",
                                                       parsed.stream, elem.value_start)[0]
        elif elem.tag in (0x00280008, 0x00080016, 0x00080060, 0x00080008):
            texts[elem.tag] = parsed.text(elem)
    frames = int(texts.get(0x00280008, "1").strip() or 1)
    image_type = {v.strip().upper() for v in texts.get(0x00080008, "").split("\\")}
    capture = (texts.get(0x00080016, "") in _CAPTURE_CLASSES
               or texts.get(0x00080060, "").upper() in ("SC", "OT")
               or bool({"DERIVED", "SECONDARY", "SCREEN SHOT"} & image_type))
    return _Image(path, parsed, parsed.transfer_syntax, values, frames, capture)


def _native(img: _Image) -> tuple[list[str], np.ndarray[Any, Any] | None]:
    """Findings of native pixel data, and its frames (frames, rows, cols[, samples])."""
    ba, bs, hb, signed = img.layout()
    rows, cols = img.values.get("rows", 0), img.values.get("cols", 0)
    spp = img.values.get("spp", 1)
    count = rows * cols * spp * img.frames
    expected = (count * ba + 7) // 8
    start, end = img.parsed.pixel_span
    stream = img.parsed.stream
    tail = stream[start + expected:end]
    out = ["bytes after the last sample"] if len(tail) > 1 or tail.strip(b"\x00") else []
    if ba not in (8, 16, 32) or end - start < expected:
        return out, None
    # A view of the output's bytes where they are native order, a copy only for big endian.
    words = np.frombuffer(stream, f"<u{ba // 8}", count, start)
    if img.ts == "1.2.840.10008.1.2.2":
        words = np.frombuffer(stream, f">u{ba // 8}", count, start).astype(f"u{ba // 8}")
    out += _bit_findings(words, ba, bs, hb, signed)
    arr = words.view(f"i{ba // 8}" if signed else f"u{ba // 8}")
    if spp > 1 and img.values.get("planar", 0) == 1:
        arr = arr.reshape(img.frames, spp, rows, cols).transpose(0, 2, 3, 1)
    shape = (img.frames, rows, cols) + ((spp,) if spp > 1 else ())
    return out, arr.reshape(shape)


def _compressed(img: _Image) -> tuple[list[str], np.ndarray[Any, Any] | None]:
    """Findings of encapsulated frames (markers, and bits after pydicom decodes them)."""
    ds = pydicom.dcmread(str(img.path), force=True)
    out: list[str] = []
    for frame in generate_frames(ds.PixelData, number_of_frames=img.frames):
        if img.ts.startswith(("1.2.840.10008.1.2.4.9", "1.2.840.10008.1.2.4.20")):
            out += _j2k_findings(frame)
        elif img.ts.startswith("1.2.840.10008.1.2.4."):
            out += _jpeg_findings(frame)
    try:
        arr = pixel_array(ds, correct_unused_bits=False)
    except Exception:  # noqa: BLE001 - what cannot be decoded cannot be shown clean
        return out + ["pixel data cannot be decoded"], None
    ba, bs, hb, signed = img.layout()
    if ba in (8, 16, 32):
        out += _bit_findings(np.ascontiguousarray(arr), ba, bs, hb, signed)
    return sorted(set(out)), arr[None] if img.frames == 1 else arr


def _ocr_text(reader: Any, frame: np.ndarray[Any, Any]) -> str:
    from PIL import Image

    f = frame.astype(np.float32)
    if f.ndim == 3:
        f = f.mean(axis=2)
    lo, hi = float(f.min()), float(f.max())
    img = ((f - lo) * (255.0 / max(hi - lo, 1e-6))).astype(np.uint8)
    if img.mean() < 128:
        img = 255 - img
    pil = Image.fromarray(img)
    if max(pil.size) < 600:
        pil = pil.resize((pil.width * 2, pil.height * 2), Image.Resampling.BICUBIC)
    reader.SetImage(pil)
    return str(reader.GetUTF8Text())


@dataclass(frozen=True)
class PixelReport:
    """The per-file pixel checks of one output: what they found, and how many frames it
    decoded to (for the OCR sample). Small: it crosses the process pool."""

    findings: tuple[str, ...] = ()
    frames: int = 0
    capture: bool = False
    #: Text-like boxes of its frames (verify_glyphs), read by OCR if among the best.
    boxes: tuple[Box, ...] = ()
    #: Frames with no step of ``_OCR_STEP`` (of their 8-bit range) between neighbours:
    #: nothing in them is dark or bright enough against its surroundings to be read.
    quiet: tuple[int, ...] = ()


def inspect_output(path: Path, parsed: Parsed | None = None) -> PixelReport:
    """Native pixel bytes, sample bits and codec segments of one output. ``parsed``: the
    verifier's parse of its bytes, when it has one (the file is then not read again)."""
    try:
        img = _read(path, parsed)
    except (ParseError, struct.error, ValueError):
        return PixelReport((f"{path.name}: does not parse",))
    if img is None:
        return PixelReport()
    problems, arr = _native(img) if img.ts in _NATIVE else _compressed(img)
    if arr is None:
        return PixelReport(tuple(f"{path.name}: {p}" for p in problems), 0, img.capture)
    steps = largest_steps(arr)
    return PixelReport(tuple(f"{path.name}: {p}" for p in problems), int(arr.shape[0]),
                       img.capture, tuple(text_boxes(arr, steps)),
                       tuple(int(k) for k in np.flatnonzero(steps < _OCR_STEP)))


def ocr_sample(outputs: list[Path], reports: list[PixelReport]) -> list[tuple[Path, int]]:
    """The frames OCR reads, as (file, frame): every frame of the captures or derived
    images, up to ``_CAPTURE_FRAMES``; else ``_VOLUME_FRAMES`` spread over the series."""
    decoded = [(p, r) for p, r in zip(outputs, reports, strict=True) if r.frames]
    captures = [(p, r) for p, r in decoded if r.capture]
    if captures:
        return [(p, k) for p, r in captures for k in range(r.frames)][:_CAPTURE_FRAMES]
    every = [(p, k) for p, r in decoded for k in range(r.frames)]
    if not every:
        return []
    quiet = {(p, k) for p, r in decoded for k in r.quiet}
    picks = np.linspace(0, len(every) - 1, min(_VOLUME_FRAMES, len(every)))
    return [every[int(i)] for i in sorted(set(picks.astype(int)))
            if every[int(i)] not in quiet]


_apis: dict[str, Any] = {}
#: Tesseract is not thread-safe (two series verified at once on threads of one process
#: abort it): one OCR call at a time per process. Pool workers run one task at a time.
_ocr_lock = threading.Lock()


def _api(tessdata: str) -> Any:
    api = _apis.get(tessdata)
    if api is None:
        import tesserocr

        api = _apis[tessdata] = tesserocr.PyTessBaseAPI(path=tessdata, lang="eng",
                                                        psm=tesserocr.PSM.SPARSE_TEXT)
    return api


def _shows(text: str, needles: frozenset[str]) -> bool:
    """Whether folded OCR ``text`` holds a needle: exactly, or for needles of 8+
    characters with one character misread (OCR's own mistakes on small text)."""
    for needle in needles:
        if needle in text:
            return True
        m = len(needle)
        if m < 8:
            continue
        prev = list(range(m + 1))  # edit distance of needle prefixes to text substrings
        for ch in text:
            cur = [0]
            for j in range(1, m + 1):
                cur.append(min(prev[j] + 1, cur[j - 1] + 1,
                               prev[j - 1] + (needle[j - 1] != ch)))
            if cur[m] <= 1:
                return True
            prev = cur
    return False


def ocr_shows_identity(args: tuple[str, Path, tuple[int, ...], frozenset[str],
                                   tuple[Box, ...]]) -> list[bool]:
    """For each frame of ``frames`` (whole) and then each of ``boxes`` of one output:
    whether OCR reads one of the patient's identifiers (``needles``, folded) in it. The
    file is decoded again here, once (a pool task: nothing large crosses the pool)."""
    tessdata, path, frames, needles, boxes = args
    img = _read(path)
    arr = None if img is None else (_native(img) if img.ts in _NATIVE else _compressed(img))[1]
    if arr is None:
        return [False] * (len(frames) + len(boxes))
    out = []
    for k in frames:
        with _ocr_lock:
            text = _fold(_ocr_text(_api(tessdata), arr[k]))
        out.append(_shows(text, needles))
    for box in boxes:
        with _ocr_lock:
            text = _fold(box_text(_api(tessdata), arr[box[0]], box))
        out.append(_shows(text, needles))
    return out


class PixelCheck:
    """The pixel part of the verify stage (built once, called per series).

    The per-file checks run where the verifier reads each output for its other checks
    (:func:`inspect_output`, in the process pool for a large series); :meth:`finish`
    reads the OCR sample and decides."""

    def __init__(self, cfg: Config) -> None:
        self.tessdata = cfg.pixels.tessdata

    def _tessdata(self) -> str:
        from agent.pixels.ocr import find_tessdata  # where the data is, nothing else

        return str(find_tessdata(self.tessdata)) + "/"

    def __call__(self, source_files: list[Path], outputs: list[Path]) -> None:
        """Every check of every output, in this process (the small-series path)."""
        if outputs:
            self.finish(source_files, outputs, [inspect_output(p) for p in outputs])

    def finish(self, source_files: list[Path], outputs: list[Path],
               reports: list[PixelReport], pool: Executor | None = None) -> None:
        """Raise LeakFound for any per-file finding (``reports``, one per output) or an
        identifier OCR reads in the sample; OCR runs in ``pool`` when one is given."""
        needles = frozenset(_needles(source_files[0]) if source_files else ())
        findings = [f for r in reports for f in r.findings]
        if needles:
            by_file: dict[Path, list[int]] = {}
            for path, k in ocr_sample(outputs, reports):
                by_file.setdefault(path, []).append(k)
            boxes = best_boxes(outputs, [r.boxes for r in reports])
            tessdata = self._tessdata()
            tasks = [(tessdata, p, tuple(by_file.get(p, ())), needles,
                      tuple(boxes.get(p, ()))) for p in {**by_file, **boxes}]
            shown = (pool.map(ocr_shows_identity, tasks) if pool is not None
                     else map(ocr_shows_identity, tasks))
            for (_t, path, ks, _n, bs), found in zip(tasks, shown, strict=True):
                findings += [f"{path.name}: OCR reads an identifier of the patient in the "
                             "pixels" for hit in found[:len(ks)] if hit]
                findings += [
                    f"{path.name}: OCR reads an identifier of the patient in small burned-in "
                    f"text (frame {b[0]}, rows {b[1]}-{b[1] + b[3]}, columns "
                    f"{b[2]}-{b[2] + b[4]}) that the pixels stage did not remove; review the "
                    "image, re-export it without annotations, or set [pixels] "
                    "redact_all_text = true" for b, hit in zip(bs, found[len(ks):], strict=True)
                    if hit]
        if findings:
            raise LeakFound(
                f"pixel verification failed: {'; '.join(findings[:3])}"
                + (f" (and {len(findings) - 3} more)" if len(findings) > 3 else "")
                + "; nothing of this series is delivered")
