"""Clean Descriptors: keep a short descriptor's meaning, drop what could identify.

A Series Description such as ``"T1 MPRAGE SAG"`` is what a research pipeline sorts on, so
it is kept; but technologists type names, dates and record numbers into it. Cleaning
removes, case-insensitively: every identifier of the object itself (name components, IDs,
accession, dates in common written forms), anything that looks like a date, an e-mail, a
telephone number, and runs of 5 or more digits (record numbers). What remains is kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_PATTERNS = re.compile(
    r"""
    \b\d{4}[-./]\d{1,2}[-./]\d{1,2}\b        # 2024-01-31, 2024.01.31
  | \b\d{1,2}[-./]\d{1,2}[-./]\d{2,4}\b      # 31.01.2024, 01/31/24
  | [\w.+-]+@[\w-]+(\.[\w-]+)+               # e-mail
  | \+?\d[\d ()-]{7,}\d                      # telephone numbers
  | \d{5,}                                   # record numbers, YYYYMMDD, long IDs
    """,
    re.VERBOSE,
)
_SPACES = re.compile(r"\s{2,}")


class Cleaner:
    """Removes ``identifiers`` (and the patterns above) from short free text."""

    def __init__(self, identifiers: Iterable[str]) -> None:
        # Too short or small numbers would strip meaning ("CT", "12") from every descriptor.
        words = sorted(
            {w.strip() for w in identifiers
             if len(w.strip()) >= 3 and not (w.strip().isdigit() and len(w.strip()) < 5)},
            key=len, reverse=True,
        )
        parts = [re.escape(w) if len(w) >= 4 else rf"\b{re.escape(w)}\b" for w in words]
        self._ids = re.compile("|".join(parts), re.IGNORECASE) if parts else None
        # The same search on raw bytes: lets the engine skip decoding clean values.
        long_words = [re.escape(w.encode("utf-8", "replace")) for w in words]
        self._raw = re.compile(b"|".join(long_words), re.IGNORECASE) if long_words else None

    def __call__(self, text: str) -> str:
        """Clean Descriptors: identifiers and identifying patterns removed."""
        out = self.scrub(text)
        out = _PATTERNS.sub(" ", out)
        return _SPACES.sub(" ", out).strip(" -_,;:/^")

    def scrub(self, text: str) -> str:
        """Only the object's own identifiers removed (for text outside the table)."""
        if self._ids is None:
            return text
        return _SPACES.sub(" ", self._ids.sub(" ", text)).strip(" -_,;:/^")

    def may_contain(self, raw: bytes | bytearray) -> bool:
        """Whether ``raw`` (an undecoded value) might hold one of the identifiers."""
        return self._raw is not None and self._raw.search(raw) is not None
