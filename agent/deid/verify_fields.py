"""The verifier's element-by-element reading of decoded text (originals and outputs).

Every text element at any depth - private ones with an explicit VR, UN elements typed by
the data dictionary, code strings - is decoded with the file's own character set
(:mod:`agent.deid.verify_charset`) and read as canonical tokens
(:mod:`agent.deid.verify_text`).

The originals' identifiers are collected by :mod:`agent.deid.verify` (with
:func:`identifying_tags`); in each **output** :func:`check_fields` finds:

* an identifier of the study, in any spelling, in any text element; place words are not
  looked for in the device description (Manufacturer, model, software, coils), which the
  profile keeps; a lone name part that is a core imaging term ("DTI") is accepted in a
  descriptor or code string, where it is that term, and nowhere else;
* in descriptors and free text (the Clean Descriptors attributes of Table E.1-1, code
  meanings, LT/ST/UT, PN): any person name of the bundled list that is not an imaging
  term, and any date;
* in other kept text and code strings (not the device description): two or more listed
  person names in a row (four letters or more, neither imaging terms nor ordinary DICOM
  words, ``data/name-words.txt``) - a name the header does not hold;
* ages above the HIPAA cap (``[deid] age_cap_years``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from pydicom.datadict import DicomDictionary  # type: ignore[attr-defined]

from agent.deid.verify_charset import Decoder
from agent.deid.verify_parse import Element, Parsed
from agent.deid.verify_text import (
    TextForms,
    canonical,
    find_dates,
    generic_names,
    kept_text_names,
)

_TEXT = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_LONG = frozenset({"LT", "ST", "UT", "UR"})
_DEVICE = frozenset({0x00080070, 0x00081090, 0x00181020, 0x00181016, 0x00181018, 0x00181019,
                     0x00181250, 0x00181251, 0x00189041, 0x00189050})
_PLACE = re.compile(r"(Institution|Address|Department|Station|Region|Country|Location|"
                    r"Residence|Organization|Facility)")
_PHONE = re.compile(r"(Telephone|Telecom|Phone)")
_ID = re.compile(r"(ID|IDs|Number|Numbers|Identifier|Title)$")
_OURS = frozenset({0x00120063, 0x00100010, 0x00100020})  # method text, pseudonyms
_AGE = re.compile(r"(\d{3})([DWMY])")


def typed_vr(elem: Element) -> str:
    """The element's VR; a standard element written as UN gets the dictionary's."""
    if elem.vr == "UN" and not elem.tag >> 16 & 1:
        entry = DicomDictionary.get(elem.tag)
        if entry is not None:
            return str(entry[0]).split(" or ")[0]
    return elem.vr


def decoder_of(parsed: Parsed) -> Decoder:
    elem = parsed.find(0x00080005)
    return Decoder(parsed.value(elem).decode("latin-1").strip("\x00 ") if elem else "")


@lru_cache(maxsize=1)
def _table() -> tuple[frozenset[int], dict[int, str]]:
    """(descriptor tags, identifying tag -> kind) from Table E.1-1, read independently."""
    base = resources.files("agent.deid") / "data"
    rows = json.loads((base / "ps3.15-table-E.1-1-2024b.json").read_text("utf-8"))
    descriptors: set[int] = {0x00080104}
    identifying: dict[int, str] = {}
    for row in rows:
        try:
            tag = int(row["tag"].strip("()").replace(",", ""), 16)
        except ValueError:
            continue
        entry = DicomDictionary.get(tag)
        if entry is None:
            continue
        vr, keyword = str(entry[0]), str(entry[4])
        if row.get("cleanDescOpt") == "C":
            descriptors.add(tag)
        elif row.get("basicProfile") != "K" and "rtnPatCharsOpt" not in row and vr in (
                "LO", "SH", "UC", "ST", "LT", "UT", "AE"):
            identifying[tag] = ("phone" if _PHONE.search(keyword)
                                else "place" if _PLACE.search(keyword) else "id")
    for tag, entry in DicomDictionary.items():
        keyword = str(entry[4])
        if tag not in identifying and str(entry[0]) in ("LO", "SH") and (
                _ID.search(keyword) and "UID" not in keyword):
            identifying[tag] = "id"
    return frozenset(descriptors), identifying


def identifying_tags() -> dict[int, str]:
    """Standard text attributes holding identifiers, by kind ("id", "place", "phone")."""
    return _table()[1]


#: How :func:`agent.deid.verify.field_rules` made a set of rules: its arguments.
Recipe = tuple[tuple[str, ...], tuple[str, ...], int]


@dataclass(frozen=True)
class FieldRules:
    """What the field checks need from the configuration (canonical vocabulary)."""

    core: frozenset[str]
    vocabulary: frozenset[str]
    age_cap_years: int = 89
    #: Rules made by :func:`agent.deid.verify.field_rules` cross the process pool as their
    #: recipe (about 100 kB of vocabulary pickled for every task otherwise); a worker
    #: makes them once with its own code and keeps them.
    recipe: Recipe | None = field(default=None, compare=False, repr=False)

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        if self.recipe is not None:
            return _from_recipe, (self.recipe,)
        return FieldRules, (self.core, self.vocabulary, self.age_cap_years)


def _from_recipe(recipe: Recipe) -> FieldRules:
    from agent.deid.verify import field_rules  # that module imports this one

    return field_rules(*recipe)


def check_fields(parsed: Parsed, forms: TextForms, rules: FieldRules) -> Iterator[
        tuple[str, str]]:
    """(element path, what) for every finding in the decoded text of one output.

    Values already read in an earlier file of the series (same tag, context and bytes)
    are not decoded again: their findings are remembered in ``forms.memo``."""
    descriptors, _identifying = _table()
    decoder: Decoder | None = None
    memo = forms.memo
    stream = parsed.stream
    # an element's context follows from its tag, VR and path prefix (the same in every
    # file of a series): decided once per series
    contexts = forms.contexts
    for elem in parsed.elements:
        vr = elem.vr
        if vr == "UN":
            vr = typed_vr(elem)
        if vr == "AS":
            text = parsed.value(elem).decode("latin-1").strip("\x00 ")
            if rules.age_cap_years > 0 and _over_cap(text, rules.age_cap_years):
                yield elem.path, f"age above {rules.age_cap_years} years (HIPAA)"
            continue
        if vr not in _TEXT:
            continue
        raw = stream[elem.value_start:elem.value_end]
        context = contexts.get((elem.tag, vr, elem.prefix)) or _remembered_context(
            contexts, elem, vr, descriptors)
        key = (elem.tag, context, raw)
        found = memo.get(key)
        if found is None:
            if decoder is None:
                decoder = decoder_of(parsed)
            found, alone = _findings_of(parsed, elem, vr, raw, context, decoder, forms, rules)
            if alone and len(memo) < 50_000:
                memo[key] = found
        for what in found:
            yield elem.path, what


def _findings_of(parsed: Parsed, elem: Element, vr: str, raw: bytes, context: str,
                 decoder: Decoder, forms: TextForms, rules: FieldRules
                 ) -> tuple[tuple[str, ...], bool]:
    """The findings of one value, and whether they follow from (tag, context, bytes)
    alone - what the memo of :func:`check_fields` may remember them by: a code meaning
    with findings is excused only by its own item's code, which another item may not
    share."""
    text = decoder.decode(raw).strip("\x00 ")
    if not text:
        return (), True
    values = [text] if vr in _LONG else [v.strip("\x00 ") for v in text.split("\\")]
    values = [v for v in values if v]
    found = tuple(_findings(values, vr, context, forms, rules))
    if found and elem.tag == 0x00080104:
        if _standard_meaning(parsed, elem, values):
            return (), False  # the standard's own words for a standard code identify nobody
        return found, False
    return found, True


_SCHEMES = frozenset({"DCM", "SCT", "SRT", "LN", "UCUM", "RADLEX", "FMA", "NCIT", "MDC",
                      "NEU", "IBSI"})


def _standard_meaning(parsed: Parsed, elem: Element, values: list[str]) -> bool:
    """Whether a code meaning is, word for word, its standard code's meaning (pydicom's
    concept dictionaries), looked up from the item's own Code Value and scheme."""
    siblings = {e.tag: e for e in parsed.elements
                if e.prefix == elem.prefix and e.depth == elem.depth
                and e.tag in (0x00080100, 0x00080102)}
    if len(siblings) != 2 or len(values) != 1:
        return False
    code = parsed.text(siblings[0x00080100])
    scheme = parsed.text(siblings[0x00080102]).upper().replace("SRT", "SCT")
    return scheme in _SCHEMES and _meanings().get((scheme, code)) == values[0]


