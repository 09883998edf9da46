"""Messages people act on: every problem code says what to do; the shared sentences."""

from __future__ import annotations

import time

from agent.messages import action_for, ignored_sentence, known_problem_codes, waiting_sentence
from agent.status import IgnoredFiles, WaitingSeries
from agent.vocab import ProblemCode


def test_every_problem_code_has_its_own_advice() -> None:
    codes = {c.value for c in ProblemCode}
    assert codes <= known_problem_codes(), codes - known_problem_codes()
    for code in codes:
        advice = action_for(code)
        assert advice and advice != action_for("default"), code
        assert advice.endswith("."), code


def test_the_table_names_no_code_that_does_not_exist() -> None:
    assert known_problem_codes() <= {c.value for c in ProblemCode}


def test_an_unknown_code_still_says_what_to_do() -> None:
    advice = action_for("a-code-from-a-newer-agent")
    assert "Retry" in advice and "support" in advice


def test_waiting_sentences() -> None:
    since = time.mktime((2026, 3, 4, 12, 3, 0, 0, 0, -1))
    w = WaitingSeries(ref="ab", files=180, incomplete=3, since=since,
                      attention=True, gives_up_at=since + 600)
    assert waiting_sentence(w) == "waiting for 3 of 180 files since 12:03 (still being written)"
    assert waiting_sentence(w, detail=True).endswith(
        "kept back at 12:13: check the viewer's export, or export the series again")
    arriving = WaitingSeries(ref="ab", files=120, incomplete=None, since=since)
    assert waiting_sentence(arriving) == "receiving 120 files since 12:03"


def test_not_dicom_sentences() -> None:
    assert ignored_sentence(IgnoredFiles()) == ""
    assert ignored_sentence(IgnoredFiles(1, 0)) == "1 file is not DICOM and was not sent"
    assert ignored_sentence(IgnoredFiles(12, 1)) == (
        "12 files are not DICOM and were not sent (1 is a zip or other archive); "
        "a zip must be unpacked into the export folder first")
