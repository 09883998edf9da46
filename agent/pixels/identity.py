"""The study's identifiers in the forms text on an image shows them, and a matcher for
what OCR reads (which makes its own mistakes: ``0``/``O``, ``1``/``l``/``I``, ``5``/``S``).

Two layers. First the de-identifier's own variant generator
(:func:`agent.deid.variants.identity_variants`: every name part and script, IDs with any
separators, phones, places, dates in every written form), exactly as the cleaner uses it.
Then this module's OCR-tolerant layer, for what OCR does to text: everything folded the
same way on both sides - Unicode compatibility form, accents stripped, case folded, OCR
look-alikes mapped to one symbol, everything but letters and digits dropped - so
``"CANARY550N"`` meets ``"Canarysson"``, ``"Müller-Lüdenscheidt, Hans"`` meets
``"MULLER LUDENSCHEIDT"`` and ``"12 Mar 1961"`` meets ``"12MAR1961"``; with up to one or
two edits for long variants, and the digit runs of IDs ("84213977" of "PID-84213977").

Variants: whole names and each name part (compound names split at spaces, hyphens and
apostrophes), IDs without their separators and their longer digit runs, dates in numeric
(day-month-year, month-day-year, year-month-day, 2- and 4-digit years, with and without
leading zeros) and month-name forms (English, French, German, Spanish, Italian, Dutch
abbreviations and full names), the institution and address words.

Matching: a variant of 5+ folded characters matches as a substring of a folded OCR line
with up to one edit (two for 9+ letters; numbers of fewer than 8 digits exactly); 3-4
characters as a whole word, exactly; shorter ones never (too many chance hits in anatomy
read as text). Text cut by the edge of the image or of a region shows only part of an
identifier: a run of 6+ digits inside an ID of 8+ digits, and a word of 5+ letters that
begins or ends a name part of 7+ (at least 60 % of it), match too.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from agent.deid.variants import IdentityVariants, identity_variants

_LOOKALIKE = str.maketrans({"o": "0", "l": "1", "i": "1", "|": "1", "!": "1", "s": "5",
                            "z": "2", "b": "8", "g": "9"})
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")
_SPLIT = re.compile(r"[\s^=,.\-'’_/()]+")

_PERSON = ("PatientName", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName",
           "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName",
           "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "RequestingPhysician",
           "ScheduledPerformingPhysicianName", "ResponsiblePerson", "PersonName")
_IDS = ("PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID", "IssuerOfPatientID",
        "MedicalRecordLocator", "PatientInsurancePlanCodeSequence", "RequestedProcedureID",
        "PerformedProcedureStepID", "ScheduledProcedureStepID", "DeviceSerialNumber")
_DATES = ("PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate",
          "InstanceCreationDate")
_PLACES = ("InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
           "PatientAddress", "StationName", "PatientTelephoneNumbers")
_MONTHS = (
    ("jan", "january", "janvier", "januar", "enero", "gennaio", "januari", "janv", "ene",
     "gen"),
    ("feb", "february", "fevrier", "februar", "febrero", "febbraio", "februari", "fev",
     "fevr"),
    ("mar", "march", "mars", "marz", "marzo", "maart", "maerz", "mrz"),
    ("apr", "april", "avril", "abril", "aprile", "avr", "abr"),
    ("may", "mai", "mayo", "maggio", "mei", "mag"),
    ("jun", "june", "juin", "juni", "junio", "giugno", "giu"),
    ("jul", "july", "juillet", "juli", "julio", "luglio", "juil", "lug"),
    ("aug", "august", "aout", "agosto", "augustus", "ago"),
    ("sep", "september", "septembre", "septiembre", "settembre", "sept", "set"),
    ("oct", "october", "octobre", "oktober", "octubre", "ottobre", "okt", "ott"),
    ("nov", "november", "novembre", "noviembre"),
    ("dec", "december", "decembre", "dezember", "diciembre", "dicembre", "dez", "dic"),
)
#: Words that identify nobody: never variants on their own.
_COMMON = frozenset("""the and of de la le du von van der den hospital clinic klinik
    university universitat universite center centre centrum medical institute radiology
    imaging department dept mri mr ct scan unit street road avenue anonymous anonymized
    unknown none patient""".split())


def fold(text: str) -> str:
    """Accents stripped, case folded, look-alikes unified, only letters and digits kept."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    plain = plain.replace("ß", "ss").replace("æ", "ae").replace("ø", "o").replace("ł", "l")
    return _NOT_ALNUM.sub("", plain.translate(_LOOKALIKE))


def _words(text: str) -> list[str]:
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return [w for w in _SPLIT.split(plain) if w]


def date_forms(value: str) -> set[str]:
    """A DICOM date (YYYYMMDD) as it may be written on an image, unfolded."""
    v = value.strip()[:8]
    if len(v) != 8 or not v.isdigit():
        return set()
    y, m, d = v[:4], v[4:6], v[6:8]
    yy = y[2:]
    out = set()
    for dd in {d, d.lstrip("0") or "0"}:
        for mm in {m, m.lstrip("0") or "0"}:
            for year in (y, yy):
                out |= {f"{dd}.{mm}.{year}", f"{mm}.{dd}.{year}"}
            out.add(f"{y}.{mm}.{dd}")
        month = int(m)
        if 1 <= month <= 12:
            for name in _MONTHS[month - 1]:
                for year in (y, yy):
                    out |= {f"{dd} {name} {year}", f"{name} {dd} {year}"}
                out.add(f"{y} {name} {dd}")
    return out


