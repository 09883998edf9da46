"""The pixels stage's fast read of an ordinary output: header values and a view of samples.

Most files the stage sees are plain slices the de-identifier has just written: explicit
(or implicit) VR little endian, native grey samples, no overlay, nothing after the last
sample. For those, :mod:`agent.pixels.clean` built a whole pydicom dataset per file only
to read a dozen values and the pixel bytes, and wrote nothing back. This reader walks the
element headers once (:mod:`agent.dicomwalk`; values of the few elements it needs, nothing
decoded else), and gives the samples as a read-only view of the file's bytes.

Anything else - another transfer syntax, overlays or an icon at the top level, colour,
1-bit, float or compressed pixels, a pixel length that is not exactly the samples (with at
most one pad byte of zero), damaged structure - is :data:`None`: the caller reads the file
the full way, which cleans and reports what is to be cleaned.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from agent.dicomwalk import PIXEL_DATA, UNDEFINED, Walker, WalkError, file_meta
from agent.pixels.bits import Layout

_EXPLICIT, _IMPLICIT = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
_OTHER_PIXELS = frozenset({0x7FE00008, 0x7FE00009})
_ICON = 0x00880200
#: The elements the stage's risk rules read (agent.deid.risk.text_risks), kept as raw
#: elements; every other is left unread (a dataset of the whole header cost more than the
#: walk). tests/pixels/test_quick.py fails when the rules come to read another one.
RISK_TAGS = {0x00280301: "CS", 0x00080016: "UI", 0x00080060: "CS", 0x00080008: "CS",
             0x00080064: "CS"}
_US = {0x00280002: "spp", 0x00280010: "rows", 0x00280011: "cols", 0x00280100: "ba",
       0x00280101: "bs", 0x00280102: "hb", 0x00280103: "pr"}
_FRAMES = 0x00280008


class _Unusual(Exception):
    """Not a file this reader answers for."""


@dataclass
class Quick:
    """One ordinary output, as the stage needs it."""

    #: The :data:`RISK_TAGS` elements only (raw, as pydicom reads them): for ``text_risks``.
    ds: Dataset
    #: Samples (frames, rows, cols), a read-only view of the file's bytes.
    samples: npt.NDArray[Any]
    layout: Layout
    declared_burned_in: bool


def _walk(data: bytes, start: int, implicit: bool) -> dict[int, tuple[bytes, int, int]]:
    """(VR, value start, value end) of every top-level element; a value of undefined length
    (a sequence's: nothing else is read here) is recorded empty."""
    found: dict[int, tuple[bytes, int, int]] = {}
    walker = Walker(data, implicit, strict=True)  # another VR: pydicom's guess, not ours
    for tag, vr, _start, value, length, _depth in walker.elements(start):
        if length == UNDEFINED:
            if tag == PIXEL_DATA or (not implicit and vr not in (b"SQ", b"UN")):
                raise _Unusual  # encapsulated pixels, or a structure we do not read
            found[tag] = (vr, value, value)
        else:
            found[tag] = (vr, value, value + length)
    return found


def read_quick(data: bytes) -> Quick | None:
    """The ordinary output ``data`` (a Part 10 file's bytes), or None (see module doc)."""
    try:
        return _read(data)
    except (_Unusual, WalkError, struct.error, ValueError, UnicodeDecodeError):
        return None


def _layout(data: bytes, found: dict[int, tuple[bytes, int, int]]
            ) -> tuple[Layout, int, int, int] | None:
    """Layout, rows, columns and frames of a grey image of 8 or 16 bits, else None."""
    values: dict[str, int] = {}
    for tag, key in _US.items():
        where = found.get(tag)
        if where is not None:
            if where[2] - where[1] < 2:
                return None
            values[key] = struct.unpack_from("<H", data, where[1])[0]
    ba = values.get("ba", 0)
    bs = values.get("bs", ba)
    layout = Layout(ba, bs, values.get("hb", bs - 1), values.get("pr", 0) == 1)
    rows, cols = values.get("rows", 0), values.get("cols", 0)
    if values.get("spp", 1) != 1 or ba not in (8, 16) or not layout.valid or not rows or not cols:
        return None
    frames = 1
    if _FRAMES in found:
        _, a, b = found[_FRAMES]
        text = data[a:b].decode("ascii").strip("\x00 ").split("\\")[0].strip()
        if not text.isdigit() or int(text) < 1:
            return None
        frames = int(text)
    return layout, rows, cols, frames


def _risk_elements(data: bytes, found: dict[int, tuple[bytes, int, int]], implicit: bool
                   ) -> Dataset:
    risk: dict[BaseTag, DataElement | RawDataElement] = {}
    for tag, vr in RISK_TAGS.items():
        where = found.get(tag)
        if where is not None:
            t = BaseTag(tag)
            risk[t] = RawDataElement(t, vr, where[2] - where[1], data[where[1]:where[2]],
                                     where[1], implicit, True)
    return Dataset(risk)


def _read(data: bytes) -> Quick | None:
    meta, start = file_meta(data)
    syntax = next((data[value:value + length].decode("ascii", "replace").strip("\x00 ")
                   for tag, _vr, _pos, value, length, _depth in meta if tag == 0x00020010), "")
    if syntax not in (_EXPLICIT, _IMPLICIT):
        return None
    found = _walk(data, start, syntax == _IMPLICIT)
    if (PIXEL_DATA not in found or _ICON in found or _OTHER_PIXELS & found.keys()
            or any(0x60000000 <= t < 0x601F0000 for t in found)):
        return None
    geometry = _layout(data, found)
    if geometry is None:
        return None
    layout, rows, cols, frames = geometry
    _, a, b = found[PIXEL_DATA]
    expected = rows * cols * frames * (layout.bits_allocated // 8)
    if b - a not in (expected, expected + 1) or (b - a > expected and data[b - 1]):
        return None
    dtype = np.dtype(f"<{'i' if layout.signed else 'u'}{layout.bits_allocated // 8}")
    samples = np.frombuffer(data, dtype, rows * cols * frames, a).reshape(frames, rows, cols)
    burned = found.get(0x00280301)
    declared = burned is not None and data[burned[1]:burned[2]].strip(b"\x00 ").upper() == b"YES"
    return Quick(_risk_elements(data, found, syntax == _IMPLICIT), samples, layout, declared)
