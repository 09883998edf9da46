"""The pixels stage's fast read of an ordinary output: header values and a view of samples.

Most files the stage sees are plain slices the de-identifier has just written: explicit
(or implicit) VR little endian, native grey samples, no overlay, nothing after the last
sample. For those, :mod:`agent.pixels.clean` built a whole pydicom dataset per file only
to read a dozen values and the pixel bytes, and wrote nothing back. This reader walks the
element headers once (values of the few elements it needs, nothing decoded else), and
gives the samples as a read-only view of the file's bytes.

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
from pydicom.tag import BaseTag, Tag

from agent.pixels.bits import Layout

_EXPLICIT, _IMPLICIT = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_SHORT_VRS = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
     b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)
_EXPLICIT_HEADER = struct.Struct("<HH2sH")
_IMPLICIT_HEADER = struct.Struct("<HHI")
_U32 = struct.Struct("<I")
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_OTHER_PIXELS = frozenset({0x7FE00008, 0x7FE00009})
_ICON = 0x00880200
_US = {0x00280002: "spp", 0x00280010: "rows", 0x00280011: "cols", 0x00280100: "ba",
       0x00280101: "bs", 0x00280102: "hb", 0x00280103: "pr"}
#: Elements kept (as raw elements) for the stage's risk rules (agent.deid.risk.text_risks).
_RISK_TAGS = {0x00280301: "CS", 0x00080016: "UI", 0x00080060: "CS", 0x00080008: "CS",
              0x00080064: "CS"}
_FRAMES = 0x00280008


class _Unusual(Exception):
    """Not a file this reader answers for."""


@dataclass
class Quick:
    """One ordinary output, as the stage needs it."""

    #: The risk elements only (raw, as pydicom reads them): for ``text_risks``.
    ds: Dataset
    #: Samples (frames, rows, cols), a read-only view of the file's bytes.
    samples: npt.NDArray[Any]
    layout: Layout
    declared_burned_in: bool


def _skip_undefined(data: bytes, pos: int, implicit: bool) -> int:
    """The position after the sequence of undefined length whose items start at ``pos``."""
    n = len(data)
    while pos + 8 <= n:
        tag = (struct.unpack_from("<H", data, pos)[0] << 16) | struct.unpack_from(
            "<H", data, pos + 2)[0]
        length = struct.unpack_from("<I", data, pos + 4)[0]
        pos += 8
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM:
            raise _Unusual
        if length == _UNDEFINED:
            pos = _walk(data, pos, implicit, None, _ITEM_END)
        else:
            pos += length
    raise _Unusual


def _header(data: bytes, pos: int, implicit: bool) -> tuple[int, bytes, int, int]:
    """(tag, VR, length, where the value starts) of the element at ``pos``."""
    if implicit:
        group, elem, length = _IMPLICIT_HEADER.unpack_from(data, pos)
        return group << 16 | elem, b"", length, pos + 8
    group, elem, vr, length = _EXPLICIT_HEADER.unpack_from(data, pos)
    if vr in _LONG_VRS:
        return group << 16 | elem, vr, _U32.unpack_from(data, pos + 8)[0], pos + 12
    if vr in _SHORT_VRS:
        return group << 16 | elem, vr, length, pos + 8
    if group == 0xFFFE:  # an item or delimiter: no VR
        return group << 16 | elem, b"", _U32.unpack_from(data, pos + 4)[0], pos + 8
    raise _Unusual


def _walk(data: bytes, pos: int, implicit: bool, found: dict[int, tuple[bytes, int, int]] | None,
          until: int = 0) -> int:
    """Walk elements from ``pos`` to the end (or past the delimiter ``until``); at the top
    level (``found`` given) record (VR, start, end) of every element. Returns the end."""
    n = len(data)
    explicit_header, long_vrs, short_vrs = _EXPLICIT_HEADER.unpack_from, _LONG_VRS, _SHORT_VRS
    while pos + 8 <= n:
        if implicit:
            tag, vr, length, pos = _header(data, pos, implicit)
        else:  # the common case, inline: a call per element is a third of the walk
            group, elem, vr, length = explicit_header(data, pos)
            tag = group << 16 | elem
            if vr in short_vrs:
                pos += 8
            elif vr in long_vrs:
                length = _U32.unpack_from(data, pos + 8)[0]
                pos += 12
            else:
                tag, vr, length, pos = _header(data, pos, implicit)
        if tag == until:
            return pos
        if length == _UNDEFINED or tag >> 16 == 0xFFFE:
            pos = _undefined(data, pos, implicit, tag, vr, length)
            end = pos
        else:
            end = pos + length
            if end > n:
                raise _Unusual
        if found is not None:
            found[tag] = (vr, pos, end)
        pos = end
    if until or pos != n:
        raise _Unusual
    return pos


def _undefined(data: bytes, pos: int, implicit: bool, tag: int, vr: bytes, length: int
               ) -> int:
    """Where a value of undefined length that starts at ``pos`` ends."""
    if tag >> 16 == 0xFFFE or length != _UNDEFINED:
        raise _Unusual  # an item or delimiter where an element should be
    if tag == _PIXEL_DATA or (vr not in (b"SQ", b"UN") and not implicit):
        raise _Unusual  # encapsulated pixels, or a structure we do not read
    return _skip_undefined(data, pos, implicit or vr == b"UN")


def _meta(data: bytes) -> tuple[str, int]:
    """Transfer syntax and where the dataset starts (the meta group is explicit VR LE)."""
    if len(data) < 144 or data[128:132] != b"DICM":
        raise _Unusual
    pos, syntax = 132, ""
    while pos + 8 <= len(data):
        group, elem = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            return syntax, pos
        vr = data[pos + 4:pos + 6]
        if vr in _LONG_VRS:
            length = struct.unpack_from("<I", data, pos + 8)[0]
            pos += 12
        else:
            length = struct.unpack_from("<H", data, pos + 6)[0]
            pos += 8
        if elem == 0x0010:
            syntax = data[pos:pos + length].decode("ascii", "replace").strip("\x00 ")
        pos += length
    raise _Unusual


def read_quick(data: bytes) -> Quick | None:
    """The ordinary output ``data`` (a Part 10 file's bytes), or None (see module doc)."""
    try:
        return _read(data)
    except (_Unusual, struct.error, ValueError, UnicodeDecodeError):
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
    for tag, vr in _RISK_TAGS.items():
        where = found.get(tag)
        if where is not None:
            t = Tag(tag)
            risk[t] = RawDataElement(t, vr, where[2] - where[1], data[where[1]:where[2]],
                                     where[1], implicit, True)
    return Dataset(risk)


def _read(data: bytes) -> Quick | None:
    syntax, start = _meta(data)
    if syntax not in (_EXPLICIT, _IMPLICIT):
        return None
    found: dict[int, tuple[bytes, int, int]] = {}
    _walk(data, start, syntax == _IMPLICIT, found)
    if (_PIXEL_DATA not in found or _ICON in found or _OTHER_PIXELS & found.keys()
            or any(0x60000000 <= t < 0x601F0000 for t in found)):
        return None
    geometry = _layout(data, found)
    if geometry is None:
        return None
    layout, rows, cols, frames = geometry
    _, a, b = found[_PIXEL_DATA]
    expected = rows * cols * frames * (layout.bits_allocated // 8)
    if b - a not in (expected, expected + 1) or (b - a > expected and data[b - 1]):
        return None
    dtype = np.dtype(f"<{'i' if layout.signed else 'u'}{layout.bits_allocated // 8}")
    samples = np.frombuffer(data, dtype, rows * cols * frames, a).reshape(frames, rows, cols)
    burned = found.get(0x00280301)
    declared = burned is not None and data[burned[1]:burned[2]].strip(b"\x00 ").upper() == b"YES"
    return Quick(_risk_elements(data, found, syntax == _IMPLICIT), samples, layout, declared)
