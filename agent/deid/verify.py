"""The independent verifier: did any original identifier survive, is every output clean?

Deliberately shares no code with the engine, so that a bug in the engine is not repeated
here: it reads files with its own parser (:mod:`agent.deid.verify_parse`, not pydicom's
reader), reads the shipped safe-private table with its own code, and imports nothing of
the engine (only the process-pool helper :mod:`agent.deid.pool`).

1. **Collect** the series' identifiers from every element of the original files:

   ========== ============================================================================
   name       every PN value at any depth (private too, when the VR is explicit) and
              each of its components
   id         LO/SH/UC/IS values of attributes whose keyword ends in ID/IDs/Number
              (Patient ID, Accession Number, Study ID, Device Serial Number ...)
   date       DA values and the date part of DT values, as YYYYMMDD, YYYY-MM-DD,
              YYYY.MM.DD, DD.MM.YYYY, MM/DD/YYYY and DD/MM/YYYY
   uid        UI values that name instances (not classes, transfer syntaxes or coding
              schemes, nothing under 1.2.840.10008. and nothing in the UID dictionary)
   place      institution, department, station, addresses, telephone numbers
   free text  LT, ST and UT values (comments, histories, notes)
   ========== ============================================================================

   **Too generic to identify** (ignored): values under 4 characters, except name
   components of 2-3 characters, which are checked as whole words in text values only;
   numbers of fewer than 6 digits; values whose every word is in the standard's own
   vocabulary (words of the data dictionary's attribute names and UID names, e.g. "MR",
   "HEAD", "BRAIN", the coded (CS) values of the series, e.g. "PERFUSION") or a few
   generic words ("ANONYMOUS", "UNKNOWN" ...); values found inside the device description
   the profile keeps by design (Manufacturer, Model Name, Software Versions: a Station
   Name "TOSHIBA" is not told apart from the Manufacturer "TOSHIBA_MEC").

2. **Scan** each output's whole byte stream (preamble, file meta, every element including
   Pixel Data; deflated datasets inflated first) and its file name, case-insensitively, for
   every identifier, in ASCII/UTF-8, Latin-1 and UTF-16LE. Numbers, dates and UIDs match
   only as whole digit/dot runs (a date inside a random 39-digit ``2.25.`` UID is chance,
   not a leak); names of 4-5 characters match only as whole words. Inside the Pixel Data
   value only 8-bit text needles of 6+ bytes are searched (plus numbers, dates and UIDs):
   sample values make short and UTF-16 patterns appear by chance (a 4-letter name in
   UTF-16 is just four small pixel values).

3. **Structure**: file meta holds only the basic elements, its Media Storage SOP Instance
   UID equals the SOP Instance UID and nothing else of the source's meta; the preamble is
   zero; no private element outside Table E.3.10-1; no UN element (other than safe private);
   no overlay (60xx) or curve (50xx) groups; no command (0000) or DICOMDIR (0004) elements;
   Patient Identity Removed = YES; 113100 in the De-identification Method Code Sequence;
   Burned In Annotation not YES unless the site allows it.

4. **Decoded text** (:mod:`agent.deid.verify_fields`): every text element of every
   output, decoded with the verifier's own character-set decoder and read as canonical
   tokens (:mod:`agent.deid.verify_text`), holds no identifier of the study in any
   spelling - names made of ordinary words included, which step 2 skips as generic -
   and, in descriptors and free text, no person name of the bundled list and no date.
   An identifier that is itself a core imaging term ("DTI", a phantom called "fMRI") is
   accepted as that term in descriptors and code strings, nowhere else; its byte needles
   are left out of step 2 for that reason.

Findings name the element path (``(0008,1110)[0].(0008,1155)``) and the kind of
identifier, never its value.
"""

from __future__ import annotations

import csv
import io
import mmap
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
from pydicom.datadict import DicomDictionary, keyword_for_tag  # type: ignore[attr-defined]
from pydicom.uid import UID_dictionary  # type: ignore[attr-defined]

from agent.config import Config
from agent.deid.pool import chunked, make_pool
from agent.deid.verify_fields import (
    FieldRules,
    check_fields,
    decoder_of,
    identifying_tags,
    typed_vr,
)
from agent.deid.verify_parse import Element, Parsed, ParseError, parse
from agent.deid.verify_pixels import PixelCheck, PixelReport, inspect_output
from agent.deid.verify_text import TextForms, canonical_word, read_vocabulary
from agent.errors import LeakFound, NotDicom, SeriesProblem
from agent.vocab import ProblemCode
from agent.work import SeriesWork

