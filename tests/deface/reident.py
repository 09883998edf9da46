"""Re-identification from the face's surface: front depth maps and a sound match statistic.

An attacker holding defaced heads and a gallery of original faces (the same people's
photographs, or their undefaced scans) first brings every head into one pose - rotation,
translation and one scale, which say nothing about who it is - then compares face
surfaces. :func:`face_distance` compares two front depth maps after the best small shift,
depth offset and tilt; :func:`identity_signal` says how much closer each defaced face is to
its own original than to the others'.

Why not "each defaced face is farther from its own original than from the nearest other":
a perfect defacer gives every head the same average face, and then the one original that
happens to look most like the average face is the nearest to *every* defaced face - its own
included - so that rule fails for it whatever the defacer does (both CI failures of
2026-12: one original 1.96-2.10 mm from all four defaced faces, the others 2.19-3.36 mm).
:func:`identity_signal` is the mean, over heads, of (mean distance to the other originals
- distance to its own): any per-original offset (how average an original face is) and any
per-defaced offset cancel exactly, so a defacer that leaves no trace of identity scores 0
(within noise) and no defacing at all scores the originals' own mean distinctness.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from agent.deface.core import similarity_part
from agent.deface.register import register_template
from agent.deface.render import depth_map
from agent.deface.template import load_template


def front_depth(image: sitk.Image, level: float) -> np.ndarray:
    """Depth (mm) of the skin seen from the front, brow to upper lip, on a 2 mm grid of
    patient (MNI-like) space."""
    ref = sitk.Image([60, 60, 40], sitk.sitkFloat32)  # x, y, z at 2 mm
    ref.SetSpacing((2.0, 2.0, 2.0))
    ref.SetOrigin((-60.0, -130.0, -66.0))  # LPS: the front of the head, brow to upper lip
    vol = sitk.GetArrayFromImage(sitk.Resample(image, ref, sitk.Transform(), sitk.sitkLinear))
    return depth_map(vol, level, axis=1, reverse=False) * 2.0


def pose_of(original: sitk.Image) -> sitk.Transform:
    """The attacker's alignment of a head: the similarity part (rotation, translation, one
    scale) of the template fit of the *original* head; its inverse maps template space to
    the head's."""
    t = load_template()
    return similarity_part(register_template(original, t.head).transform)


def posed_front_depth(image: sitk.Image, pose: sitk.Transform, level: float) -> np.ndarray:
    """:func:`front_depth` of ``image`` brought into the template's pose by ``pose``."""
    t = load_template()
    aligned = sitk.Resample(image, t.head, pose.GetInverse(), sitk.sitkLinear, 0.0)
    return front_depth(aligned, level)


def _detrended(a: np.ndarray, b: np.ndarray) -> float:
    both = np.isfinite(a) & np.isfinite(b)
    if both.sum() < 100:
        return float("inf")
    d = (a - b)[both]
    yy, xx = np.nonzero(both)
    basis = np.column_stack([np.ones_like(xx), xx, yy]).astype(float)
    coef, *_ = np.linalg.lstsq(basis, d, rcond=None)
    return float(np.mean(np.abs(d - basis @ coef)))


def face_distance(a: np.ndarray, b: np.ndarray, reach: int = 3) -> float:
    """Mean surface distance (mm) of two front depth maps after the best alignment: shifts
    up to ``reach`` pixels, depth offset and tilt (what an attacker would also undo)."""
    best = float("inf")
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            shifted = np.full_like(b, np.nan)
            src = b[max(-dy, 0):b.shape[0] - max(dy, 0), max(-dx, 0):b.shape[1] - max(dx, 0)]
            shifted[max(dy, 0):max(dy, 0) + src.shape[0],
                    max(dx, 0):max(dx, 0) + src.shape[1]] = src
            best = min(best, _detrended(a, shifted))
    return best


def distances(faces: list[np.ndarray], originals: list[np.ndarray]) -> np.ndarray:
    """Matrix of :func:`face_distance` (rows: faces, columns: originals)."""
    return np.array([[face_distance(f, o) for o in originals] for f in faces])


def identity_signal(faces: list[np.ndarray], originals: list[np.ndarray]
                    ) -> tuple[float, float]:
    """(signal, distinctness) in mm: ``signal`` is the mean over heads of (mean distance of
    face i to the other originals - distance to its own original); ``distinctness`` is the
    same statistic for the originals themselves (their mean distance to each other), what
    no defacing at all would score."""
    n = len(originals)
    if n < 2 or len(faces) != n:
        raise ValueError("needs one face per original, at least two")
    m = distances(faces, originals)
    b = distances(originals, originals)
    others = ~np.eye(n, dtype=bool)
    signal = float(np.mean([m[i, others[i]].mean() - m[i, i] for i in range(n)]))
    distinct = float(np.mean([b[i, others[i]].mean() - b[i, i] for i in range(n)]))
    return signal, distinct


def smooth_perturbation(depth: np.ndarray, seed: int, amplitude_mm: float = 1.5
                        ) -> np.ndarray:
    """``depth`` plus a smooth random field (a control: a "defacing" that keeps the face)."""
    rng = np.random.default_rng(seed)
    field = sitk.GetImageFromArray(rng.standard_normal(depth.shape).astype(np.float32))
    smooth = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(field, 4.0))
    smooth *= amplitude_mm / max(float(smooth.std()), 1e-6)
    return (depth + smooth).astype(np.float32)
