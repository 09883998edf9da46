"""The verifier's reading of decoded text: the study's identifiers in any spelling, and
person names and dates whoever they belong to.

Written separately from the cleaner's variants (:mod:`agent.deid.variants`), with a
different method, so that one bug does not hide a leak from both:

* **Canonical tokens.** Text is transliterated as a whole (NFKC, then ``anyascii``:
  accents, Cyrillic, Greek, CJK), split into tokens of letters or digits (a capital after
  a small letter starts a token: transliterated ideographs come out as ``WangXiaoMing``),
  lower-cased, and spelling variants are collapsed on both sides alike (``ue``/``oe``/
  ``ae`` -> ``u``/``o``/``a``, ``ou``/``oy`` -> ``o``): Müller, MUELLER and Muller all
  read ``muller``, ΠΑΠΑΔΟΠΟΥΛΟΣ and Papadopoulos ``papadopolos``.
* **Forms** are token sequences of an identifier (a name part, a whole name in either
  order, an ID, a place, a phone number). A form is found when the text's tokens, joined,
  hold the form's tokens joined, starting and ending on token boundaries (so separators
  between them do not matter: "AB 12-34" is ID ``ab1234``); a form of six or more
  letters is also found inside a longer token.
* **Generic detectors**: a token that is a person name of the bundled name list
  (``data/person-names.txt``, from Faker's locales) and not an imaging term; a date
  however written (numbers in day-month-year, month-day-year or year-month-day order,
  month names of many languages, compact YYYYMMDD, the CJK date characters).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from importlib import resources

from anyascii import anyascii

_TOKENS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")
_WORDS = re.compile(r"[A-Za-z0-9]+")
_COLLAPSE = (("ue", "u"), ("oe", "o"), ("ae", "a"), ("oy", "o"), ("ou", "o"))
_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
#: Month names the verifier knows, lower-case Latin letters (several languages; Cyrillic
#: and Greek transliterated), matched by their first three letters or more.
_MONTHS = {
    1: "january januar janvier enero gennaio janeiro januari tammikuu styczen stycznia leden "
       "ledna ianuarie ocak yanvar yanvarya ianouarios ianouariou jaenner",
    2: "february februar fevrier febrero febbraio fevereiro februari helmikuu luty lutego unor "
       "unora februarie subat fevral fevralya fevrouarios fevrouariou",
    3: "march maerz marz mars marzo marco maart maaliskuu marzec marca brezen brezna martie "
       "mart marta martios martiou",
    4: "april avril abril aprile huhtikuu kwiecien kwietnia duben dubna aprilie nisan aprel "
       "aprelya aprilios apriliou",
    5: "may mai mayo maggio maio mei maj toukokuu maja kveten kvetna mayis maya maios maiou",
    6: "june juni juin junio giugno junho kesakuu czerwiec czerwca cerven cervna iunie "
       "haziran iyun iyunya iounios iouniou",
    7: "july juli juillet julio luglio julho heinakuu lipiec lipca cervenec cervence iulie "
       "temmuz iyul iyulya ioulios iouliou",
    8: "august aout agosto augustus augusti elokuu sierpien sierpnia srpen srpna agustos "
       "avgust avgusta avgoustos avgoustou",
    9: "september septembre septiembre setiembre settembre setembro syyskuu wrzesien "
       "wrzesnia zari septembrie eylul sentyabr sentyabrya septemvrios septemvriou",
    10: "october oktober octobre octubre ottobre outubro lokakuu pazdziernik pazdziernika "
        "rijen rijna octombrie ekim oktyabr oktyabrya oktovrios oktovriou",
    11: "november novembre noviembre novembro marraskuu listopad listopada listopadu "
        "noiembrie kasim noyabr noyabrya noemvrios noemvriou",
    12: "december dezember decembre diciembre dicembre dezembro joulukuu grudzien grudnia "
        "prosinec prosince decembrie aralik dekabr dekabrya dekemvrios dekemvriou",
}
_JOINERS = frozenset("de del of the th st nd rd er e nian yue ri nyeon wol il".split())


def canonical(text: str) -> list[str]:
    """The canonical tokens of ``text`` (see the module docstring)."""
    if not text:
        return []
    latin = anyascii(unicodedata.normalize("NFKC", text))
    out = []
    for token in _TOKENS.findall(latin):
        low = token.lower()
        for a, b in _COLLAPSE:
            low = low.replace(a, b)
        out.append(low)
    return out


def canonical_word(word: str) -> str:
    return "".join(canonical(word))


@dataclass
class TextForms:
    """The study's identifiers as token forms, by kind; see :meth:`hits`."""

    forms: dict[str, str] = field(default_factory=dict)  # joined form -> kind
    #: joined forms of single name tokens (a lone name part)
    name_parts: set[str] = field(default_factory=set)
    dates: set[date] = field(default_factory=set)
    #: findings of output values already read (a series repeats most of its header)
    memo: dict[tuple[int, str, bytes], tuple[str, ...]] = field(default_factory=dict,
                                                              repr=False)
    #: the field checks' context of an element, by (tag, VR, path prefix)
    contexts: dict[tuple[int, str, str], str] = field(default_factory=dict, repr=False)

    def add_name(self, value: str) -> None:
        for group in value.split("="):
            components = [canonical(c) for c in group.split("^")]
            for tokens in components:
                for i, token in enumerate(tokens):
                    if len(token) >= 2 and not token.isdigit():
                        self.forms.setdefault(token, "name")
                        self.name_parts.add(token)
                    if i and tokens[i - 1]:
                        self.forms.setdefault(tokens[i - 1] + token, "name")
                if len(tokens) > 1:
                    self.forms.setdefault("".join(tokens), "name")
            family, given = (components + [[], []])[:2]
            if family and given:
                self.forms.setdefault("".join(given + family), "name")
                self.forms.setdefault("".join(family + given), "name")
        # a single ideograph is too common a token to be a finding on its own
        for single in [t for t in self.name_parts if _one_syllable_cjk(value, t)]:
            self.name_parts.discard(single)
            self.forms.pop(single, None)

    def add(self, kind: str, value: str) -> None:
        joined = canonical_word(value)
        if len(joined) >= 4 or (len(joined) >= 3 and not joined.isalpha()):
            self.forms.setdefault(joined, kind)

    def add_date(self, value: str) -> None:
        v = value.strip()[:8]
        if len(v) == 8 and v.isdigit():
            try:
                self.dates.add(date(int(v[:4]), int(v[4:6]), int(v[6:])))
            except ValueError:
                pass

    def hits(self, text: str, *, vocabulary_ok: frozenset[str] = frozenset(),
             words: frozenset[str] = frozenset()) -> Iterator[str]:
        """Kinds of the study's identifiers in ``text``; an identifier or lone name part
        that is one of ``vocabulary_ok`` (core imaging terms, given for descriptors and
        code strings) excepted there;
        a form that is one of ``words`` (imaging terms) only as whole tokens, never inside
        a longer word ("compressed" of a patient named so, in "uncompressed")."""
        tokens = canonical(text)
        if not tokens:
            return
        joined = "".join(tokens)
        bounds = {0}
        pos = 0
        for t in tokens:
            pos += len(t)
            bounds.add(pos)
        for form, kind in self.forms.items():
            at = joined.find(form)
            while at >= 0:
                end = at + len(form)
                aligned = at in bounds and end in bounds
                inside = not any(b in bounds for b in range(at + 1, end))
                if aligned or (inside and len(form) >= 6 and not form.isdigit()
                               and form not in words):
                    # an identifier that is itself an imaging term ("DTI", a patient
                    # called "fMRI") is that term where such terms belong
                    if not (aligned and form in vocabulary_ok):
                        yield kind
                        break
                at = joined.find(form, at + 1)
        if self.dates:
            for found in find_dates(tokens):
                if found in self.dates:
                    yield "date"
                    break