_WELL_KNOWN = "1.2.840.10008."
_ALLOWED_META = frozenset(
    {0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013}
)
_GENERIC_WORDS = frozenset(
    """anonymous anonymized anonymised unknown none null test phantom research patient
    study series image images scan exam head brain neuro spine body mri mr ct pet
    localizer scout axial sagittal coronal left right male female other yes no""".split()
)
_NAME_KINDS = ("name",)
_PLACE_KEYWORDS = frozenset(
    """InstitutionName InstitutionAddress InstitutionalDepartmentName StationName
    PatientAddress PatientTelephoneNumbers ReferringPhysicianAddress
    ReferringPhysicianTelephoneNumbers PersonAddress PersonTelephoneNumbers
    RegionOfResidence CountryOfResidence InstitutionDepartmentTypeCodeSequence
    PatientTelecomInformation PersonTelecomInformation""".split()
)
_ID_SUFFIX = re.compile(r"(ID|IDs|Number|Numbers|Identifier)$")
_ID_VRS = frozenset({"LO", "SH", "UC", "IS", "LT"})
_CLASS_UID = re.compile(r"(ClassUID|TransferSyntaxUID|CodingSchemeUID|MappingResourceUID)$")
_WORD = re.compile(r"[A-Za-z0-9]+")


@dataclass(frozen=True)
class Finding:
    """One reason not to deliver: where, and what kind (never the value)."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass
class Identifiers:
    """The series' original identifiers, arranged for fast scanning.

    ``text``: lower-cased byte needles (several encodings) -> (kind, whole-word only);
    ``numbers``: digit-only values matched as whole digit runs; ``dotted``: UIDs and
    written dates matched as whole tokens; ``short``: 2-3 character name parts matched as
    whole words in decoded text values.
    """

    text: dict[bytes, tuple[str, bool]] = field(default_factory=dict)
    numbers: dict[bytes, str] = field(default_factory=dict)
    dotted: dict[bytes, str] = field(default_factory=dict)
    short: dict[str, str] = field(default_factory=dict)
    #: Words that identify nobody in this series (its coded values) and the kept device text.
    extra_vocab: set[str] = field(default_factory=set)
    retained: list[str] = field(default_factory=list)
    _pixel_needles: list[tuple[bytes, str]] | None = field(
        default=None, repr=False, compare=False
    )
    _token_memo: dict[bytes, str | None] = field(default_factory=dict, repr=False,
                                                 compare=False)
    #: the same identifiers as canonical token forms, for the decoded-text checks
    forms: TextForms = field(default_factory=TextForms)
    #: original dates (YYYYMMDD) of each standard date attribute
    dates_by_tag: dict[int, set[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.text) + len(self.numbers) + len(self.dotted) + len(self.short)

    # -- adding -----------------------------------------------------------------------

    def add(self, kind: str, value: str) -> None:
        value = value.strip("\x00 \t\r\n")
        if not value:
            return
        if value.isdigit():
            if len(value) >= 6:
                self.numbers[value.encode()] = kind
            return
        if re.fullmatch(r"[0-9]+(\.[0-9]+)+", value):
            if len(value) >= 6:
                self.dotted[value.encode()] = kind
            return
        if self._generic(value):
            return
        if len(value) < 4:
            if kind in _NAME_KINDS and len(value) >= 2:
                self.short[value.lower()] = kind
            return
        whole_word = kind in _NAME_KINDS and len(value) < 6
        for enc in ("utf-8", "latin-1", "utf-16-le"):
            try:
                needle = value.lower().encode(enc)
            except UnicodeEncodeError:
                continue
            self.text.setdefault(needle, (kind, whole_word))

    def _generic(self, value: str) -> bool:
        words = _WORD.findall(value)
        vocab = _vocabulary()
        if not words or all(w.lower() in vocab or w.lower() in self.extra_vocab for w in words):
            return True
        low = value.lower()
        return any(low in kept for kept in self.retained)

    def add_date(self, value: str) -> None:
        v = value.strip()[:8]
        if len(v) != 8 or not v.isdigit():
            return
        y, m, d = v[:4], v[4:6], v[6:8]
        self.numbers[v.encode()] = "date"
        for form in (f"{y}-{m}-{d}", f"{y}.{m}.{d}", f"{d}.{m}.{y}", f"{m}/{d}/{y}",
                     f"{d}/{m}/{y}", f"{y}/{m}/{d}", f"{d}-{m}-{y}"):
            self.dotted[form.encode()] = "date"

    # -- scanning ---------------------------------------------------------------------

    def scan(self, data: bytes, *, pixels: bool = False) -> Iterator[tuple[int, str]]:
        """Yield (offset, kind) for every identifier found in ``data``.

        ``pixels``: ``data`` is a Pixel Data value. Sample values make every short byte
        pattern likely by chance (a 4-letter name in UTF-16 is 4 small pixel values), so
        there only 8-bit needles of 6+ bytes are searched: text can only get into sample
        values by a program writing it there byte for byte, and UTF-16 text lives in
        OB/UN payloads of the header, which are searched with every needle.
        """
        if not data:
            return
        if pixels:
            yield from self.scan_pixels(data, 0, len(data))
            return
        low = data.lower()
        for needle, (kind, whole) in self.text.items():
            start = low.find(needle)
            while start >= 0:
                end = start + len(needle)
                if not whole or (_boundary(low, start - 1) and _boundary(low, end)):
                    yield start, kind
                    break
                start = low.find(needle, start + 1)
        if self.numbers or self.dotted:
            for start, token in _digit_tokens(data):
                hit = self._token_hit(token)
                if hit is not None:
                    yield start, hit

    def scan_pixels(self, data: bytes, begin: int, stop: int) -> Iterator[tuple[int, str]]:
        """Pixel-region needles in ``data[begin:stop]`` (offsets in ``data``), searched
        only inside runs of 6+ text bytes (:func:`_text_runs`: printable ASCII and
        0x80-0xFF, for UTF-8 and Latin-1 names). 12- and 16-bit samples have a small high
        byte in every pair, so runs are rare and short, and the needles are searched in a
        few bytes instead of the whole 100 kB value. Numbers, dates and UIDs are text
        too, so their tokens are looked for in the same runs.
        """
        needles = self._pixel_needles
        if needles is None:
            needles = [(n, kind) for n, (kind, whole) in self.text.items()
                       if _pixel_needle(n, whole)]
            self._pixel_needles = needles
        if not needles and not (self.numbers or self.dotted):
            return
        for start, end in _text_runs(data, begin, stop):
            run = data[start:end].lower()
            for needle, kind in needles:
                at = run.find(needle)
                if at >= 0:
                    yield start + at, kind
                    return
            if self.numbers or self.dotted:
                for at, token in _digit_tokens(data[start:end]):
                    hit = self._token_hit(token)
                    if hit is not None:
                        yield start + at, hit
                        return

    def _token_hit(self, token: bytes) -> str | None:
        """A run of digits and separators: whole digit runs, then dot-aligned sub-runs.

        Memoised: a series repeats the same UIDs, codes and numbers in every file."""
        memo = self._token_memo
        if token in memo:
            return memo[token]
        hit = self._token_lookup(token)
        if len(memo) < 100_000:
            memo[token] = hit
        return hit

    def _token_lookup(self, token: bytes) -> str | None:
        if self.numbers:
            for run in _SEPARATORS.split(token):
                if len(run) >= 6:
                    kind = self.numbers.get(run)
                    if kind is not None:
                        return kind
        if self.dotted and len(token) >= 6:
            return _dotted_hit(token, self.dotted)
        return None

    def reduced(self) -> Identifiers:
        """The same search with redundant needles dropped: a needle holding a shorter
        needle (same encoding, same matching rule) is found whenever it is present."""
        keep: dict[bytes, tuple[str, bool]] = {}
        needles = sorted(self.text.items(), key=lambda kv: len(kv[0]))
        for needle, (kind, whole) in needles:
            if any(n in needle and not w and not whole for n, (_, w) in keep.items()):
                continue
            keep[needle] = (kind, whole)
        return Identifiers(text=keep, numbers=self.numbers, dotted=self.dotted,
                           short=self.short, extra_vocab=self.extra_vocab,
                           retained=self.retained, forms=self.forms,
                           dates_by_tag=self.dates_by_tag)


def _pixel_needle(needle: bytes, whole: bool) -> bool:
    """Needles searched in sample values (see :meth:`Identifiers.scan`)."""
    return not whole and len(needle) >= 6 and b"\0" not in needle


_TEXT_TABLE = bytes(49 if 0x20 <= i <= 0x7E or i >= 0x80 else 48 for i in range(256))
_TOKEN_TABLE = bytes(49 if chr(i) in "0123456789./-" else 48 for i in range(256))
_SEPARATORS = re.compile(rb"[./-]")
#: a maximal run of 6+ token bytes (the runs :func:`_runs` finds with ``_TOKEN_TABLE``)
_TOKEN_RUN = re.compile(rb"[0-9./-]{6,}")
_DIGIT_BYTES = frozenset(b"0123456789")


def _runs(data: bytes, table: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) of every maximal run of 6+ bytes that ``table`` maps to "1".

    One ``translate`` maps the bytes to "1" or "0"; ``find`` then jumps from run to run
    at C speed.
    """
    mask = data.translate(table)
    start = mask.find(b"111111")
    while start >= 0:
        end = mask.find(b"0", start)
        if end < 0:
            end = len(data)
        yield start, end
        start = mask.find(b"111111", end)


