"""Text folded for identity matching: one spelling for every case, accent and script.

``fold("Müller-Lüdenscheidt")`` and ``fold("MULLER LUDENSCHEIDT")`` give the same letters,
so a variant of an identifier is looked for once, in folded form, whatever the text's
spelling. Folding works character by character and remembers where each folded letter
came from, so that a match can be cut out of the original text without touching anything
else (an ISO 2022 escape sequence is never split: text is folded after decoding).

Per character: ASCII letters lower-cased; others transliterated with ``anyascii``
(accents dropped, ``ß`` -> ``ss``, Cyrillic, Greek, CJK ideographs as pinyin, kana,
Hangul) and lower-cased; combining marks dropped. Only letters and
digits are kept: punctuation and spaces become *gaps* between words.

Word starts (where a whole-word match may begin) are: the start, a gap, a change between
letters and digits (``MRN12345``), and either side of a CJK/kana/Hangul character (those
scripts write names without spaces).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from anyascii import anyascii

_ASCII_RUN = re.compile(r"[a-z]+|[0-9]+")
_GREEK_U = frozenset("υΥύΰ")
_GREEK_O = frozenset("οΟόΌ")


def is_cjk(ch: str) -> bool:
    """Scripts written without spaces between names (ideographs, kana, Hangul)."""
    cp = ord(ch)
    return (
        0x3040 <= cp <= 0x30FF or 0x3400 <= cp <= 0x4DBF or 0x4E00 <= cp <= 0x9FFF
        or 0xF900 <= cp <= 0xFAFF or 0xAC00 <= cp <= 0xD7AF or 0x1100 <= cp <= 0x11FF
        or 0x3130 <= cp <= 0x318F or 0xFF66 <= cp <= 0xFF9F or 0x20000 <= cp <= 0x2FFFF
    )


@lru_cache(maxsize=16384)
def fold_char(ch: str) -> str:
    """The ASCII letters and digits one character folds to ("" for punctuation)."""
    if ch < "\x80":
        return ch.lower() if ch.isalnum() else ""
    if unicodedata.combining(ch):
        return ""
    # anyascii drops accents itself (é -> e, ß -> ss, Ł -> L) and keeps the voicing of
    # kana (ダ -> da), which a decomposition would lose
    text = anyascii(ch.casefold() if len(ch.casefold()) == 1 else ch).lower()
    return "".join(c for c in text if c.isalnum() and c.isascii())


def fold(text: str) -> str:
    """The folded letters of ``text`` (no gaps kept): the form variants are stored in."""
    return Folded.of(text).text


@dataclass(slots=True)
class Folded:
    """Folded letters of a text and where they came from.

    ``src[k]``: index in the original text of the character folded letter ``k`` came
    from. ``gaps``: positions ``k`` preceded by punctuation or space in the original.
    ``starts``: positions where a word starts (see the module docstring).
    ``char_starts``: positions where an original character's letters begin (None: every
    position, the text was ASCII).
    """

    text: str
    src: list[int]
    gaps: set[int]
    starts: set[int]
    char_starts: set[int] | None

    @classmethod
    def of(cls, text: str) -> Folded:
        if text.isascii():
            return cls._of_ascii(text)
        letters: list[str] = []
        src: list[int] = []
        gaps: set[int] = set()
        starts: set[int] = set()
        char_starts: set[int] = set()
        gap = False
        prev_cjk = False
        prev_kind = ""
        prev = ""
        for i, ch in enumerate(text):
            if ch in _GREEK_U and prev in _GREEK_O:
                out = "u"  # the Greek digraph ου is written "ou" in Latin letters
            else:
                out = fold_char(ch)
            prev = ch
            if not out:
                gap = True
                continue
            k = len(src)
            cjk = is_cjk(ch)
            kind = "d" if out[0].isdigit() else "a"
            if k == 0 or gap or cjk or prev_cjk or kind != prev_kind:
                starts.add(k)
            if gap and k:
                gaps.add(k)
            char_starts.add(k)
            letters.append(out)
            src.extend([i] * len(out))
            # a character folding to letters and digits mixed is rare; its own kind is
            # that of its last letter
            prev_kind = "d" if out[-1].isdigit() else "a"
            gap = False
            prev_cjk = cjk
        return cls("".join(letters), src, gaps, starts, char_starts)

    @classmethod
    def _of_ascii(cls, text: str) -> Folded:
        low = text.lower()
        parts: list[str] = []
        src: list[int] = []
        gaps: set[int] = set()
        starts: set[int] = set()
        k = 0
        last_end = -1
        for m in _ASCII_RUN.finditer(low):
            start, end = m.span()
            if k and start != last_end:
                gaps.add(k)
            starts.add(k)
            parts.append(m.group())
            src.extend(range(start, end))
            k += end - start
            last_end = end
        # isalnum() in ASCII only: other characters were gaps already
        return cls("".join(parts), src, gaps, starts, None)

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original text's span holding folded letters ``start`` to ``end``."""
        return self.src[start], self.src[end - 1] + 1

    def is_char_start(self, k: int) -> bool:
        return k >= len(self.text) or self.char_starts is None or k in self.char_starts

    def find(
        self, needle: str, *, whole: bool, breaks: frozenset[int] | None
    ) -> list[tuple[int, int]]:
        """Folded spans of ``needle``.

        ``whole``: the match must begin and end at word boundaries. ``breaks``: offsets
        inside ``needle`` where the original may have a gap (None: anywhere, as in an ID
        typed with spaces or dashes; an empty set: nowhere).
        """
        out: list[tuple[int, int]] = []
        text = self.text
        n = len(needle)
        if not n:
            return out
        at = text.find(needle)
        while at >= 0:
            end = at + n
            if self._fits(at, end, whole, breaks):
                out.append((at, end))
                at = text.find(needle, end)
            else:
                at = text.find(needle, at + 1)
        return out

    def _fits(self, at: int, end: int, whole: bool, breaks: frozenset[int] | None) -> bool:
        if not (self.is_char_start(at) and self.is_char_start(end)):
            return False  # never half of a character's letters (a pinyin syllable)
        if whole and not (at in self.starts and (end == len(self.text) or end in self.starts)):
            return False
        if breaks is not None and self.gaps:
            for k in range(at + 1, end):
                if k in self.gaps and (k - at) not in breaks:
                    return False
        return True
