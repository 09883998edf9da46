"""Siemens CSA headers: the private image/series headers (0029,xx10 / xx20) read as tags.

Siemens MR images carry a binary "CSA" header in the private group 0029 under the creator
``SIEMENS CSA HEADER``. Two layouts exist: CSA2 (starts with ``SV10``) and the older CSA1.
Each holds named tags (``NumberOfImagesInMosaic``, ``SliceNormalVector``, ``B_value`` ...)
with up to ``vm`` text items. Only what defacing needs is read; the parser is bounded and
treats any inconsistency as "no CSA header" (a damaged or fuzzed header must never crash a
series, nor be trusted).
"""

from __future__ import annotations

import struct

from pydicom.dataset import Dataset

#: The private creator of the CSA headers, and the element (low byte) of the image header.
CSA_CREATOR = "SIEMENS CSA HEADER"
IMAGE_HEADER = 0x10
SERIES_HEADER = 0x20
#: A sane bound on tags and items: real headers hold about 100 tags of a few items each.
_MAX_TAGS = 1000
_MAX_ITEMS = 1000

CsaTags = dict[str, list[str]]


class CsaError(ValueError):
    """The bytes are not a CSA header this parser understands."""


def parse(data: bytes) -> CsaTags:
    """Tag name -> its non-empty text items. Raises :class:`CsaError` on malformed data."""
    if len(data) < 16:
        raise CsaError("too short")
    csa2 = data[:4] == b"SV10"
    pos = 8 if csa2 else 0
    n_tags, _check = struct.unpack_from("<2I", data, pos)
    pos += 8
    if not 0 < n_tags <= _MAX_TAGS:
        raise CsaError("implausible number of tags")
    tags: CsaTags = {}
    first_items = 0
    for number in range(n_tags):
        if pos + 84 > len(data):
            raise CsaError("truncated tag")
        raw_name, vm, _vr, _syngodt, n_items, _x = struct.unpack_from("<64si4s3i", data, pos)
        pos += 84
        if not 0 <= n_items <= _MAX_ITEMS or vm < 0:
            raise CsaError("implausible number of items")
        if number == 1:  # CSA1 item lengths are offset by the first tags' item count
            first_items = n_items
        items, pos = _items(data, pos, n_items, vm if vm else n_items,
                            None if csa2 else first_items)
        tags[raw_name.split(b"\x00", 1)[0].decode("latin-1")] = items
    return tags


def _items(data: bytes, pos: int, n_items: int, wanted: int, offset: int | None
           ) -> tuple[list[str], int]:
    """The text items of one tag, and where the next tag starts. ``offset``: None for
    CSA2, whose item lengths are exact; CSA1 lengths carry an offset and may run out."""
    items: list[str] = []
    for index in range(n_items):
        if pos + 16 > len(data):
            raise CsaError("truncated item")
        x0, x1, _x2, _x3 = struct.unpack_from("<4i", data, pos)
        pos += 16
        length = x1 if offset is None else x0 - offset
        if length < 0 or pos + length > len(data):
            if offset is None:
                raise CsaError("item runs past the end")
            break
        value = data[pos:pos + length].split(b"\x00", 1)[0]
        pos += length + (-length % 4)
        if index < wanted and value.strip():
            items.append(value.decode("latin-1").strip())
    return items, pos


def header(ds: Dataset, element: int = IMAGE_HEADER) -> CsaTags:
    """The CSA image (or series) header of ``ds``; empty when absent or unreadable."""
    block = _private_block(ds)
    if block is None:
        return {}
    elem = ds.get((0x0029, (block << 8) | element))
    value = getattr(elem, "value", None)
    if not isinstance(value, (bytes, bytearray)):
        return {}
    try:
        return parse(bytes(value))
    except (CsaError, struct.error, UnicodeDecodeError):
        return {}


def _private_block(ds: Dataset) -> int | None:
    """The block (0x10..0xFF) that ``SIEMENS CSA HEADER`` reserved in group 0029."""
    for block in range(0x10, 0x100):
        creator = ds.get((0x0029, block))
        if creator is None:
            continue
        if str(creator.value).strip() == CSA_CREATOR:
            return block
    return None


def number(tags: CsaTags, name: str) -> float | None:
    """The first item of ``name`` as a number, or None."""
    items = tags.get(name) or []
    try:
        return float(items[0]) if items else None
    except ValueError:
        return None


def vector(tags: CsaTags, name: str, size: int = 3) -> list[float] | None:
    """``size`` numeric items of ``name``, or None when absent or malformed."""
    items = tags.get(name) or []
    if len(items) < size:
        return None
    try:
        return [float(v) for v in items[:size]]
    except ValueError:
        return None