#: Groups of candidate byte pairs beyond which one pass over the whole region is cheaper.
_MAX_WINDOWS = 64


def _text_runs(data: bytes, begin: int, stop: int) -> list[tuple[int, int]]:
    """(start, end) in ``data`` of every maximal run of 6+ text bytes (``_TEXT_TABLE``)
    in ``data[begin:stop]`` - the same runs as :func:`_runs` of that slice, found fast.

    A run of 6+ bytes holds two whole byte pairs in a row (pairs counted from
    ``begin``), each of two bytes >= 0x20 (a looser test than text: 0x7F passes). One
    numpy pass finds such pairs without copying the value - in most pixel data there
    are none - and only windows around them are read exactly: a window runs from the
    pair before the first candidate to the pair after the last one's partner, and those
    pairs are not all text (else they would be candidates), so no run is cut.
    """
    n = (stop - begin) & ~1
    if n < 6:
        return [(begin + s, begin + e) for s, e in _runs(data[begin:stop], _TEXT_TABLE)]
    if np.frombuffer(data, dtype="<u2", count=n // 2, offset=begin).max() < 0x2000:
        return []  # every pair's second byte is below 0x20 (12- and 16-bit samples): no pair
    both = np.frombuffer(data, dtype=np.uint8, count=n, offset=begin) >= 0x20
    pairs = both.view(np.uint16) == 0x0101
    candidates = np.flatnonzero(pairs[:-1] & pairs[1:])
    if not candidates.size:
        return []
    breaks = np.flatnonzero(np.diff(candidates) > 1)
    if breaks.size >= _MAX_WINDOWS:
        return [(begin + s, begin + e) for s, e in _runs(data[begin:stop], _TEXT_TABLE)]
    firsts = [int(candidates[0])] + candidates[breaks + 1].tolist()
    lasts = candidates[breaks].tolist() + [int(candidates[-1])]
    out: list[tuple[int, int]] = []
    for first, last in zip(firsts, lasts, strict=True):
        w0 = max(begin, begin + 2 * (first - 1))
        w1 = min(stop, begin + 2 * (last + 3))
        out.extend((w0 + s, w0 + e) for s, e in _runs(data[w0:w1], _TEXT_TABLE))
    return out


def _digit_tokens(data: bytes) -> list[tuple[int, bytes]]:
    """Maximal runs of [0-9./-] of 6+ bytes holding a digit (pixel data rarely has any)."""
    return [(m.start(), token) for m in _TOKEN_RUN.finditer(data)
            if not _DIGIT_BYTES.isdisjoint(token := m.group())]


def _boundary(data: bytes, index: int) -> bool:
    return index < 0 or index >= len(data) or not chr(data[index]).isalnum()


def _dotted_hit(token: bytes, table: dict[bytes, str]) -> str | None:
    """Whether any dot-aligned run of ``token``'s parts is an identifier (UID inside UID)."""
    kind = table.get(token)
    if kind is not None:
        return kind
    if token in _known_uid_bytes():
        return None  # a standard UID (SOP class, transfer syntax): nothing else in the run
    parts = re.split(rb"([-./])", token)
    n = len(parts)
    for i in range(0, n, 2):
        for j in range(i + 1, n + 1, 2):
            kind = table.get(b"".join(parts[i:j]))
            if kind is not None:
                return kind
    return None


@lru_cache(maxsize=1)
def _vocabulary() -> frozenset[str]:
    words: set[str] = set(_GENERIC_WORDS)
    for entry in DicomDictionary.values():
        words.update(w.lower() for w in _WORD.findall(entry[2]))
    for entry in UID_dictionary.values():
        words.update(w.lower() for w in _WORD.findall(entry[0]))
    return frozenset(words)


@lru_cache(maxsize=1)
def _known_uids() -> frozenset[str]:
    return frozenset(UID_dictionary)


@lru_cache(maxsize=1)
def _known_uid_bytes() -> frozenset[bytes]:
    return frozenset(u.encode("ascii") for u in UID_dictionary)


# -- collecting ---------------------------------------------------------------------------


_RETAINED_KEYWORDS = frozenset({"Manufacturer", "ManufacturerModelName", "SoftwareVersions"})
_BINARY_VRS = frozenset(
    {"OB", "OW", "OF", "OD", "OL", "OV", "US", "SS", "UL", "SL", "FL", "FD", "AT", "UV", "SV",
     "SQ", "UN"}
)
_SINGLE_VALUED = frozenset({"LT", "ST", "UT", "UR"})


class _Collector:
    """One pass over the originals. Values already seen in an earlier file of the series
    (same tag, bytes and character set) are skipped, and so are the items of sequences
    already read: a series repeats most of its header."""

    def __init__(self) -> None:
        self.seen: set[tuple[int, bytes, str]] = set()
        #: sequences already read (tag, character set, bytes): see ``parse(seen=...)``
        self.sequences: set[bytes] = set()
        #: text values already read (tag, character set, bytes): ``parse(values=...)``
        self.values: set[tuple[int, bytes, bytes]] = set()
        self.candidates: list[tuple[str, str]] = []
        self.dates: set[str] = set()
        self.vocab: set[str] = set()
        self.retained: list[str] = []
        self.forms = TextForms()
        self.dates_by_tag: dict[int, set[str]] = {}

    def file(self, parsed: Parsed) -> None:
        decoder = decoder_of(parsed)
        identifying = identifying_tags()
        stream = parsed.stream
        charset = decoder.charset
        for elem in parsed.meta + parsed.elements:
            vr = elem.vr
            if vr == "UN":
                vr = typed_vr(elem)  # UN: typed by the dictionary
            if vr in _BINARY_VRS:
                continue
            raw = stream[elem.value_start:elem.value_end]
            key = (elem.tag, raw, charset)
            if key in self.seen:
                continue
            self.seen.add(key)
            text = decoder.decode(raw).strip("\x00 ")
            values = [text] if vr in _SINGLE_VALUED else text.split("\\")
            values = [v.strip("\x00 ") for v in values if v.strip("\x00 ")]
            self.element(elem, vr, values)
            self.form(elem, vr, values, identifying)

    def form(self, elem: Element, vr: str, values: list[str],
             identifying: dict[int, str]) -> None:
        if vr == "PN":
            for v in values:
                self.forms.add_name(v)
        elif vr in ("DA", "DT"):
            for v in values:
                self.forms.add_date(v)
                if not elem.tag >> 16 & 1:
                    self.dates_by_tag.setdefault(elem.tag, set()).add(v[:8])
        elif not elem.tag >> 16 & 1 and elem.tag in identifying:
            for v in values:
                self.forms.add(identifying[elem.tag], v)

    def element(self, elem: Element, vr: str, values: list[str]) -> None:
        tag = elem.tag
        if vr == "PN":
            for v in values:
                self.candidates.append(("name", v))
                for part in re.split(r"[\^=]+", v):
                    self.candidates.append(("name", part))
                    self.candidates.extend(("name", w) for w in part.split())
            return
        if vr in ("DA", "DT"):
            self.dates.update(values)
            return
        if vr == "CS":
            for v in values:
                self.vocab.update(w.lower() for w in _WORD.findall(v))
            return
        if tag >> 16 & 1:
            return  # only names and dates: vendor text is not known to identify
        keyword = keyword_for_tag(tag) or ""
        if keyword in _RETAINED_KEYWORDS:
            self.retained.extend(v.lower() for v in values)
        elif vr == "UI":
            if tag >> 16 == 0x0002 or _CLASS_UID.search(keyword):
                return
            for v in values:
                if not v.startswith(_WELL_KNOWN) and v not in _known_uids():
                    self.candidates.append(("uid", v))
        elif keyword in _PLACE_KEYWORDS:
            self.candidates.extend(("place", v) for v in values)
        elif vr in _ID_VRS and _ID_SUFFIX.search(keyword):
            self.candidates.extend(("id", v) for v in values)
        elif vr in ("LT", "ST", "UT"):
            self.candidates.extend(("free text", v) for v in values)

    def identifiers(self) -> Identifiers:
        ids = Identifiers(extra_vocab=self.vocab, retained=self.retained, forms=self.forms,
                          dates_by_tag=self.dates_by_tag)
        core = read_vocabulary()[0]
        for kind, value in self.candidates:
            if kind in ("name", "id", "place") and canonical_word(value) in core:
                continue  # an identifier that is an imaging term: decoded checks only
            ids.add(kind, value)
        for d in self.dates:
            ids.add_date(d)
        return ids


def collect_identifiers(files: Iterable[Path]) -> Identifiers:
    """Every identifier of the original files (see the module docstring)."""
    collector = _Collector()
    for path in files:
        try:
            # Memory-mapped: only the pages of the header are read, not the pixel data.
            with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                parsed = parse(mm, part10=False,  # type: ignore[arg-type]
                               seen=collector.sequences, values=collector.values)
                collector.file(parsed)
        except (OSError, ValueError, ParseError, struct.error):
            raise NotDicom(
                "an original file of the series cannot be read to check the result"
            ) from None
    return collector.identifiers()


def field_rules(files: tuple[str, ...] = (), terms: tuple[str, ...] = (),
                age_cap_years: int = 89) -> FieldRules:
    """The decoded-text rules: the imaging vocabulary (shipped and the site's) and the
    age cap, read by the verifier's own code (once per process and arguments)."""
    return _field_rules(files, terms, age_cap_years)


@lru_cache(maxsize=8)
def _field_rules(files: tuple[str, ...], terms: tuple[str, ...],
                 age_cap_years: int) -> FieldRules:
    core, every = read_vocabulary(files, terms)
    return FieldRules(core=core, vocabulary=every, age_cap_years=age_cap_years,
                      recipe=(files, terms, age_cap_years))


@dataclass(frozen=True)
class Rules:
    """Structural expectations for outputs."""

    safe_private: frozenset[tuple[int, int, str]]
    retain_safe_private: bool = True
    allow_burned_in: bool = False
    fields: FieldRules = field(default_factory=lambda: field_rules())

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        """Pickled for every pool task: the shipped safe-private table goes by name (each
        worker reads it once with :func:`load_safe_private`), not as its thousand rows."""
        private = None if self.safe_private is load_safe_private() else self.safe_private
        return _rules, (private, self.retain_safe_private, self.allow_burned_in, self.fields)


def _rules(private: frozenset[tuple[int, int, str]] | None, retain: bool, burned_in: bool,
           fields: FieldRules) -> Rules:
    return Rules(safe_private=load_safe_private() if private is None else private,
                 retain_safe_private=retain, allow_burned_in=burned_in, fields=fields)


@lru_cache(maxsize=1)
def load_safe_private() -> frozenset[tuple[int, int, str]]:
    """Table E.3.10-1 (group, element within block, creator), parsed independently."""
    text = (resources.files("agent.deid") / "data" / "ps3.15-table-E.3.10-1-safe-private.csv")
    out = set()
    for row in csv.reader(io.StringIO(text.read_text(encoding="utf-8"))):
        if not row or row[0] == "group":
            continue
        out.add((int(row[0], 16), int(row[1], 16), row[3].strip()))
    return frozenset(out)


_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR",
     "UT"}
)


