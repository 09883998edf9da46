"""Dates written in free text: ``12 March 2021``, ``March 12, 2021``, ``12MAR2021``,
``2021-03-12``, ``12.3.21``, ``2021年3月12日``, ``12. März 2021`` ...

Text is split into numbers and words; a date is three neighbouring parts - day, month
(a number or a month name in one of the languages of ``data/month-names.json``) and year
(four digits, or two) - in the order day-month-year, month-day-year or year-month-day,
separated by at most a few spaces or punctuation marks or by connecting words (``de``,
``of``, ordinal endings, the CJK date characters), or one compact number (``20210312``,
``12032021``, ``120321``).

:func:`date_spans` finds either the given dates only (the identifiers of a study: every
spelling of them, two-digit years included) or, with ``dates=None``, anything that is a
valid date (what the descriptor cleaner removes whatever it is: a date in a descriptor
is never needed to sort a series and always a risk).
"""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from agent.deid.folding import fold

Ymd = tuple[int, int, int]

_TOKEN = re.compile(r"\d+|[^\W\d_]+")
_GAP = re.compile(r"(?:[^\w]|_){0,3}")  # any 0-3 punctuation marks or spaces
#: Words that may stand between the parts of a date (folded).
_CONNECTORS = frozenset(
    "de del of the th st nd rd er eme e nian yue ri nyeon wol il den der".split()
)


@lru_cache(maxsize=1)
def month_names() -> dict[str, frozenset[int]]:
    """Folded month name or abbreviation -> the months it may mean."""
    data = json.loads(
        (resources.files("agent.deid") / "data" / "month-names.json").read_text("utf-8")
    )
    out: dict[str, set[int]] = {}
    for lang, months in data.items():
        if lang.startswith("_"):
            continue
        for number, forms in enumerate(months, start=1):
            for form in [forms] if isinstance(forms, str) else forms:
                for spelling in (form, form[:3] if len(form) >= 4 else ""):
                    folded = fold(spelling)
                    if len(folded) >= 3:
                        out.setdefault(folded, set()).add(number)
    return {k: frozenset(v) for k, v in out.items()}


@dataclass(frozen=True, slots=True)
class _Part:
    kind: str  # "num", "month", "link" (connector), "word"
    text: str
    start: int
    end: int
    months: frozenset[int] = frozenset()


def _parts(text: str) -> list[_Part]:
    names = month_names()
    out = []
    for m in _TOKEN.finditer(text):
        token = m.group()
        if token.isdigit():
            out.append(_Part("num", token, m.start(), m.end()))
            continue
        folded = fold(token)
        months = names.get(folded)
        if months is not None:
            out.append(_Part("month", token, m.start(), m.end(), months))
        elif folded in _CONNECTORS or token in "年月日년월일":
            out.append(_Part("link", token, m.start(), m.end()))
        else:
            out.append(_Part("word", token, m.start(), m.end()))
    return out


def _valid(y: int, m: int, d: int) -> bool:
    return 1 <= m <= 12 and 1 <= d <= calendar.monthrange(y, m)[1]


