"""Before/after pictures of the face a person can judge: depth-shaded 3-D surface views.

Rendered with numpy and Pillow only. The head is resampled onto an axis-aligned patient
(LPS) grid at the volume's own resolution (0.8-1.2 mm), rays are cast from the front and
from both sides, the first crossing of the skin threshold is found to a fraction of a voxel,
and the surface is lit from its normals (Lambert, with a little depth cue), so skin, eyes,
nose and ears read as a face, and a crack, a hole or a plate shows. Each view is at least
:data:`MIN_VIEW_PX` pixels tall. CT gets two rows per state: skin (-300 HU) and bone
(+300 HU) presets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image, ImageDraw

#: Spacing limits (mm) of the render grid.
FINEST_MM, COARSEST_MM = 0.8, 1.2
#: Views are scaled up to at least this height (pixels).
MIN_VIEW_PX = 480
#: CT window presets: (name, threshold in HU).
CT_PRESETS = (("skin", -300.0), ("bone", 300.0))

RENDER_SPACING = 1.5  # kept for callers that render coarse previews


def _to_lps(image: sitk.Image, spacing: float = RENDER_SPACING) -> sitk.Image:
    """Resample onto an identity-direction grid covering the volume's physical extent."""
    from agent.deface.qc import lps_grid

    grid = lps_grid(image, spacing)
    if (image.GetDirection() == grid.GetDirection() and image.GetSize() == grid.GetSize()
            and image.GetSpacing() == grid.GetSpacing()
            and image.GetOrigin() == grid.GetOrigin()):
        # Already that grid (an axial scan at the render's spacing): linear interpolation
        # at the voxel centres would give every value back as it is.
        return sitk.Cast(image, sitk.sitkFloat32)
    return sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), grid, sitk.Transform(),
                         sitk.sitkLinear, float(np.min(sitk.GetArrayViewFromImage(image))),
                         sitk.sitkFloat32)


def skin_threshold(image: sitk.Image) -> float:
    """An intensity separating air from skin (Otsu on the robust range)."""
    arr = sitk.GetArrayViewFromImage(image)
    hi = float(np.percentile(arr, 99.5))
    f = sitk.OtsuThresholdImageFilter()
    f.SetNumberOfHistogramBins(128)
    f.Execute(sitk.Clamp(sitk.Cast(image, sitk.sitkFloat32), sitk.sitkFloat32,
                         float(arr.min()), hi))
    return float(f.GetThreshold()) * 0.6


def depth_map(volume: np.ndarray, threshold: float, axis: int, reverse: bool) -> np.ndarray:
    """Index of the first voxel above ``threshold`` along ``axis`` (NaN where none)."""
    vol = np.flip(volume, axis) if reverse else volume
    hit = vol > threshold
    first = np.argmax(hit, axis=axis).astype(np.float32)
    first[~hit.any(axis=axis)] = np.nan
    return first


def fine_depth(volume: np.ndarray, threshold: float, axis: int, reverse: bool) -> np.ndarray:
    """Like :func:`depth_map`, with the crossing interpolated between the two voxels."""
    vol = np.moveaxis(np.flip(volume, axis) if reverse else volume, axis, 0)
    hit = vol > threshold
    any_hit = hit.any(axis=0)
    first = np.argmax(hit, axis=0)
    prev = np.maximum(first - 1, 0)
    rows, cols = np.indices(first.shape)
    v1 = vol[first, rows, cols]
    v0 = vol[prev, rows, cols]
    frac = np.where((first > 0) & (v1 > v0), (threshold - v0) / np.maximum(v1 - v0, 1e-6), 1.0)
    out = (prev + np.clip(frac, 0.0, 1.0)).astype(np.float32)
    out[first == 0] = 0.0
    out[~any_hit] = np.nan
    return out


