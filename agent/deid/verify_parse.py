"""The verifier's own DICOM parser: every element of a file, with where its bytes lie.

Independent of the engine (and of pydicom's reader: only pydicom's data dictionary is used,
for the VR of implicit-VR elements). It walks the byte stream with ``struct`` - sequences
and items of defined or undefined length, encapsulated pixel data, deflated transfer
syntaxes - and records each element's path, tag, VR and byte range, so that a hit found
by scanning the raw bytes can be named by its element path, and structural rules can be
checked without decoding values.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR

_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQ_END = 0xFFFEE0DD
_DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1")
MAX_DEPTH = 32


class ParseError(Exception):
    """The bytes are not a well-formed DICOM stream."""


class _Reparse(Exception):
    """A top-level Specific Character Set after values were remembered under another
    (elements out of order): the file is read again without skipping anything."""


@dataclass(slots=True)
class Element:
    """One element: where it is, what it is; ``creator`` for private data elements."""

    prefix: str
    tag: int
    vr: str
    value_start: int
    value_end: int
    depth: int
    creator: str = ""

    @property
    def path(self) -> str:
        """E.g. ``(0008,1110)[0].(0008,1155)`` (built on demand: most are never shown)."""
        return f"{self.prefix}{_tag_str(self.tag)}"


@dataclass
class Parsed:
    """A whole file: the stream actually holding the dataset (inflated if deflated)."""

    stream: bytes
    preamble: bytes
    meta: list[Element] = field(default_factory=list)
    elements: list[Element] = field(default_factory=list)
    transfer_syntax: str = ""
    pixel_span: tuple[int, int] = (-1, -1)
    #: the first top-level element of each tag (:meth:`find`), made once per parse
    top: dict[int, Element] | None = None

    def value(self, elem: Element) -> bytes:
        return self.stream[elem.value_start:elem.value_end]

    def text(self, elem: Element) -> str:
        return self.value(elem).decode("latin-1").strip("\x00 ")

    def find(self, tag: int) -> Element | None:
        """A top-level element by tag (the first, should a broken file repeat it)."""
        top = self.top
        if top is None:
            top = {}
            for elem in self.elements:
                if elem.depth == 0 and elem.tag not in top:
                    top[elem.tag] = elem
            self.top = top
        return top.get(tag)

    def at(self, offset: int) -> Element | None:
        """The innermost element whose value holds ``offset``."""
        best: Element | None = None
        for elem in self.meta + self.elements:
            if elem.value_start <= offset < elem.value_end and (
                best is None or elem.depth >= best.depth
            ):
                best = elem
        return best


def _tag_str(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _implicit_vr(tag: int) -> str:
    vr = _IMPLICIT.get(tag)
    if vr is None:
        if tag >> 16 & 1:
            vr = "LO" if 0x10 <= (tag & 0xFFFF) <= 0xFF else "UN"
        else:
            try:
                vr = str(dictionary_VR(tag))
            except KeyError:
                vr = "UN"
        if len(_IMPLICIT) < 100_000:
            _IMPLICIT[tag] = vr
    return vr


_IMPLICIT: dict[int, str] = {}
#: explicit VR bytes -> (VR, whether its header has a 4-byte length)
_VR_INFO = {vr: (vr.decode("ascii"), vr in _LONG_VRS) for vr in (
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL "
    b"UN UR US UT UV").split()}
#: VRs of values the collector of originals never reads (see ``parse(seen=...)``).
_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "US", "SS", "UL", "SL", "FL", "FD",
                     "AT", "UV", "SV"})


class _Reader:
    def __init__(self, data: bytes, implicit: bool, little: bool, out: list[Element],
                 seen: set[bytes] | None = None,
                 values: set[tuple[int, bytes, bytes]] | None = None) -> None:
        self.data = data
        self.implicit = implicit
        #: see :func:`parse` (``seen``, ``values``); keys hold the file's character set.
        #: What this file adds goes to ``new_seen`` / ``new_values`` first, merged once
        #: the whole file parsed (a file read again, or a broken one, adds nothing).
        self.seen = seen
        self.values = values
        self.new_seen: set[bytes] = set()
        self.new_values: set[tuple[int, bytes, bytes]] = set()
        #: whether a key was made (under the character set known at that point)
        self.keyed = False
        self.charset = b""
        self.little = little
        e = "<" if little else ">"
        self.tag = struct.Struct(f"{e}HH")
        # tag group, tag element, explicit VR bytes, explicit short length - one unpack.
        self.head = struct.Struct(f"{e}HH2sH").unpack_from
        self.u16 = struct.Struct(f"{e}H")
        self.u32 = struct.Struct(f"{e}L")
        self.out = out

    def read_tag(self, pos: int) -> int:
        if pos + 8 > len(self.data):
            raise ParseError("truncated element header")
        g, e = self.tag.unpack_from(self.data, pos)
        return (g << 16) | e

    def dataset(self, pos: int, end: int | None, depth: int, prefix: str) -> int:
        """Parse elements from ``pos`` to ``end`` (None: until an item delimiter)."""
        if depth > MAX_DEPTH:
            raise ParseError("sequences nested too deeply")
        creators: dict[int, str] = {}
        data = self.data
        size = len(data)
        limit = size if end is None else end
        implicit = self.implicit
        head = self.head
        u32 = self.u32.unpack_from
        out = self.out
        seen = self.seen
        skip_binary = seen is not None
        values = self.values
        new_values = self.new_values
        vr_info = _VR_INFO
        implicit_vrs = _IMPLICIT
        while pos < limit:
            if pos + 8 > size:
                raise ParseError("truncated element header")
            group, el, raw_vr, short_len = head(data, pos)
            if group == 0xFFFE:
                if el == 0xE00D and end is None:  # Item Delimitation Item
                    return pos + 8
                raise ParseError("unexpected delimiter")
            tag = (group << 16) | el
            if implicit:
                vr = implicit_vrs.get(tag) or _implicit_vr(tag)
                length = u32(data, pos + 4)[0]
                value = pos + 8
            else:
                info = vr_info.get(raw_vr)
                if info is None:  # not a VR of the standard: a short header, as read
                    vr, long = raw_vr.decode("latin-1"), False
                else:
                    vr, long = info
                if long:
                    if pos + 12 > size:
                        raise ParseError("truncated element header")
                    length = u32(data, pos + 8)[0]
                    value = pos + 12
                else:
                    length = short_len
                    value = pos + 8
            stop = value + length
            if length != _UNDEFINED:
                if stop > size:
                    raise ParseError("value runs past the end of the file")
                if skip_binary and vr in _BINARY:
                    # originals (``seen``): numbers and bulk data identify no one by
                    # themselves and are not collected; only their extent is checked
                    pos = stop
                    continue
                if (values is not None and vr != "SQ" and vr != "UN"
                        and (depth or tag > 0x00080005) and not (group & 1 and el <= 0xFF)):
                    # originals (``values``): a value an earlier file held (same tag,
                    # bytes and character set) adds nothing to collect; private creators
                    # stay (they name the elements of their block)
                    key = (tag, self.charset, data[value:stop])
                    self.keyed = True
                    if key in values or key in new_values:
                        pos = stop
                        continue
                    new_values.add(key)
            creator = ""
            if group & 1 and el >= 0x1000:
                creator = creators.get((group << 16) | (el >> 8), "")
            if length == _UNDEFINED:
                elem = Element(prefix, tag, vr, value, value, depth, creator)
                out.append(elem)
                if seen is not None and (vr == "SQ" or vr == "UN"):
                    skipped = self.skip_seen(tag, vr, value, length)
                    if skipped is not None:
                        elem.value_end = skipped[0]
                        pos = skipped[1]
                        continue
                if vr == "UN":
                    # PS3.5 6.2.2: an undefined-length UN is a sequence in implicit VR
                    pos = self.implicit_reader().sequence(value, None, depth, elem.path)
                elif vr == "SQ":
                    pos = self.sequence(value, None, depth, elem.path)
                else:
                    pos = self.fragments(value)
                elem.value_end = pos
                continue
            elem = Element(prefix, tag, vr, value, stop, depth, creator)
            out.append(elem)
            if vr == "SQ":
                if seen is None or self.skip_seen(tag, vr, value, length) is None:
                    self.sequence(value, stop, depth, elem.path)
            elif vr == "UN" and length and _implicit_vr(tag) == "SQ":
                if seen is None or self.skip_seen(tag, vr, value, length) is None:
                    self.un_sequence(value, stop, depth, elem.path)
            elif group & 1 and 0x10 <= el <= 0xFF:
                creators[tag] = data[value:stop].decode("latin-1").strip("\x00 ")
            elif tag == 0x00080005 and depth == 0:
                if self.keyed and data[value:stop] != self.charset:
                    raise _Reparse
                self.charset = data[value:stop]
            pos = stop
        if end is None:
            raise ParseError("item without delimiter")
        return pos

    def remember(self) -> None:
        """The whole file parsed: what it added is remembered for the next files."""
        if self.seen is not None:
            self.seen |= self.new_seen
        if self.values is not None:
            self.values |= self.new_values

    def implicit_reader(self) -> _Reader:
        return _Reader(self.data, True, True, self.out)

    def skip_seen(self, tag: int, vr: str, value: int, length: int
                  ) -> tuple[int, int] | None:
        """(end of value, next position) of a sequence whose bytes were read before (the
        same tag, bytes and character set in an earlier file of the series): its items
        are not parsed again. None: parse it (it is remembered now)."""
        seen = self.seen
        assert seen is not None
        if length == _UNDEFINED:
            try:
                # an undefined-length UN is implicit VR inside (PS3.5 6.2.2)
                end = _Skipper(self.data, self.implicit or vr == "UN",
                               self.little or vr == "UN").items(value)
            except (ParseError, struct.error):
                return None  # parsed normally, which reports the damage
            after = end + 8
        else:
            end = after = value + length
            if end > len(self.data):
                return None
        key = b"%d|%s|" % (tag, self.charset) + self.data[value:end]
        self.keyed = True
        if key in seen or key in self.new_seen:
            return end, after
        self.new_seen.add(key)
        return None

    def un_sequence(self, pos: int, end: int, depth: int, path: str) -> None:
        """A sequence written as UN (implicit VR inside): its items when they parse; an
        opaque value otherwise (its bytes are still scanned)."""
        before = len(self.out)
        try:
            self.implicit_reader().sequence(pos, end, depth, path)
        except (ParseError, struct.error):
            del self.out[before:]

    def sequence(self, pos: int, end: int | None, depth: int, path: str) -> int:
        data = self.data
        index = 0
        while end is None or pos < end:
            tag = self.read_tag(pos)
            length = self.u32.unpack_from(data, pos + 4)[0]
            if tag == _SEQ_END:
                return pos + 8
            if tag != _ITEM:
                raise ParseError("sequence holds something other than items")
            start = pos + 8
            prefix = f"{path}[{index}]."
            if length == _UNDEFINED:
                pos = self.dataset(start, None, depth + 1, prefix)
            else:
                if start + length > len(data):
                    raise ParseError("item runs past the end of the file")
                self.dataset(start, start + length, depth + 1, prefix)
                pos = start + length
            index += 1
        return pos

    def fragments(self, pos: int) -> int:
        data = self.data
        while True:
            tag = self.read_tag(pos)
            length = self.u32.unpack_from(data, pos + 4)[0]
            if tag == _SEQ_END:
                return pos + 8
            if tag != _ITEM or length == _UNDEFINED:
                raise ParseError("encapsulated pixel data without proper fragments")
            pos += 8 + length
            if pos > len(data):
                raise ParseError("fragment runs past the end of the file")


class _Skipper:
    """Finds the end of undefined-length items without recording their elements (for
    sequences already read, see :meth:`_Reader.skip_seen`)."""

    def __init__(self, data: bytes, implicit: bool, little: bool) -> None:
        e = "<" if little else ">"
        self.data = data
        self.implicit = implicit
        self.head = struct.Struct(f"{e}HH2sH").unpack_from
        self.tag_len = struct.Struct(f"{e}HHL").unpack_from
        self.u32 = struct.Struct(f"{e}L").unpack_from

    def items(self, pos: int, depth: int = 0) -> int:
        """Start of the Sequence Delimitation Item that closes the items from ``pos``."""
        if depth > MAX_DEPTH:
            raise ParseError("sequences nested too deeply")
        data = self.data
        while True:
            if pos + 8 > len(data):
                raise ParseError("truncated sequence")
            group, el, length = self.tag_len(data, pos)
            if group == 0xFFFE and el == 0xE0DD:
                return pos
            if group != 0xFFFE or el != 0xE000:
                raise ParseError("sequence holds something other than items")
            pos += 8
            if length != _UNDEFINED:
                pos += length
                continue
            while True:
                if pos + 8 > len(data):
                    raise ParseError("truncated item")
                group, el, raw_vr, short = self.head(data, pos)
                if group == 0xFFFE and el == 0xE00D:
                    pos += 8
                    break
                if self.implicit:
                    length, value = self.u32(data, pos + 4)[0], pos + 8
                elif raw_vr in _LONG_VRS:
                    length, value = self.u32(data, pos + 8)[0], pos + 12
                else:
                    length, value = short, pos + 8
                if length == _UNDEFINED:
                    # a nested sequence (an undefined-length UN is implicit VR inside)
                    inner = self if self.implicit or raw_vr != b"UN" else _Skipper(
                        data, True, True)
                    pos = inner.items(value, depth + 1) + 8
                else:
                    pos = value + length


def _guess_syntax(data: bytes) -> str:
    """The transfer syntax of a bare dataset (no preamble, no meta), from its first bytes."""
    if len(data) < 8:
        raise ParseError("too short to be DICOM")
    little = struct.unpack_from("<H", data, 0)[0] <= 0x00FF or data[0] != 0
    explicit = data[4:6].isalpha() and data[4:6].isupper()
    if not explicit:
        return "1.2.840.10008.1.2"
    return "1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2"


def parse(data: bytes, *, part10: bool = True, seen: set[bytes] | None = None,
          values: set[tuple[int, bytes, bytes]] | None = None) -> Parsed:
    """Parse a Part 10 file (preamble, ``DICM``, meta, dataset). Raises ParseError.

    ``part10=False`` also accepts a bare dataset (old exports without preamble and meta),
    guessing its encoding from the first element.

    ``seen`` (for reading the originals of one series): a sequence whose tag, bytes and
    character set are in ``seen`` is recorded as one element and its items are not
    parsed (an earlier file held them byte for byte); every other sequence is added; and
    binary values (numbers, OB/OW ...) are not recorded. Never for outputs, whose every
    element is checked.

    ``values`` (with ``seen``): likewise, a text value whose tag, bytes and character set
    are in ``values`` is not recorded (an earlier file held it), every other one is
    added - except the Specific Character Set itself, the elements before it, private
    creators and sequences.
    """
    try:
        return _parse(data, part10, seen, values)
    except _Reparse:  # out of order: nothing skipped, nothing remembered
        return _parse(data, part10, None, None)


def _parse(data: bytes, part10: bool, seen: set[bytes] | None,
           values: set[tuple[int, bytes, bytes]] | None) -> Parsed:
    if len(data) < 132 or data[128:132] != b"DICM":
        if part10:
            raise ParseError("no DICOM Part 10 header (preamble and DICM)")
        ts = _guess_syntax(data)
        parsed = Parsed(stream=data, preamble=b"", transfer_syntax=ts)
        elements: list[Element] = []
        bare = _Reader(data, ts == "1.2.840.10008.1.2", ts != "1.2.840.10008.1.2.2",
                       elements, seen, values)
        bare.dataset(0, len(data), 0, "")
        bare.remember()
        parsed.elements = elements
        return parsed
    meta: list[Element] = []
    reader = _Reader(data, False, True, meta)
    pos = 132
    ts = ""
    while pos + 8 <= len(data):
        group = struct.unpack_from("<H", data, pos)[0]
        if group != 0x0002:
            break
        before = len(meta)
        # Parse one element at a time: the meta ends where group 0002 ends.
        tag = reader.read_tag(pos)
        raw_vr = data[pos + 4:pos + 6]
        if raw_vr in _LONG_VRS:
            length = struct.unpack_from("<L", data, pos + 8)[0]
            value = pos + 12
        else:
            length = struct.unpack_from("<H", data, pos + 6)[0]
            value = pos + 8
        if length == _UNDEFINED or value + length > len(data):
            raise ParseError("malformed file meta")
        meta.append(Element("", tag, raw_vr.decode("latin-1"), value, value + length, 0))
        if tag == 0x00020010:
            ts = data[value:value + length].decode("latin-1").strip("\x00 ")
        pos = value + length
        assert len(meta) == before + 1
    parsed = Parsed(stream=data, preamble=data[:128], meta=meta, transfer_syntax=ts)
    if ts in _DEFLATED:
        try:  # (only here is the body copied: a memory-mapped original stays unread)
            body = zlib.decompress(data[pos:], -15)
        except zlib.error as exc:
            raise ParseError(f"deflated dataset cannot be inflated ({exc})") from None
        # Offsets of the dataset refer to the inflated stream, appended after the meta.
        parsed.stream = data[:pos] + body
    implicit = ts == "1.2.840.10008.1.2"
    little = ts != "1.2.840.10008.1.2.2"
    elements = []
    body_reader = _Reader(parsed.stream, implicit, little, elements, seen, values)
    body_reader.dataset(pos, len(parsed.stream), 0, "")
    body_reader.remember()
    parsed.elements = elements
    for elem in elements:
        if elem.depth == 0 and elem.tag == 0x7FE00010:
            parsed.pixel_span = (elem.value_start, elem.value_end)
    return parsed