def _top_level(parsed: Parsed, rules: Rules) -> list[Finding]:
    out: list[Finding] = []
    for elem in parsed.meta:
        if elem.tag not in _ALLOWED_META:
            out.append(Finding(elem.path, "file meta element of the source kept"))
    media = next((e for e in parsed.meta if e.tag == 0x00020003), None)
    sop = parsed.find(0x00080018)
    if media is None or sop is None or parsed.text(media) != parsed.text(sop):
        out.append(Finding("(0002,0003)", "does not follow the SOP Instance UID"))
    removed = parsed.find(0x00120062)
    if removed is None or parsed.text(removed).upper() != "YES":
        out.append(Finding("(0012,0062)", "Patient Identity Removed is not YES"))
    if not any(e.tag == 0x00080100 and e.path.startswith("(0012,0064)[")
               and parsed.text(e) == "113100" for e in parsed.elements):
        out.append(Finding("(0012,0064)", "113100 (Basic Profile) not recorded"))
    burned = parsed.find(0x00280301)
    if not rules.allow_burned_in and burned is not None and parsed.text(burned).upper() == "YES":
        out.append(Finding("(0028,0301)", "declares burned-in annotation"))
    if parsed.preamble.strip(b"\x00"):
        out.append(Finding("preamble", "non-zero preamble (may carry source data)"))
    return out


