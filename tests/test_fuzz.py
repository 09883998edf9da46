"""Fuzzing over real files (bounded here; ``scripts/fuzz_pipeline.py`` runs thousands).

Each example is a real DICOM file (vendor corpus, pydicom's test files) mutated by one to
three operations (see :mod:`tests.fuzzing`). The agent must never crash (an exception
escaping), never hang, never deliver a file that does not parse, is short of pixel data,
or does not decode, and end every bad input with its own reason: a problem code that says
what is wrong (never ``internal``, kept for the agent's own bugs) and a sentence that names
neither the file nor anything read from it.

A hang is judged by CPU time, not wall time: on a loaded two-core machine a case that needs
2 s of CPU has taken more than 120 s of wall time (``docs/robustness.md``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.dicomfiles import is_complete, read_header
from agent.errors import SeriesProblem
from agent.integrity import check_deliverable
from tests.fuzzing import OPERATIONS, Runner, mutate, seed_files

# Damaged files make pydicom warn, quoting the damaged values: not the test's subject.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
SEEDS = seed_files()
_ops = st.lists(st.tuples(st.sampled_from(sorted(OPERATIONS)), st.integers(0, 2**32 - 1)),
                min_size=1, max_size=3)
def _fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


def test_there_are_real_seeds() -> None:
    assert len(SEEDS) >= 20, "pydicom's test files (and the corpus) should give seeds"


@_fuzz(100)
@given(seed=st.sampled_from(SEEDS), ops=_ops)
def test_watcher_checks_and_last_look_never_crash(tmp_path_factory: pytest.TempPathFactory,
                                                  seed: Path, ops: list[tuple[str, int]]
                                                  ) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "f.dcm"
    path.write_bytes(mutate(seed.read_bytes(), ops))
    try:
        read_header(path, folder)
    except OSError:
        pass
    is_complete(path, folder)
    try:
        check_deliverable([path])
    except SeriesProblem:
        pass


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    return Runner(tmp_path_factory.mktemp("fuzz-pipeline"))


# Hangs are caught per case by CPU time; the wall-clock timeout is for a deadlock only,
# with room for a machine whose cores are shared by several test runs.
@pytest.mark.timeout(900)
@_fuzz(15)
@given(seed=st.sampled_from(SEEDS), ops=_ops)
def test_process_never_crashes_nor_delivers_broken_files(runner: Runner, seed: Path,
                                                         ops: list[tuple[str, int]]) -> None:
    cpu = time.process_time()
    result = runner.run(mutate(seed.read_bytes(), ops))
    assert time.process_time() - cpu < CPU_PER_CASE, (seed.name, ops)
    assert result["invalid"] == [], result
    assert_clear_endings(result, seed)


#: CPU seconds one fuzzed file may cost the whole pipeline (the slowest of 3,000: ~10 s).
CPU_PER_CASE = 60.0


def assert_clear_endings(result: dict[str, object], seed: Path) -> None:
    """Every kept-back series has a code of its own and a reason with no file name."""
    codes, reasons = result["codes"], result["reasons"]
    assert isinstance(codes, list) and isinstance(reasons, list)
    for code, reason in zip(codes, reasons, strict=True):
        if code in ("internal", "series-problem"):
            raise AssertionError(f"no specific reason for {seed.name}: {code}: {reason} "
                                 f"(from {result['failures']})")
        assert seed.name not in reason and "f.dcm" not in reason, reason