@lru_cache(maxsize=1)
def _meanings() -> dict[tuple[str, str], str]:
    from pydicom.sr._concepts_dict import concepts

    table: dict[str, dict[str, dict[str, tuple[str, list[int]]]]] = concepts  # type: ignore[assignment]
    return {(scheme.upper(), code): meaning
            for scheme, entries in table.items()
            for codes in entries.values() for code, (meaning, _cids) in codes.items()}


def _remembered_context(contexts: dict[tuple[int, str, str], str], elem: Element, vr: str,
                        descriptors: frozenset[int]) -> str:
    context = _context(elem, vr, descriptors)
    if len(contexts) < 50_000:
        contexts[(elem.tag, vr, elem.prefix)] = context
    return context


def _context(elem: Element, vr: str, descriptors: frozenset[int]) -> str:
    if elem.tag in _OURS or elem.prefix.startswith("(0012,0064)"):
        return "ours"
    if elem.tag in descriptors:
        return "descriptor"
    if vr == "CS":
        return "cs"
    if elem.tag in _DEVICE:
        return "device"
    if vr in _LONG or vr == "PN":
        return "free"
    return "text"


def _findings(values: list[str], vr: str, context: str, forms: TextForms,
              rules: FieldRules) -> Iterator[str]:
    if context == "ours":
        return
    ok = rules.core if context in ("descriptor", "cs") else frozenset()
    for value in values:
        kinds = set(forms.hits(value, vocabulary_ok=ok, words=rules.vocabulary))
        if context == "device":
            kinds.discard("place")
        for kind in sorted(kinds):
            yield f"original {kind} found (decoded text)"
        if context in ("descriptor", "free"):
            if generic_names(value, rules.vocabulary):
                yield "a person name in free text"
            if any(True for _ in find_dates(canonical(value))):
                yield "a date in free text"
        elif context in ("text", "cs") and kept_text_names(value, rules.vocabulary):
            yield "a person name in kept text"


def _over_cap(text: str, cap: int) -> bool:
    """Above the cap: more than cap + 1 years ("090Y" is the capped value itself)."""
    m = _AGE.fullmatch(text)
    if m is None:
        return False
    n, unit = int(m.group(1)), m.group(2)
    if unit == "Y":
        return n > cap + 1
    years = n / {"D": 365.25, "W": 365.25 / 7, "M": 12.0}[unit]
    return years >= cap + 1