def _inspect(parsed: Parsed, rules: Rules, ids: Identifiers, out: list[Finding]) -> None:
    """Structural rules and short name parts, element by element."""
    for elem in parsed.elements:
        tag, vr = elem.tag, elem.vr
        group, el = tag >> 16, tag & 0xFFFF
        if group & 1:
            if el < 0x10:
                out.append(Finding(elem.path, "private group length / reserved element"))
            elif el >= 0x1000 and (
                not rules.retain_safe_private
                or (group, el & 0xFF, elem.creator) not in rules.safe_private
            ):
                out.append(Finding(elem.path, "private element not on the safe list"))
            continue
        if group in (0x0000, 0x0002, 0x0004) or el == 0:
            out.append(Finding(elem.path, "command, meta, DICOMDIR or group length element"))
        elif 0x5000 <= group <= 0x501E or 0x6000 <= group <= 0x601E:
            out.append(Finding(elem.path, "overlay or curve data"))
        elif vr == "UN":
            out.append(Finding(elem.path, "element of unknown VR (UN)"))
        elif tag not in DicomDictionary:
            out.append(Finding(elem.path, "element unknown to the DICOM dictionary"))


def _scan_stream(parsed: Parsed, ids: Identifiers) -> Iterator[tuple[int, str]]:
    """Scan the whole byte stream; the Pixel Data value with long needles only."""
    data = parsed.stream
    start, end = parsed.pixel_span
    if start <= 0:
        yield from ids.scan(data)
        return
    yield from ids.scan(data[:start])
    yield from ids.scan_pixels(data, start, end)  # the value read in place, not copied
    for offset, kind in ids.scan(data[end:]):
        yield end + offset, kind