def _one_syllable_cjk(value: str, token: str) -> bool:
    return any(_CJK.match(ch) and canonical_word(ch) == token for ch in value)


@lru_cache(maxsize=1)
def _month_prefixes() -> dict[str, int]:
    out: dict[str, int] = {}
    for number, names in _MONTHS.items():
        for name in names.split():
            name = canonical_word(name)
            for n in range(3, len(name) + 1):
                out.setdefault(name[:n], number)
    return out


def _month(token: str) -> int | None:
    if token.isdigit():
        n = int(token)
        return n if 1 <= n <= 12 and len(token) <= 2 else None
    return _month_prefixes().get(token)


def _make(y: int, m: int, d: int) -> date | None:
    try:
        return date(y, m, d) if 1850 <= y <= 2199 else None
    except ValueError:
        return None


def find_dates(tokens: list[str]) -> Iterator[date]:
    """Dates written in a token sequence (any order and language the module knows)."""
    parts = [t for t in tokens if t not in _JOINERS]
    for i, token in enumerate(parts):
        if token.isdigit() and len(token) == 8:
            for y, m, d in ((token[:4], token[4:6], token[6:]), (token[4:], token[2:4], token[:2]),
                            (token[4:], token[:2], token[2:4])):
                found = _make(int(y), int(m), int(d))
                if found is not None:
                    yield found
        if i + 2 >= len(parts):
            continue
        a, b, c = parts[i:i + 3]
        yield from _triple(a, b, c)


