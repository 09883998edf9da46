"""The verifier's checks of a large series run in the process pool, each output read once
for the field and the pixel checks: every kind of finding must still be found there, and
reported for the right file. The ``pixels`` stage is skipped: the verifier alone decides."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from agent.deid import DeidStage, VerifyStage
from agent.deid.stage import POOL_THRESHOLD
from agent.errors import LeakFound
from agent.pixels.stage import text_checked
from agent.work import SeriesWork
from tests.pixels.helpers import (
    SECRET,
    SHOWN,
    burn,
    copy_series,
    corpus_series,
    make_config,
    make_work,
)

MPRAGE = "dcm_qa_ge/05_3D_Ax_T1_MP_RAGE_R22"
COUNT = POOL_THRESHOLD + 6  # a series the stages hand to the pool


@pytest.fixture(scope="module")
def deidentified(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SeriesWork]:
    """A real 256 x 256 GE series of ``COUNT`` slices, identity planted, de-identified."""
    tmp = tmp_path_factory.mktemp("pool")
    files = corpus_series(MPRAGE)
    if len(files) < COUNT:
        pytest.skip(f"{MPRAGE} has fewer than {COUNT} slices")
    src = copy_series(files[:COUNT], tmp / "src")
    cfg = make_config(tmp)
    assert cfg.worker_count > 1
    work = make_work(tmp, src)
    DeidStage(text_checked(cfg), SECRET)(work)
    assert len(work.files) == COUNT
    return tmp, work


def _edited(work: SeriesWork, index: int, tmp: Path,
            edit: Callable[[pydicom.Dataset], None]) -> SeriesWork:
    """A copy of the de-identified outputs with output ``index`` changed by ``edit``."""
    out = tmp / "edited"
    out.mkdir()
    files = []
    for i, path in enumerate(work.files):
        ds = pydicom.dcmread(path)
        if i == index:
            edit(ds)
        target = out / path.name
        ds.save_as(target)
        files.append(target)
    return SeriesWork(key=work.key, version=1, source_files=work.source_files,
                      workdir=tmp / "w", files=files)


def test_a_clean_large_series_passes(deidentified: tuple[Path, SeriesWork],
                                     tmp_path: Path) -> None:
    tmp, work = deidentified
    VerifyStage(make_config(tmp_path))(work)


def test_name_burned_into_the_middle_slice_is_read_by_the_pool(
        deidentified: tuple[Path, SeriesWork], tmp_path: Path) -> None:
    """The OCR sample of a volume is its first, middle and last frame."""
    _tmp, work = deidentified
    middle = (COUNT - 1) // 2

    def write(ds: pydicom.Dataset) -> None:
        arr = ds.pixel_array.copy()
        burn(arr, SHOWN[0], 4, 4, size=16, value=float(arr.max()))
        ds.PixelData = arr.tobytes()

    edited = _edited(work, middle, tmp_path, write)
    with pytest.raises(LeakFound, match=f"{edited.files[middle].name}: OCR reads"):
        VerifyStage(make_config(tmp_path))(edited)


def test_bytes_after_the_samples_of_one_slice_are_found_by_the_pool(
        deidentified: tuple[Path, SeriesWork], tmp_path: Path) -> None:
    _tmp, work = deidentified
    index = COUNT - 3

    def hide(ds: pydicom.Dataset) -> None:
        ds.PixelData = bytes(ds.PixelData) + b"ID"

    edited = _edited(work, index, tmp_path, hide)
    with pytest.raises(LeakFound, match=f"{edited.files[index].name}: bytes after"):
        VerifyStage(make_config(tmp_path))(edited)