def _shifted(parsed: Parsed, elem: Element, ids: Identifiers) -> bool:
    """Whether a date element holds a date its own attribute never had in the originals.

    The engine shifts every date by one offset per patient; a shifted date may equal
    another original date by chance (a birth date exactly that many days before the
    study). A date element is a leak only if it still holds its attribute's original."""
    if typed_vr(elem) not in ("DA", "DT") or elem.tag >> 16 & 1:
        return False
    values = {v.strip("\x00 ")[:8] for v in parsed.value(elem).decode("latin-1").split("\\")}
    return not values & ids.dates_by_tag.get(elem.tag, set())


def check_file(path: Path, ids: Identifiers, rules: Rules) -> list[Finding]:
    """Every finding for one output file (empty: the file may be delivered)."""
    return check_output(path, ids, rules)[0]


def check_output(path: Path, ids: Identifiers, rules: Rules, *, pixels: bool = False
                 ) -> tuple[list[Finding], PixelReport | None]:
    """:func:`check_file`, and with ``pixels`` the pixel checks of the same output
    (:func:`~agent.deid.verify_pixels.inspect_output`) on the same read and parse."""
    findings: list[Finding] = []
    if any(True for _ in ids.scan(path.name.encode("utf-8"))):
        findings.append(Finding("file name", "original identifier in the file name"))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SeriesProblem(
            f"an output file cannot be read for checking ({exc.strerror})",
            code=ProblemCode.WORK_AREA) from None
    try:
        parsed = parse(data)
    except (ParseError, struct.error) as exc:
        findings.append(Finding("file", f"does not parse as DICOM ({exc})"))
        # Still scan the bytes: a leak is a leak even in a broken file.
        for offset, kind in list(ids.scan(data))[:3]:
            findings.append(Finding(f"byte offset {offset}", f"original {kind} found"))
        return findings, (PixelReport((f"{path.name}: does not parse",)) if pixels else None)
    findings += _top_level(parsed, rules)
    _inspect(parsed, rules, ids, findings)
    said = {(f.where, f.what) for f in findings}
    for where, what in check_fields(parsed, ids.forms, rules.fields):
        if (where, what) not in said:
            said.add((where, what))
            findings.append(Finding(where, what))
    seen: set[str] = set()
    for offset, kind in _scan_stream(parsed, ids):
        elem = parsed.at(offset)
        if elem is not None and kind == "date" and _shifted(parsed, elem, ids):
            continue  # a shifted date that happens to equal another original date
        if elem is not None:
            where = elem.path
        elif offset < 128:
            where = "preamble"
        else:
            where = f"byte offset {offset}"
        if where not in seen:
            seen.add(where)
            findings.append(Finding(where, f"original {kind} found"))
    return findings, (inspect_output(path, parsed) if pixels else None)