@dataclass
class StudyIdentity:
    """Folded variants of one study's identifiers: long ones (substring, fuzzy) and short
    ones (whole words, exact)."""

    long: dict[str, str] = field(default_factory=dict)
    short: dict[str, str] = field(default_factory=dict)
    #: The de-identifier's variants of each distinct identity read (issue 14's generator).
    exact: list[IdentityVariants] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.long or self.short or any(self.exact))

    def add(self, kind: str, text: str, *, parts: bool = True) -> None:
        whole = fold(text)
        self._add(kind, whole)
        if parts:
            for word in _words(text):
                if word not in _COMMON:
                    self._add(kind, fold(word))
            digits = re.findall(r"\d{4,}", text)
            for run in digits:
                self._add(kind, run.translate(_LOOKALIKE))

    def _add(self, kind: str, folded: str) -> None:
        if len(folded) >= 5:
            self.long.setdefault(folded, kind)
        elif len(folded) >= 3 and not folded.isdigit():
            self.short.setdefault(folded, kind)
        elif len(folded) == 4 and folded.isdigit():
            pass  # a year or a 4-digit number on its own: everywhere on images

    def add_date(self, value: str) -> None:
        for form in date_forms(value):
            self._add("date", fold(form))

    def match(self, line: str) -> str | None:
        """The kind of the first identifier a line of OCR text shows, or None."""
        for variants in self.exact:
            kinds = variants.find(line)
            if kinds:
                return kinds[0]
        return self._fuzzy(line) or self._partial(line)

    def _fuzzy(self, line: str) -> str | None:
        folded = fold(line)
        if not folded:
            return None
        for variant, kind in self.long.items():
            if len(folded) + 2 < len(variant):
                continue
            if variant in folded:
                return kind
            digits = variant.isdigit()
            if digits and len(variant) < 8:
                continue  # short numbers: exact only (slice positions, TR, TE ...)
            if _near(variant, folded, 2 if len(variant) >= 9 and not digits else 1):
                return kind
        if self.short:
            for word in _words(line):
                short = self.short.get(fold(word))
                if short is not None:
                    return short
        return None


    def _partial(self, line: str) -> str | None:
        """Part of an ID's digits or the start or end of a name part (text cut short)."""
        for run in re.findall(r"\d{6,}", line):
            for variant, kind in self.long.items():
                if kind == "id" and len(variant) >= 8 and variant.isdigit() and run in variant:
                    return kind
        for word in _words(line):
            w = fold(word)
            if len(w) < 5 or w.isdigit():
                continue
            for variant, kind in self.long.items():
                if (kind == "name" and len(variant) >= 7 and len(w) >= 0.6 * len(variant)
                        and (variant.startswith(w) or variant.endswith(w))):
                    return kind
        return None


def _near(needle: str, text: str, k: int) -> bool:
    """Whether ``needle`` occurs in ``text`` with at most ``k`` edits (Sellers)."""
    m = len(needle)
    prev = list(range(m + 1))
    for ch in text:
        cur = [0]
        for j in range(1, m + 1):
            cost = 0 if needle[j - 1] == ch else 1
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost))
        if cur[m] <= k:
            return True
        prev = cur
    return False


def _values(ds: Dataset, keyword: str) -> Iterable[str]:
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - an unreadable value identifies nothing we can read
        return []
    if value is None:
        return []
    if isinstance(value, pydicom.sequence.Sequence):
        return []
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [str(v) for v in value if str(v).strip()]
    text = str(value).strip()
    return [text] if text else []


_TOP_LEVEL = (("name", _PERSON), ("id", _IDS), ("date", _DATES), ("place", _PLACES))


def add_dataset(identity: StudyIdentity, ds: Dataset) -> None:
    """Every identifier of one (original) dataset, its person names at any depth."""
    for kind, keywords in _TOP_LEVEL:
        for kw in keywords:
            for v in _values(ds, kw):
                if kind == "date":
                    identity.add_date(v)
                else:
                    identity.add(kind, v.replace("^", " ") if kind == "name" else v)
    for elem in ds.iterall():
        if elem.VR == "PN" and elem.value:
            identity.add("name", str(elem.value).replace("^", " "))


def identity_sources(source_files: list[Path]) -> list[Path]:
    """The originals :func:`study_identity` reads: the first, middle and last files (the
    de-identification has already refused a series whose files name different patients or
    studies, so they share one identity)."""
    picked = sorted({0, len(source_files) // 2, len(source_files) - 1}) if source_files else []
    return [source_files[i] for i in picked]


def study_identity(source_files: list[Path]) -> StudyIdentity:
    """The identifiers of the original files of a series (headers only), read from
    :func:`identity_sources`."""
    identity = StudyIdentity()
    seen: set[bytes] = set()
    for path in identity_sources(source_files):
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
        except Exception:  # noqa: BLE001 - unreadable originals were refused before
            continue
        key = repr([ds.get(k) for k in ("PatientName", "PatientID", "PatientBirthDate",
                                          "AccessionNumber", "InstitutionName")]).encode()
        if key in seen:
            continue  # the same identity as a file already read: skip the deep walk
        seen.add(key)
        add_dataset(identity, ds)
        try:
            identity.exact.append(identity_variants(ds))
        except Exception:  # noqa: BLE001 - our own layer still stands; never fail open
            pass
    return identity
