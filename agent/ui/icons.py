"""Tray icons drawn with Pillow at runtime, one look per :class:`~agent.status.AgentState`.

Each icon is a coloured rounded tile with a dark rim and a one-stroke glyph. The colour
tells the state at a glance, the glyph tells it without colour vision; the dark rim keeps
the tile visible on light taskbars and the saturated fill on dark ones. Everything is
drawn at four times the requested size and scaled down, so edges stay smooth from 16 to
64 px (and beyond).
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw

from agent.status import AgentState

#: Supersampling factor: drawn big, then downsampled with a good filter.
_SS = 4

RIM = (20, 24, 28, 255)
WHITE = (255, 255, 255, 255)
DARK = (30, 30, 30, 255)


@dataclass(frozen=True)
class Look:
    """Colour and glyph of one state (also used by the Recent activity window)."""

    fill: tuple[int, int, int, int]
    glyph: str
    #: The glyph colour: dark on light fills (amber), white otherwise, for contrast.
    ink: tuple[int, int, int, int] = WHITE


LOOKS: dict[AgentState, Look] = {
    AgentState.IDLE: Look((46, 160, 67, 255), "check"),
    AgentState.WORKING: Look((25, 118, 210, 255), "arrow"),
    AgentState.PAUSED: Look((245, 176, 20, 255), "pause", DARK),
    AgentState.OFFLINE: Look((140, 148, 156, 255), "cloud-off"),
    AgentState.CREDENTIALS: Look((142, 36, 170, 255), "lock"),
    AgentState.ATTENTION: Look((211, 47, 47, 255), "bang"),
    AgentState.STOPPED: Look((80, 84, 90, 255), "stop"),
    AgentState.DISK_FULL: Look((0, 150, 136, 255), "pause"),
    AgentState.SETUP: Look((255, 112, 67, 255), "bang", DARK),
    AgentState.UNHEALTHY: Look((233, 30, 99, 255), "bang"),
}


def render_icon(state: AgentState, size: int = 64, progress: float | None = None) -> Image.Image:
    """The RGBA icon of ``state`` at ``size`` x ``size`` pixels.

    ``progress`` (0..1) is drawn as a ring around the glyph of the working icon (24 px and
    up), so a person sees a long batch advance; it is ignored for the other states.
    """
    if size < 8:
        raise ValueError(f"icon size must be at least 8 px, not {size}")
    look = LOOKS[state]
    big = size * _SS
    img = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    # Small icons get a relatively thicker rim and glyph strokes, or they vanish at 16 px.
    rim = max(_SS, round(big * (0.07 if size <= 24 else 0.05)))
    pad = round(big * 0.03)
    box = (pad, pad, big - 1 - pad, big - 1 - pad)
    draw.rounded_rectangle(box, radius=round(big * 0.22), fill=RIM)
    inner = (pad + rim, pad + rim, big - 1 - pad - rim, big - 1 - pad - rim)
    draw.rounded_rectangle(inner, radius=round(big * 0.22) - rim, fill=look.fill)
    stroke = max(_SS * 2, round(big * (0.14 if size <= 24 else 0.11)))
    _GLYPHS[look.glyph](draw, big, stroke, look.ink)
    # Below 24 px a ring only muddies the arrow; the colour alone says "working" there.
    if state is AgentState.WORKING and progress is not None and size >= 24:
        _progress_ring(draw, big, rim, max(0.0, min(1.0, progress)))
    return img.resize((size, size), Image.Resampling.LANCZOS)


def _progress_ring(draw: ImageDraw.ImageDraw, big: int, rim: int, progress: float) -> None:
    """A white arc along the inside of the rim, clockwise from 12 o'clock, on a faint track."""
    inset = rim + round(big * 0.06)
    width = max(_SS, round(big * 0.06))
    box = (inset, inset, big - 1 - inset, big - 1 - inset)
    # The track is an opaque tint: a translucent one would punch a hole into the tile.
    fill = LOOKS[AgentState.WORKING].fill
    track = tuple(round(c * 0.6 + 255 * 0.4) for c in fill[:3]) + (255,)
    draw.arc(box, -90, -90 + 360, fill=track, width=width)
    if progress > 0:
        draw.arc(box, -90, -90 + 360 * progress, fill=WHITE, width=width)


def _pt(big: int, x: float, y: float) -> tuple[float, float]:
    return (x * big, y * big)


def _check(draw: ImageDraw.ImageDraw, big: int, stroke: int, ink: tuple[int, ...]) -> None:
    pts = [_pt(big, 0.28, 0.52), _pt(big, 0.44, 0.68), _pt(big, 0.73, 0.34)]
    draw.line(pts, fill=ink, width=stroke, joint="curve")
    _caps(draw, pts, stroke, ink)


def _arrow(draw: ImageDraw.ImageDraw, big: int, stroke: int, ink: tuple[int, ...]) -> None:
    # An upward arrow: "sending to the cloud".
    draw.line([_pt(big, 0.5, 0.74), _pt(big, 0.5, 0.32)], fill=ink, width=stroke)
    head = [_pt(big, 0.30, 0.50), _pt(big, 0.5, 0.29), _pt(big, 0.70, 0.50)]
    draw.line(head, fill=ink, width=stroke, joint="curve")
    _caps(draw, head, stroke, ink)
    _caps(draw, [_pt(big, 0.5, 0.74)], stroke, ink)


