"""The text screen: every text value the profile kept, cleaned once the study's
identifiers are known (:mod:`agent.deid.walk` defers them here).

==========  ==============================================================================
mode        what happens
==========  ==============================================================================
descriptor  allow-list cleaning (:meth:`Cleaner.descriptor`); a code meaning of a standard
            coding scheme (DCM, SCT ...) written exactly as the scheme defines it is kept
            as it is
text        identifiers cut out (attributes outside the table, kept LO/SH/ST/UT ...)
device      identifiers other than place words cut out (Manufacturer, model, software)
cs          code string values holding an identifier dropped (Image Type, Scan Options)
private     a safe private value holding an identifier is removed
==========  ==============================================================================

ASCII values that cannot hold an identifier (:meth:`Cleaner.may_contain`) are left as
raw bytes; everything else is decoded with the dataset's character sets (ISO 2022 escape
sequences included) and, when it changes, written back through pydicom, which encodes
it again with the same character sets - an escape sequence is never cut.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydicom.charset import decode_bytes
from pydicom.dataelem import RawDataElement
from pydicom.multival import MultiValue

from agent.deid.clean import Cleaner
from agent.deid.walk import CODE_MEANING, DEVICE_TAGS, Pending, write_ascii

DUMMY = "ANONYMIZED"
_SINGLE = frozenset({"LT", "ST", "UT", "UR"})
_STANDARD_SCHEMES = frozenset({"DCM", "SCT", "SRT", "LN", "UCUM", "RADLEX", "FMA", "NCIt",
                               "MDC", "NEU", "IBSI"})


def screen(pending: list[Pending], cleaner: Cleaner,
           required: frozenset[int] = frozenset()) -> None:
    """Clean every deferred value in place; a descriptor of ``required`` cleaned to
    nothing gets the dummy value (the attribute may be Type 1)."""
    memo = cleaner.memo
    for item in pending:
        elements: Any = item.ds._dict
        raw = elements.get(item.tag)
        if raw is None:
            continue
        # The slices of a series repeat most values byte for byte: one decision per
        # (element, bytes, character set) and set of identifiers (the cleaner's memo).
        # A code meaning depends on its item's code too, so it is never remembered.
        key = None
        tag = int(item.tag)  # pydicom's BaseTag compares in Python: plain ints here
        if (isinstance(raw, RawDataElement) and isinstance(raw.value, bytes)
                and tag != CODE_MEANING):
            encodings = item.encodings
            key = (tag, item.vr, item.mode, raw.value,
                   None if encodings is None else tuple(encodings))
            decided = memo.get(key, _UNSEEN)  # one lookup (a tuple's hash is not kept)
            if decided is not _UNSEEN:
                if decided is not None:
                    _write(item, raw, elements, decided)  # type: ignore[arg-type]
                continue
        decided = _decide(item, raw, cleaner, required)
        if key is not None:
            if len(memo) >= _MEMO_LIMIT:
                memo.clear()
            memo[key] = decided
        if decided is not None:
            _write(item, raw, elements, decided)


#: Decisions a cleaner remembers before it forgets them all (a series needs hundreds).
_MEMO_LIMIT = 8192
_UNSEEN = object()


def _decide(item: Pending, raw: Any, cleaner: Cleaner,
            required: frozenset[int]) -> list[str] | None:
    """The new values of a pending element, or None when it stays as it is."""
    values = _values(item, raw, cleaner)
    if values is None:
        return None  # nothing to do: left as raw bytes
    new = _clean(item, values, cleaner)
    if not new and item.mode == "descriptor" and item.tag in required:
        new = [DUMMY]
    return None if new == values else new


def _write(item: Pending, raw: Any, elements: Any, new: list[str]) -> None:
    """Put the cleaned values in (a safe private value that changed is removed)."""
    if item.mode == "private":
        del elements[item.tag]
    elif all(v.isascii() for v in new):
        write_ascii(item.ds, item.tag, raw, item.vr, new)
    else:  # pydicom encodes with the dataset's character sets (ISO 2022 escapes whole)
        elem = item.ds[item.tag]
        elem.value = (new[0] if len(new) == 1 else new) if new else None


def _values(item: Pending, raw: Any, cleaner: Cleaner) -> list[str] | None:
    """The decoded values, or None when the raw value certainly needs no change."""
    value = raw.value
    if value is None:
        return None
    descriptor = item.mode == "descriptor"
    if isinstance(raw, RawDataElement) and isinstance(value, (bytes, bytearray)):
        data = bytes(value)
        if not descriptor and not cleaner.may_contain(data):
            return None
        if data.isascii() and b"\x1b" not in data:
            text = data.decode("ascii")
        else:
            try:
                text = decode_bytes(data, item.encodings or ["iso8859"], {0x5C})
            except Exception:  # noqa: BLE001 -- undecodable text: searched as Latin-1
                text = data.decode("latin-1")
        text = text.rstrip("\x00 ")
        if not text:
            return None
        return [text] if item.vr in _SINGLE else text.split("\\")
    if isinstance(value, (bytes, bytearray)):
        return None  # a binary value decoded by pydicom: not text
    if isinstance(value, (list, MultiValue)):
        return [str(v) for v in value]
    return [str(value)] if str(value) else None


def _clean(item: Pending, values: list[str], cleaner: Cleaner) -> list[str]:
    mode = item.mode
    if mode == "descriptor":
        if item.tag == CODE_MEANING and _standard_meaning(item, values):
            return values
        return [c for c in (cleaner.descriptor(v) for v in values if v.strip()) if c]
    if mode == "cs":
        return cleaner.code_string(values)
    if mode == "private":
        return [v for v in values if not cleaner.holds_identity(v)]
    places = mode != "device"
    # the device description keeps its words (a model "…/fedorov/dcmqi.git") in any mode
    names = places and int(item.tag) not in DEVICE_TAGS
    return [cleaner.scrub(v, places=places, names=names) for v in values]


def _standard_meaning(item: Pending, values: list[str]) -> bool:
    """Whether a code meaning is the one its standard coding scheme defines."""
    from agent.deid.peek import peek

    scheme = peek(item.ds, 0x00080102).upper()
    code = peek(item.ds, 0x00080100)
    if scheme not in _STANDARD_SCHEMES or not code or len(values) != 1:
        return False
    return _meanings().get((scheme.replace("SRT", "SCT"), code)) == values[0]


@lru_cache(maxsize=1)
def _meanings() -> dict[tuple[str, str], str]:
    from pydicom.sr._concepts_dict import concepts

    out: dict[tuple[str, str], str] = {}
    table: dict[str, dict[str, dict[str, tuple[str, list[int]]]]] = concepts  # type: ignore[assignment]
    for scheme, entries in table.items():
        for codes in entries.values():
            for code, (meaning, _cids) in codes.items():
                out[(scheme.upper(), code)] = meaning
    return out
