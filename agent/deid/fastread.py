"""Read a Part 10 file into a pydicom Dataset of raw elements, faster than ``dcmread``.

The engine decodes only the few elements it changes, so reading is most of its cost;
pydicom's generic reader spends it on features the engine does not need (deferred reads,
callbacks, specific tags). This reader splits the top level of the dataset into
:class:`~pydicom.dataelem.RawDataElement` objects - the same objects ``dcmread`` makes,
so everything downstream (decoding on access, sequences parsed from their bytes) is
pydicom's own. Where each element lies comes from :mod:`agent.dicomwalk` (explicit or
implicit VR, little or big endian, undefined lengths); anything else (deflate, no Part 10
header, odd structures) returns None and the caller falls back to ``dcmread``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from agent.dicomwalk import (
    ITEM,
    PLAIN_SYNTAXES,
    UNDEFINED,
    VRS,
    Element,
    Walker,
    WalkError,
    file_meta,
)

#: explicit VR bytes -> the VR's name (for pydicom's RawDataElement)
_VR_NAMES = {vr: vr.decode("ascii") for vr in VRS}
_CHARACTER_SET = 0x00080005


class _Unsupported(Exception):
    pass


def _read(data: bytes, path: str) -> FileDataset:
    meta, pos = file_meta(data)
    meta_elements: dict[BaseTag, DataElement | RawDataElement] = {}
    ts = ""
    for tag_int, vr, _start, value, length, _depth in meta:
        tag = BaseTag(tag_int)
        raw = data[value:value + length]
        meta_elements[tag] = RawDataElement(tag, vr.decode("ascii"), length, raw, value, False,
                                            True)
        if tag_int == 0x00020010:
            ts = raw.decode("ascii", "replace").strip("\x00 ")
    if ts not in PLAIN_SYNTAXES:
        raise _Unsupported
    implicit, little = PLAIN_SYNTAXES[ts]
    walker = Walker(data, implicit, little)
    elements, _ = _elements(walker, walker.elements(pos), item=False)
    meta_ds = FileMetaDataset(meta_elements)
    # No path given to pydicom: it would stat the file (twice) for a timestamp no one reads.
    ds = FileDataset("", elements, preamble=data[:128], file_meta=meta_ds,
                     is_implicit_VR=implicit, is_little_endian=little)
    ds.filename = path
    ds.set_original_encoding(implicit, little, None)
    return ds


def _elements(walker: Walker, found: Iterator[Element], *, item: bool = True
              ) -> tuple[dict[BaseTag, DataElement | RawDataElement], bool]:
    """The raw elements of one data set, read from the walk ``found`` up to its end or to
    the next item's header (then True: another item follows). ``item``: inside a sequence
    item, where an unknown VR (implicit VR inside an explicit file: pydicom's heuristics)
    and an item's own character set are left to pydicom."""
    data, implicit, little = walker.data, walker.implicit, walker.little
    names = _VR_NAMES
    elements: dict[BaseTag, DataElement | RawDataElement] = {}
    for element in found:
        tag_int, vr_bytes, _start, value, length, _depth = element
        if tag_int == ITEM:
            return elements, True
        if implicit:
            vr = None
        else:
            vr = names.get(vr_bytes)
            if vr is None:  # not a VR of the standard
                if item:
                    raise _Unsupported
                vr = vr_bytes.decode("latin-1")
        if item and tag_int == _CHARACTER_SET:
            raise _Unsupported
        tag = BaseTag(tag_int)
        if length == UNDEFINED:
            # Undefined-length sequence or encapsulated pixel data: the value runs to the
            # Sequence Delimitation Item (excluded, as dcmread does).
            if vr == "UN" or (implicit and tag_int >> 16 & 1):
                raise _Unsupported
            stop = walker.value_end(element) - 8
            elements[tag] = RawDataElement(tag, vr, UNDEFINED, data[value:stop], value,
                                           implicit, little)
        else:
            # A value past the end is cut here; the walk then stops (WalkError).
            elements[tag] = RawDataElement(tag, vr, length, data[value:value + length], value,
                                           implicit, little)
    return elements, False


def read_items(value: bytes, implicit: bool, little: bool,
               encoding: str | list[str]) -> Sequence | None:
    """The items of a sequence value as datasets of raw elements (as pydicom's
    ``convert_SQ`` makes them, without its generic reader's cost), or None when this
    reader does not handle them (odd structures, items with their own character set):
    the caller lets pydicom decode the value."""
    try:
        walker = Walker(value, implicit, little)
        items: list[Dataset] = []
        found = walker.items(0, len(value))
        more = next(found, None) is not None  # the first item's header
        while more:
            elements, more = _elements(walker, found)
            item = Dataset(elements, parent_encoding=encoding)
            item.set_original_encoding(implicit, little, encoding)
            items.append(item)
        return Sequence(items)
    except (_Unsupported, WalkError, struct.error, UnicodeDecodeError):
        return None


def read_fast(data: bytes, path: str) -> FileDataset | None:
    """The dataset, or None when this reader does not handle the file (use dcmread)."""
    try:
        return _read(data, path)
    except (_Unsupported, WalkError, struct.error, UnicodeDecodeError):
        return None