def _pause(draw: ImageDraw.ImageDraw, big: int, stroke: int, ink: tuple[int, ...]) -> None:
    w = max(stroke, round(big * 0.13))
    for x in (0.37, 0.63):
        cx = x * big
        draw.rounded_rectangle(
            (cx - w / 2, big * 0.28, cx + w / 2, big * 0.72), radius=w // 3, fill=ink
        )


def _bang(draw: ImageDraw.ImageDraw, big: int, stroke: int, ink: tuple[int, ...]) -> None:
    w = max(stroke, round(big * 0.13))
    cx = big / 2
    bar = (cx - w / 2, big * 0.22, cx + w / 2, big * 0.58)
    draw.rounded_rectangle(bar, radius=w // 2, fill=ink)
    draw.ellipse((cx - w / 2 - 1, big * 0.66, cx + w / 2 + 1, big * 0.66 + w + 2), fill=ink)


def _lock(draw: ImageDraw.ImageDraw, big: int, stroke: int, ink: tuple[int, ...]) -> None:
    # Shackle (an arc) over a solid body: "credentials".
    s = max(_SS * 2, round(stroke * 0.8))
    draw.arc(_box(big, 0.34, 0.22, 0.66, 0.58), 180, 360, fill=ink, width=s)
    draw.line([_pt(big, 0.34, 0.40), _pt(big, 0.34, 0.50)], fill=ink, width=s)
    draw.line([_pt(big, 0.66, 0.40), _pt(big, 0.66, 0.50)], fill=ink, width=s)
    draw.rounded_rectangle(_box(big, 0.25, 0.47, 0.75, 0.78), radius=round(big * 0.05), fill=ink)


def _cloud_off(draw: ImageDraw.ImageDraw, big: int, stroke: int, ink: tuple[int, ...]) -> None:
    # A cloud crossed out: "the target is out of reach".
    draw.ellipse(_box(big, 0.20, 0.42, 0.46, 0.68), fill=ink)
    draw.ellipse(_box(big, 0.34, 0.28, 0.66, 0.60), fill=ink)
    draw.ellipse(_box(big, 0.54, 0.40, 0.80, 0.66), fill=ink)
    draw.rectangle(_box(big, 0.33, 0.50, 0.67, 0.68), fill=ink)
    fill = LOOKS[AgentState.OFFLINE].fill
    a, b = _pt(big, 0.22, 0.22), _pt(big, 0.78, 0.80)
    # The slash is cut out in the fill colour, then drawn, so it reads at 16 px.
    draw.line([a, b], fill=fill, width=round(stroke * 1.9))
    draw.line([a, b], fill=ink, width=round(stroke * 0.75))


def _stop(draw: ImageDraw.ImageDraw, big: int, stroke: int, ink: tuple[int, ...]) -> None:
    draw.rounded_rectangle(_box(big, 0.32, 0.32, 0.68, 0.68), radius=round(big * 0.04), fill=ink)


def _box(big: int, x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
    return (round(x0 * big), round(y0 * big), round(x1 * big), round(y1 * big))


def _caps(
    draw: ImageDraw.ImageDraw,
    pts: list[tuple[float, float]],
    stroke: int,
    ink: tuple[int, ...],
) -> None:
    """Round line ends (Pillow draws square ones), for the ends of a polyline."""
    r = stroke / 2
    for x, y in (pts[0], pts[-1]):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=ink)


_GLYPHS = {
    "check": _check,
    "arrow": _arrow,
    "pause": _pause,
    "bang": _bang,
    "lock": _lock,
    "cloud-off": _cloud_off,
    "stop": _stop,
}


def icon_set(
    sizes: tuple[int, ...] = (16, 24, 32, 48, 64),
) -> dict[tuple[AgentState, int], Image.Image]:
    """Every state at every size: for installers (an .ico) and for a quick visual check."""
    return {(state, size): render_icon(state, size) for state in AgentState for size in sizes}


def contact_sheet(sizes: tuple[int, ...] = (16, 24, 32, 48, 64)) -> Image.Image:
    """All icons on a light and a dark strip, to check legibility on both kinds of taskbar."""
    states = list(AgentState)
    cell = max(sizes) + 8
    width = cell * len(sizes)
    sheet = Image.new("RGBA", (width * 2, cell * len(states)), (0, 0, 0, 255))
    for half, bg in enumerate(((240, 240, 240, 255), (32, 32, 32, 255))):
        sheet.paste(bg, (half * width, 0, (half + 1) * width, sheet.height))
        for row, state in enumerate(states):
            for col, size in enumerate(sizes):
                img = render_icon(state, size, 0.6 if state is AgentState.WORKING else None)
                x = half * width + col * cell + (cell - size) // 2
                y = row * cell + (cell - size) // 2
                sheet.alpha_composite(img, (x, y))
    return sheet

