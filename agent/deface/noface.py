"""Positive evidence, from pixels and geometry alone, that a volume cannot hold a face.

Used where no head fit settles the question (the template does not fit: a knee, a spine,
a phantom): instead of quarantining every such volume, look for a shape no face allows.
Each rule is a property of the face itself, so it holds for any head in any orientation,
whatever the headers say (header words are never read here):

* :attr:`~agent.vocab.FaceCode.TOO_SMALL` - everything in view spans less than
  :data:`SMALL_MM` in at least two directions (the field of view or the tissue): a face
  (eyes, nose and mouth) is wider and taller than that;
* :attr:`~agent.vocab.FaceCode.UNIFORM_SECTION` - along one axis the tissue's
  cross-section stays the same (at most :data:`SECTION_CHANGE` of it differs from the
  middle one) over at least :data:`SECTION_MM`: along any line through a head, the
  cross-section changes far more within that length (the nose and chin begin and end,
  the vertex closes, the sides of the head round off); a limb, a rod or a cylinder
  phantom keep theirs;
* :attr:`~agent.vocab.FaceCode.SMOOTH_BODY` - the tissue is one body wholly inside the
  view (air on every face of the image), at least :data:`BODY_MIN_MM` thick, whose
  surface lies everywhere within :data:`SURFACE_MM` of one ellipsoid: nothing
  protrudes from it as a nose does from the face (15-30 mm in front of the cheeks and the
  inner corners of the eyes), so it is a sphere or bottle phantom, not a head;
* :attr:`~agent.vocab.FaceCode.PARALLEL_STRIPES` (:func:`parallel_stripes`, not part of
  :func:`evidence`: consulted only where the head template cannot be fitted at all, since
  a strong stripe artefact over a head - a herringbone from a spike in k-space - also runs
  one way, and a fitted head is judged by its fit) - in every image of the volume the
  structure runs one way: at nearly every place with structure (:data:`STRIPE_FRACTION`,
  and :data:`STRIPE_SLICE_FRACTION` in each image) the local orientation (the structure
  tensor over :data:`STRIPE_SCALE_MM`) lies within :data:`STRIPE_DEG` of one direction,
  along which the stripes run at least :data:`STRIPE_MM`: the plates and grids of a
  geometry phantom. A head's outline is a closed curve and its inside (brain, sinuses,
  orbits) is structured every way, so about a fifth of its places agree with any
  direction; a face cut to a strip along one direction is shorter than the stripes must be.

Anything else is no evidence: the caller quarantines (fail closed). The measures run on
the registration's 4 mm work grid, with every voxel above the tissue level counted (specks
and ghosts make a rule fail, never pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from agent.deface import synth
from agent.deface.masks import FRACTION, work_grid
from agent.deface.presence import coherent_tissue
from agent.vocab import FaceCode

#: A face is wider and taller than this (mm); also the smallest newborn's.
SMALL_MM = 40.0
#: A constant cross-section over this length (mm) excludes a face.
SECTION_MM = 120.0
#: At most this fraction (1 - Jaccard) of a cross-section may differ from the middle one.
SECTION_CHANGE = 0.10
#: A uniform cross-section must leave at least this fraction of its slice as air.
MIN_AIR = 0.1
#: A smooth body's surface lies within this distance (mm) of its ellipsoid everywhere.
SURFACE_MM = 6.0
#: A smooth body must be at least this thick (mm) in every direction: in a thinner one
#: the tolerance band spans the whole body, and a nose in it would go unseen.
BODY_MIN_MM = 60.0
#: The smooth body must hold at least this fraction of all tissue in view.
BODY_FRACTION = 0.97
#: Parallel stripes: the structure tensor's scale (mm), how far a place may turn from the
#: common direction (degrees), the fraction of structured places that must agree over the
#: volume and in each image, and how long (mm) the stripes must run. Measured: the GE
#: geometry phantom's T1, EPI and DWI 0.96-1.0 (each image >= 0.96); real and
#: synthetic heads, whole or cut, at most 0.25 (single images at most 0.55).
STRIPE_SCALE_MM = 4.0
STRIPE_DEG = 15.0
STRIPE_FRACTION = 0.9
STRIPE_SLICE_FRACTION = 0.8
STRIPE_MM = 120.0
#: Places count as structured where the structure tensor's energy is at least this
#: fraction of its 99th percentile; at most this many images are measured.
STRIPE_ENERGY = 0.05
STRIPE_IMAGES = 24


@dataclass(frozen=True)
class Evidence:
    code: FaceCode
    #: In words for the record (no PHI).
    reason: str


def _tissue(image: sitk.Image) -> tuple[np.ndarray, np.ndarray, float]:
    """(tissue mask on the work grid, z-y-x; voxel size in mm, z-y-x; tissue level)."""
    work = work_grid(image)
    arr = sitk.GetArrayFromImage(work).astype(np.float32)
    finite = np.isfinite(arr)
    if not finite.any():
        return np.zeros(arr.shape, bool), np.array(work.GetSpacing())[::-1], np.inf
    arr[~finite] = float(arr[finite].min())
    spacing = np.array(work.GetSpacing())[::-1]
    coherent = coherent_tissue(image)
    if coherent is not None:  # a phase map: its noise is no tissue, its smooth part is
        on_work = sitk.Resample(coherent, work, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        return sitk.GetArrayFromImage(on_work) > 0, spacing, np.inf
    level = FRACTION * synth.otsu(arr.ravel()[:: max(1, arr.size // 200000)])
    return arr > level, spacing, level


def _touches_view(image: sitk.Image, level: float) -> bool:
    """Tissue on any outer face of the image itself (not of the padded work grid)."""
    arr = sitk.GetArrayViewFromImage(image)
    faces = (arr[[0, -1]], arr[:, [0, -1]], arr[:, :, [0, -1]])
    return any(bool((np.nan_to_num(f, nan=-np.inf) > level).any()) for f in faces)


def too_small(image: sitk.Image, mask: np.ndarray, spacing: np.ndarray) -> Evidence | None:
    """Field of view or tissue under :data:`SMALL_MM` in at least two directions."""
    fov = np.array(image.GetSize()) * np.array(image.GetSpacing())
    if int((fov < SMALL_MM).sum()) >= 2:
        return Evidence(FaceCode.TOO_SMALL, f"the field of view spans less than "
                        f"{SMALL_MM:.0f} mm in two directions: too small for a face")
    idx = np.argwhere(mask)
    if not len(idx):
        return None
    span = (idx.max(0) - idx.min(0) + 1) * spacing
    if int((span < SMALL_MM).sum()) >= 2:
        return Evidence(FaceCode.TOO_SMALL, f"the tissue spans less than {SMALL_MM:.0f} mm "
                        "in two directions: too small for a face")
    return None


def uniform_section(mask: np.ndarray, spacing: np.ndarray) -> Evidence | None:
    """The cross-section is the same along one axis over :data:`SECTION_MM` or more."""
    for axis in range(3):
        stack = np.moveaxis(mask, axis, 0)
        present = np.flatnonzero(stack.reshape(stack.shape[0], -1).any(axis=1))
        if not len(present):
            return None
        first, last = int(present[0]), int(present[-1])
        length = (last - first + 1) * float(spacing[axis])
        if length < SECTION_MM or len(present) != last - first + 1:
            continue
        # The outermost slice at each end may be cut by partial volume: not judged.
        inner = stack[first + 1:last]
        middle = inner[len(inner) // 2]
        if middle.mean() > 1.0 - MIN_AIR:
            continue  # a cross-section all "tissue" (noise, a view inside a body): no shape
        union = (inner | middle).reshape(len(inner), -1).sum(axis=1)
        differ = (inner ^ middle).reshape(len(inner), -1).sum(axis=1)
        change = float((differ / np.maximum(union, 1)).max())
        if change <= SECTION_CHANGE:
            return Evidence(FaceCode.UNIFORM_SECTION, (
                f"the tissue's cross-section stays the same over {length:.0f} mm (at most "
                f"{100 * change:.0f}% of it changes): no face has such a shape"))
    return None


def smooth_body(image: sitk.Image, mask: np.ndarray, spacing: np.ndarray, level: float
                ) -> Evidence | None:
    """One body wholly in view, at least :data:`BODY_MIN_MM` thick, its surface within
    :data:`SURFACE_MM` of an ellipsoid."""
    if not mask.any() or _touches_view(image, level):
        return None
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(
        sitk.GetImageFromArray(mask.astype(np.uint8))), sortByObjectSize=True)
    body = sitk.GetArrayFromImage(sitk.BinaryFillhole(cc == 1)) > 0
    if float(body.sum()) < BODY_FRACTION * float(mask.sum()) or body.sum() < 27:
        return None
    edge = np.zeros(mask.shape, bool)
    edge[[0, -1]], edge[:, [0, -1]], edge[:, :, [0, -1]] = True, True, True
    if (body & edge).any():
        return None  # not wholly in view: what lies outside is unknown
    pts = np.argwhere(body) * spacing
    centre = pts.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov((pts - centre).T))
    semi = np.sqrt(5.0 * np.maximum(values, 1e-6))  # a solid ellipsoid's second moments
    if 2 * float(semi.min()) < BODY_MIN_MM:
        return None  # too thin for the tolerance to tell a nose from the surface
    grid = np.indices(mask.shape).reshape(3, -1).T * spacing
    local = (grid - centre) @ vectors
    outer = (((local / (semi + SURFACE_MM)) ** 2).sum(axis=1) <= 1).reshape(mask.shape)
    shrunk = np.maximum(semi - SURFACE_MM, 1e-3)
    inner = (((local / shrunk) ** 2).sum(axis=1) <= 1).reshape(mask.shape)
    if (body & ~outer).any() or (inner & ~body).any():
        return None
    return Evidence(FaceCode.SMOOTH_BODY, (
        f"the tissue is one smooth body wholly in view, within {SURFACE_MM:.0f} mm of an "
        f"ellipsoid of {2 * semi.min():.0f}-{2 * semi.max():.0f} mm: nothing protrudes "
        "from it as a nose does, so it holds no face"))


def _smooth2d(arr: np.ndarray, sigma: tuple[float, float]) -> np.ndarray:
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    return sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(img, sigma))


def _orientations(image2d: np.ndarray, sx: float, sy: float
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """(local orientation of the gradient in radians, whether the place is structured)
    of one image, from its structure tensor; None when it holds no structure."""
    gy, gx = np.gradient(_smooth2d(image2d, (1.0, 1.0)))
    gx, gy = gx / sx, gy / sy
    scale = (STRIPE_SCALE_MM / sx, STRIPE_SCALE_MM / sy)
    jxx, jxy, jyy = (_smooth2d(v, scale) for v in (gx * gx, gx * gy, gy * gy))
    power = jxx + jyy
    top = float(np.percentile(power, 99))
    if top <= 0:
        return None
    structured = power > STRIPE_ENERGY * top
    if int(structured.sum()) < 20:
        return None
    return 0.5 * np.arctan2(2 * jxy, jxx - jyy), structured


def parallel_stripes(image: sitk.Image) -> Evidence | None:
    """Every image's structure runs one way, in stripes of :data:`STRIPE_MM` or more.
    The middle image is measured first: a head fails there, after one image."""
    arr = sitk.GetArrayFromImage(image).astype(np.float32)
    finite = np.isfinite(arr)
    if not finite.any() or min(arr.shape[1:]) < 8:
        return None
    arr[~finite] = float(arr[finite].min())
    sx, sy = (float(v) for v in image.GetSpacing()[:2])
    spread = np.unique(np.linspace(0, arr.shape[0] - 1, min(STRIPE_IMAGES, arr.shape[0]))
                       .astype(int))
    picks = sorted((int(k) for k in spread), key=lambda k: abs(k - arr.shape[0] // 2))
    common: float | None = None
    agreeing, total = 0, 0
    rows_all: list[np.ndarray] = []
    cols_all: list[np.ndarray] = []
    for k in picks:
        measured = _orientations(arr[k], sx, sy)
        if measured is None:
            continue
        angle, structured = measured
        if common is None:  # the middle image's direction is the one all must share
            common = float(np.angle(np.exp(2j * angle[structured]).mean())) / 2
        agree = np.abs((angle - common + np.pi / 2) % np.pi - np.pi / 2) < np.deg2rad(
            STRIPE_DEG)
        n_agree, n = int((agree & structured).sum()), int(structured.sum())
        if n_agree < STRIPE_SLICE_FRACTION * n:
            return None
        agreeing, total = agreeing + n_agree, total + n
        rows, cols = np.nonzero(agree & structured)
        rows_all.append(rows)
        cols_all.append(cols)
    if common is None or total < 100 or agreeing < STRIPE_FRACTION * total:
        return None
    # The gradient points across the stripes: they run perpendicular to ``common``.
    rows, cols = np.concatenate(rows_all), np.concatenate(cols_all)
    along = -np.sin(common) * cols * sx + np.cos(common) * rows * sy
    length = float(along.max() - along.min())
    if length < STRIPE_MM:
        return None
    return Evidence(FaceCode.PARALLEL_STRIPES, (
        f"the structure of every image runs one way ({100 * agreeing / total:.0f}% of it "
        f"within {STRIPE_DEG:.0f} degrees), in stripes {length:.0f} mm long: a geometry "
        "phantom's plates, no head"))


def evidence(image: sitk.Image) -> Evidence | None:
    """Positive evidence that ``image`` (a volume's regular fit image) holds no face, or
    None (the module docstring)."""
    mask, spacing, level = _tissue(image)
    return (too_small(image, mask, spacing) or uniform_section(mask, spacing)
            or smooth_body(image, mask, spacing, level))
