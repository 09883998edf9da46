"""The cheap bounds that let most frames skip the text searches are exact: a frame they
pass over has nothing the full search would have found."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from agent.deid import verify_glyphs
from agent.pixels import morph, prefilter
from agent.pixels.gate import may_hold_strokes


def _strokes(stack: npt.NDArray[np.generic]) -> npt.NDArray[np.bool_]:
    """Per frame: whether the pre-filter's top-hats (full and half resolution) hold a
    stroke pixel - what the gate bounds."""
    display = prefilter.to_display(stack)
    out = np.zeros(len(stack), bool)
    for frames in (display, morph._half(display)):
        hats = prefilter.stroke_hats(frames)
        out |= ((hats.bright > prefilter.STROKE_THRESHOLD)
                | (hats.dark > prefilter.STROKE_THRESHOLD)).any(axis=(1, 2))
    return out


def _frames(rng: np.random.Generator, count: int) -> list[npt.NDArray[np.generic]]:
    """Smooth frames with noise, ridges and specks near the stroke threshold, of odd and
    even sizes, signed and unsigned."""
    out: list[npt.NDArray[np.generic]] = []
    for k in range(count):
        rows, cols = (int(v) for v in rng.integers(120, 180, 2))
        yy, xx = np.mgrid[:rows, :cols]
        amp = float(rng.uniform(50, 2000))
        # A smooth head on air (the prefilter takes a slope's corner for a dark stroke).
        width = float(rng.uniform(0.12, 0.15)) * min(rows, cols)
        frame = amp * np.exp(-((yy - rows / 2) ** 2 + (xx - cols / 2) ** 2) / (2 * width ** 2))
        # A bright plateau (a marker, wider than any stroke, on the blocks' grid) sets the
        # frame's range: the head's slopes and noise come out near the threshold.
        frame[:16, :16] = amp * rng.uniform(1, 6)
        frame += rng.uniform(0, amp * rng.uniform(0.002, 0.2), (rows, cols))
        if k % 3 == 0:  # a faint line: a stroke just under or over the threshold
            frame[int(rng.integers(0, rows)), :] += amp * rng.uniform(0.05, 0.15)
        if k % 3 == 1:
            frame[int(rng.integers(0, rows)), int(rng.integers(0, cols))] -= amp * 0.12
        dtype = (np.int16, np.uint16, np.uint8)[k % 3]
        top = np.iinfo(dtype).max
        out.append(np.clip(frame * (100 / amp if dtype == np.uint8 else 1), 0, top
                           ).astype(dtype))
    return out


def test_a_frame_the_gate_passes_over_has_no_stroke() -> None:
    rng = np.random.default_rng(13)
    passed_over = searched = 0
    for frame in _frames(rng, 240):
        stack = frame[None]
        maybe = bool(may_hold_strokes(stack)[0])
        if not maybe:
            passed_over += 1
            assert not _strokes(stack)[0]
        else:
            searched += 1
    # Both kinds occur, so the property was tested where it matters.
    assert passed_over > 20 and searched > 20


def test_smooth_slices_are_passed_over_and_text_is_not() -> None:
    from tests.pixels.helpers import burn

    yy, xx = np.mgrid[:256, :256]
    rng = np.random.default_rng(0)
    base = (2000 * np.exp(-((yy - 128) ** 2 + (xx - 128) ** 2) / 5000)).astype(np.int16)
    stack = np.stack([base + rng.integers(0, 50, (256, 256)).astype(np.int16)
                      for _ in range(4)])
    burn(stack[2], "ID 84213977", 4, 4, size=8)
    assert may_hold_strokes(stack).tolist() == [False, False, True, False]
    assert _strokes(stack).tolist() == [False, False, True, False]


def test_verifier_step_bound_holds_and_passes_over_smooth_frames() -> None:
    rng = np.random.default_rng(14)
    for frame in _frames(rng, 120):
        stack = frame[None]
        bound = verify_glyphs.largest_steps(stack)[0]
        gray = verify_glyphs._gray(stack[:, ::2]).astype(np.int16)
        true = int(np.abs(np.diff(gray, axis=2)).max()) if gray.shape[2] > 1 else 0
        assert true <= bound
        if bound < verify_glyphs._EDGE:
            assert verify_glyphs._text_boxes(stack) == []
