"""Read a value without decoding it into pydicom's element (which the writer then re-encodes).

``ds[tag]`` replaces the raw element by a decoded one for good; looking at a few values
(Modality, Patient ID, ...) that way would make the writer re-encode them for nothing.
"""

from __future__ import annotations

from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

_TAGS: dict[str, int | None] = {}


def _tag(keyword: str) -> int | None:
    """Keywords looked up once (pydicom's lookup is a Python function)."""
    tag = _TAGS.get(keyword, -1)
    if tag == -1:
        tag = _TAGS[keyword] = tag_for_keyword(keyword)
    return tag

def peek(ds: Dataset, key: int | str) -> str:
    """The value as text (multiple values joined by backslashes), "" when absent.

    ASCII values are read straight from the raw bytes; anything else is decoded by pydicom
    with the dataset's character set.
    """
    tag = _tag(key) if isinstance(key, str) else key
    if tag is None:
        return ""
    elements: Any = ds._dict
    raw = elements.get(tag)
    if raw is None:
        return ""
    if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes) and raw.VR != "UN":
        try:
            return raw.value.decode("ascii").strip("\x00 ")
        except UnicodeDecodeError:
            pass
    try:
        value = ds[tag].value
    except Exception:  # noqa: BLE001 -- an unreadable value reads as absent
        return ""
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1").strip("\x00 ")
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip("\x00 ")
