"""The verifier's own decoder of DICOM text (PS3.5 6.1, Specific Character Set).

Written apart from pydicom's decoder, which the engine uses, so that a decoding bug is
not shared. Single-byte character sets map to Python codecs; ISO 2022 values are cut at
their escape sequences and each run decoded with the character set its escape sequence
designates (ASCII, JIS X 0201/0208/0212, KS X 1001, GB 2312, and the ISO 8859 G1 sets);
text without a Specific Character Set is read as Latin-1, which keeps every byte.
"""

from __future__ import annotations

import re

#: Defined Terms -> Python codec, for character sets without code extensions.
_SINGLE = {
    "": "latin-1", "ISO_IR 6": "ascii", "ISO_IR 100": "latin-1", "ISO_IR 101": "iso8859-2",
    "ISO_IR 109": "iso8859-3", "ISO_IR 110": "iso8859-4", "ISO_IR 144": "iso8859-5",
    "ISO_IR 127": "iso8859-6", "ISO_IR 126": "iso8859-7", "ISO_IR 138": "iso8859-8",
    "ISO_IR 148": "iso8859-9", "ISO_IR 203": "iso8859-15", "ISO_IR 13": "shift_jis",
    "ISO_IR 166": "tis-620", "ISO_IR 192": "utf-8", "GB18030": "gb18030", "GBK": "gbk",
}
#: Escape sequences -> codec of the run they start (PS3.3 C.12.1.1.2 tables).
_ESCAPES = {
    b"\x1b(B": "ascii", b"\x1b(J": "shift_jis", b"\x1b)I": "shift_jis",
    b"\x1b$B": "iso2022_jp", b"\x1b$(D": "iso2022_jp_2", b"\x1b$)C": "euc_kr",
    b"\x1b$)A": "gb2312", b"\x1b-A": "latin-1", b"\x1b-B": "iso8859-2", b"\x1b-C": "iso8859-3",
    b"\x1b-D": "iso8859-4", b"\x1b-L": "iso8859-5", b"\x1b-G": "iso8859-6",
    b"\x1b-F": "iso8859-7", b"\x1b-H": "iso8859-8", b"\x1b-M": "iso8859-9",
    b"\x1b-T": "tis-620", b"\x1b-b": "iso8859-15",
}
#: The codec an ISO 2022 Defined Term starts in (before any escape sequence).
_ISO2022_START = {
    "ISO 2022 IR 6": "ascii", "ISO 2022 IR 100": "latin-1", "ISO 2022 IR 101": "iso8859-2",
    "ISO 2022 IR 109": "iso8859-3", "ISO 2022 IR 110": "iso8859-4",
    "ISO 2022 IR 144": "iso8859-5", "ISO 2022 IR 127": "iso8859-6",
    "ISO 2022 IR 126": "iso8859-7", "ISO 2022 IR 138": "iso8859-8",
    "ISO 2022 IR 148": "iso8859-9", "ISO 2022 IR 203": "iso8859-15",
    "ISO 2022 IR 13": "shift_jis", "ISO 2022 IR 166": "tis-620", "ISO 2022 IR 87": "ascii",
    "ISO 2022 IR 159": "ascii", "ISO 2022 IR 149": "ascii", "ISO 2022 IR 58": "ascii",
}
_ESCAPE = re.compile(rb"\x1b(?:\$\(D|\$\)[ACD]|\$[B@]|[()][BIJ]|-[A-Zb])")


class Decoder:
    """Decodes the text values of one dataset (its Specific Character Set)."""

    def __init__(self, specific_character_set: str) -> None:
        self.charset = specific_character_set
        terms = [t.strip().upper() for t in specific_character_set.split("\\")]
        self.iso2022 = any(t.startswith("ISO 2022") for t in terms)
        first = terms[0] if terms else ""
        if self.iso2022:
            self.start = _ISO2022_START.get(first, "ascii" if not first else "latin-1")
        else:
            self.start = _SINGLE.get(first, "latin-1")

    def decode(self, data: bytes) -> str:
        """Every byte accounted for: undecodable ones become U+FFFD, never dropped."""
        if not data:
            return ""
        if not self.iso2022 and b"\x1b" not in data:
            return data.decode(self.start, "replace")
        out: list[str] = []
        codec = self.start
        pos = 0
        for m in _ESCAPE.finditer(data):
            out.append(_run(data[pos:m.start()], codec))
            codec = _ESCAPES.get(m.group(), codec)
            if codec in ("iso2022_jp", "iso2022_jp_2"):
                # Python's ISO 2022 codecs want their escape sequence with the run.
                end = _next_escape(data, m.end())
                out.append(_run(m.group() + data[m.end():end], codec))
                pos = end
                codec = self.start
                continue
            pos = m.end()
        out.append(_run(data[pos:], codec))
        return "".join(out)


def _next_escape(data: bytes, start: int) -> int:
    m = _ESCAPE.search(data, start)
    return len(data) if m is None else m.start()


def _run(data: bytes, codec: str) -> str:
    if not data:
        return ""
    if codec in ("euc_kr", "gb2312"):
        # G1 sets: bytes >= 0x80 are the double-byte set, the rest ASCII
        return data.decode(codec, "replace")
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return data.decode("latin-1")
