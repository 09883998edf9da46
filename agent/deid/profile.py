"""PS3.15 Annex E Table E.1-1 as data, resolved into one action per tag.

The table ships in ``agent/deid/data`` (edition 2024b, as parsed by the innolitics
dicom-standard project) together with Table E.3.10-1 (safe private attributes). The
:class:`Profile` turns the table's Basic Profile column plus the enabled option columns
into a single :class:`Action` per tag, so that the engine does one dictionary lookup per
element.

Resolution rules (why: the table's combined actions depend on the IOD's attribute type,
which an agent handling every modality cannot know for each attribute; a dummy value is
valid for type 1, 2 and 3 alike and carries no information, an empty value is valid for
type 2 and 3):

* ``X/Z`` -> Z, ``X/D``, ``X/Z/D``, ``Z/D`` -> D, ``X/Z/U*`` -> keep the sequence and
  remap the UIDs inside it (every sequence is recursed into anyway).
* An enabled option overrides the basic action: ``K`` keeps, ``C`` on a date/time row
  with Retain Longitudinal Modified Dates shifts dates (DA, DT) and keeps times (TM:
  the shift is whole days), ``C`` under Clean Descriptors/Patient Characteristics cleans
  short text (SH, LO, CS, UC) and removes long free text (LT, ST, UT), which cannot be
  vouched for.
* ``D`` on a sequence keeps the sequence and cleans its items.
"""

from __future__ import annotations

import csv
import enum
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from agent.config import DeidConfig


class Action(enum.Enum):
    KEEP = "K"
    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    UID = "U"
    CLEAN = "C"
    SHIFT = "S"
    #: Keep a sequence and process its items (X/Z/U*, D on SQ).
    RECURSE = "R"
    #: Patient Name and Patient ID: the keyed site pseudonym.
    PSEUDONYM = "P"
    #: Text outside the table: kept, minus the object's own identifiers (fail closed).
    SCRUB = "Y"

    # Hashed by identity in C (members are singletons and compare by identity): Enum's
    # own __hash__ is a Python call, paid for every memo key holding an action.
    __hash__ = object.__hash__


#: De-identification method codes (PS3.16 CID 7050), by option.
CODE_BASIC = "113100"
CODE_CLEAN_DESCRIPTORS = "113105"
CODE_MODIFIED_DATES = "113107"
CODE_PATIENT_CHARACTERISTICS = "113108"
CODE_SAFE_PRIVATE = "113111"
CODE_MEANINGS = {
    CODE_BASIC: "Basic Application Confidentiality Profile",
    CODE_CLEAN_DESCRIPTORS: "Clean Descriptors Option",
    CODE_MODIFIED_DATES: "Retain Longitudinal Temporal Information Modified Dates Option",
    CODE_PATIENT_CHARACTERISTICS: "Retain Patient Characteristics Option",
    CODE_SAFE_PRIVATE: "Retain Safe Private Option",
}

TABLE_FILE = "ps3.15-table-E.1-1-2024b.json"
SAFE_PRIVATE_FILE = "ps3.15-table-E.3.10-1-safe-private.csv"
ADDITIONS_FILE = "profile-additions.json"

PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020

#: Group 0010 attributes that are not in the table and may be kept: technical or
#: characteristics that identify nobody. Every other group-0010 attribute not in the table
#: (later editions' Name to Use, pronouns, gender identity, ...) is removed.
PATIENT_GROUP_KEEP = frozenset(
    {
        0x00100022,  # Type of Patient ID
        0x00100028,  # Subject Relative Position in Image
        0x00100200,  # Quality Control Subject
        0x00101022,  # Patient's Body Mass Index
        0x00101023,  # Measured AP Dimension
        0x00101024,  # Measured Lateral Dimension
        0x00102201,  # Patient Species Description
        0x00102202,  # Patient Species Code Sequence
        0x00102210,  # Anatomical Orientation Type
        0x00109431,  # Examined Body Thickness
    }
)

_LONG_TEXT = frozenset({"LT", "ST", "UT"})
_DATE_VRS = frozenset({"DA", "DT"})


@dataclass(frozen=True)
class Row:
    """One row of Table E.1-1 (or of our additions)."""

    tag: int
    name: str
    basic: str
    options: dict[str, str]


def _parse_tag(text: str) -> int | None:
    """``"(0008,0050)"`` -> 0x00080050; None for the pattern rows (50XX, 60XX, odd groups)."""
    digits = text.strip("() ").replace(",", "")
    try:
        return int(digits, 16)
    except ValueError:
        return None


