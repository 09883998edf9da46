"""What a site sends: the ``select`` stage, first in the pipeline.

A series that is not sent ends **withheld** with a stated reason - not quarantined: nothing
is wrong with it and nobody needs to act. Two kinds of rule, both decided from the headers
of the staged originals (a sample of its files: first, middle, last, and every file of a
short series):

* what the product never sends as it stands (rules as data in ``agent/data/send_policy.json``):
  reports (structured reports, Siemens Phoenix protocol reports, encapsulated documents),
  raw and spectroscopy data, presentation states and other non-images; localizers/scouts
  unless ``[send] localizers`` says otherwise (screen captures and derived images are the
  ``pixels`` stage's to read, redact or withhold: ``[pixels] deliver_captures``);
* what the site chose (``[send]``): modalities, Image Type values, description patterns,
  3-D acquisitions only.

Withholding only ever holds data back, so header words may decide it. Whether a series that
*is* sent shows a face is decided later from its pixels (:mod:`agent.deface`), never here.
Projections (MIPs, Philips "Projected from" series) are derived images, not localizers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from agent.config import Config, SendConfig
from agent.errors import Withheld
from agent.vocab import WithheldCode
from agent.work import SeriesWork

_DATA = Path(__file__).resolve().parent / "data" / "send_policy.json"
#: Files of a series read in full for the tri-planar localizer check (small series only).
_SMALL_SERIES = 64
#: A tri-planar scout: images in two or more planes, few per plane, acquired (not derived).
_SCOUT_MAX_PER_PLANE = 10
_HEADER_TAGS = [
    "SOPClassUID", "Modality", "ImageType", "SeriesDescription", "ProtocolName",
    "ImageOrientationPatient", "ConversionType", "MRAcquisitionType", "NumberOfFrames",
    "DerivationDescription", "SharedFunctionalGroupsSequence",
]


@dataclass(frozen=True)
class Rules:
    """The product's fixed rules (from the data file)."""

    classes: tuple[tuple[str, WithheldCode, str], ...]
    modalities: dict[str, tuple[WithheldCode, str]]
    image_types: dict[str, tuple[WithheldCode, str]]
    report_words: re.Pattern[str]
    localizer_words: re.Pattern[str]
    projection_types: frozenset[str]
    projection_words: re.Pattern[str]
    #: Words naming a QA phantom in a description or the patient's name or ID; and those
    #: with the further words that name one only as the patient (agent.deface.phantom:
    #: they may only withhold a series no head template fits, never deliver it).
    phantom_words: re.Pattern[str]
    phantom_patient_words: re.Pattern[str]


@lru_cache(maxsize=1)
def rules(path: Path = _DATA) -> Rules:
    raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return Rules(
        classes=tuple((c["prefix"], WithheldCode(c["code"]), c["what"]) for c in raw["classes"]),
        modalities={k: (WithheldCode(v[0]), v[1]) for k, v in raw["modalities"].items()},
        image_types={k: (WithheldCode(v[0]), v[1]) for k, v in raw["image_types"].items()},
        report_words=re.compile(raw["report_descriptions"], re.I),
        localizer_words=re.compile(raw["localizer_descriptions"], re.I),
        projection_types=frozenset(raw["projection_image_types"]),
        projection_words=re.compile(raw["projection_descriptions"], re.I),
        phantom_words=re.compile(raw["phantom_words"], re.I),
        phantom_patient_words=re.compile(
            f"{raw['phantom_words']}|{raw['phantom_patient_words']}", re.I),
    )


@dataclass
class SeriesFacts:
    """What the rules look at, read from headers (no pixel data). Holds no PHI beyond what
    the staged files hold; never logged."""

    files: int = 0
    sop_classes: set[str] = field(default_factory=set)
    modalities: set[str] = field(default_factory=set)
    image_types: set[str] = field(default_factory=set)
    #: Value 1 of Image Type of each sampled image (ORIGINAL / DERIVED).
    pixel_origins: set[str] = field(default_factory=set)
    descriptions: list[str] = field(default_factory=list)
    conversion: bool = False
    acquisition_types: set[str] = field(default_factory=set)
    #: Images per orientation (rounded direction cosines), over every file of a small series.
    planes: dict[tuple[int, ...], int] = field(default_factory=dict)
    frames: int = 0

    @property
    def text(self) -> str:
        return " ".join(self.descriptions)


