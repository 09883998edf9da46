"""Embedded bytes: what a compressed frame carries besides its samples, removed.

A JPEG frame may carry comment (COM) and application (APPn) segments - EXIF with names
and dates, XMP, Photoshop blocks, thumbnails - and anything after its end-of-image marker;
a JPEG 2000 codestream may carry comment (COM) markers, a JP2 wrapper XML/UUID boxes; an
RLE frame bytes after its last segment. None of it is needed to decode the samples, so it
is dropped and the samples decode exactly as before:

* JPEG (baseline, extended, lossless, JPEG-LS): every COM and APPn goes, except the few the
  codec reads: APP14 "Adobe" (colour transform flag, rebuilt with just that flag), APP0
  "JFIF" (rebuilt without its thumbnail) and APP8 "mrfx" (JPEG-LS colour transform, kept
  only at its fixed 5-byte size); bytes before SOI and after EOI go.
* JPEG 2000: COM markers go from the main header and from tile-part headers (Psot is
  adjusted); a JP2 wrapper is replaced by its codestream; bytes after EOC go. A tile-part
  comment in a codestream with a TLM index is not edited: :class:`Uncleanable` makes the
  caller re-write the frame uncompressed instead.
* RLE: the header is rebuilt (unused offsets zero) and each segment is cut where its
  samples end.

:func:`clean_frame` returns the frame unchanged (the same object) when there was nothing
to remove, so callers can tell whether to re-write the file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pydicom.uid import (
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    RLELossless,
)


class Uncleanable(Exception):
    """A frame's structure is not understood well enough to edit it in place."""


@dataclass
class Removed:
    """What was taken out of one frame (kinds and byte counts, never contents)."""

    kinds: list[str] = field(default_factory=list)
    bytes: int = 0

    def add(self, kind: str, size: int) -> None:
        self.kinds.append(kind)
        self.bytes += size


_JFIF_MIN = b"JFIF\x00"
_NO_LENGTH = frozenset({0x01, *range(0xD0, 0xDA)})  # TEM, RSTn, SOI, EOI


def _soi(data: bytes, removed: Removed) -> int:
    start = data.find(b"\xff\xd8")
    if start < 0:
        raise Uncleanable("no start-of-image marker")
    if start:
        removed.add("bytes before SOI", start)
    return start + 2


def _jpeg(data: bytes, jpeg_ls: bool, removed: Removed) -> bytes:
    pos = _soi(data, removed)
    out = bytearray(b"\xff\xd8")
    n = len(data)
    while pos < n:
        if data[pos] != 0xFF:
            raise Uncleanable("marker expected")
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            break
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            out += b"\xff\xd9"
            if pos < n:
                removed.add("bytes after EOI", n - pos)
            return bytes(out)
        if marker in _NO_LENGTH:
            out += bytes((0xFF, marker))
            continue
        pos = _jpeg_segment(data, pos, marker, out, removed)
        if marker == 0xDA:  # entropy-coded data runs to the next real marker
            scan_end = _scan_end(data, pos, jpeg_ls)
            out += data[pos:scan_end]
            pos = scan_end
    return bytes(out)  # no EOI: kept as the decoder sees it


def _jpeg_segment(data: bytes, pos: int, marker: int, out: bytearray, removed: Removed
                  ) -> int:
    """Copy (or drop) the segment whose length field is at ``pos``; returns its end."""
    if pos + 2 > len(data):
        raise Uncleanable("truncated segment")
    (length,) = struct.unpack(">H", data[pos:pos + 2])
    end = pos + length
    if length < 2 or end > len(data):
        raise Uncleanable("segment length out of range")
    body = data[pos + 2:end]
    if marker == 0xFE:
        removed.add("COM", length + 2)
    elif 0xE0 <= marker <= 0xEF:
        kept = _app_kept(marker, body)
        if kept is None:
            removed.add(f"APP{marker - 0xE0}", length + 2)
        else:
            if kept != body:
                removed.add(f"APP{marker - 0xE0} extra", len(body) - len(kept))
            out += bytes((0xFF, marker)) + struct.pack(">H", len(kept) + 2) + kept
    else:
        out += data[pos - 2:end]
    return end


def _scan_end(data: bytes, pos: int, jpeg_ls: bool) -> int:
    n = len(data)
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= n:
            return n
        nxt = data[pos + 1]
        if jpeg_ls:
            if nxt >= 0x80:
                return pos
        elif nxt not in (0x00, 0xFF) and not 0xD0 <= nxt <= 0xD7:
            return pos
        pos += 1


def _app_kept(marker: int, body: bytes) -> bytes | None:
    """The part of an application segment a decoder needs, or None to drop it."""
    if marker == 0xEE and body.startswith(b"Adobe") and len(body) >= 12:
        return b"Adobe" + b"\x00\x64\x00\x00\x00\x00" + body[11:12]  # version 100, transform
    if marker == 0xE0 and body.startswith(_JFIF_MIN) and len(body) >= 14:
        return body[:12] + b"\x00\x00"  # version, units, density; no thumbnail
    if marker == 0xE8 and body.startswith(b"mrfx") and len(body) >= 5:
        return body[:5]  # JPEG-LS colour transform id
    return None