@lru_cache(maxsize=1)
def table_rows() -> tuple[Row, ...]:
    """Every concrete-tag row of the shipped table plus our additions."""
    base = resources.files("agent.deid") / "data"
    raw = json.loads((base / TABLE_FILE).read_text(encoding="utf-8"))
    raw += json.loads((base / ADDITIONS_FILE).read_text(encoding="utf-8"))
    rows = []
    for item in raw:
        tag = _parse_tag(item["tag"])
        if tag is None:
            continue  # pattern rows are implemented in code (engine: overlays, curves, private)
        options = {k: v for k, v in item.items() if k.endswith("Opt")}
        rows.append(Row(tag, item["name"], item["basicProfile"], options))
    return tuple(rows)


@lru_cache(maxsize=1)
def safe_private() -> frozenset[tuple[int, int, str]]:
    """Table E.3.10-1 as ``(group, element within block, private creator)``."""
    base = resources.files("agent.deid") / "data"
    text = (base / SAFE_PRIVATE_FILE).read_text(encoding="utf-8")
    out = set()
    for rec in csv.DictReader(text.splitlines()):
        group, elem = int(rec["group"], 16), int(rec["element_in_block"], 16)
        out.add((group, elem, rec["private_creator"].strip()))
    return frozenset(out)


def _basic(code: str, vr: str) -> Action:
    """Resolve a Basic Profile cell to one action (see the module docstring)."""
    if code == "X/Z/U*":
        return Action.RECURSE
    if code == "X/Z":
        code = "Z"
    elif code in ("X/D", "X/Z/D", "Z/D"):
        code = "D"
    if code == "D" and vr == "SQ":
        return Action.RECURSE
    if code == "U" and vr == "SQ":
        return Action.RECURSE
    return Action(code)


@dataclass(frozen=True)
class Profile:
    """Resolved actions for one set of options."""

    actions: dict[int, Action]
    options: DeidConfig
    safe_private: frozenset[tuple[int, int, str]]
    #: Tags whose basic action allows a dummy (D, X/D, Z/D ...): the attribute may be
    #: required, so a descriptor cleaned to nothing gets a dummy value instead.
    required: frozenset[int] = frozenset()

    @property
    def codes(self) -> list[str]:
        """The method codes for the options applied, 113100 first."""
        codes = [CODE_BASIC]
        if self.options.retain_longitudinal_modified_dates:
            codes.append(CODE_MODIFIED_DATES)
        if self.options.retain_patient_characteristics:
            codes.append(CODE_PATIENT_CHARACTERISTICS)
        if self.options.clean_descriptors:
            codes.append(CODE_CLEAN_DESCRIPTORS)
        if self.options.retain_safe_private:
            codes.append(CODE_SAFE_PRIVATE)
        return codes


def _vr_of(tag: int) -> str:
    from pydicom.datadict import dictionary_VR

    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def resolve(row: Row, opts: DeidConfig) -> Action:
    """The action for one row under ``opts``."""
    vr = _vr_of(row.tag)
    if row.tag in (PATIENT_NAME, PATIENT_ID):
        return Action.PSEUDONYM
    action = _basic(row.basic, vr)
    o = row.options
    if opts.retain_patient_characteristics and "rtnPatCharsOpt" in o:
        action = Action.KEEP if o["rtnPatCharsOpt"] == "K" else _clean(vr, action)
    if opts.retain_longitudinal_modified_dates and o.get("rtnLongModifDatesOpt") == "C":
        if vr in _DATE_VRS:
            action = Action.SHIFT
        elif vr == "TM":
            action = Action.KEEP  # whole-day shifts leave times of day unchanged
    if opts.clean_descriptors and o.get("cleanDescOpt") == "C" and action is not Action.KEEP:
        action = _clean(vr, action)
    return action


def _clean(vr: str, basic: Action) -> Action:
    if vr == "SQ":
        return Action.RECURSE
    if vr in _LONG_TEXT:
        # Long free text cannot be vouched for: remove it, or empty it if a value is needed.
        return Action.REMOVE if basic is Action.REMOVE else Action.EMPTY
    return Action.CLEAN


@lru_cache(maxsize=16)
def build_profile(opts: DeidConfig) -> Profile:
    """The resolved profile for ``opts`` (cached: DeidConfig is frozen and hashable)."""
    actions = {row.tag: resolve(row, opts) for row in table_rows()}
    required = frozenset(row.tag for row in table_rows() if "D" in row.basic.split("/"))
    return Profile(actions=actions, options=opts, safe_private=safe_private(),
                   required=required)
