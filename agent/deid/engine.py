"""The de-identification engine: one DICOM file in, one de-identified file out.

Parse once, touch only what the profile changes: the file is split into raw elements
(:mod:`agent.deid.fastread`, falling back to ``pydicom.dcmread``), the walk decodes only the
elements it rewrites (ASCII text is rewritten straight from its bytes), and
:mod:`agent.deid.writer` puts headers in front of the untouched values - Pixel Data above
all - in the input's transfer syntax, never decoding or re-encoding them.

The rules for what happens to each element are in :mod:`agent.deid.profile` (the table)
and :meth:`Engine.default_action` (everything the table does not list).
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag

from agent.config import Config, DeidConfig
from agent.deid import pseudo
from agent.deid.clean import Cleaner
from agent.deid.fastread import read_fast
from agent.deid.peek import peek
from agent.deid.profile import (
    CODE_MEANINGS,
    PATIENT_ID,
    PATIENT_NAME,
    Action,
    Profile,
    build_profile,
)
from agent.deid.risk import refusal
from agent.deid.screen import screen
from agent.deid.variants import IdentityVariants, build_variants, identifying_tags
from agent.deid.vocabulary import Vocabulary, vocabulary
from agent.deid.walk import DEVICE_TAGS, PIXEL_DATA_TAGS, Plan, Walk, plan_mode, write_ascii
from agent.deid.writer import can_write, encode_items, encode_with_meta, raw_text
from agent.errors import IdentityRisk, NotDicom, SeriesProblem
from agent.vocab import ProblemCode

#: Our Implementation Class UID (a 2.25 UUID-derived UID) and version name (SH, 16 chars).
IMPLEMENTATION_CLASS_UID = "2.25.331131622861568449129939480590977905939"
IMPLEMENTATION_VERSION_NAME = "CLINIC2CLOUD_1"
DEIDENTIFICATION_METHOD = "Clinic2Cloud PS3.15 Basic Profile"
_IMPLEMENTATION_UID = IMPLEMENTATION_CLASS_UID.encode("ascii")
_IMPLEMENTATION_NAME = IMPLEMENTATION_VERSION_NAME.encode("ascii")

_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_UID_CHARS = re.compile(r"[0-9]+(\.[0-9]+)*")
_FREE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UR", "PN"})
_CLEANABLE_VRS = frozenset({"SH", "LO", "UC"})
#: UI attributes naming a kind of thing rather than an instance: never remapped.
_CLASS_UID_KEYWORD = re.compile(r"(ClassUID|TransferSyntaxUID|CodingSchemeUID|MappingResourceUID)$")
#: Identifiers of devices, print jobs and media that later editions added outside the table.
_DEVICE_ID_KEYWORD = re.compile(
    r"(DeviceID|SourceID|OwnerID|PrintJobID|PrintQueueID|FileSetID|LotIdentifier|"
    r"SerialNumber)$"
)
_AGE = re.compile(r"(\d{3})([DWMY])")
_AGE_DAYS = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25}


@dataclass
class FileResult:
    """What the stage needs to know about one de-identified file (no PHI)."""

    path: Path
    patient_pseudonym: str
    study_pseudonym: str
    series_pseudonym: str
    modality: str
    series_description: str
    codes: list[str] = field(default_factory=list)


class Engine:
    """De-identifies datasets and files for one site and one set of options."""

    def __init__(self, site_name: str, site_secret: bytes, options: DeidConfig) -> None:
        self.site_name = site_name
        self.secret = site_secret
        self.options = options
        self.profile: Profile = build_profile(options)
        #: the method codes of the options (Profile.codes makes a new list every time)
        self.codes: tuple[str, ...] = tuple(self.profile.codes)
        self.uids = pseudo.UidMapper(site_secret)
        # Per-tag decisions for tags outside the table, computed once.
        self._default_cache: dict[int, Action] = {}
        # Ready-encoded marking elements, per (implicit VR, little endian).
        self._marks: dict[tuple[bool, bool], list[RawDataElement]] = {}
        #: the Patient Name and ID elements holding a pseudonym, per (pseudonym, encoding)
        self._pseudonyms: dict[tuple[str, bool, bool], list[RawDataElement]] = {}
        self._cleaners: dict[frozenset[tuple[str, str]], Cleaner] = {}
        self._vrs: dict[int, str] = {}
        #: identifiers inside removed sequences, by the sequence's bytes (see Walk)
        self.collect_memo: dict[tuple[Any, ...], frozenset[tuple[str, str]]] = {}
        #: ASCII values rewritten without decoding, by what the result depends on (see
        #: Walk.fast): a series repeats its UIDs, dates and emptied names in every file
        self.fast_memo: dict[tuple[Any, ...], tuple[RawDataElement | None, bool]] = {}
        #: (VR as read, VR typed by the dictionary, kind of identifier, action) per
        #: (tag, VR as read): decided once, not for every element of every file
        self.plans: dict[tuple[int, str | None], Plan] = {}
        #: (kind, values) an identifier's raw value adds, per (kind, VR, bytes, character
        #: set): the slices of a series repeat their names and dates (see Walk.record)
        self.record_memo: dict[tuple[Any, ...], tuple[tuple[str, str], ...]] = {}
        self.vocabulary: Vocabulary = vocabulary(options.vocabulary_files,
                                                 options.vocabulary_terms)
        self.identifying_tags = identifying_tags()

    @classmethod
    def from_config(cls, cfg: Config, site_secret: bytes) -> Engine:
        return cls(cfg.site.name, site_secret, cfg.deid)

    @staticmethod
    @lru_cache(maxsize=4)
    def shared(site_name: str, site_secret: bytes, options: DeidConfig) -> Engine:
        """This process's engine for one site and options: its profile, vocabulary and
        caches (per-tag decisions, cleaners of the series' identifiers) built once, not
        for every series a pool worker is handed."""
        return Engine(site_name, site_secret, options)

    # -- one file -----------------------------------------------------------------------

    def deidentify_file(self, src: Path, out_dir: Path) -> FileResult | None:
        """De-identify ``src`` into ``out_dir/<new SOP Instance UID>.dcm``.

        Returns None for DICOMDIR index files, which are never delivered (they list
        patient names; the receiver can rebuild one). Raises NotDicom, IdentityRisk or
        SeriesProblem.
        """
        ds = read_dicom(src)
        if _sop_class(ds) == _DICOMDIR_CLASS:
            return None
        result = self.deidentify_dataset(ds, meta=False)
        uid = peek(ds, 0x00080018)
        if not _UID_CHARS.fullmatch(uid):
            raise SeriesProblem("a file has a malformed SOP Instance UID; export it again",
                                code=ProblemCode.MALFORMED)
        out = out_dir / f"{uid}.dcm"
        # Written in place, not via a temporary file: a partial output of a crashed attempt
        # is wiped with the whole folder when the series is retried (DeidStage).
        try:
            meta = self._meta_values(ds)
            ts = meta[3][2].decode("ascii").strip("\x00 ")
            if can_write(ts):  # the new file meta written straight from its values
                with open(out, "wb") as fh:
                    fh.writelines(encode_with_meta(ds, meta, ts))
            else:  # deflated: pydicom compresses
                self._rebuild_meta(ds)
                ds.save_as(out, enforce_file_format=True)
        except (OSError, ValueError, TypeError, AttributeError, KeyError,
                struct.error) as exc:  # struct.error: a value too long for its VR
            out.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise SeriesProblem(
                    f"a de-identified file could not be written ({exc.strerror}); "
                    "check the free space of the agent's work folder",
                    code=ProblemCode.WORK_AREA) from None
            raise SeriesProblem(
                "unreadable DICOM: a file of the series could not be written back after "
                "de-identification, an element of it is damaged ("
                + ("a value too long for its VR" if isinstance(exc, struct.error)
                   else type(exc).__name__) + "); export the series again",
                code=ProblemCode.MALFORMED) from None
        result.path = out
        return result

    # -- one dataset --------------------------------------------------------------------

    def deidentify_dataset(self, ds: Dataset, *, meta: bool = True) -> FileResult:
        """De-identify ``ds`` in place (file meta rebuilt unless ``meta`` is False: the
        file writer writes the new meta from :meth:`_meta_values` itself, building no
        pydicom meta dataset for every file) and describe the result."""
        risk = refusal(ds, self.options.allow_pixel_identity)
        if risk is not None:
            raise IdentityRisk(
                f"the series {risk.reason}; it may show identity in its pixels and is not "
                f"delivered (a site that accepts this can add \"{risk.rule}\" to "
                "[deid] allow_pixel_identity)",
                code="identity-risk",
            )
        if not peek(ds, 0x00080018):
            raise SeriesProblem("a file has no SOP Instance UID, so it is not a valid image",
                                code=ProblemCode.MALFORMED)
        try:
            return self._deidentify(ds, meta)
        except SeriesProblem:
            raise
        except Exception as exc:  # noqa: BLE001 -- any parse error inside the walk
            raise NotDicom(
                f"a file holds a damaged DICOM element and cannot be de-identified safely "
                f"({type(exc).__name__})"
            ) from None

    def _deidentify(self, ds: Dataset, meta: bool = True) -> FileResult:
        patient_id = peek(ds, PATIENT_ID)
        fallback = "|".join((peek(ds, PATIENT_NAME), peek(ds, 0x00100030)))
        if fallback == "|":
            fallback = peek(ds, "StudyInstanceUID")
        key = pseudo.patient_key(patient_id, fallback)
        patient = pseudo.pseudonym_for_key(self.site_name, self.secret, key)
        study_uid = peek(ds, "StudyInstanceUID")
        series_uid = peek(ds, "SeriesInstanceUID")
        walk = Walk(
            engine=self,
            pseudonym=patient,
            days=pseudo.date_offset_days(self.secret, key, self.options.max_date_shift_days),
        )
        walk.dataset(ds)
        screen(walk.pending, self._cleaner(walk.identity), self.profile.required)
        self._mark(ds, patient, walk.shifted)
        if meta:
            self._rebuild_meta(ds)
        return FileResult(
            path=Path(),
            patient_pseudonym=patient,
            study_pseudonym=pseudo.short_pseudonym(self.secret, "study", study_uid),
            series_pseudonym=pseudo.short_pseudonym(
                self.secret, "series", f"{study_uid}|{series_uid}"
            ),
            modality=peek(ds, "Modality"),
            series_description=peek(ds, "SeriesDescription"),
            codes=list(self.codes),
        )

    def _cleaner(self, identity: set[tuple[str, str]]) -> Cleaner:
        """One Cleaner per distinct set of identifiers (a series shares them all)."""
        key = frozenset(identity)
        cleaner = self._cleaners.get(key)
        if cleaner is None:
            if len(self._cleaners) > 64:
                self._cleaners.clear()
            ids: IdentityVariants = build_variants(key, self.vocabulary.core)
            cleaner = self._cleaners[key] = Cleaner(ids, self.vocabulary)
        return cleaner

    # -- element helpers for the walk ----------------------------------------------------

    def vr_of(self, tag: int, raw: RawDataElement | DataElement) -> str:
        """The element's VR as read (the dictionary's for implicit VR; "UN" stays UN)."""
        vr = raw.VR
        if vr is not None:
            return str(vr)
        return self.dictionary_vr(tag)

    def plan(self, tag: int, read_vr: str | None) -> Plan:
        """What the walk does with a standard element: (VR as read - the dictionary's for
        implicit VR, "UN" stays UN -, VR typed by the dictionary, the kind of identifier
        it holds or None, the profile's action, and how the walk treats it with the
        screen's mode: :func:`agent.deid.walk.plan_mode`), remembered per (tag, VR as
        read)."""
        key = (tag, read_vr)
        plan = self.plans.get(key)
        if plan is None:
            vr = str(read_vr) if read_vr is not None else self.dictionary_vr(tag)
            typed = self.dictionary_vr(tag) if vr == "UN" else vr  # UN: by the dictionary
            kind = ("name" if typed == "PN" else "date" if typed in ("DA", "DT")
                    else self.identifying_tags.get(tag)) if tag not in PIXEL_DATA_TAGS else None
            action = self.profile.actions.get(tag)
            if action is None:
                action = self.default_action(tag)
            plan = self.plans[key] = (vr, typed, kind, action,
                                      *plan_mode(tag, action, vr, self.keep_mode))
        return plan

    def dictionary_vr(self, tag: int) -> str:
        vr = self._vrs.get(tag)
        if vr is None:
            try:
                vr = str(dictionary_VR(tag))
            except KeyError:
                vr = "UN"
            self._vrs[tag] = vr
        return vr

    @staticmethod
    def keep_mode(tag: int, vr: str) -> str:
        """How the screen cleans a kept text element (see :mod:`agent.deid.screen`)."""
        if tag == 0x00080104:
            return "descriptor"  # code meanings: allow-listed like descriptors
        if vr == "CS":
            return "cs"
        return "device" if tag in DEVICE_TAGS else "text"

    def cap_age(self, ds: Dataset, tag: int) -> None:
        """Ages above ``[deid] age_cap_years`` become one year more (HIPAA: "090Y")."""
        cap = self.options.age_cap_years
        if cap <= 0:
            return
        elements: Any = ds._dict
        raw = elements[tag]
        value = raw.value
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value or "")
        m = _AGE.fullmatch(text.strip("\x00 "))
        if m is None:
            if text.strip("\x00 "):
                write_ascii(ds, tag, raw, "AS", [])  # not an age we can read: dropped
            return
        days = int(m.group(1)) * _AGE_DAYS[m.group(2)]
        if days >= (cap + 1) * 365.25 - 0.5:
            write_ascii(ds, tag, raw, "AS", [f"{min(cap + 1, 999):03d}Y"])

    def _mark(self, ds: Dataset, patient: str, shifted: bool) -> None:
        """Record what was done (PS3.15 E.1.1 requirements).

        The elements are built as ready-encoded raw elements (the code sequence once per
        encoding): building pydicom Datasets for them costs more than the rest of the file.
        """
        elements: Any = ds._dict
        implicit, little = _encoding(ds)
        codes = self.codes
        cached = self._marks.get((implicit, little))
        if cached is None:
            method = [DEIDENTIFICATION_METHOD] + [CODE_MEANINGS[c][:64] for c in codes[1:]]
            seq = encode_items([self._code_item(c) for c in codes], implicit=implicit,
                               little=little)
            cached = [
                raw_text(0x00120062, "CS", ["YES"], implicit=implicit, little=little),
                raw_text(0x00120063, "LO", method, implicit=implicit, little=little),
                RawDataElement(BaseTag(0x00120064), "SQ", len(seq), seq, 0, implicit, little),
            ]
            if self.options.retain_longitudinal_modified_dates:
                cached.append(
                    raw_text(0x00280303, "CS", ["MODIFIED"], implicit=implicit, little=little)
                )
            self._marks[(implicit, little)] = cached
        named = self._pseudonyms.get((patient, implicit, little))
        if named is None:  # the series' patient: encoded once
            if len(self._pseudonyms) >= 1024:
                self._pseudonyms.clear()
            named = self._pseudonyms[(patient, implicit, little)] = [
                raw_text(PATIENT_NAME, "PN", [patient], implicit=implicit, little=little),
                raw_text(PATIENT_ID, "LO", [patient], implicit=implicit, little=little),
            ]
        marks = cached + named
        if shifted and not self.options.retain_longitudinal_modified_dates:
            marks.append(raw_text(0x00280303, "CS", ["MODIFIED"], implicit=implicit,
                                  little=little))
        for elem in marks:
            elements[elem.tag] = elem

    @staticmethod
    def _code_item(code: str) -> Dataset:
        item = Dataset()
        items: Any = item._dict
        for elem in (
            DataElement(0x00080100, "SH", code),
            DataElement(0x00080102, "SH", "DCM"),
            DataElement(0x00080104, "LO", CODE_MEANINGS[code]),
        ):
            items[elem.tag] = elem
        return item

    def _rebuild_meta(self, ds: Dataset) -> None:
        """A new file meta: ours, nothing of the source's (AE titles, private info)."""
        meta = FileMetaDataset()
        items: Any = meta._dict
        # Raw (ready-encoded, explicit VR little endian) elements: no per-file validation.
        for tag, vr, value in self._meta_values(ds):
            key = BaseTag(tag)
            items[key] = RawDataElement(key, vr, len(value), value, 0, False, True)
        ds.file_meta = meta
        ds.preamble = b"\x00" * 128  # the source's preamble may hold anything (TIFF headers)

    def _meta_values(self, ds: Dataset) -> list[tuple[int, str, bytes]]:
        """(tag, VR, padded value) of the new file meta, in tag order; the fourth is the
        Transfer Syntax UID (the source's, else the dataset's encoding as read)."""
        old = getattr(ds, "file_meta", None)
        ts = peek(old, 0x00020010) if old is not None else None
        if not ts:
            implicit, little = ds.original_encoding
            if implicit:
                ts = pydicom.uid.ImplicitVRLittleEndian
            elif little:
                ts = pydicom.uid.ExplicitVRLittleEndian
            else:
                ts = pydicom.uid.ExplicitVRBigEndian
        out = []
        for tag, vr, value in (
            (0x00020001, "OB", b"\x00\x01"),
            (0x00020002, "UI", _sop_class(ds).encode("ascii", "replace")),
            (0x00020003, "UI", peek(ds, 0x00080018).encode("ascii", "replace")),
            (0x00020010, "UI", str(ts).encode("ascii", "replace")),
            (0x00020012, "UI", _IMPLEMENTATION_UID),
            (0x00020013, "SH", _IMPLEMENTATION_NAME),
        ):
            if len(value) % 2:
                value += b"\x00" if vr == "UI" else b" "
            out.append((tag, vr, value))
        return out

    # -- decisions for tags outside the table ------------------------------------------

    def default_action(self, tag: int) -> Action:
        """The action for a standard (even-group) tag that Table E.1-1 does not list."""
        cached = self._default_cache.get(tag)
        if cached is not None:
            return cached
        action = self._decide_default(tag)
        self._default_cache[tag] = action
        return action

    def _decide_default(self, tag: int) -> Action:
        from agent.deid.profile import PATIENT_GROUP_KEEP

        group, elem = tag >> 16, tag & 0xFFFF
        if elem == 0 or group in (0x0000, 0x0002, 0x0004) or tag in (0xFFFCFFFC, 0x00080001):
            return Action.REMOVE  # lengths, commands, meta, DICOMDIR records, padding
        if 0x5000 <= group <= 0x501E or 0x6000 <= group <= 0x601E:
            return Action.REMOVE  # curves and overlays (may hold drawn text)
        try:
            vr = str(dictionary_VR(tag))
        except KeyError:
            return Action.REMOVE  # unknown to us: fail closed
        if group == 0x0010 and tag not in PATIENT_GROUP_KEEP:
            return Action.REMOVE  # later patient-module rows (names to use, pronouns ...)
        if vr == "SQ":
            return Action.RECURSE
        if vr in _FREE_TEXT_VRS:
            return Action.REMOVE
        if vr in ("DA", "DT"):
            return Action.SHIFT if self.options.retain_longitudinal_modified_dates else (
                Action.REMOVE
            )
        if vr == "UI":
            if _CLASS_UID_KEYWORD.search(keyword_for_tag(tag) or ""):
                return Action.KEEP
            return Action.UID
        if _DEVICE_ID_KEYWORD.search(keyword_for_tag(tag) or ""):
            return Action.REMOVE  # identifies a device, job or medium (not in the table)
        if vr in _CLEANABLE_VRS and vr != "CS":
            return Action.SCRUB
        return Action.KEEP