def _values(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [str(v).strip().upper() for v in value]
    return [v.strip().upper() for v in str(value).split("\\")]


def read_facts(files: list[Path]) -> SeriesFacts:
    """Facts of a series from a sample of its files (every file of a short series)."""
    facts = SeriesFacts(files=len(files))
    if len(files) <= _SMALL_SERIES:
        sample = list(files)
    else:
        sample = [files[0], files[len(files) // 2], files[-1]]
    for path in sample:
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        except Exception:  # noqa: BLE001 - an unreadable file is the de-identifier's to refuse
            continue
        _add(facts, ds)
    return facts


def _add(facts: SeriesFacts, ds: Dataset) -> None:
    facts.sop_classes.add(str(ds.get("SOPClassUID", "") or "").strip())
    facts.modalities.add(str(ds.get("Modality", "") or "").strip().upper())
    types = _values(ds.get("ImageType"))
    shared = ds.get("SharedFunctionalGroupsSequence")
    facts.image_types.update(types)
    if types:
        facts.pixel_origins.add(types[0])
    for kw in ("SeriesDescription", "ProtocolName", "DerivationDescription"):
        value = str(ds.get(kw, "") or "").strip()
        if value and value not in facts.descriptions:
            facts.descriptions.append(value)
    facts.conversion |= bool(str(ds.get("ConversionType", "") or "").strip())
    facts.acquisition_types.update(_values(ds.get("MRAcquisitionType")))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    facts.frames += frames
    iop = ds.get("ImageOrientationPatient")
    if iop is None and shared:
        orient = shared[0].get("PlaneOrientationSequence")
        iop = orient[0].get("ImageOrientationPatient") if orient else None
    try:
        key = tuple(round(float(v) * 20) for v in iop) if iop else ()
    except (TypeError, ValueError):
        key = ()
    facts.planes[key] = facts.planes.get(key, 0) + frames


def is_projection(facts: SeriesFacts) -> bool:
    r = rules()
    return bool(facts.image_types & r.projection_types) or bool(
        r.projection_words.search(facts.text))


def is_localizer(facts: SeriesFacts) -> bool:
    """A localizer or scout, by Image Type, by name, or as a tri-planar set of a few
    acquired images. Projections (MIPs) are derived images and never localizers."""
    if "LOCALIZER" in facts.image_types or "SCOUT" in facts.image_types:
        return True
    if is_projection(facts):
        return False
    if rules().localizer_words.search(facts.text):
        return True
    planes = [n for k, n in facts.planes.items() if k]
    return (len(planes) > 1 and max(planes) <= _SCOUT_MAX_PER_PLANE
            and facts.files <= _SMALL_SERIES and facts.pixel_origins <= {"ORIGINAL"})


def fixed_rule(facts: SeriesFacts, send: SendConfig) -> Withheld | None:
    """The product's own rules: reports, raw data, non-images, localizers, captures."""
    found = _kind(facts)
    return _held(*found, send) if found is not None else None


def _kind(facts: SeriesFacts) -> tuple[WithheldCode, str] | None:
    """What the product does not send as it stands, and in words; None for an image."""
    r = rules()
    found = _by_class(facts, r)
    if found is not None:
        return found
    for value in sorted(facts.image_types - {"LOCALIZER", "SCOUT"}):
        if value in r.image_types:
            return r.image_types[value]
    if r.report_words.search(facts.text):
        return WithheldCode.REPORT, "a scanner or dose report"
    if is_localizer(facts):
        return WithheldCode.LOCALIZER, "a localizer (scout)"
    return None


def _by_class(facts: SeriesFacts, r: Rules) -> tuple[WithheldCode, str] | None:
    for sop in facts.sop_classes:
        for prefix, code, what in r.classes:
            if sop == prefix or sop.startswith(prefix + "."):
                return code, what
    for modality in facts.modalities:
        if modality in r.modalities:
            return r.modalities[modality]
    return None


def _held(code: WithheldCode, what: str, send: SendConfig) -> Withheld | None:
    allowed = {WithheldCode.LOCALIZER: send.localizers,
               WithheldCode.REPORT: send.reports,
               WithheldCode.RAW_DATA: send.raw_data}
    if allowed.get(code, False):
        return None
    hint = {
        WithheldCode.LOCALIZER: " (set [send] localizers = true to send localizers, "
                                "defaced like any image)",
    }.get(code, "")
    return Withheld(f"not sent: this series is {what}{hint}", code=code)


def site_rule(facts: SeriesFacts, send: SendConfig) -> Withheld | None:
    """The site's own choice of what to send (``[send]``)."""
    def held(why: str) -> Withheld:
        return Withheld(f"not sent by this site's selection: {why}",
                        code=WithheldCode.SITE_POLICY)

    wanted = {m.strip().upper() for m in send.modalities}
    if wanted and not facts.modalities & wanted:
        return held(f"modality {'/'.join(sorted(facts.modalities)) or 'unknown'} is not in "
                    "[send] modalities")
    excluded = {t.strip().upper() for t in send.exclude_image_types}
    hit = sorted(facts.image_types & excluded)
    if hit:
        return held(f"its Image Type holds {hit[0]} ([send] exclude_image_types)")
    if send.exclude_descriptions and re.search(send.exclude_descriptions, facts.text, re.I):
        return held("its description matches [send] exclude_descriptions")
    if send.include_descriptions and not re.search(send.include_descriptions, facts.text,
                                                   re.I):
        return held("its description does not match [send] include_descriptions")
    if send.only_3d and "CT" not in facts.modalities and "3D" not in facts.acquisition_types:
        return held("it is not a 3-D acquisition ([send] only_3d)")
    return None


def decide(facts: SeriesFacts, cfg: Config) -> Withheld | None:
    """Why the series is withheld, or None when it is sent."""
    send = cfg.send
    if not cfg.deface.quarantine_localizers:  # the older key keeps working
        send = _with_localizers(send)
    return fixed_rule(facts, send) or site_rule(facts, send)


def _with_localizers(send: SendConfig) -> SendConfig:
    import dataclasses

    return dataclasses.replace(send, localizers=True)


class SelectStage:
    """A :class:`~agent.work.Stage`: withholds what the site does not send (module doc)."""

    name = "select"

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        rules()  # a broken data file stops the agent at start, not series by series

    def __call__(self, work: SeriesWork) -> None:
        held = decide(read_facts(list(work.files)), self.cfg)
        if held is not None:
            raise held
