"""A series defaced here is judged by its source's Image Type, not by the DERIVED mark the
defacing writes on its outputs: an acquired head is searched like any acquisition (line
candidates, not every frame read whole - that made a 180-slice head take 25 s), and its
burned-in text is still found; a viewer's derived series stays read whole."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from agent.deid import DeidStage
from agent.pixels import PixelStage, text_checked
from agent.pixels.text import TextScanner
from agent.work import SeriesWork

from .helpers import SECRET, SHOWN, burn, copy_series, corpus_series, make_config, make_work
from .test_text import MPRAGE, readable


def _defaced(tmp: Path, source_type: list[str]) -> SeriesWork:
    """A de-identified series whose outputs carry the defacing's mark (Image Type DERIVED),
    made from sources of ``source_type``; slice 2 shows a name."""

    def edit(ds: pydicom.Dataset, i: int) -> None:
        ds.ImageType = source_type
        if i == 2:
            arr = ds.pixel_array.copy()
            burn(arr, SHOWN[0], 4, 4, size=12, value=float(arr.max()))
            ds.PixelData = arr.tobytes()

    src = copy_series(corpus_series(MPRAGE)[50:56], tmp / "src", edit)
    work = make_work(tmp, src)
    DeidStage(text_checked(make_config(tmp)), SECRET)(work)
    for path in work.files:  # what agent.deface.dicomio does to every defaced output
        ds = pydicom.dcmread(path)
        ds.ImageType = ["DERIVED", *list(ds.ImageType)[1:]]
        ds.save_as(path)
    work.defaced = True
    return work


@pytest.fixture
def whole_frames(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts whole-frame OCR passes (the expensive search of captures and derived images)."""
    calls: list[int] = []
    real = TextScanner._whole_frame

    def counting(self: TextScanner, plane: object, frame: int) -> object:
        calls.append(frame)
        return real(self, plane, frame)  # type: ignore[arg-type]

    monkeypatch.setattr(TextScanner, "_whole_frame", counting)
    return calls


def test_acquired_head_defaced_here_is_searched_as_an_acquisition(
        tmp_path: Path, whole_frames: list[int]) -> None:
    work = _defaced(tmp_path, ["ORIGINAL", "PRIMARY", "OTHER"])
    PixelStage(make_config(tmp_path))(work)
    assert whole_frames == []
    assert readable(work.files) == []  # the name on slice 2 was found and redacted


def test_a_derived_source_defaced_here_is_still_read_whole(
        tmp_path: Path, whole_frames: list[int]) -> None:
    work = _defaced(tmp_path, ["DERIVED", "SECONDARY", "MPR"])
    PixelStage(make_config(tmp_path))(work)
    assert len(whole_frames) == len(work.files)
    assert readable(work.files) == []


def test_derived_outputs_not_defaced_here_are_read_whole(
        tmp_path: Path, whole_frames: list[int]) -> None:
    work = _defaced(tmp_path, ["ORIGINAL", "PRIMARY", "OTHER"])
    work.defaced = False  # DERIVED then says what it says: a derived image
    PixelStage(make_config(tmp_path))(work)
    assert len(whole_frames) == len(work.files)
