"""A fast Part 10 writer for de-identified datasets.

pydicom's writer costs more than everything else the engine does together (it re-validates
and re-dispatches every element). Most elements of a de-identified file are still the raw
bytes read from the source, in the source's transfer syntax: they only need their header
(tag, VR, length) in front of the untouched value. This module does exactly that and hands
only the few elements the engine changed to pydicom's element writer.

Deflated transfer syntaxes are not handled here (:func:`can_write` says so); the engine
then falls back to pydicom's ``save_as``.
"""

from __future__ import annotations

import struct
from operator import itemgetter
from typing import Any

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import UID

_LONG_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
     "UR", "UT"}
)
_UNDEFINED = 0xFFFFFFFF
_DEFLATED = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1"})


def can_write(transfer_syntax: str) -> bool:
    return transfer_syntax not in _DEFLATED


_first = itemgetter(0)


#: Encoded element headers per (implicit VR, little endian), by (tag, VR, length).
_HEADERS: dict[tuple[bool, bool], dict[tuple[int, str, int], bytes]] = {}


class _Encoder:
    def __init__(self, implicit: bool, little: bool) -> None:
        self.implicit = implicit
        self.little = little
        headers = _HEADERS.get((implicit, little))
        if headers is None:
            headers = _HEADERS[(implicit, little)] = {}
        self.headers = headers
        e = "<" if little else ">"
        self.tag_len = struct.Struct(f"{e}HHL")
        self.tag_vr_short = struct.Struct(f"{e}HH2sH")
        self.tag_vr_long = struct.Struct(f"{e}HH2sHL")
        self.item = struct.Struct(f"{e}HHL").pack(0xFFFE, 0xE000, _UNDEFINED)
        self.item_end = struct.Struct(f"{e}HHL").pack(0xFFFE, 0xE00D, 0)
        self.seq_end = struct.Struct(f"{e}HHL").pack(0xFFFE, 0xE0DD, 0)

    def header(self, tag: int, vr: str, length: int) -> bytes:
        # Remembered per encoding: the slices of a series repeat their element headers.
        key = (tag, vr, length)
        done = self.headers.get(key)
        if done is not None:
            return done
        group, elem = tag >> 16, tag & 0xFFFF
        if self.implicit:
            done = self.tag_len.pack(group, elem, length)
        elif vr in _LONG_VRS:
            done = self.tag_vr_long.pack(group, elem, vr.encode("ascii"), 0, length)
        else:
            done = self.tag_vr_short.pack(group, elem, vr.encode("ascii"), length)
        if len(self.headers) >= 50_000:
            self.headers.clear()
        self.headers[key] = done
        return done

    def dataset(self, ds: Dataset, out: list[bytes], encodings: Any) -> None:
        elements: Any = ds._dict
        if 0x00080005 in elements:
            encodings = convert_encodings(ds[0x00080005].value or "ISO_IR 6")
        headers = self.headers
        implicit = self.implicit
        append = out.append
        # (int, element) pairs sorted by the int alone (pydicom's BaseTag compares in
        # Python); a dict's keys are unique, so the elements are never compared
        for number, elem in sorted([(int(t), e) for t, e in elements.items()], key=_first):
            if type(elem) is RawDataElement:
                value = elem.value or b""
                vr = elem.VR
                if (vr is not None or implicit) and elem.length != _UNDEFINED:
                    # the common case: a header written before for this tag, VR and length
                    # (implicit VR: the VR is not written, raw() reads it as UN)
                    done = headers.get((number, vr or "UN", len(value)))
                    if done is not None:
                        append(done)
                        append(value)
                        continue
                self.raw(number, elem, out)
            elif isinstance(elem, DataElement) and elem.VR == "SQ":
                self.sequence(number, elem, out, encodings)
            else:
                out.append(self.other(ds[elem.tag], encodings))

    def raw(self, tag: int, elem: RawDataElement, out: list[bytes]) -> None:
        value = elem.value or b""
        vr = elem.VR
        if vr is None:
            if not self.implicit:
                try:
                    vr = str(dictionary_VR(tag))
                except KeyError:
                    vr = "UN"
            else:
                vr = "UN"
        vr = str(vr)
        if elem.length == _UNDEFINED:  # encapsulated pixel data
            out.append(self.header(tag, vr, _UNDEFINED))
            out.append(value)
            out.append(self.seq_end)
            return
        if not self.implicit and vr not in _LONG_VRS and len(value) > 0xFFFF:
            vr = "UN"  # cannot happen in a valid source; keeps the stream parsable
        out.append(self.header(tag, vr, len(value)))
        out.append(value)

    def sequence(self, tag: int, elem: DataElement, out: list[bytes], encodings: Any) -> None:
        out.append(self.header(tag, "SQ", _UNDEFINED))
        for item in elem.value:
            out.append(self.item)
            self.dataset(item, out, encodings)
            out.append(self.item_end)
        out.append(self.seq_end)

    def other(self, elem: DataElement, encodings: Any) -> bytes:
        if elem.VR in _TEXT_VRS:
            fast = self.text(elem)
            if fast is not None:
                return fast
        fp = DicomBytesIO()
        fp.is_little_endian = self.little
        fp.is_implicit_VR = self.implicit
        write_data_element(fp, elem, encodings)
        return bytes(fp.getvalue())


    def text(self, elem: DataElement) -> bytes | None:
        """Text values that are pure ASCII: the same bytes under every character set."""
        value = elem.value
        if value is None:
            data = b""
        else:
            if isinstance(value, (list, MultiValue)):
                text = "\\".join("" if v is None else str(v) for v in value)
            else:
                text = str(value)
            try:
                data = text.encode("ascii")
            except UnicodeEncodeError:
                return None  # pydicom encodes with the dataset's character set
            if len(data) % 2:
                data += b"\0" if elem.VR == "UI" else b" "
        if not self.implicit and elem.VR not in _LONG_VRS and len(data) > 0xFFFF:
            return None
        return self.header(int(elem.tag), elem.VR, len(data)) + data


