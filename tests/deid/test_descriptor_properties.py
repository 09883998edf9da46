"""Property: whatever a descriptor holds, what the cleaner keeps is what the verifier's
generic detectors accept (no person name, no date) - the two are written separately, so
a disagreement would quarantine real series or let a name through."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.deid.clean import Cleaner
from agent.deid.variants import build_variants
from agent.deid.verify_text import canonical, find_dates, generic_names, read_vocabulary
from agent.deid.vocabulary import vocabulary

_VOCAB = sorted(vocabulary().words)
_CORE = sorted(vocabulary().core)
_NAMES = ["Jennifer", "Olga", "Müller", "Ivanov", "Smith", "Rorden", "Cheng", "Maria",
          "José", "Søren", "Zhang", "Kowalski", "Anne-Marie"]
_piece = st.one_of(
    st.sampled_from(_CORE), st.sampled_from(_VOCAB), st.sampled_from(_NAMES),
    st.integers(0, 5000).map(str),
    st.tuples(st.integers(0, 99), st.sampled_from(["mm", "ms", "T", "s", "x", ""])).map(
        lambda t: f"{t[0]}{t[1]}"),
    st.dates().map(lambda d: d.strftime("%d %b %Y")),
    st.dates().map(lambda d: d.strftime("%Y-%m-%d")),
    st.dates().map(lambda d: d.strftime("%m/%d/%Y")),
)
_text = st.lists(_piece, min_size=1, max_size=7).flatmap(
    lambda parts: st.lists(st.sampled_from([" ", "_", "-", "^", "/", " (", ") "]),
                           min_size=len(parts), max_size=len(parts)).map(
        lambda seps: "".join(p + s for p, s in zip(parts, seps, strict=True)).strip()))

_CLEANER = Cleaner(build_variants([("name", "Quillfeather^Maud")]), vocabulary())
_EVERY = read_vocabulary()[1]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(text=_text)
def test_cleaned_descriptors_pass_the_verifiers_detectors(text: str) -> None:
    kept = _CLEANER.descriptor(text)
    assert generic_names(kept, _EVERY) == [], (text, kept)
    assert list(find_dates(canonical(kept))) == [], (text, kept)
    for name in _NAMES:
        assert name.lower() not in kept.lower().split(), (text, kept)