class _Matcher:
    def __init__(self, dates: Iterable[Ymd] | None) -> None:
        self.dates = None if dates is None else frozenset(dates)
        self.short = None if self.dates is None else {(y % 100, m, d) for y, m, d in self.dates}

    def is_date(self, y: int, m: int, d: int, two_digit: bool) -> bool:
        if self.dates is None:
            if two_digit:
                return _valid(2000 + y, m, d)
            return 1850 <= y <= 2199 and _valid(y, m, d)
        if two_digit:
            return self.short is not None and (y, m, d) in self.short
        return (y, m, d) in self.dates

    def compact(self, digits: str) -> bool:
        """A date written as one number (8 digits; 6 only for the given dates)."""
        n = len(digits)
        if n == 8:
            forms = [(digits[:4], digits[4:6], digits[6:]), (digits[4:], digits[2:4], digits[:2]),
                     (digits[4:], digits[:2], digits[2:4])]
            return any(self.is_date(int(y), int(m), int(d), False) for y, m, d in forms)
        if n == 6 and self.dates is not None:
            forms = [(digits[:2], digits[2:4], digits[4:]), (digits[4:], digits[2:4], digits[:2]),
                     (digits[4:], digits[:2], digits[2:4])]
            return any(self.is_date(int(y), int(m), int(d), True) for y, m, d in forms)
        return False

    def triple(self, a: _Part, b: _Part, c: _Part) -> bool:
        """Whether three parts (numbers or month names) are a date in a common order."""
        for day, month, year in ((a, b, c), (b, a, c), (c, b, a)):
            if day.kind != "num" or year.kind != "num" or len(day.text) > 2:
                continue
            if len(year.text) not in (2, 4):
                continue
            if month.kind == "num":
                if len(month.text) > 2:
                    continue
                months: Iterable[int] = (int(month.text),)
                # generic two-digit years only in the padded form (01.05.12, not 1.5.12)
                if (self.dates is None and len(year.text) == 2
                        and (len(day.text) != 2 or len(month.text) != 2)):
                    continue
            else:
                months = month.months
            for m in months:
                if self.is_date(int(year.text), m, int(day.text), len(year.text) == 2):
                    return True
        return False


def date_spans(text: str, dates: Iterable[Ymd] | None = None) -> list[tuple[int, int]]:
    """Spans of ``text`` that write one of ``dates`` (None: any valid date)."""
    if not text:
        return []
    matcher = _Matcher(dates)
    parts = _parts(text)
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(parts):
        part = parts[i]
        if part.kind == "num" and matcher.compact(part.text):
            spans.append((part.start, part.end))
            i += 1
            continue
        found = _date_at(text, parts, i, matcher)
        if found is None:
            i += 1
            continue
        last, end = found
        spans.append((part.start, end))
        i = last + 1
    return spans


def _date_at(text: str, parts: list[_Part], i: int,
             matcher: _Matcher) -> tuple[int, int] | None:
    """(index of the last part used, end offset) of a date starting at part ``i``."""
    if parts[i].kind not in ("num", "month"):
        return None
    chosen = [i]
    j = i
    while len(chosen) < 3:
        k = j + 1
        while k < len(parts) and parts[k].kind == "link" and k - j <= 2:
            k += 1
        if k >= len(parts) or parts[k].kind not in ("num", "month"):
            return None
        if not _close(text, parts, j, k):
            return None
        chosen.append(k)
        j = k
    a, b, c = (parts[x] for x in chosen)
    if not matcher.triple(a, b, c):
        return None
    end = c.end
    # a trailing connector belongs to the date (the 日 of 2021年3月12日, "12th")
    if j + 1 < len(parts) and parts[j + 1].kind == "link" and parts[j + 1].start == end:
        end = parts[j + 1].end
        j += 1
    return j, end


def _close(text: str, parts: list[_Part], j: int, k: int) -> bool:
    """Parts ``j`` and ``k`` are separated only by short punctuation and connectors."""
    pos = parts[j].end
    for x in range(j + 1, k + 1):
        gap = text[pos:parts[x].start]
        if _GAP.fullmatch(gap) is None:
            return False
        if gap == "" and k == j + 1 and parts[j].kind == parts[k].kind == "num":
            return False  # two numbers cannot touch (they would be one token)
        pos = parts[x].end
    return True


def compact_forms(y: int, m: int, d: int) -> list[str]:
    """Digit strings a date is typed as without separators (prefilters use them)."""
    yyyy, yy, mm, dd = f"{y:04d}", f"{y % 100:02d}", f"{m:02d}", f"{d:02d}"
    return [yyyy + mm + dd, dd + mm + yyyy, mm + dd + yyyy, yy + mm + dd, dd + mm + yy,
            mm + dd + yy]


def parse_da(value: str) -> Ymd | None:
    """``YYYYMMDD`` (the start of a DA or DT value) as a date, None if it is not one."""
    v = value.strip()[:8]
    if len(v) != 8 or not v.isdigit():
        return None
    y, m, d = int(v[:4]), int(v[4:6]), int(v[6:])
    return (y, m, d) if 1 <= y and _valid(y, m, d) else None
