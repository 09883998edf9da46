"""The last look before delivery (agent.integrity): checked in the process pool for a large
series, it finds what the agent's own process finds, names the same file, and is never
skipped when the pool is gone."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pydicom
import pytest

from agent.errors import SeriesProblem
from agent.integrity import POOL_FILES, check_deliverable
from agent.vocab import ProblemCode
from tests.conftest import write_series

BAD = POOL_FILES - 7  # a file in a late part, not one of the decoded sample


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_series(tmp_path_factory.mktemp("out"), POOL_FILES + 6)


@pytest.fixture(scope="module")
def short_series(tmp_path_factory: pytest.TempPathFactory, series: list[Path]) -> list[Path]:
    """The same series, file BAD with the end of its pixel data lost (a buggy stage)."""
    folder = tmp_path_factory.mktemp("short")
    out = []
    for i, path in enumerate(series):
        ds = pydicom.dcmread(path)
        if i == BAD:
            ds.PixelData = ds.PixelData[:-64]
        out.append(folder / path.name)
        ds.save_as(out[-1])
    return out


@pytest.fixture
def pool() -> Iterator[ProcessPoolExecutor]:
    # Forked: the workers start at once with this process's imports (the agent's fork
    # server gives its workers the same).
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as executor:
        yield executor


def test_a_pool_describes_every_file_as_this_process_does(
        series: list[Path], pool: ProcessPoolExecutor) -> None:
    here = check_deliverable(series)
    assert len(here) == len(series)
    assert check_deliverable(series, pool) == here


def test_a_pool_names_the_broken_file_by_its_place_in_the_series(
        short_series: list[Path], pool: ProcessPoolExecutor) -> None:
    with pytest.raises(SeriesProblem) as here:
        check_deliverable(short_series)
    with pytest.raises(SeriesProblem) as pooled:
        check_deliverable(short_series, pool)
    assert pooled.value.code == here.value.code == ProblemCode.INVALID_OUTPUT
    assert str(pooled.value) == str(here.value)
    assert f"file {BAD + 1} of {len(short_series)}" in str(pooled.value)


def test_a_pool_that_is_gone_leaves_the_check_to_this_process(
        short_series: list[Path]) -> None:
    gone = ProcessPoolExecutor(1)
    gone.shutdown()
    with pytest.raises(SeriesProblem, match=f"file {BAD + 1} of"):
        check_deliverable(short_series, gone)


def test_a_sampled_frame_that_does_not_decode_is_found(tmp_path: Path) -> None:
    """The sampled files' frames are decoded, not only their structure walked: an RLE
    image whose frame's first segment starts beyond the frame's end (every element whole,
    every length right) is kept back, while the intact image passes."""
    from pydicom.data import get_testdata_file

    good = Path(str(get_testdata_file("MR_small_RLE.dcm")))  # bundled with pydicom
    ds = pydicom.dcmread(good)
    data = bytearray(ds.PixelData)
    fragment = 8 + int.from_bytes(data[4:8], "little") + 8  # past the offset table item
    assert int.from_bytes(data[fragment:fragment + 4], "little") == 2  # 16-bit: 2 segments
    data[fragment + 4:fragment + 8] = (10**6).to_bytes(4, "little")  # segment 1's offset
    ds.PixelData = bytes(data)
    bad = tmp_path / "bad.dcm"
    ds.save_as(bad)
    assert set(check_deliverable([good])) == {good}
    with pytest.raises(SeriesProblem, match="do not decode") as problem:
        check_deliverable([bad])
    assert problem.value.code == ProblemCode.INVALID_OUTPUT
