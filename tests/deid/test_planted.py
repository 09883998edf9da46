"""Property tests: identities planted in random spellings, scripts, character sets and
fields of real files never survive de-identification, and the verifier accepts what the
engine delivers.

The default run draws a bounded number of examples; ``pytest -m soak`` runs many more.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from anyascii import anyascii
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import DeidConfig
from agent.deid.engine import Engine
from agent.deid.verify import Rules, check_file, collect_identifiers, load_safe_private

from .helpers import SECRET, SITE
from .planting import CHARSETS, CORPUS, FIELDS, Field, base_files, leaked, planted_file

BASES = base_files()
pytestmark = pytest.mark.filterwarnings("error:Failed to encode value")
ALLOW_ALL = ("secondary-capture", "raw-data", "structured-report", "document")
_CONSONANTS = "bcdfgjklmnprstvwz"
_VOWELS = "aeiou"
_LATIN1_ACCENTED = "áàâäãåçéèêëíìîïñóòôöõúùûüýø"
_ACCENTED = _LATIN1_ACCENTED + "łśźżčřšž"
_CYRILLIC = "бвгджзйклмнпрстфхцчшщ"
_CYR_VOWELS = "аеиоуыэюя"
_GREEK = "βγδζθκλμνξπρστφχψ"
_GREEK_VOWELS = "αεηιουω"


def _latin_syllable(accents: str) -> st.SearchStrategy[str]:
    vowels = _VOWELS + accents
    return st.tuples(st.sampled_from(_CONSONANTS), st.sampled_from(vowels)).map("".join)


def _word(script: str) -> st.SearchStrategy[str]:
    """A name-like word of 5+ letters that no imaging text holds (it starts with "Qz")."""
    if script in ("latin", "any"):
        syl = _latin_syllable(_LATIN1_ACCENTED if script == "latin" else _ACCENTED)
        return st.lists(syl, min_size=2, max_size=4).map(lambda s: "Qz" + "".join(s))
    if script == "cyrillic":
        syl = st.tuples(st.sampled_from(_CYRILLIC), st.sampled_from(_CYR_VOWELS)).map("".join)
        return st.lists(syl, min_size=3, max_size=4).map(lambda s: "Щю" + "".join(s))
    if script == "greek":
        syl = st.tuples(st.sampled_from(_GREEK), st.sampled_from(_GREEK_VOWELS)).map("".join)
        return st.lists(syl, min_size=3, max_size=4).map(lambda s: "Ψξ" + "".join(s))
    if script == "chinese":
        return st.text(alphabet=st.characters(min_codepoint=0x5F00, max_codepoint=0x6FFF),
                       min_size=2, max_size=3)
    if script == "japanese":
        return st.text(alphabet="山田中村佐藤鈴木高橋渡辺伊藤小林加藤吉田", min_size=2, max_size=3)
    return st.text(alphabet=st.characters(min_codepoint=0xAC00, max_codepoint=0xB7FF),
                   min_size=2, max_size=3)


def _spell(word: str, how: str) -> str:
    if how == "upper":
        return word.upper()
    if how == "lower":
        return word.lower()
    if how == "ascii":
        return anyascii(word)
    if how == "ascii-upper":
        return anyascii(word).upper()
    return word


@st.composite
def plantings(draw: st.DrawFn) -> dict[str, object]:
    charset = draw(st.sampled_from(sorted(CHARSETS)))
    script = CHARSETS[charset][1]
    family = draw(_word(script))
    second = draw(_word(script))
    given_name = draw(_word(script))
    compound = draw(st.booleans()) and script not in ("chinese", "japanese", "korean")
    family_value = f"{family}-{second}" if compound else family
    role = draw(st.sampled_from(["name", "physician", "relative"]))
    what = draw(st.sampled_from(["name", "name", "name", "id", "date"]))
    digits = draw(st.text(alphabet="0123456789", min_size=6, max_size=9))
    ident = "QX" + digits
    day = draw(st.dates(min_value=__import__("datetime").date(1990, 1, 1),
                        max_value=__import__("datetime").date(2030, 12, 31)))
    if what == "name":
        part = draw(st.sampled_from(["family", "second", "given", "full"]))
        word = {"family": family, "second": second if compound else family,
                "given": given_name, "full": f"{given_name} {family_value}"}[part]
        copy = _spell(word, draw(st.sampled_from(["as is", "upper", "lower", "ascii",
                                                   "ascii-upper"])))
        secrets = [word]
    elif what == "id":
        sep = draw(st.sampled_from([" ", "-", ".", ""]))
        copy = f"QX {digits[:3]}{sep}{digits[3:]}"
        secrets = [ident]
    else:
        form = draw(st.sampled_from(["%d %B %Y", "%B %d, %Y", "%d%b%Y", "%Y-%m-%d", "%d.%m.%Y",
                                     "%m/%d/%Y", "%Y%m%d", "%d-%b-%y"]))
        copy = day.strftime(form).upper() if draw(st.booleans()) else day.strftime(form)
        secrets = [copy]
    return {
        "charset": charset,
        "identity": {role: f"{family_value}^{given_name}", "id": ident,
                     "date": day.strftime("%Y%m%d"),
                     **({"name": "Anon^Patient"} if role != "name" else {})},
        "copy": copy,
        "secrets": secrets,
        "field": draw(st.sampled_from(FIELDS)),
        "base": draw(st.sampled_from(BASES)),
    }


def _run(case: dict[str, object]) -> None:
    engine = Engine(SITE, SECRET, DeidConfig(allow_pixel_identity=ALLOW_ALL))
    rules = Rules(safe_private=load_safe_private())
    tmp = Path(tempfile.mkdtemp(prefix="planted-"))
    try:
        charset = str(case["charset"])
        field = case["field"]
        assert isinstance(field, Field)
        src = planted_file(Path(str(case["base"])), tmp / "src.dcm", charset,
                           dict(case["identity"]), field, str(case["copy"]))  # type: ignore[call-overload]
        result = engine.deidentify_file(src, tmp)
        assert result is not None
        secrets = list(case["secrets"])  # type: ignore[call-overload]
        assert leaked(result.path, secrets, CHARSETS[charset][0]) == [], case
        findings = check_file(result.path, collect_identifiers([src]), rules)
        assert findings == [], (case, findings)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=plantings())
def test_planted_identity_never_survives(case: dict[str, object]) -> None:
    _run(case)


@pytest.mark.soak
@pytest.mark.timeout(3600)
@settings(max_examples=1500, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=plantings())
def test_planted_identity_never_survives_soak(case: dict[str, object]) -> None:
    _run(case)


def test_the_corpus_is_used() -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"the real corpus is not at {CORPUS}; planted tests ran on pydicom's files")
    assert any(str(CORPUS) in str(b) for b in BASES)
