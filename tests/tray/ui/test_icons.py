"""The icons: one distinct, legible look per state, at every tray size."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageChops, ImageStat

from agent.status import AgentState
from agent.ui.icons import LOOKS, contact_sheet, render_icon

SIZES = (16, 22, 24, 32, 48, 64)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("state", list(AgentState))
def test_icon_is_rgba_of_the_requested_size(state: AgentState, size: int) -> None:
    img = render_icon(state, size)
    assert img.mode == "RGBA"
    assert img.size == (size, size)
    # The tile covers most of the square (visible), corners stay transparent (rounded).
    alpha = img.getchannel("A")
    assert ImageStat.Stat(alpha).mean[0] > 0.7 * 255
    corner = alpha.getpixel((0, 0))
    assert isinstance(corner, int) and corner < 128


@pytest.mark.parametrize("size", (16, 32, 64))
def test_every_state_looks_different(size: int) -> None:
    images = {s: render_icon(s, size).convert("RGB") for s in AgentState}
    states = list(images)
    for i, a in enumerate(states):
        for b in states[i + 1:]:
            diff = np.asarray(ImageChops.difference(images[a], images[b]))
            changed = int((diff.max(axis=2) > 48).sum())
            assert changed > size * size * 0.2, f"{a} and {b} look alike at {size} px"


@pytest.mark.parametrize("state", list(AgentState))
def test_fill_colour_dominates_and_glyph_contrasts(state: AgentState) -> None:
    img = np.asarray(render_icon(state, 32).convert("RGB")).astype(int)
    fill = np.array(LOOKS[state].fill[:3])
    ink = np.array(LOOKS[state].ink[:3])
    near = int((np.abs(img - fill).max(axis=2) < 30).sum())
    glyph = int((np.abs(img - ink).max(axis=2) < 60).sum())
    assert near > 32 * 32 * 0.3
    assert glyph > 20, "the glyph must be visible at 32 px"


def test_readable_on_light_and_dark_taskbars() -> None:
    # The icon differs strongly from both backgrounds: dark rim on light, fill on dark.
    for state in AgentState:
        icon = render_icon(state, 24)
        for bg in ((240, 240, 240), (24, 24, 24)):
            base = Image.new("RGBA", icon.size, bg + (255,))
            shown = Image.alpha_composite(base, icon).convert("RGB")
            diff = np.asarray(ImageChops.difference(shown, base.convert("RGB")))
            changed = int((diff.max(axis=2) > 60).sum())
            assert changed > 24 * 24 * 0.5, f"{state} fades into {bg}"


def test_progress_ring_shows_progress() -> None:
    empty = render_icon(AgentState.WORKING, 48, 0.0)
    half = render_icon(AgentState.WORKING, 48, 0.5)
    full = render_icon(AgentState.WORKING, 48, 1.0)

    def white(img: Image.Image) -> int:
        return int((np.asarray(img)[:, :, :3].min(axis=2) > 230).sum())

    assert white(empty) < white(half) < white(full)
    # Other states ignore progress; tiny icons skip the ring.
    assert render_icon(AgentState.IDLE, 32, 0.5).tobytes() == render_icon(
        AgentState.IDLE, 32).tobytes()
    assert render_icon(AgentState.WORKING, 16, 0.5).tobytes() == render_icon(
        AgentState.WORKING, 16).tobytes()


def test_too_small_is_refused() -> None:
    with pytest.raises(ValueError):
        render_icon(AgentState.IDLE, 4)


def test_contact_sheet_has_every_state_on_both_backgrounds() -> None:
    sheet = contact_sheet((16, 32))
    assert sheet.width == 2 * 2 * (32 + 8)
    assert sheet.height == len(AgentState) * (32 + 8)