def _year(token: str) -> int | None:
    if not token.isdigit():
        return None
    if len(token) == 4:
        return int(token)
    return 2000 + int(token) if len(token) == 2 else None


def _triple(a: str, b: str, c: str) -> Iterator[date]:
    for day, month, year in ((a, b, c), (b, a, c), (c, b, a)):
        y = _year(year)
        m = _month(month)
        if y is None or m is None or not day.isdigit() or len(day) > 2:
            continue
        if len(year) == 2 and month.isdigit() and (len(day) != 2 or len(month) != 2):
            continue  # 1.5.12 is a version number more often than a date
        for candidate in (y, y - 100) if len(year) == 2 else (y,):
            found = _make(candidate, m, int(day))
            if found is not None:
                yield found


@lru_cache(maxsize=1)
def person_names() -> frozenset[str]:
    """The bundled list of given and family names, canonical."""
    text = (resources.files("agent.deid") / "data" / "person-names.txt").read_text("utf-8")
    return frozenset(canonical_word(line) for line in text.splitlines()
                     if line and not line.startswith("#"))


def generic_names(text: str, vocabulary: frozenset[str]) -> list[str]:
    """Tokens of ``text`` that are person names and not imaging terms (Latin script only:
    a transliterated ideograph is a syllable, and every syllable is someone's name)."""
    if _CJK.search(text):
        text = _CJK.sub(" ", text)
    names = person_names()
    out = []
    # whole words here (no split at digits or capitals): a word with a digit is no name,
    # and "MPRage" is the word "mprage"
    for word in _WORDS.findall(anyascii(unicodedata.normalize("NFKC", text))):
        low = word.lower()
        for a, b in _COLLAPSE:
            low = low.replace(a, b)
        if len(low) >= 3 and low.isalpha() and low in names and low not in vocabulary:
            out.append(low)
    return out


@lru_cache(maxsize=8)
def names_in_kept_text(vocabulary: frozenset[str]) -> frozenset[str]:
    """The listed person names looked for in kept technical text (context "text" and
    code strings): not the ordinary DICOM words among them (``data/name-words.txt``),
    not imaging terms, and of four letters or more."""
    text = (resources.files("agent.deid") / "data" / "name-words.txt").read_text("utf-8")
    ordinary = {canonical_word(line) for line in text.splitlines()
                if line and not line.startswith("#")}
    return frozenset(n for n in person_names()
                     if len(n) >= 4 and n not in ordinary and n not in vocabulary)


def kept_text_names(text: str, vocabulary: frozenset[str]) -> list[str]:
    """Words of kept technical text that are person names (:func:`names_in_kept_text`),
    two or more in a row: a name of someone the header does not name. Split at anything
    but a letter or digit (a code string's "_" too); a word with a digit is no name."""
    names = names_in_kept_text(vocabulary)
    listed = []
    for word in _WORDS.findall(anyascii(unicodedata.normalize("NFKC", text))):
        low = word.lower()
        for a, b in _COLLAPSE:
            low = low.replace(a, b)
        listed.append(low if low.isalpha() and low in names else "")
    # a name is two listed words in a row (one alone is often an ordinary word: "MANU")
    return [w for i, w in enumerate(listed) if w and (
        (i and listed[i - 1]) or (i + 1 < len(listed) and listed[i + 1]))]


@lru_cache(maxsize=8)
def read_vocabulary(extra_files: tuple[str, ...] = (), extra_terms: tuple[str, ...] = ()
                    ) -> tuple[frozenset[str], frozenset[str]]:
    """(core, all) imaging terms, canonical: the shipped lists plus the site's."""
    base = resources.files("agent.deid") / "data" / "vocabulary"
    texts = {name: (base / name).read_text("utf-8")
             for name in ("core.txt", "terms.txt", "derived.txt")}
    site = ""
    for name in extra_files:
        with open(name, encoding="utf-8") as fh:
            site += fh.read() + "\n"
    site += "\n".join(extra_terms)

    def words(text: str) -> set[str]:
        return {canonical_word(w) for line in text.splitlines()
                for w in line.split("#")[0].split()} - {""}

    core = words(texts["core.txt"]) | words(site)
    every = core | words(texts["terms.txt"]) | words(texts["derived.txt"])
    return frozenset(core), frozenset(every)
