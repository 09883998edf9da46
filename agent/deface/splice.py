"""Writing a defaced classic image back by splicing its file's bytes, not re-encoding it.

Defacing changes an object's pixel values and three marks in its header (Image Type value 1
DERIVED, the de-identification method and its code 113102; Smallest/Largest Image Pixel
Value are dropped). Re-encoding the whole object with pydicom cost 5-8 ms a file - most of
the time of writing a defaced series - for a header that is unchanged but for those
elements. For an uncompressed object (Explicit or Implicit VR Little Endian) with its
native Pixel Data at the top level, the written file is the read file's bytes with:

* the top-level elements that change replaced by their new encoding (computed once per
  distinct original value: one series usually has one Image Type and one method list),
* the Pixel Data value replaced by the new stored values, of the same length.

Everything else - preamble, file meta, every other element, anything after the pixel data
- keeps its bytes. Any object outside that shape (compressed, deflated, big endian,
multi-frame, colour, undefined lengths at the top level other than sequences, a value
running past the end of the file) gets no :class:`Layout` and is written the ordinary way.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from agent.dicomwalk import PIXEL_DATA, UNDEFINED, Walker, WalkError

#: The top-level elements the derived-image marks change or drop (see ``mark_derived``).
IMAGE_TYPE = 0x00080008
DEID_METHOD = 0x00120063
DEID_CODES = 0x00120064
MARKED = (IMAGE_TYPE, DEID_METHOD, DEID_CODES)
DROPPED = (0x00280106, 0x00280107)  # Smallest / Largest Image Pixel Value

class NotSpliceable(ValueError):
    """The bytes are not in a shape this module handles: write the object the normal way."""


@dataclass(frozen=True)
class Layout:
    """Where an object's top-level elements lie in its file's bytes."""

    implicit: bool
    #: Bytes up to and including the Pixel Data element's tag and length.
    head: bytes
    #: Where the data set begins in ``head`` (after preamble and file meta).
    start: int
    #: (tag, first byte, end) of each top-level element before the Pixel Data.
    spans: tuple[tuple[int, int, int], ...]
    #: Length of the Pixel Data value.
    pixel_length: int
    #: Bytes after the Pixel Data value (usually none).
    tail: bytes


def dataset_start(raw: bytes) -> int:
    """Where the data set begins: after the preamble, "DICM" and the file meta group,
    whose length its first element states."""
    if raw[128:132] != b"DICM" or len(raw) < 144 or raw[132:138] != b"\x02\x00\x00\x00UL":
        raise NotSpliceable("no preamble and file meta group length")
    start = 144 + int.from_bytes(raw[140:144], "little")
    if start + 8 > len(raw) or raw[start:start + 2] == b"\x02\x00":
        raise NotSpliceable("the file meta group length is wrong")
    return start


def layout(raw: bytes, syntax: str) -> Layout:
    """Where the top-level elements of ``raw`` (a whole file) lie; raises
    :class:`NotSpliceable` when the object is not in the handled shape."""
    start = dataset_start(raw)
    if syntax not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        raise NotSpliceable(f"transfer syntax {syntax}")
    implicit = syntax == ImplicitVRLittleEndian
    spans: list[tuple[int, int, int]] = []
    walker = Walker(raw, implicit)
    try:
        for element in walker.elements(start):
            tag, vr, pos, value, length, _depth = element
            if tag == PIXEL_DATA:
                if length == UNDEFINED or value + length > len(raw):
                    raise NotSpliceable("encapsulated or truncated Pixel Data")
                return Layout(implicit=implicit, head=raw[:value], start=start,
                              spans=tuple(spans), pixel_length=length,
                              tail=raw[value + length:])
            if length == UNDEFINED and not implicit and vr not in (b"SQ", b"UN"):
                raise NotSpliceable("an element of undefined length that is not a sequence")
            spans.append((tag, pos, walker.value_end(element)))
    except WalkError as e:
        raise NotSpliceable(str(e)) from None
    raise NotSpliceable("no Pixel Data at the top level")


def _encode(elements: Dataset, implicit: bool) -> dict[int, bytes]:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    out: dict[int, bytes] = {}
    for elem in elements:
        before = fp.tell()
        write_data_element(fp, elem)
        out[int(elem.tag)] = fp.getvalue()[before:]
    return out


class Marks:
    """The new encoding of the marked elements, per distinct original encoding (one
    instance serves one series: its objects mostly share Image Type and method list)."""

    def __init__(self, mark: Callable[[Dataset], None]) -> None:
        self._mark = mark
        self._known: dict[tuple[bool, bytes], dict[int, bytes]] = {}

    def of(self, ds: Dataset, lay: Layout) -> dict[int, bytes]:
        """New bytes of each marked element of ``ds`` (whose file is laid out as ``lay``)."""
        key = (lay.implicit, b"".join(lay.head[a:b] for t, a, b in lay.spans if t in MARKED))
        found = self._known.get(key)
        if found is None:
            marked = Dataset()
            for tag in MARKED:  # copies: the object's own dataset is left as it was read
                if tag in ds:
                    marked[tag] = copy.deepcopy(ds[tag])
            self._mark(marked)
            found = _encode(marked, lay.implicit)
            self._known[key] = found
        return found


def write(path: Path, lay: Layout, marks: dict[int, bytes], pixels: bytes) -> None:
    """The object's file again, marked and with ``pixels`` as its Pixel Data value."""
    if len(pixels) != lay.pixel_length:
        raise NotSpliceable("the new pixel data differ in length")
    pending = sorted(marks.items())
    parts: list[bytes] = [lay.head[:lay.start]]
    for tag, a, b in lay.spans:
        while pending and pending[0][0] < tag:  # a marked element the object lacked
            parts.append(pending.pop(0)[1])
        if pending and pending[0][0] == tag:
            parts.append(pending.pop(0)[1])
        elif tag not in DROPPED:
            parts.append(lay.head[a:b])
    parts.extend(v for _, v in pending)
    parts.append(lay.head[lay.spans[-1][2] if lay.spans else lay.start:])
    parts.append(pixels)
    parts.append(lay.tail)
    path.write_bytes(b"".join(parts))


def pixel_bytes(arr: np.ndarray) -> bytes:
    """Stored values as little-endian bytes."""
    return np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
