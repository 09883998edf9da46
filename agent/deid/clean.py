"""Cleaning text that the profile keeps: descriptors by allow-list, other text by search.

A Series Description such as ``"T1 MPRAGE SAG"`` is what a research pipeline sorts on, so
it is kept; but technologists type names, dates and record numbers into it, and a list of
what to remove is never complete. Descriptors (the attributes Clean Descriptors marks
``C`` in Table E.1-1, and code meanings of local codes) are therefore cleaned by
**allow-list**:

1. every identifier of the study (:mod:`agent.deid.variants`: names, IDs, dates,
   places, phone numbers in all their spellings), any date however written, e-mail
   addresses, telephone-like numbers, UID-like dotted numbers and runs of 5+ digits are
   cut out;
2. the rest is split into tokens (runs of letters and digits; ``1.5T`` is one token) and
   a token stays only if the imaging vocabulary keeps it
   (:mod:`agent.deid.vocabulary`); the separators between kept tokens stay as written.

Other text the profile keeps (code strings such as Image Type, Ethnic Group under Retain
Patient Characteristics, attributes outside the table, safe private values) loses every
identifier of the study found in it, and person names of the bundled list that are not
ordinary words, two in a row (:mod:`agent.deid.names`: a nurse's name no element of the
header holds): a code string value holding one is dropped whole, other text has it cut out.
The device description (Manufacturer, model,
software versions) is searched for names, IDs, dates and phone numbers but not for place
words: a scanner model is not truncated because the institution shares a word with it.
"""

from __future__ import annotations

import re
from typing import Any

from agent.deid import dates as date_forms
from agent.deid.names import distinct_names, is_name, name_spans
from agent.deid.variants import IdentityVariants
from agent.deid.vocabulary import Vocabulary

_GENERIC = re.compile(
    r"""
    [\w.+-]+@[\w-]+(?:\.[\w-]+)+            # e-mail
  | \+?\d[\d ()/-]{7,}\d                    # telephone numbers
  | \d+(?:\.\d+){3,}                        # UIDs and other dotted numbers
  | \d{5,}                                  # record numbers, compact dates, long IDs
    """,
    re.VERBOSE,
)
_TOKEN = re.compile(r"(?:\d+[.,]\d+|[^\W_])+")
_SPACES = re.compile(r"\s+")
_STRIP = " -_,;:/^.+&|"
_RUN = re.compile(rb"[a-z]+|[0-9]+")
_CUT = "\x00"  # marks cut-out text while tokens are read


