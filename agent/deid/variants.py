"""Every identifier of a study in every form it may be written in, and a search for them.

The cleaner's side (the verifier has its own, written separately). Public API, also for
the pixel text matcher (OCR):

    >>> ids = identity_variants(ds)            # a pydicom Dataset of the study
    >>> ids.find("Dr. SMITH-JONES 12 Mar 2021")
    ['name', 'date']
    >>> ids.spans(text)                        # [(start, end, kind), ...] in ``text``

What is collected from the dataset (any depth, private elements with an explicit VR,
UN elements typed by the dictionary):

========= =================================================================================
name      every PN value: each component group (alphabetic, ideographic, phonetic), each
          component, each word of a compound component ("Smith" of "Smith-Jones"), and
          given-family / family-given combinations; German umlauts also as ae/oe/ue,
          Japanese long vowels also without their "u"; a lone CJK character is too
          common to be searched alone (only within its name)
id        values of the identifying attributes of PS3.15 Table E.1-1 (IDs, numbers,
          serial numbers, AE titles ...); typed with any separators ("AB 12-34")
place     institution, department, station, addresses, region: the whole value, and
          its distinctive words (5+ letters, not an imaging term nor a generic word
          such as "hospital") - not searched in the device description (Manufacturer,
          model, software), which the profile keeps on purpose
phone     telephone numbers: their digits, with any separators, and their last 7-8 digits
date      every DA value and the date of every DT value, in every common written form
          (:mod:`agent.deid.dates`)
========= =================================================================================

Matching is on folded text (:mod:`agent.deid.folding`: case, accents, scripts), whole
words for parts shorter than 6 letters and for numbers, substrings for longer ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydicom.charset import decode_bytes
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from agent.deid import dates as date_forms
from agent.deid.folding import Folded, fold, is_cjk

#: Words of institutions and addresses too generic to identify one.
_GENERIC_PLACE = frozenset(
    """hospital hospitals clinic clinics clinical klinik klinikum kliniken university
    universitat universite universita universidad universiteit medical medicine center
    centre centro zentrum institute institut instituto health healthcare imaging
    radiology radiologie department abteilung general regional national county city
    street strasse road avenue private public research foundation services service
    children childrens memorial saint hopital ospedale hospital policlinic""".split()
)
_PLACE_WORDS = re.compile(r"(Institution|Address|Department|Station|Region|Country|Location|"
                          r"Residence|Organization|Facility)")
_PHONE_WORDS = re.compile(r"(Telephone|Telecom|Phone)")
_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR"})
_SPLIT_WORDS = re.compile(r"[\s\-‐‑'’.,_/]+")
_UMLAUTS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})
_DIGRAPHS = re.compile(r"(?<=[aou])e", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Variant:
    """One folded form of an identifier and how it may match."""

    text: str
    kind: str
    whole: bool
    #: offsets where the original may have a gap (None: anywhere)
    breaks: frozenset[int] | None
    #: a lone name part that is also a core imaging term ("DTI"): see IdentityVariants
    core: bool = False


@dataclass
class IdentityVariants:
    """The variants of one study's identifiers; :meth:`find` and :meth:`spans` search text.

    ``keep_core``: in descriptors and code strings a lone name part that is a core imaging
    term is not a hit (the cleaner passes ``keep_core=True`` there).
    """

    variants: list[Variant] = field(default_factory=list)
    dates: frozenset[tuple[int, int, int]] = frozenset()
    _trigger: re.Pattern[bytes] | None = field(default=None, repr=False)

    def __bool__(self) -> bool:
        return bool(self.variants or self.dates)

    def spans(self, text: str, *, keep_core: bool = False,
              places: bool = True) -> list[tuple[int, int, str]]:
        """(start, end, kind) of every identifier in ``text``, merged where they overlap."""
        if not text or not self:
            return []
        folded = Folded.of(text)
        hits: list[tuple[int, int, str]] = []
        for v in self.variants:
            if (keep_core and v.core) or (not places and v.kind == "place"):
                continue
            for start, end in folded.find(v.text, whole=v.whole, breaks=v.breaks):
                a, b = folded.span(start, end)
                hits.append((a, b, v.kind))
        if self.dates:
            hits += [(a, b, "date") for a, b in date_forms.date_spans(text, self.dates)]
        return _merge(hits)

    def find(self, text: str, *, keep_core: bool = False) -> list[str]:
        """The kinds of identifier found in ``text`` (empty: none), in order of position."""
        return [kind for _, _, kind in self.spans(text, keep_core=keep_core)]

    def may_occur(self, raw: bytes) -> bool:
        """Whether an undecoded ASCII value could hold a variant (False: it cannot).

        Only meaningful for pure ASCII bytes; anything else must be decoded and searched.
        """
        if self._trigger is None:
            self._trigger = _trigger_pattern(self)
        return self._trigger.search(raw) is not None


def _merge(hits: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    hits.sort()
    out: list[tuple[int, int, str]] = []
    for a, b, kind in hits:
        if out and a <= out[-1][1]:
            pa, pb, pk = out[-1]
            out[-1] = (pa, max(pb, b), pk)
        else:
            out.append((a, b, kind))
    return out


def _trigger_pattern(ids: IdentityVariants) -> re.Pattern[bytes]:
    """A bytes regex that matches wherever a variant could start in ASCII text.

    Letters of a variant may be separated by punctuation in the text, so the pattern
    looks for the variant's first two letters (first letter for one-letter pieces) at a
    word start, with anything non-alphanumeric between them; dates are triggered by
    their year (four or two digits) and month names by their first three letters.
    """
    pieces: set[bytes] = set()
    for v in ids.variants:
        head = v.text[:2].encode("ascii", "ignore")
        if head:
            pieces.add(re.escape(head[:1]) + (b"[^a-z0-9]*" + re.escape(head[1:2])
                                             if len(head) > 1 else b""))
    for y, _m, _d in ids.dates:
        pieces.add(str(y).encode())
        pieces.add(f"{y % 100:02d}".encode())
    if not pieces:
        return re.compile(b"(?!x)x")
    return re.compile(b"|".join(sorted(pieces)), re.IGNORECASE)


# -- building the variants -------------------------------------------------------------


def identity_variants(ds: Dataset, *, vocabulary_core: Iterable[str] = ()) -> IdentityVariants:
    """The identifiers of ``ds`` (at any depth) in all their forms.

    ``vocabulary_core``: folded core imaging terms (:mod:`agent.deid.vocabulary`); lone
    name parts among them are marked (see :class:`IdentityVariants`). By default the
    shipped core vocabulary is used.
    """
    core = frozenset(vocabulary_core) or _default_core()
    builder = _Builder(core)
    builder.dataset(ds, None, 0)
    return builder.result()


def build_variants(identity: Iterable[tuple[str, str]],
                   vocabulary_core: Iterable[str] = ()) -> IdentityVariants:
    """The variants of identifiers already collected as ``(kind, value)`` pairs (the
    engine's walk collects them while it de-identifies). Kinds: "name", "id", "place",
    "phone", "date" (a DA value or a DT value's date)."""
    builder = _Builder(frozenset(vocabulary_core) or _default_core())
    for kind, value in sorted(identity):
        builder.add(kind, value)
    return builder.result()


@lru_cache(maxsize=1)
def _default_core() -> frozenset[str]:
    from agent.deid.vocabulary import vocabulary

    return vocabulary().core


@lru_cache(maxsize=1)
def identifying_tags() -> dict[int, str]:
    """Text attributes of Table E.1-1 that hold identifiers, by kind (not descriptors,
    not patient characteristics, not dates or UIDs)."""
    from agent.deid.profile import table_rows

    out: dict[int, str] = {}
    for row in table_rows():
        if row.basic == "K" or "cleanDescOpt" in row.options or "rtnPatCharsOpt" in row.options:
            continue
        try:
            vr = str(dictionary_VR(row.tag))
        except KeyError:
            continue
        if vr not in _TEXT_VRS or vr in ("PN", "CS"):
            continue
        keyword = keyword_for_tag(row.tag) or row.name
        if _PHONE_WORDS.search(keyword):
            out[row.tag] = "phone"
        elif _PLACE_WORDS.search(keyword):
            out[row.tag] = "place"
        else:
            out[row.tag] = "id"
    return out


class _Builder:
    def __init__(self, core: frozenset[str]) -> None:
        self.core = core
        self.found: dict[tuple[str, str], Variant] = {}
        self.dates: set[tuple[int, int, int]] = set()
        self.tags = identifying_tags()

    def result(self) -> IdentityVariants:
        # Longest first: when two overlap, the longer match is the one that is cut out.
        variants = sorted(self.found.values(), key=lambda v: -len(v.text))
        return IdentityVariants(variants=variants, dates=frozenset(self.dates))

    def dataset(self, ds: Dataset, encodings: Any, depth: int) -> None:
        if depth > 16:
            return
        elements: Any = ds._dict
        if 0x00080005 in elements:
            encodings = _encodings(ds)
        for key in list(elements):
            tag = int(key)
            raw = elements[key]
            vr = _vr(tag, raw)
            if vr == "SQ":
                try:
                    items = ds[key].value
                except Exception:  # noqa: BLE001 -- an unreadable sequence: nothing in it
                    continue
                for item in items or ():
                    self.dataset(item, encodings, depth + 1)
                continue
            kind = "name" if vr == "PN" else self.tags.get(tag)
            if vr in ("DA", "DT"):
                kind = "date"
            if kind is None:
                continue
            for value in _values(raw, vr, encodings):
                self.add(kind, value)

    def add(self, kind: str, value: str) -> None:
        if kind == "date":
            ymd = date_forms.parse_da(value)
            if ymd is not None:
                self.dates.add(ymd)
        elif kind == "name":
            self.name(value)
        elif kind == "phone":
            self.phone(value)
        elif kind == "place":
            self.place(value)
        else:
            self.ident(value)

    def put(self, text: str, kind: str, whole: bool, breaks: frozenset[int] | None,
            core: bool = False) -> None:
        if len(text) < 2:
            return
        key = (text, kind)
        old = self.found.get(key)
        if old is None or (old.core and not core):
            self.found[key] = Variant(text, kind, whole, breaks, core)

    def name(self, value: str) -> None:
        for group in value.split("="):
            components = [c.strip() for c in group.split("^")]
            words_of = [[w for w in _SPLIT_WORDS.split(c) if w] for c in components]
            for word_list in words_of:
                for word in word_list:
                    if len(word) == 1 and is_cjk(word):
                        continue  # one ideograph is too common to be searched alone
                    for spelling in _spellings(word):
                        f = fold(spelling)
                        # an ordinary word is a name part only as a whole word
                        whole = len(f) < 6 or f.isdigit() or _is_vocabulary(f)
                        self.put(f, "name", whole, frozenset(), core=f in self.core)
                if len(word_list) > 1:
                    self.phrase([w for w in word_list], "name")
            family, given = (words_of + [[], []])[:2]
            middle = words_of[2] if len(words_of) > 2 else []
            if family and given:
                for order in (given + family, family + given, given + middle + family,
                              family + given + middle):
                    self.phrase(order, "name")

    def phrase(self, words: list[str], kind: str) -> None:
        """A run of words, matched with or without the gaps between them."""
        for spelling in _spellings("\x00".join(words)):
            parts = [p for p in (fold(w) for w in spelling.split("\x00")) if p]
            if len(parts) < 2:
                continue
            text = "".join(parts)
            breaks: set[int] = set()
            pos = 0
            for p in parts[:-1]:
                pos += len(p)
                breaks.add(pos)
            self.put(text, kind, len(text) < 6, frozenset(breaks))

    def ident(self, value: str) -> None:
        f = fold(value)
        if len(f) < 4 and not (len(f) >= 3 and any(c.isdigit() for c in f)):
            return
        if not f.isdigit() and all_generic(value):
            return
        self.put(f, "id", len(f) < 6 or f.isdigit(), None)

    def phone(self, value: str) -> None:
        digits = re.sub(r"\D", "", value)
        if len(digits) < 6:
            return
        for tail in {digits, digits[-8:], digits[-7:]}:
            self.put(tail, "phone", True, None)

    def place(self, value: str) -> None:
        words = [w for w in _SPLIT_WORDS.split(value) if w]
        if not words or all_generic(value):
            return
        if len(words) > 1:
            self.phrase(words, "place")
        for word in words:
            for spelling in _spellings(word):
                f = fold(spelling)
                if len(words) == 1 or (len(f) >= 5 and f not in _GENERIC_PLACE
                                       and not _is_vocabulary(f)):
                    self.put(f, "place", len(f) < 6, frozenset())


def _encodings(ds: Dataset) -> Any:
    from pydicom.charset import convert_encodings

    try:
        value = ds[0x00080005].value
        return convert_encodings(value if value else "ISO_IR 6")
    except Exception:  # noqa: BLE001 -- a broken character set: ASCII/Latin-1
        return None


def _spellings(word: str) -> list[str]:
    """The word and its other common Latin spellings (umlauts, long vowels)."""
    out = [word]
    if any(c in word for c in "äöüÄÖÜ"):
        out.append(word.translate(_UMLAUTS))
    if word.isascii() and _DIGRAPHS.search(word) and re.search(r"(ae|oe|ue)", word, re.I):
        out.append(re.sub(r"(?<=[aouAOU])[eE]", "", word))  # Mueller typed as Müller
    if any(0x3040 <= ord(c) <= 0x30FF for c in word):
        folded = fold(word)
        if "ou" in folded:
            out.append(folded.replace("ou", "o"))  # Tarou / Taro
    return out


def all_generic(value: str) -> bool:
    """Whether every word of ``value`` is an imaging term or a generic place word."""
    words = [fold(w) for w in _SPLIT_WORDS.split(value)]
    words = [w for w in words if w]
    return bool(words) and all(w in _GENERIC_PLACE or _is_vocabulary(w) for w in words)


def _is_vocabulary(folded: str) -> bool:
    from agent.deid.vocabulary import vocabulary

    return folded in vocabulary().words


def _vr(tag: int, raw: Any) -> str:
    vr = raw.VR
    if vr is None or vr == "UN":
        try:
            return str(dictionary_VR(tag))
        except KeyError:
            return "UN"
    return str(vr)


def _values(raw: Any, vr: str, encodings: Any) -> Iterator[str]:
    """The text values of an element, decoded with the dataset's character sets."""
    value = raw.value if isinstance(raw, RawDataElement) else raw.value
    if value is None:
        return
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
        try:
            if b"\x1b" in data:
                raise UnicodeDecodeError("ascii", data, 0, 1, "ISO 2022 escape")
            text = data.decode("ascii")
        except UnicodeDecodeError:
            try:
                text = decode_bytes(data, encodings or ["iso8859"], {0x5C, 0x5E, 0x3D})
            except Exception:  # noqa: BLE001 -- undecodable: every byte as Latin-1
                text = data.decode("latin-1")
        parts = [text] if vr in ("LT", "ST", "UT", "UR") else text.split("\\")
    elif isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        parts = [str(v) for v in value]
    else:
        parts = [str(value)]
    for part in parts:
        part = part.strip("\x00 ")
        if part:
            yield part
