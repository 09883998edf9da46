"""Before/after pictures of the face: depth-shaded surface views from the front and the side.

Rendered with numpy and Pillow only: the head is resampled onto an axis-aligned patient (LPS)
grid, rays are cast from the front (anterior) and from the left side, and the depth of the
first voxel above the skin threshold is shaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

RENDER_SPACING = 1.5


def _to_lps(image: sitk.Image, spacing: float = RENDER_SPACING) -> sitk.Image:
    """Resample onto an identity-direction grid covering the volume's physical extent."""
    size = np.array(image.GetSize())
    corners = np.array([
        image.TransformContinuousIndexToPhysicalPoint([float(c) for c in (i, j, k)])
        for i in (-0.5, size[0] - 0.5) for j in (-0.5, size[1] - 0.5)
        for k in (-0.5, size[2] - 0.5)
    ])
    lo, hi = corners.min(0), corners.max(0)
    n = np.maximum(1, np.ceil((hi - lo) / spacing)).astype(int)
    ref = sitk.Image([int(v) for v in n], sitk.sitkFloat32)
    ref.SetSpacing([spacing] * 3)
    ref.SetOrigin(tuple(lo + spacing / 2))
    return sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), ref, sitk.Transform(),
                         sitk.sitkLinear, 0.0, sitk.sitkFloat32)


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


def shade(depth: np.ndarray) -> np.ndarray:
    """Depth map -> 8-bit grey picture, Lambert-lit from the viewer."""
    d = np.nan_to_num(depth, nan=np.nanmax(depth) if np.isfinite(depth).any() else 0.0)
    gy, gx = np.gradient(d)
    normal_z = 1.0 / np.sqrt(1.0 + gx ** 2 + gy ** 2)
    near = 1.0 - (d - np.nanmin(d)) / max(1e-6, float(np.ptp(d)))
    img = 255.0 * (0.25 + 0.75 * normal_z) * (0.35 + 0.65 * near)
    img[~np.isfinite(depth)] = 0.0
    return img.clip(0, 255).astype(np.uint8)


def views(image: sitk.Image, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(front, side) shaded depth pictures; superior is up."""
    vol = sitk.GetArrayFromImage(_to_lps(image))  # z, y, x with LPS axes
    # Front: rays from anterior (low y) towards posterior. Side: from the left (high x).
    front = shade(depth_map(vol, threshold, axis=1, reverse=False))[::-1, ::-1]
    side = shade(depth_map(vol, threshold, axis=2, reverse=True))[::-1, :]
    return front, side


def render_before_after(before: sitk.Image, after: sitk.Image, path: Path) -> Path:
    """Write a PNG: top row the original (front, side), bottom row the defaced volume."""
    thr = skin_threshold(before)
    rows = [np.concatenate(views(img, thr), axis=1) for img in (before, after)]
    width = max(r.shape[1] for r in rows)
    pic = np.zeros((sum(r.shape[0] for r in rows) + 4, width), np.uint8)
    pic[: rows[0].shape[0], : rows[0].shape[1]] = rows[0]
    pic[rows[0].shape[0] + 4:, : rows[1].shape[1]] = rows[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pic).save(path, format="PNG")
    return path
