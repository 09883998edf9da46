"""Read a Part 10 file into a pydicom Dataset of raw elements, faster than ``dcmread``.

The engine decodes only the few elements it changes, so reading is most of its cost;
pydicom's generic reader spends it on features the engine does not need (deferred reads,
callbacks, specific tags). This reader splits the top level of the dataset into
:class:`~pydicom.dataelem.RawDataElement` objects - the same objects ``dcmread`` makes,
so everything downstream (decoding on access, sequences parsed from their bytes) is
pydicom's own. It handles explicit/implicit VR, little/big endian and undefined lengths;
anything else (deflate, no Part 10 header, odd structures) returns None and the caller
falls back to ``dcmread``.
"""

from __future__ import annotations

import struct

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_UNDEFINED = 0xFFFFFFFF
_VALID_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL "
    b"UN UR US UT UV".split()
)
#: explicit VR bytes -> (VR, whether its header has a 4-byte length)
_VR_INFO = {vr: (vr.decode("ascii"), vr in _LONG_VRS) for vr in _VALID_VRS}
_SUPPORTED = {
    "1.2.840.10008.1.2": (True, True),
    "1.2.840.10008.1.2.1": (False, True),
    "1.2.840.10008.1.2.2": (False, False),
}


class _Unsupported(Exception):
    pass


class _Walker:
    """Finds where undefined-length values end by walking their items."""

    def __init__(self, data: bytes, implicit: bool, little: bool) -> None:
        e = "<" if little else ">"
        self.data = data
        self.implicit = implicit
        self.little = little
        self.head = struct.Struct(f"{e}HH2sH").unpack_from
        self.u32 = struct.Struct(f"{e}L").unpack_from
        self.tag_len = struct.Struct(f"{e}HHL").unpack_from

    def element(self, pos: int) -> tuple[int, int, int]:
        """(tag, value start, value length) of the element header at ``pos``."""
        group, elem, vr, short = self.head(self.data, pos)
        if self.implicit:
            return group << 16 | elem, pos + 8, self.u32(self.data, pos + 4)[0]
        if vr in _LONG_VRS:
            if vr == b"UN" and self.u32(self.data, pos + 8)[0] == _UNDEFINED:
                raise _Unsupported  # UN sequences are implicit VR inside: leave to pydicom
            return group << 16 | elem, pos + 12, self.u32(self.data, pos + 8)[0]
        return group << 16 | elem, pos + 8, short

    def end_of_items(self, pos: int, depth: int = 0) -> int:
        """Start of the Sequence Delimitation Item closing the items from ``pos``."""
        if depth > 32:
            raise _Unsupported
        data = self.data
        while True:
            if pos + 8 > len(data):
                raise _Unsupported
            group, elem, length = self.tag_len(data, pos)
            if (group, elem) == (0xFFFE, 0xE0DD):
                return pos
            if (group, elem) != (0xFFFE, 0xE000):
                raise _Unsupported
            pos += 8
            if length != _UNDEFINED:
                pos += length
                continue
            while True:  # an undefined-length item: its elements up to the item delimiter
                if pos + 8 > len(data):
                    raise _Unsupported
                group, elem, _ = self.tag_len(data, pos)
                if (group, elem) == (0xFFFE, 0xE00D):
                    pos += 8
                    break
                _, value, length = self.element(pos)
                pos = self.end_of_items(value, depth + 1) + 8 if length == _UNDEFINED else (
                    value + length
                )


def _read(data: bytes, path: str) -> FileDataset:
    if len(data) < 144 or data[128:132] != b"DICM":
        raise _Unsupported
    pos = 132
    meta_elements: dict[BaseTag, DataElement | RawDataElement] = {}
    ts = ""
    while pos + 8 <= len(data) and data[pos:pos + 2] == b"\x02\x00":
        group, elem, vr = struct.unpack_from("<HH2s", data, pos)
        if vr in _LONG_VRS:
            length = struct.unpack_from("<L", data, pos + 8)[0]
            value = pos + 12
        else:
            length = struct.unpack_from("<H", data, pos + 6)[0]
            value = pos + 8
        if length == _UNDEFINED or value + length > len(data):
            raise _Unsupported
        tag = BaseTag(group << 16 | elem)
        raw = data[value:value + length]
        meta_elements[tag] = RawDataElement(tag, vr.decode("ascii"), length, raw, value, False,
                                            True)
        if tag == 0x00020010:
            ts = raw.decode("ascii", "replace").strip("\x00 ")
        pos = value + length
    if ts not in _SUPPORTED:
        raise _Unsupported
    implicit, little = _SUPPORTED[ts]
    elements, _ = _elements(data, pos, len(data), _Walker(data, implicit, little), item=False)
    meta = FileMetaDataset(meta_elements)
    # No path given to pydicom: it would stat the file (twice) for a timestamp no one reads.
    ds = FileDataset("", elements, preamble=data[:128], file_meta=meta,
                     is_implicit_VR=implicit, is_little_endian=little)
    ds.filename = path
    ds.set_original_encoding(implicit, little, None)
    return ds