def encode_items(items: list[Dataset], *, implicit: bool, little: bool) -> bytes:
    """The value of a sequence holding ``items`` (undefined-length items, delimited)."""
    enc = _Encoder(implicit, little)
    out: list[bytes] = []
    for item in items:
        out.append(enc.item)
        enc.dataset(item, out, None)
        out.append(enc.item_end)
    return b"".join(out)


def raw_text(tag: int, vr: str, values: list[str], *, implicit: bool,
             little: bool) -> RawDataElement:
    """A ready-to-write element holding ASCII text (UI padded with NUL, others with space)."""
    data = "\\".join(values).encode("ascii", "replace")
    if len(data) % 2:
        data += b"\0" if vr == "UI" else b" "
    return RawDataElement(BaseTag(tag), vr, len(data), data, 0, implicit, little)


def _meta_element(tag: int, vr: str, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0"  # UI padding; other text was padded with a space by the caller
    if vr in _LONG_VRS:
        head = struct.pack("<HH2sHL", 0x0002, tag & 0xFFFF, vr.encode(), 0, len(value))
    else:
        head = struct.pack("<HH2sH", 0x0002, tag & 0xFFFF, vr.encode(), len(value))
    return head + value


def encode_file(ds: Dataset) -> bytes:
    """Zero preamble, ``ds.file_meta`` (group length recomputed) and the dataset's bytes."""
    return b"".join(encode_parts(ds))


def _transfer_syntax(meta: Dataset) -> str:
    """The meta's Transfer Syntax UID; a raw value read as bytes (decoding it into
    pydicom's element costs more than the rest of the meta)."""
    elements: Any = meta._dict
    raw = elements.get(0x00020010)
    if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes):
        return raw.value.decode("ascii", "replace").strip("\x00 ")
    return str(UID(str(meta.TransferSyntaxUID)))


def encode_parts(ds: Dataset) -> list[bytes]:
    """:func:`encode_file` as a list of chunks (large values are not copied again)."""
    meta_ds: Any = ds.file_meta
    parts = []
    for tag in sorted(meta_ds._dict, key=int):
        if tag == 0x00020000:
            continue
        raw = meta_ds._dict[tag]
        if isinstance(raw, RawDataElement) and raw.VR and isinstance(raw.value, bytes):
            parts.append(_meta_element(int(tag), str(raw.VR), raw.value))
            continue
        elem = meta_ds[tag]
        value = elem.value
        if isinstance(value, (bytes, bytearray)):
            data = bytes(value)
        else:
            data = str(value).encode("ascii", "replace")
            if len(data) % 2 and elem.VR != "UI":
                data += b" "
        parts.append(_meta_element(int(tag), str(elem.VR), data))
    return _with_meta(ds, b"".join(parts), _transfer_syntax(meta_ds))


#: Encoded file meta elements by (tag, VR, value): all but the SOP Instance UID repeat.
_META: dict[tuple[int, str, bytes], bytes] = {}


def encode_with_meta(ds: Dataset, meta: list[tuple[int, str, bytes]], ts: str) -> list[bytes]:
    """:func:`encode_parts` with the file meta given as (tag, VR, value) in tag order
    (``ts`` its Transfer Syntax UID) instead of read from ``ds.file_meta``."""
    parts = []
    for tag, vr, value in meta:
        key = (tag, vr, value)
        done = _META.get(key)
        if done is None:
            done = _meta_element(tag, vr, value)
            if tag != 0x00020003:  # unique to the file: not remembered
                if len(_META) >= 1000:
                    _META.clear()
                _META[key] = done
        parts.append(done)
    return _with_meta(ds, b"".join(parts), ts)


def _with_meta(ds: Dataset, meta: bytes, ts: str) -> list[bytes]:
    group_length = struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(meta))
    implicit = ts == "1.2.840.10008.1.2"
    little = ts != "1.2.840.10008.1.2.2"
    out = [b"\0" * 128, b"DICM", group_length, meta]
    _Encoder(implicit, little).dataset(ds, out, None)
    return out
