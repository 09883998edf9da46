"""The MIDI-B-style score of our planted set (see midib.py): every planted identifier
removed, >= 95 % of what research needs retained, dates, UIDs and pseudonyms right."""

from __future__ import annotations

from pathlib import Path

from .midib import score


def test_midi_b_style_score(tmp_path: Path) -> None:
    result = score(tmp_path)
    print("\nMIDI-B-style score of the planted set:\n" + result.table())
    assert result.rate("text removed") == 1.0, result.failures
    assert result.rate("text retained") >= 0.95, result.failures
    for action in ("date shifted", "uid changed", "patient id", "verified"):
        assert result.rate(action) == 1.0, result.failures
    assert result.total["text removed"] >= 60 and result.total["text retained"] >= 60