def shade(depth: np.ndarray) -> np.ndarray:
    """Depth map (voxels) -> 8-bit grey picture, lit from the viewer and a little above."""
    finite = np.isfinite(depth)
    if not finite.any():
        return np.zeros(depth.shape, np.uint8)
    d = np.where(finite, depth, np.nanmax(depth))
    gy, gx = np.gradient(d)
    gy, gx = np.clip(gy, -6, 6), np.clip(gx, -6, 6)
    norm = np.sqrt(1.0 + gx ** 2 + gy ** 2)
    light = np.array([0.0, -0.35, 1.0])
    light /= np.linalg.norm(light)
    # Normal (-gx, -gy, 1)/norm; rows grow downwards (superior is up after the flip).
    lambert = np.clip((-gx * light[0] - gy * light[1] + light[2]) / norm, 0.0, 1.0)
    lo, span = float(np.nanmin(depth)), max(1e-6, float(np.nanmax(depth) - np.nanmin(depth)))
    near = 1.0 - (d - lo) / span
    img = 255.0 * (0.12 + 0.88 * lambert) * (0.55 + 0.45 * near)
    img[~finite] = 0.0
    return img.clip(0, 255).astype(np.uint8)


def render_spacing(image: sitk.Image) -> float:
    return float(np.clip(min(image.GetSpacing()), FINEST_MM, COARSEST_MM))


def views(image: sitk.Image | np.ndarray, threshold: float, spacing: float | None = None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(front, left side, right side) shaded depth pictures; superior is up. ``image``
    may be an LPS array made by :func:`_to_lps` already."""
    if isinstance(image, np.ndarray):
        vol = image
    else:
        vol = sitk.GetArrayFromImage(_to_lps(image, spacing or render_spacing(image)))
    # Front: rays from anterior (low y) towards posterior. Sides: from the left (high x)
    # and from the right (low x).
    front = shade(fine_depth(vol, threshold, axis=1, reverse=False))[::-1, ::-1]
    left = shade(fine_depth(vol, threshold, axis=2, reverse=True))[::-1, :]
    right = shade(fine_depth(vol, threshold, axis=2, reverse=False))[::-1, ::-1]
    return front, left, right


def _label(pic: np.ndarray, text: str) -> np.ndarray:
    img = Image.fromarray(pic)
    ImageDraw.Draw(img).text((6, 4), text, fill=255)
    return np.asarray(img)


def _row(image: np.ndarray, threshold: float, spacing: float, title: str) -> np.ndarray:
    front, left, right = views(image, threshold, spacing)
    height = max(v.shape[0] for v in (front, left, right))
    zoom = max(1, int(np.ceil(MIN_VIEW_PX / height)))
    parts = []
    for name, v in (("front", front), ("left", left), ("right", right)):
        pad = np.zeros((height, v.shape[1]), np.uint8)
        pad[: v.shape[0]] = v
        big = np.asarray(Image.fromarray(pad).resize(
            (pad.shape[1] * zoom, pad.shape[0] * zoom), Image.Resampling.BICUBIC))
        parts.append(_label(big, f"{title} - {name}"))
        parts.append(np.zeros((big.shape[0], 4), np.uint8))
    return np.concatenate(parts[:-1], axis=1)


def render_before_after(before: sitk.Image, after: sitk.Image, path: Path, *,
                        modality: str = "MR") -> Path:
    """Write a PNG: rows before / after (and, for CT, skin and bone presets), columns
    front, left and right surface views at the volume's resolution."""
    spacing = render_spacing(before)
    if str(modality).upper() == "CT":
        presets = [(f"{name} {hu:+.0f} HU", hu) for name, hu in CT_PRESETS]
    else:
        # Every eighth voxel is plenty for a histogram threshold (a full 256^3 volume's
        # percentile and Otsu cost 0.45 CPU-s).
        sample = before[::2, ::2, ::2] if before.GetNumberOfPixels() > 4_000_000 else before
        presets = [("skin", skin_threshold(sample))]
    volumes = [("before", sitk.GetArrayFromImage(_to_lps(before, spacing))),
               ("after", sitk.GetArrayFromImage(_to_lps(after, spacing)))]
    rows = []
    for name, thr in presets:
        for state, vol in volumes:
            rows.append(_row(vol, thr, spacing, f"{state} ({name})"))
    width = max(r.shape[1] for r in rows)
    gap = 6
    pic = np.zeros((sum(r.shape[0] for r in rows) + gap * (len(rows) - 1), width), np.uint8)
    y = 0
    for r in rows:
        pic[y:y + r.shape[0], : r.shape[1]] = r
        y += r.shape[0] + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pic).save(path, format="PNG", compress_level=3)
    return path
