"""Names of people the header does not name, in kept technical text (the cleaner's side).

Descriptors are cleaned by allow-list (:mod:`agent.deid.clean`), so an unknown name never
stays there. Other text the profile keeps - attributes outside Table E.1-1 (Content
Description, Sequence Name), Ethnic Group under Retain Patient Characteristics, code
strings, safe private values - is searched for the study's own identifiers; a nurse's or
a relative's name that no element of the header holds would stay. So words of such text
that are person names of the bundled list (``data/person-names.txt``, Faker's locales),
two or more next to each other (a given and a family name), are cut out too, unless they
are also ordinary words of DICOM or of the imaging vocabulary (``data/name-words.txt``:
"lung", "sharp", "field"; and the vocabulary itself).

Words are compared folded (:func:`agent.deid.folding.fold`: case, accents, scripts) and
with the spelling collapse ``ue``/``oe``/``ae`` -> ``u``/``o``/``a``, ``ou``/``oy`` -> ``o``
(Mueller, Müller and Muller alike); only words of four letters or more.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

from agent.deid.folding import fold
from agent.deid.vocabulary import Vocabulary

_WORD = re.compile(r"[^\W\d_]+")
_COLLAPSE = (("ue", "u"), ("oe", "o"), ("ae", "a"), ("oy", "o"), ("ou", "o"))
MIN_LETTERS = 4


def _collapsed(word: str) -> str:
    for a, b in _COLLAPSE:
        word = word.replace(a, b)
    return word


def _lines(name: str) -> set[str]:
    text = (resources.files("agent.deid") / "data" / name).read_text(encoding="utf-8")
    return {fold(line) for line in text.splitlines() if line and not line.startswith("#")}


@lru_cache(maxsize=8)
def distinct_names(vocabulary: Vocabulary) -> frozenset[str]:
    """Folded and collapsed person names that are not ordinary words nor imaging terms."""
    ordinary = _lines("name-words.txt") | set(vocabulary.words)
    out: set[str] = set()
    for name in _lines("person-names.txt"):
        if len(name) < MIN_LETTERS or name in ordinary or _collapsed(name) in ordinary:
            continue
        out.add(name)
        out.add(_collapsed(name))
    return frozenset(out)


def is_name(word: str, names: frozenset[str]) -> bool:
    """Whether a word (any case, script, accents) is one of ``names``."""
    folded = fold(word)
    return len(folded) >= MIN_LETTERS and (folded in names or _collapsed(folded) in names)


def name_spans(text: str, names: frozenset[str]) -> list[tuple[int, int]]:
    """(start, end) of the words of ``text`` that read as a person's name: two or more
    listed names next to each other ("Alice Garcia", "GARCIA^ALICE"). One listed word
    alone is too often an ordinary word of technical text ("MANU", "Sel Drum 500x500")."""
    words = [(m.span(), is_name(m.group(), names)) for m in _WORD.finditer(text)]
    out: list[tuple[int, int]] = []
    for i, (span, listed) in enumerate(words):
        if listed and ((i and words[i - 1][1]) or (i + 1 < len(words) and words[i + 1][1])):
            out.append(span)
    return out