def _elements(data: bytes, pos: int, end: int | None, walker: _Walker, *, item: bool = True
              ) -> tuple[dict[BaseTag, DataElement | RawDataElement], int]:
    """The raw elements from ``pos`` to ``end`` (None: up to the Item Delimitation Item
    of an undefined-length item) and the position after them. ``item``: inside a
    sequence item, where an unknown VR (implicit VR inside an explicit file: pydicom's
    heuristics) and an item's own character set are left to pydicom."""
    implicit = walker.implicit
    head, u32 = walker.head, walker.u32
    elements: dict[BaseTag, DataElement | RawDataElement] = {}
    size = len(data) if end is None else end
    little = walker.little
    while pos < size:
        if pos + 8 > size:
            raise _Unsupported
        group, elem, vr_bytes, short = head(data, pos)
        if group == 0xFFFE:
            if item and elem == 0xE00D and end is None:
                return elements, pos + 8
            raise _Unsupported
        tag_int = group << 16 | elem
        if implicit:
            length = u32(data, pos + 4)[0]
            value = pos + 8
            vr = None
        else:
            info = _VR_INFO.get(vr_bytes)
            if info is None:  # not a VR of the standard
                if item:
                    raise _Unsupported
                vr, long = vr_bytes.decode("latin-1"), False
            else:
                vr, long = info
            if long:
                length = u32(data, pos + 8)[0]
                value = pos + 12
            else:
                length = short
                value = pos + 8
        if item and tag_int == 0x00080005:
            raise _Unsupported
        tag = BaseTag(tag_int)
        if length == _UNDEFINED:
            # Undefined-length sequence or encapsulated pixel data: the value runs to the
            # Sequence Delimitation Item (excluded, as dcmread does).
            if vr == "UN" or (implicit and tag_int >> 16 & 1):
                raise _Unsupported
            stop = walker.end_of_items(value)
            elements[tag] = RawDataElement(tag, vr, _UNDEFINED, data[value:stop], value,
                                           implicit, little)
            pos = stop + 8
            continue
        if value + length > size:
            raise _Unsupported  # truncated: let dcmread (and the truncation check) decide
        elements[tag] = RawDataElement(tag, vr, length, data[value:value + length], value,
                                       implicit, little)
        pos = value + length
    if end is None:
        raise _Unsupported  # no Item Delimitation Item
    return elements, pos


def read_items(value: bytes, implicit: bool, little: bool,
               encoding: str | list[str]) -> Sequence | None:
    """The items of a sequence value as datasets of raw elements (as pydicom's
    ``convert_SQ`` makes them, without its generic reader's cost), or None when this
    reader does not handle them (odd structures, items with their own character set):
    the caller lets pydicom decode the value."""
    try:
        walker = _Walker(value, implicit, little)
        items: list[Dataset] = []
        pos, size = 0, len(value)
        while pos < size:
            if pos + 8 > size:
                raise _Unsupported
            group, elem, length = walker.tag_len(value, pos)
            if (group, elem) == (0xFFFE, 0xE0DD):
                break
            if (group, elem) != (0xFFFE, 0xE000):
                raise _Unsupported
            pos += 8
            if length == _UNDEFINED:
                elements, pos = _elements(value, pos, None, walker)
            else:
                if pos + length > size:
                    raise _Unsupported
                elements, _ = _elements(value, pos, pos + length, walker)
                pos += length
            item = Dataset(elements, parent_encoding=encoding)
            item.set_original_encoding(implicit, little, encoding)
            items.append(item)
        return Sequence(items)
    except (_Unsupported, struct.error, UnicodeDecodeError):
        return None


def read_fast(data: bytes, path: str) -> FileDataset | None:
    """The dataset, or None when this reader does not handle the file (use dcmread)."""
    try:
        return _read(data, path)
    except (_Unsupported, struct.error, UnicodeDecodeError):
        return None