def _j2k(data: bytes, removed: Removed) -> bytes:
    if data[:4] == b"\x00\x00\x00\x0c" and data[4:8] == b"jP  ":
        data = _jp2_codestream(data, removed)
    start = data.find(b"\xff\x4f\xff\x51")
    if start < 0:
        raise Uncleanable("no JPEG 2000 codestream")
    if start:
        removed.add("bytes before SOC", start)
    out = bytearray(b"\xff\x4f")
    pos, has_tlm = _j2k_main_header(data, start + 2, out, removed)
    n = len(data)
    while pos + 12 <= n and data[pos:pos + 2] == b"\xff\x90":
        pos = _j2k_tile_part(data, pos, has_tlm, out, removed)
    if data[pos:pos + 2] == b"\xff\xd9":
        out += b"\xff\xd9"
        pos += 2
    if pos < n:
        removed.add("bytes after EOC", n - pos)
    return bytes(out)


def _j2k_main_header(data: bytes, pos: int, out: bytearray, removed: Removed
                     ) -> tuple[int, bool]:
    """Copy the main header's marker segments but COM; (first SOT offset, TLM seen)."""
    has_tlm = False
    while pos + 4 <= len(data):
        marker, length = struct.unpack(">HH", data[pos:pos + 4])
        if marker == 0xFF90:  # first SOT: the main header ends
            break
        end = pos + 2 + length
        if end > len(data) or length < 2:
            raise Uncleanable("marker segment out of range")
        if marker == 0xFF64:
            removed.add("COM", length + 2)
        else:
            has_tlm |= marker == 0xFF55
            out += data[pos:end]
        pos = end
    return pos, has_tlm


def _j2k_tile_part(data: bytes, pos: int, has_tlm: bool, out: bytearray,
                   removed: Removed) -> int:
    """Copy one tile-part without its COM markers (Psot adjusted); returns its end."""
    psot = struct.unpack(">I", data[pos + 6:pos + 10])[0]
    tile_end = len(data) if psot == 0 else pos + psot
    if tile_end > len(data):
        raise Uncleanable("tile-part length out of range")
    header = bytearray(data[pos:pos + 12])
    p = pos + 12
    body = bytearray()
    cut = 0
    while p + 2 <= tile_end:
        marker = struct.unpack(">H", data[p:p + 2])[0]
        if marker == 0xFF93:  # SOD: tile data to the end of the tile-part
            body += data[p:tile_end]
            break
        length = struct.unpack(">H", data[p + 2:p + 4])[0]
        seg_end = p + 2 + length
        if seg_end > tile_end or length < 2:
            raise Uncleanable("tile-part marker out of range")
        if marker == 0xFF64:
            if has_tlm:
                raise Uncleanable("tile-part comment with a TLM index")
            removed.add("COM", length + 2)
            cut += length + 2
        else:
            body += data[p:seg_end]
        p = seg_end
    if psot and cut:
        header[6:10] = struct.pack(">I", psot - cut)
    out += header + body
    return tile_end


def _jp2_codestream(data: bytes, removed: Removed) -> bytes:
    """The contiguous codestream box of a JP2 file; every other box is dropped."""
    pos, n = 0, len(data)
    while pos + 8 <= n:
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        header = 8
        if length == 1:
            length = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
            header = 16
        elif length == 0:
            length = n - pos
        if kind == b"jp2c":
            removed.add("JP2 boxes", n - (length - header))
            return data[pos + header:pos + length]
        pos += length
    raise Uncleanable("JP2 file without a codestream box")


def _rle(data: bytes, rows: int, cols: int, removed: Removed) -> bytes:
    if len(data) < 64:
        raise Uncleanable("RLE header truncated")
    header = struct.unpack("<16I", data[:64])
    count = header[0]
    offsets = list(header[1:1 + count])
    if not 1 <= count <= 15 or offsets[0] != 64 or offsets != sorted(offsets):
        raise Uncleanable("RLE header not understood")
    segments = []
    for i, start in enumerate(offsets):
        stop = offsets[i + 1] if i + 1 < count else len(data)
        used = _packbits_length(data, start, stop, rows * cols)
        segments.append(data[start:start + used])
    new_offsets = []
    at = 64
    for seg in segments:
        new_offsets.append(at)
        at += len(seg)
    out = struct.pack("<16I", count, *new_offsets, *([0] * (15 - count))) + b"".join(segments)
    if len(out) != len(data) or out != data:
        removed.add("RLE padding and trailing bytes", max(0, len(data) - len(out)))
        return out
    return data


def _packbits_length(data: bytes, start: int, stop: int, wanted: int) -> int:
    """Bytes of ``data[start:stop]`` that decode to ``wanted`` bytes (PackBits)."""
    pos, produced = start, 0
    while produced < wanted:
        if pos >= stop:
            raise Uncleanable("RLE segment shorter than its samples")
        header = data[pos]
        if header < 128:
            produced += header + 1
            pos += header + 2
        elif header > 128:
            produced += 257 - header
            pos += 2
        else:
            pos += 1
    if produced != wanted or pos > stop:
        raise Uncleanable("RLE segment does not end on a sample")
    return pos - start


def clean_frame(data: bytes, transfer_syntax: str, rows: int, cols: int,
                removed: Removed) -> bytes:
    """``data`` without embedded extras (the same object when there were none).

    Raises :class:`Uncleanable` when the frame's structure is not understood; the caller
    then re-writes the decoded samples uncompressed.
    """
    before = len(removed.kinds)
    if transfer_syntax in JPEGLSTransferSyntaxes:
        out = _jpeg(data, True, removed)
    elif transfer_syntax in JPEGTransferSyntaxes:
        out = _jpeg(data, False, removed)
    elif transfer_syntax in JPEG2000TransferSyntaxes:
        out = _j2k(data, removed)
    elif transfer_syntax == RLELossless:
        out = _rle(data, rows, cols, removed)
    else:
        raise Uncleanable("compression not handled in place")
    return data if len(removed.kinds) == before and out == data else out
