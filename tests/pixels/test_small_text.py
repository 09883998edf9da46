"""Small, faint, inverted, cut-off and unreadable burned-in text on a real slice: found and
redacted (whatever OCR made of it), judged by an independent reading and by where the
planted ink was; and the verifier's own search catches small text the stage left."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
import pytest

from agent.deid import DeidStage, VerifyStage
from agent.errors import LeakFound
from agent.pixels.ocr import Reader, find_tessdata
from agent.pixels.text import Line, TextScanner, redact

from .helpers import (
    SECRET,
    burn,
    copy_series,
    corpus_series,
    make_config,
    make_work,
    planted_identity,
    reads_identity,
)
from .test_text import MPRAGE

#: (text, x, y, size, font, relative value, label box): x < 0 counts from the right edge.
CASES = {
    "8px-faint-corner": ("CANARYSSON, WILHELMINA", 3, 3, 8, "DejaVuSans.ttf", 0.35, False),
    "7px-mono-bottom": ("ID 84213977", 140, 246, 7, "DejaVuSansMono.ttf", 1.0, False),
    "inverted-label": ("DOB 12/03/1961", -92, 6, 9, "DejaVuSans.ttf", 0.0, True),
    "bitmap-8px": ("12-Mar-1961", -70, 244, 8, None, 0.8, False),
    "cut-by-edge": ("WILHELMINA CANARYSSON", -80, 30, 12, "DejaVuSerif-Bold.ttf", 1.0, False),
    "cyrillic": ("Вильгельмина Канарисон", 4, 244, 9, "DejaVuSans.ttf", 0.9, False),
}


@pytest.fixture(scope="module")
def reader() -> Reader:
    return Reader(find_tessdata())


@pytest.fixture(scope="module")
def slice_() -> npt.NDArray[np.generic]:
    arr: npt.NDArray[np.generic] = pydicom.dcmread(corpus_series(MPRAGE)[60]).pixel_array
    return arr


def _plant(frame: npt.NDArray[np.generic], case: str) -> npt.NDArray[np.bool_]:
    """Burn one case in place; returns the mask of its ink."""
    text, x, y, size, font_name, rel, label = CASES[case]
    cols = frame.shape[1]
    x = cols + x if x < 0 else x
    peak = float(frame.max())
    before = frame.copy()
    if label:  # a white label box with dark text, as some viewers draw
        frame[max(0, y - 3):y + size + 4, x - 3:cols] = int(peak)
    burn(frame, text, x, y, size=size, font_name=font_name, value=peak * rel)
    ink = frame != before
    if label:
        ink &= frame.astype(np.float64) < peak * 0.8
    return ink


def _covered(lines: list[Line], ink: npt.NDArray[np.bool_]) -> float:
    box = np.zeros_like(ink)
    for ln in lines:
        box[ln.top:ln.top + ln.height, ln.left:ln.left + ln.width] = True
    return float((ink & box).sum()) / max(int(ink.sum()), 1)


@pytest.mark.parametrize("case", sorted(CASES))
def test_small_faint_inverted_and_unreadable_text_is_redacted(
        case: str, reader: Reader, slice_: npt.NDArray[np.generic]) -> None:
    frame = slice_.copy()
    ink = _plant(frame, case)
    stack = frame[None].copy()
    lines = TextScanner(reader, planted_identity(), redact_all=False).scan(
        stack, 1, sensitive=False)
    assert _covered(lines, ink) >= 0.9, (case, lines)
    redact(stack, lines)
    assert reads_identity(reader, planted_identity(), stack[0]) is None
    if case == "cyrillic":  # no English OCR reads it: redacted because it looks like text
        assert {ln.kind for ln in lines} == {"unread"}


def test_harmless_text_read_with_confidence_is_kept(
        reader: Reader, slice_: npt.NDArray[np.generic]) -> None:
    frame = slice_.copy()
    burn(frame, "Se 4 Im 17 TR 500", 4, 4, size=12, value=float(frame.max()))
    lines = TextScanner(reader, planted_identity(), redact_all=False).scan(
        frame[None], 1, sensitive=False)
    assert lines == []


def test_verifier_quarantines_small_text_the_stage_missed(tmp_path: Path) -> None:
    """The stage is skipped: 8-pixel text on one slice of a de-identified series reaches the
    verifier, whose own search (every frame, boxes scaled up) finds it."""
    cfg = make_config(tmp_path)
    work = make_work(tmp_path, copy_series(corpus_series(MPRAGE)[58:62], tmp_path / "src"))
    from agent.pixels import text_checked

    DeidStage(text_checked(cfg), SECRET)(work)
    target = work.files[2]
    ds = pydicom.dcmread(target)
    arr = ds.pixel_array.copy()
    burn(arr, "ID 84213977", 150, 246, size=8, value=float(arr.max()))
    ds.PixelData = arr.tobytes()
    ds.save_as(target)
    with pytest.raises(LeakFound, match=r"small burned-in text \(frame 0, rows"):
        VerifyStage(cfg)(work)
