"""Walking the element headers of a DICOM file's bytes, without parsing any value.

The quick paths that stand in for pydicom's parse - the survey of an export
(:mod:`agent.quickread`), the pixel gate (:mod:`agent.pixels.quick`), the de-identifier's
reader (:mod:`agent.deid.fastread`) and the defaced image's write-back
(:mod:`agent.deface.splice`) - all need where each element lies in the bytes. This module
is the one place that knows how elements are laid out (PS3.5 section 7):

* explicit VR: tag, VR, then a 2-byte length, or for :data:`LONG_VRS` 2 reserved bytes
  and a 4-byte length; implicit VR: tag and a 4-byte length;
* items and delimiters (group FFFE): tag and a 4-byte length, whatever the syntax;
* little or big endian (the retired Explicit VR Big Endian still arrives from old modalities);
* an undefined length (:data:`UNDEFINED`): a sequence's items run to a Sequence
  Delimitation Item, an item's elements to an Item Delimitation Item, encapsulated
  Pixel Data's fragments (items) to a Sequence Delimitation Item; the items of an UN
  value of undefined length hold implicit VR little endian (PS3.5 6.2.2).

It decides nothing else: which VRs, tags, orders or structures a quick path answers for
is that path's rule, applied to the :data:`Element` headers it is given. Each header is
handed over as soon as it is read, before its value is checked or skipped, so a user may
stop at any element (at Pixel Data, say) without the walk reading further.

Damaged bytes never crash or hang it: every read is checked against the end of the data
set it belongs to, every step advances by at least 8 bytes and nesting is bounded
(:data:`MAX_DEPTH`), so truncated, fuzzed or hostile input ends in :class:`WalkError`.
"""

from __future__ import annotations

import struct
from collections.abc import Generator

from agent.errors import NotDicom

UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
#: Explicit VRs whose header has 2 reserved bytes and a 4-byte length (PS3.5 7.1.2).
LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_SHORT_VRS = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
     b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)
#: Every VR of the standard. Another two bytes in an explicit VR header are handed on as
#: they are, with a 2-byte length (as pydicom reads them), unless the walk is strict.
VRS = LONG_VRS | _SHORT_VRS
#: Transfer syntaxes whose data set is walked as it is (not deflated): UID -> (implicit VR,
#: little endian). Encapsulated syntaxes are explicit VR little endian too; their users
#: read them by that UID.
PLAIN_SYNTAXES = {
    "1.2.840.10008.1.2": (True, True),
    "1.2.840.10008.1.2.1": (False, True),
    "1.2.840.10008.1.2.2": (False, False),
}
#: Sequences nest deeper than this in no clinical object (structured reports reach ~10);
#: deeper is damage or an attack, refused before Python's recursion limit is.
MAX_DEPTH = 64


class WalkError(NotDicom):
    """The bytes do not walk as DICOM elements: cut short, damaged, or nested too deep."""


#: One element (or item) header as it lies in the bytes, a plain tuple (the walk makes one
#: per element: a named tuple cost a fifth of the walk):
#: ``(tag, vr, start, value, length, depth)`` -
#: the tag as one int (group << 16 | element); the VR's two bytes as written, b"" where the
#: bytes carry none (implicit VR, items); the offsets of the header's first byte and of the
#: value's; the length as written (:data:`UNDEFINED`, or the value's length in bytes); the
#: depth, 0 for the data set's own elements, 1 inside an item of one of its sequences, ...
Element = tuple[int, bytes, int, int, int, int]


