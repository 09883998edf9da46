"""The imaging vocabulary: which words a descriptor may keep.

Descriptors are cleaned by allow-list (:mod:`agent.deid.clean`): a word stays only if it
is an imaging term. The terms are data, in ``data/vocabulary/``:

* ``core.txt`` - curated sequence, contrast, anatomy, orientation, protocol and BIDS words,
  units and connecting words. A *core* word stays even when it is also a lone part of
  someone's name in this study (a patient called "Bold" does not lose the BOLD of a
  series), never as part of a longer name ("Anna Bold").
* ``terms.txt`` - vendors, scanner models, software, reviewed words of real exports,
  eponyms: kept unless they are an identifier of the study.
* ``derived.txt`` - words of DICOM's own code meanings (built by
  ``scripts/build_deid_vocabulary.py``, person names taken out).
* the site's own files (``[deid] vocabulary_files``, one term a line) and terms
  (``[deid] vocabulary_terms``): added to the core.

Besides listed words, a token is kept when it is a number of at most four digits with an
optional decimal part and unit (``1.5T``, ``2.5mm``, ``b1000``), a short technical code
(``ep2d``, ``p2``, ``t1w``, ``3d``), or when it splits entirely into core words and such
numbers and codes (``AxT2FLAIR``; core words of three letters or more).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from agent.deid.folding import fold
from agent.errors import ConfigError

_FILES = ("core.txt", "terms.txt", "derived.txt")
_NUMBER = re.compile(r"(\d{1,4})(?:[.,]\d{1,4})?([a-zµ%]{0,4})")
_CODE = re.compile(r"[a-z]{1,3}\d{1,4}[a-z]{0,2}|\d{1,3}[a-z]{1,2}")
_UNITS = frozenset(
    "mm cm m ms s sec min t hz khz mhz deg x k ch iso um µm mt ml kg pct % ppm nex mtm".split()
)


def _read_terms(text: str) -> set[str]:
    out: set[str] = set()
    for line in text.splitlines():
        for word in line.split("#", 1)[0].split():
            folded = fold(word)
            if folded:
                out.add(folded)
    return out


@lru_cache(maxsize=1)
def _shipped() -> tuple[frozenset[str], frozenset[str]]:
    base = resources.files("agent.deid") / "data" / "vocabulary"
    core = _read_terms((base / "core.txt").read_text(encoding="utf-8"))
    rest: set[str] = set()
    for name in _FILES[1:]:
        rest |= _read_terms((base / name).read_text(encoding="utf-8"))
    return frozenset(core), frozenset(rest | core)


@dataclass(frozen=True)
class Vocabulary:
    """Folded terms: ``core`` (see the module docstring) and ``words`` (all of them)."""

    core: frozenset[str]
    words: frozenset[str]

    def __contains__(self, token: str) -> bool:
        return self.keeps(token)

    def keeps(self, token: str) -> bool:
        """Whether a descriptor token (letters and digits, any case) may stay."""
        low = token.lower()
        folded = fold(token)
        if not folded:
            return True
        if folded in self.words or _technical(low) or _technical(folded):
            return True
        return self._splits(folded)

    def is_core(self, folded: str) -> bool:
        return folded in self.core

    def _splits(self, folded: str) -> bool:
        """Whether ``folded`` is a run of core words, numbers and codes (``axt2flair``)."""
        n = len(folded)
        if n > 40 or n < 4:
            return False
        ok = [False] * (n + 1)
        ok[0] = True
        for i in range(n):
            if not ok[i]:
                continue
            for j in range(i + 2, n + 1):
                piece = folded[i:j]
                # two-letter words glue too easily ("neuro"+"pr"+"ot"+"7"): codes only
                if (j - i >= 3 and piece in self.core) or _CODE.fullmatch(piece) or (
                        piece.isdigit() and j - i <= 4):
                    ok[j] = True
        return ok[n]


def _technical(token: str) -> bool:
    number = _NUMBER.fullmatch(token)
    if number is not None:
        return not number.group(2) or number.group(2) in _UNITS
    return _CODE.fullmatch(token) is not None


@lru_cache(maxsize=8)
def vocabulary(files: tuple[str, ...] = (), terms: tuple[str, ...] = ()) -> Vocabulary:
    """The shipped vocabulary plus a site's files and terms (ConfigError if unreadable)."""
    core, words = _shipped()
    extra: set[str] = set()
    for name in files:
        try:
            extra |= _read_terms(Path(name).expanduser().read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"[deid] vocabulary_files: {name} cannot be read ({exc}); "
                "fix the path or remove it from the configuration"
            ) from None
    extra |= {fold(t) for t in terms if fold(t)}
    return Vocabulary(core=core | extra, words=words | extra)


def tokens(words: Iterable[str]) -> set[str]:
    """Folded forms of ``words`` (for tests and tools)."""
    return {fold(w) for w in words}
