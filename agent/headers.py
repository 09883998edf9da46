"""Whether the headers of a staged series can be used at all, said in words a person acts on.

A damaged export file (a copy interrupted, bytes garbled by a disk or a network) often
still parses: pydicom reads what it can and hands on elements whose value representation
is two letters that are no VR, or an image description that is not a number. Each stage
then failed on it in its own way, with a library's exception reported as the agent's own
bug (``internal``: "send the log folder to support"). So the headers of the staged files
are looked at once, before any stage runs (on the parse :mod:`agent.limits` makes anyway,
so it costs nothing more), and such a file sends the series to quarantine with a reason
that names the file by its place in the series, the element by its tag - never a value:
values may be PHI - and what to do.

Only what no real image can have is refused: value representations DICOM does not
define, and an image size or sample layout that is not a whole number or is below the
least any image has (Rows 0, Samples per Pixel 0). Everything else is the stages' to judge.
"""

from __future__ import annotations

from pydicom import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.tag import Tag
from pydicom.valuerep import VR

from agent.errors import SeriesProblem
from agent.vocab import ProblemCode

_VRS = frozenset(vr.value for vr in VR)

#: The image description every pixel reader relies on: (name, tag, least valid value).
_IMAGE = (
    ("Rows", 0x00280010, 1),
    ("Columns", 0x00280011, 1),
    ("Samples per Pixel", 0x00280002, 1),
    ("Bits Allocated", 0x00280100, 1),
    ("Bits Stored", 0x00280101, 1),
    ("High Bit", 0x00280102, 0),
    ("Pixel Representation", 0x00280103, 0),
    ("Planar Configuration", 0x00280006, 0),
    ("Number of Frames", 0x00280008, 1),
)

TITLE = "Damaged file in the export"


def file_place(index: int, count: int) -> str:
    """How a file is named in a reason: by its place, never its name (names hold PHI)."""
    return f"file {index + 1} of {count} of the series"


def check_header(ds: Dataset, index: int, count: int) -> None:
    """Raise :class:`~agent.errors.SeriesProblem` (``damaged`` or ``malformed``) when the
    header of file ``index`` of ``count`` cannot be used by the stages."""
    place = file_place(index, count)
    found = _unknown_vr(ds)
    if found is not None:
        tag, what = found
        raise SeriesProblem(
            f"unreadable DICOM: {place} is damaged: its element {Tag(tag)} {what} (bytes "
            "of the file are garbled); export the series again",
            code=ProblemCode.DAMAGED, title=TITLE)
    for name, tag, least in _IMAGE:
        if tag not in ds:
            continue
        if ds[tag].is_empty:
            continue  # an empty value: the stages' defaults apply
        value = _whole_number(ds, tag)
        if value is None or value < least:
            what = "not a whole number" if value is None else f"{value}"
            raise SeriesProblem(
                f"unreadable DICOM: {place} has a header no image can have: its {name} "
                f"{Tag(tag)} is {what}; export the series again from the scanner or PACS",
                code=ProblemCode.MALFORMED, title=TITLE)


def _unknown_vr(ds: Dataset) -> tuple[int, str] | None:
    """The first element, at any depth, whose VR is none of DICOM's, or a sequence whose
    items do not parse, and what is wrong with it (sequences are parsed when the file is
    read: walking them reads nothing more)."""
    elements = ds._dict
    for tag, elem in elements.items():
        if int(tag) >> 16 == 0xFFFE:
            return int(tag), "is an item tag where an element should be"
        vr = getattr(elem, "VR", None)
        if vr is None:  # implicit VR: the dictionary's, when the value is used
            if _dictionary_vr(int(tag)) != "SQ":
                continue
            vr = "SQ"
        if str(vr) not in _VRS:
            return int(tag), (f"has the value representation {_shown(str(vr))}, which "
                              "DICOM does not define")
        if vr == "SQ":
            try:
                items = ds[tag].value
                for item in items or ():
                    found = _unknown_vr(item)
                    if found is not None:
                        return found
            except Exception:  # noqa: BLE001 -- any failure to read its items is damage
                return int(tag), "is a sequence whose items cannot be read"
    return None


def _dictionary_vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return ""


def _shown(vr: str) -> str:
    """Two capitals as they are ('UH'); anything else as its byte values (no raw text)."""
    if len(vr) == 2 and vr.isascii() and vr.isalpha() and vr.isupper():
        return f"'{vr}'"
    if vr.startswith("0x"):
        return f"({vr})"
    return "(" + " ".join(f"0x{b:02x}" for b in vr.encode("latin-1", "replace")) + ")"


def _whole_number(ds: Dataset, tag: int) -> int | None:
    try:
        value = ds[tag].value
    except Exception:  # noqa: BLE001 -- a value pydicom cannot convert is no number
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = value.strip() if isinstance(value, str) else ""
    return int(text) if text.isdigit() else None


__all__ = ["TITLE", "check_header", "file_place"]