_Checked = tuple[int, list[Finding], "PixelReport | None"]


def _check_many(args: tuple[list[tuple[int, Path]], Identifiers, Rules, bool]
                ) -> list[_Checked]:
    """One pool task: outputs (with their index in the series) checked, each read once."""
    paths, ids, rules, pixels = args
    return [(i, *check_output(p, ids, rules, pixels=pixels)) for i, p in paths]


def verify_series(
    source_files: list[Path], outputs: list[Path], rules: Rules, *, processes: int = 1,
    pixel_check: PixelCheck | None = None,
) -> None:
    """Raise LeakFound naming the first findings; return when every output is clean.

    With ``pixel_check``, the pixel checks of each output run on the same read as the
    others (in the pool, for a large series), then its OCR sample (also in the pool)."""
    if not outputs:
        raise LeakFound("the series has no output files to deliver")
    ids = collect_identifiers(source_files).reduced()
    pixels = pixel_check is not None
    indexed = list(enumerate(outputs))
    if processes > 1 and len(outputs) >= 64:
        chunks = chunked(indexed, processes)
        with make_pool(processes) as pool:
            results = [r for part in pool.map(_check_many,
                                              [(c, ids, rules, pixels) for c in chunks])
                       for r in part]
            results.sort(key=lambda r: r[0])
            _raise_findings(outputs, results)
            if pixel_check is not None:
                pixel_check.finish(source_files, outputs, _reports(results), pool)
        return
    results = _check_many((indexed, ids, rules, pixels))
    _raise_findings(outputs, results)
    if pixel_check is not None:
        pixel_check.finish(source_files, outputs, _reports(results))