class Walker:
    """The element headers of one file's (or one value's) bytes in one transfer syntax."""

    def __init__(self, data: bytes, implicit: bool, little: bool = True, *,
                 strict: bool = False) -> None:
        """``strict``: two bytes that are not a VR of the standard, where an explicit VR
        stands, are a :class:`WalkError` (at every depth walked or skipped), not a VR."""
        order = "<" if little else ">"
        self.data = data
        self.size = len(data)
        self.implicit = implicit
        self.little = little
        self.strict = strict
        self._explicit = struct.Struct(f"{order}HH2sH").unpack_from
        self._implicit = struct.Struct(f"{order}HHL").unpack_from
        self._u32 = struct.Struct(f"{order}L").unpack_from
        self._un: Walker | None = None
        # The end last sought of an undefined-length value (value offset, end): a user
        # that asks for it does not make the walk seek it twice.
        self._sought = (-1, -1)

    def header(self, pos: int, end: int | None = None, depth: int = 0) -> Element:
        """The header at ``pos``, which must fit before ``end`` (default: the bytes' end)."""
        tag, vr, value, length = self._head(pos, self._end(end))
        return tag, vr, pos, value, length, depth

    def _end(self, end: int | None) -> int:
        if end is None:
            return self.size
        if end > self.size:
            raise WalkError("a data set runs past the end of the data")
        return end

    def _head(self, pos: int, end: int) -> tuple[int, bytes, int, int]:
        """(tag, VR, value offset, length) of the header at ``pos``, fitting before ``end``."""
        if pos + 8 > end:
            raise WalkError("an element header is cut short")
        data = self.data
        if self.implicit:
            group, elem, length = self._implicit(data, pos)
            return group << 16 | elem, b"", pos + 8, length
        group, elem, vr, length = self._explicit(data, pos)
        if group == 0xFFFE:
            return group << 16 | elem, b"", pos + 8, self._u32(data, pos + 4)[0]
        if vr in LONG_VRS:
            if pos + 12 > end:
                raise WalkError("an element header is cut short")
            return group << 16 | elem, vr, pos + 12, self._u32(data, pos + 8)[0]
        if self.strict and vr not in _SHORT_VRS:
            raise WalkError("not a VR of the standard")
        return group << 16 | elem, vr, pos + 8, length

    def elements(self, pos: int, end: int | None = None, depth: int = 0
                 ) -> Generator[Element, None, int]:
        """The elements of one data set from ``pos`` to ``end`` (default: the bytes' end);
        their sequences' contents are skipped, not handed on. Returns the end reached."""
        return self._elements(pos, self._end(end), depth, False, False)

    def walk(self, pos: int, end: int | None = None) -> Generator[Element, None, int]:
        """Every element at every depth in file order: inside a sequence (explicit SQ, an
        UN or implicit VR value of undefined length other than Pixel Data) each item's
        header, at the depth of its elements, then its elements. Other values of undefined
        length (encapsulated pixel data) are skipped. Returns the end reached."""
        return self._elements(pos, self._end(end), 0, False, True)

    def items(self, pos: int, end: int, depth: int = 1) -> Generator[Element, None, int]:
        """A sequence value of defined length (``pos`` to ``end``): each item's header,
        then that item's elements (their sequences skipped). Returns ``end``."""
        return self._items(pos, end, False, depth, False)

    def value_end(self, element: Element) -> int:
        """Where the value of ``element`` ends: after its last byte, or for an undefined
        length after the Sequence Delimitation Item that closes it."""
        _tag, vr, _start, value, length, depth = element
        if length != UNDEFINED:
            if value + length > self.size:
                raise WalkError("a value runs past the end of the data")
            return value + length
        if self._sought[0] == value:
            return self._sought[1]
        end = self._content(vr)._skip(value, depth + 1)
        self._sought = (value, end)
        return end

    def _content(self, vr: bytes) -> Walker:
        """The walker of an undefined-length value's items: UN holds implicit VR LE."""
        return self._un_walker() if vr == b"UN" else self

    def _un_walker(self) -> Walker:
        if self._un is None:
            self._un = Walker(self.data, implicit=True, little=True, strict=self.strict)
        return self._un

    def _sequence(self, tag: int, vr: bytes) -> bool:
        """Whether an undefined-length value holds a sequence's items (:meth:`walk` goes
        into them), not encapsulated pixel data's fragments."""
        return vr in (b"SQ", b"UN") or (self.implicit and tag != PIXEL_DATA)

    def _elements(  # noqa: C901 - one loop, its common case inline for speed
            self, pos: int, end: int, depth: int, closed: bool, descend: bool
    ) -> Generator[Element, None, int]:
        """The elements from ``pos`` to ``end``; ``closed``: an undefined-length item's,
        ending at its Item Delimitation Item (consumed, not handed on)."""
        if depth > MAX_DEPTH:
            raise WalkError("sequences nested deeper than any clinical object")
        data, head, implicit = self.data, self._head, self.implicit
        explicit_head, implicit_head, short_vrs = self._explicit, self._implicit, _SHORT_VRS
        while pos < end:
            # The common headers read inline (a call per element was a third of the walk);
            # _head() reads the others.
            if pos + 8 > end:
                raise WalkError("an element header is cut short")
            if implicit:
                group, elem, length = implicit_head(data, pos)
                tag, vr, value = group << 16 | elem, b"", pos + 8
            else:
                group, elem, vr, length = explicit_head(data, pos)
                if vr in short_vrs and group != 0xFFFE:
                    tag, value = group << 16 | elem, pos + 8
                else:
                    tag, vr, value, length = head(pos, end)
            if group == 0xFFFE:
                if closed and tag == ITEM_END:
                    return value
                raise WalkError("an item or delimiter where an element should be")
            element = tag, vr, pos, value, length, depth
            yield element
            if length != UNDEFINED:
                pos = value + length
                if descend and vr == b"SQ" and pos <= end:
                    yield from self._items(value, pos, False, depth + 1, True)
            elif descend and self._sequence(tag, vr):
                pos = yield from self._content(vr)._items(value, end, True, depth + 1, True)
            else:
                pos = self.value_end(element)
            if pos > end:
                raise WalkError("a value runs past the end of its data set")
        if closed:
            raise WalkError("an item of undefined length is never closed")
        return pos

    def _items(self, pos: int, end: int, undefined: bool, depth: int, descend: bool
               ) -> Generator[Element, None, int]:
        """A sequence's items from ``pos``: to ``end`` (defined length) or, ``undefined``,
        to the Sequence Delimitation Item (the position after it is returned). Each item's
        header, then its elements; ``descend``: their sequences' too."""
        if depth > MAX_DEPTH:
            raise WalkError("sequences nested deeper than any clinical object")
        if end > self.size:
            raise WalkError("a sequence runs past the end of the data")
        while undefined or pos < end:
            if pos + 8 > end:
                raise WalkError("an item header is cut short")
            group, elem, length = self._implicit(self.data, pos)
            tag = group << 16 | elem
            if tag == SEQUENCE_END and undefined:
                return pos + 8
            if tag != ITEM:
                raise WalkError("a sequence holds something other than items")
            yield tag, b"", pos, pos + 8, length, depth
            if length == UNDEFINED:
                pos = yield from self._elements(pos + 8, end, depth, True, descend)
            else:
                if pos + 8 + length > end:
                    raise WalkError("an item runs past the end of its sequence")
                pos = yield from self._elements(pos + 8, pos + 8 + length, depth, False,
                                                descend)
        return pos

    def _skip(self, pos: int, depth: int) -> int:
        """Where the items from ``pos`` of an undefined-length value end (after the
        Sequence Delimitation Item), reading headers only: an item of defined length is
        stepped over, one of undefined length walked to its delimiter."""
        if depth > MAX_DEPTH:
            raise WalkError("sequences nested deeper than any clinical object")
        data, size, item_head = self.data, self.size, self._implicit
        while True:
            if pos + 8 > size:
                raise WalkError("an item header is cut short")
            group, elem, length = item_head(data, pos)
            tag = group << 16 | elem
            pos += 8
            if tag == SEQUENCE_END:
                return pos
            if tag != ITEM:
                raise WalkError("a sequence holds something other than items")
            pos = pos + length if length != UNDEFINED else self._skip_item(pos, depth)

    def _skip_item(self, pos: int, depth: int) -> int:
        """Where the elements from ``pos`` of an undefined-length item end (after its
        Item Delimitation Item), reading headers only."""
        head, size = self._head, self.size
        while True:
            tag, vr, value, length = head(pos, size)
            if tag == ITEM_END:
                return value
            if tag >> 16 == 0xFFFE:
                raise WalkError("an item or delimiter where an element should be")
            if length != UNDEFINED:
                pos = value + length
            else:
                pos = (self._un_walker() if vr == b"UN" else self)._skip(value, depth + 1)


def file_meta(data: bytes) -> tuple[list[Element], int]:
    """The file meta group's element headers (explicit VR little endian, after the
    128-byte preamble and "DICM") and where the data set starts."""
    if len(data) < 144 or data[128:132] != b"DICM":
        raise WalkError("no DICOM preamble")
    walker = Walker(data, implicit=False)
    pos, found = 132, []
    while pos + 8 <= len(data) and data[pos:pos + 2] == b"\x02\x00":
        element = walker.header(pos)
        if element[4] == UNDEFINED:
            raise WalkError("a file meta element of undefined length")
        pos = walker.value_end(element)
        found.append(element)
    return found, pos


__all__ = ["ITEM", "ITEM_END", "LONG_VRS", "MAX_DEPTH", "PIXEL_DATA", "PLAIN_SYNTAXES",
           "SEQUENCE_END", "UNDEFINED", "VRS", "Element", "WalkError", "Walker", "file_meta"]