def _encoding(ds: Dataset) -> tuple[bool, bool]:
    """(implicit VR, little endian) of the dataset as read."""
    meta = getattr(ds, "file_meta", None)
    # peek: the raw bytes (FileMetaDataset.get decodes the element, a cost per file)
    ts = peek(meta, 0x00020010) if meta is not None else ""
    if ts == "1.2.840.10008.1.2":
        return True, True
    if ts == "1.2.840.10008.1.2.2":
        return False, False
    if ts:
        return False, True
    implicit, little = ds.original_encoding
    return bool(implicit), bool(little) if little is not None else True


def _sop_class(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    return peek(ds, 0x00080016) or (peek(meta, 0x00020002) if meta is not None else "")


def read_dicom(src: Path) -> Dataset:
    """Parse a file (lazily: values are decoded on access). Raises NotDicom."""
    try:
        data = src.read_bytes()
    except OSError as exc:
        raise NotDicom(
            f"a file of the series cannot be read ({exc.strerror}); check the staging folder"
        ) from None
    fast = read_fast(data, str(src))
    if fast is not None:
        return fast
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError,
            IndexError, NotImplementedError, AttributeError, OverflowError) as exc:
        raise NotDicom(
            f"a file of the series cannot be read as DICOM ({type(exc).__name__}); "
            "re-export the series from the viewer"
        ) from None
    elements: Any = ds._dict
    for raw in elements.values():
        if (isinstance(raw, RawDataElement) and raw.length != 0xFFFFFFFF
                and isinstance(raw.value, bytes) and len(raw.value) != raw.length):
            raise NotDicom(
                "a file of the series is truncated (an export still being written, or "
                "interrupted); export the series again"
            )
    if not ds._dict or ("SOPClassUID" not in ds and not _sop_class(ds)):
        raise NotDicom(
            "a file of the series is not a DICOM object (no SOP Class UID); "
            "re-export the series from the viewer"
        )
    return ds


def deidentify_file(
    src: Path, out_dir: Path, *, site_name: str, site_secret: bytes,
    options: DeidConfig | None = None,
) -> FileResult | None:
    """Convenience: one file with a one-off :class:`Engine` (tests, benchmark)."""
    engine = Engine(site_name, site_secret, options or DeidConfig())
    return engine.deidentify_file(src, out_dir)