class Cleaner:
    """The text cleaner for one study's identifiers and one vocabulary."""

    def __init__(self, ids: IdentityVariants, vocabulary: Vocabulary) -> None:
        self.ids = ids
        self.vocabulary = vocabulary
        #: person names of the bundled list (:mod:`agent.deid.names`), for kept text
        self.names = distinct_names(vocabulary)
        #: the screen's decisions for this set of identifiers (see agent.deid.screen)
        self.memo: dict[tuple[Any, ...], list[str] | None] = {}
        texts = [v.text for v in ids.variants]
        for y, m, d in ids.dates:
            texts += [f"{y:04d}", f"{y % 100:02d}", *date_forms.compact_forms(y, m, d)]
        self._blob = "\x00".join(texts).encode("ascii", "ignore")
        long_ = sorted({t for t in texts if len(t) >= 6}, key=len, reverse=True)
        self._long = (re.compile("|".join(re.escape(t) for t in long_).encode("ascii", "ignore"))
                      if long_ else None)

    # -- the cheap test -------------------------------------------------------------

    def may_contain(self, raw: bytes) -> bool:
        """Whether an undecoded value could hold an identifier (False: certainly not).

        Non-ASCII values and ISO 2022 escape sequences are always decoded and searched;
        for ASCII ones, a token of the value must be part of a variant, or hold a long
        one (a variant's letters may be split by separators: "AB 12-34").
        """
        if not raw:
            return False
        if not raw.isascii() or b"\x1b" in raw:
            return True
        blob = self._blob if self.ids else b""
        long_ = self._long if self.ids else None
        names = self.names
        for token in _RUN.findall(raw.lower()):
            if len(token) >= 2 and token in blob:
                return True
            if long_ is not None and len(token) >= 6 and long_.search(token):
                return True
            if len(token) >= 4 and token.isalpha() and is_name(token.decode(), names):
                return True
        return False

    # -- the cleaning ---------------------------------------------------------------

    def descriptor(self, text: str) -> str:
        """Allow-list cleaning (see the module docstring)."""
        spans = [(a, b) for a, b, _ in self.ids.spans(text, keep_core=True)]
        spans += date_forms.date_spans(text)
        spans += [m.span() for m in _GENERIC.finditer(text)]
        if spans:
            chars = list(text)
            for a, b in spans:
                chars[a:b] = _CUT * (b - a)
            text = "".join(chars)
        # Kept tokens, the separator written before each, and whether anything was
        # taken away just before it (a cut or a dropped token); the last entry of
        # ``removed`` says the same of what follows the last kept token.
        kept: list[str] = []
        seps: list[str] = []
        removed: list[bool] = []
        pos = 0
        gone = False
        for m in _TOKEN.finditer(text):
            token = m.group()
            gap = text[pos:m.start()]
            if self.vocabulary.keeps(token):
                seps.append(_separator(gap) if kept else "")
                kept.append(token)
                removed.append(gone or _CUT in gap)
                gone = False
            else:
                gone = True
            pos = m.end()
        removed.append(gone or _CUT in text[pos:])
        tail = _separator(text[pos:]).rstrip() if kept and not gone else ""
        first, last = _dangling(kept, removed)
        if first >= last:
            return ""
        seps[first] = ""
        out = "".join(seps[i] + kept[i] for i in range(first, last))
        return (out + (tail if last == len(kept) else "")).strip(" _-,;:/^")

    def scrub(self, text: str, *, places: bool = True, names: bool = True) -> str:
        """``text`` with every identifier of the study cut out (place words only with
        ``places``) and, with ``names``, listed person names (:mod:`agent.deid.names`)."""
        spans = [(a, b) for a, b, _ in self.ids.spans(text, places=places)]
        if names:
            spans += name_spans(text, self.names)
        if not spans:
            return text
        chars = list(text)
        for a, b in spans:
            chars[a:b] = " " * (b - a)
        return _SPACES.sub(" ", "".join(chars)).strip(_STRIP)

    def code_string(self, values: list[str]) -> list[str]:
        """Code string values without those that hold an identifier (a lone name part
        that is a core imaging term, such as "DTI", stays) and without those holding a
        listed person name."""
        return [v for v in values if not self.ids.spans(v, keep_core=True)
                and not name_spans(v, self.names)]

    def holds_identity(self, text: str) -> bool:
        """Whether ``text`` holds an identifier of the study or a listed person name."""
        return bool(self.ids.spans(text) or name_spans(text, self.names))


#: Words that mean nothing left alone at an end ("BRAIN for" once a name is cut out).
_CONNECTORS = frozenset(
    "and or with of for the in on to at by from mit und oder avec et ou con y de del la le "
    "el les des du di e met en voor na".split()
)


def _dangling(kept: list[str], removed: list[bool]) -> tuple[int, int]:
    """The range of ``kept`` without connecting words left dangling at an end: a
    connector goes where something next to it was taken away ("brain [date] for [name]"
    -> "brain"); a descriptor that itself ends with one ("fMRI Multiphase Des") keeps it."""
    first, last = 0, len(kept)
    while first < last and kept[first].lower() in _CONNECTORS and (
            removed[first] or removed[first + 1]):
        first += 1
    while last > first and kept[last - 1].lower() in _CONNECTORS and (
            removed[last] or removed[last - 1]):
        last -= 1
    return first, last


def _separator(text: str) -> str:
    """What stood between two kept tokens, spaces collapsed; where text was cut out,
    its first punctuation mark (``Research^[name]_Prisma`` -> ``Research^Prisma``)."""
    if _CUT in text:
        marks = text.replace(_CUT, "").strip()
        return marks[0] if marks else " "
    return _SPACES.sub(" ", text)
