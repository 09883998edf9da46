"""The decoded size the headers announce is checked before any stage reads a pixel."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from agent.config import LimitsConfig
from agent.errors import SeriesProblem
from agent.limits import check_decoded_size
from agent.vocab import ProblemCode


def _claiming(path: Path, frames: int, *, long_header: bool) -> Path:
    """A small file whose header announces ``frames`` frames of 512 x 512 x 16 bits
    (with ``long_header``, a header longer than the one walk reads: pydicom parses it)."""
    ds = pydicom.dcmread(str(get_testdata_file("MR_small.dcm")))
    ds.Rows = ds.Columns = 512
    ds.NumberOfFrames = frames
    if long_header:
        ds.private_block(0x0029, "BENCH", create=True).add_new(0x10, "OB", bytes(400_000))
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("long_header", [False, True], ids=["one walk", "pydicom"])
def test_a_header_announcing_more_than_the_limit_is_refused(tmp_path: Path,
                                                             long_header: bool) -> None:
    small = _claiming(tmp_path / "a.dcm", 1, long_header=long_header)
    check_decoded_size([small], LimitsConfig(max_file_mb=1))  # 0.5 MB: within
    big = _claiming(tmp_path / "b.dcm", 8, long_header=long_header)  # 4 MB announced
    with pytest.raises(SeriesProblem) as caught:
        check_decoded_size([small, big], LimitsConfig(max_file_mb=1))
    assert caught.value.code == ProblemCode.TOO_LARGE and "max_file_mb" in str(caught.value)
    with pytest.raises(SeriesProblem, match="max_series_mb"):
        check_decoded_size([small, small, small], LimitsConfig(max_series_mb=1))