def _reports(results: list[_Checked]) -> list[PixelReport]:
    return [r if r is not None else PixelReport() for _i, _f, r in results]


def _raise_findings(outputs: list[Path], results: list[_Checked]) -> None:
    bad = [(outputs[i].name, f) for i, f, _r in results if f]
    if bad:
        first = bad[0][1]
        more = sum(len(f) for _, f in bad) - 1
        text = "; ".join(str(f) for f in first[:3])
        raise LeakFound(
            f"verification failed in {len(bad)} of {len(outputs)} files: {text}"
            + (f" (and {more} more findings)" if more > 0 else "")
            + "; nothing of this series is delivered"
        )


class VerifyStage:
    """Pipeline stage ``verify``: compares ``work.source_files`` with ``work.files``."""

    name = "verify"

    def __init__(self, cfg: Config) -> None:
        allowed = {a.strip().lower() for a in cfg.deid.allow_pixel_identity}
        self.rules = Rules(
            safe_private=load_safe_private(),
            retain_safe_private=cfg.deid.retain_safe_private,
            allow_burned_in="burned-in" in allowed,
            fields=field_rules(cfg.deid.vocabulary_files, cfg.deid.vocabulary_terms,
                               cfg.deid.age_cap_years),
        )
        self.processes = max(1, cfg.worker_count)
        self.pixel_check = PixelCheck(cfg)  # issue 13: pixels (bits, segments, OCR)

    def __call__(self, work: SeriesWork) -> None:
        verify_series(work.source_files, work.files, self.rules, processes=self.processes,
                      pixel_check=self.pixel_check)
