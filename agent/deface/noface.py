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
  inner corners of the eyes), so it is a sphere or bottle phantom, not a head.

Anything else is no evidence: the caller quarantines (fail closed). So is any image whose
tissue level is in doubt: one read as a phase map (its tissue is where values are smooth,
which a stripe artefact can fake), or one where a bright structure lifted Otsu's threshold
above a whole population of dimmer tissue (:func:`_level_taken_over`). The measures run on
the registration's 4 mm work grid, with every voxel above the tissue level counted (specks
and ghosts make a rule fail, never pass).

The corpus' QA phantoms (GE's plate grid in three series, Philips' bulb-shaped bottle with
its Nyquist ghosts and a tube beside it) get no evidence, deliberately: their dim fluid
and ghosts are as large a population below the tissue level as a head under a stripe
artefact, and their bright part (plates, a sphere cut by the slab) is what such a head
would leave above it. A rule that delivered them would deliver that head; they end
withheld as QA phantoms instead (:mod:`agent.deface.phantom`: nothing of them leaves).
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


def evidence(image: sitk.Image) -> Evidence | None:
    """Positive evidence that ``image`` (a volume's regular fit image) holds no face, or
    None (the module docstring)."""
    mask, spacing, level = _tissue(image)
    view = too_small(image, np.zeros((1, 1, 1), bool), spacing)  # the view alone
    if view is not None:
        return view
    if not np.isfinite(level) or _level_taken_over(image, mask, level):
        # Read as a phase map (noise across the range around the view's edges) - or as
        # something that only looks like one, such as a stripe artefact over a head - or
        # its tissue level lifted by a bright structure: the shapes prove nothing.
        return None
    return (too_small(image, mask, spacing) or uniform_section(mask, spacing)
            or smooth_body(image, mask, spacing, level))


#: Voxels between the air and the tissue level, as a fraction of those above it, beyond
#: which the level is taken to sit above real tissue. The band starts at the air's noise
#: (:func:`_air_floor`), or at :data:`DIM_FRACTION` of the level where that is lower.
DIM_FRACTION = 0.2
MAX_DIM_SHARE = 0.25
#: The air's noise ends this many robust spreads above its median.
AIR_SPREADS = 8.0


def _air_floor(image: sitk.Image, level: float) -> float:
    """The top of the air's noise, from the voxels below the tissue level on the outer
    faces of the view (mostly air in any image; a head cut by the view puts some tissue
    there, which the median and quartiles do not follow): their median plus
    :data:`AIR_SPREADS` robust spreads. A zeroed background gives 0."""
    arr = sitk.GetArrayViewFromImage(image)
    border = np.concatenate([f.ravel() for f in (arr[[0, -1]], arr[:, [0, -1]],
                                                 arr[:, :, [0, -1]])]).astype(np.float64)
    air = border[np.isfinite(border) & (border < level)]
    if not air.size:
        return 0.0
    q1, median, q3 = (float(v) for v in np.percentile(air, [25, 50, 75]))
    return median + AIR_SPREADS * (q3 - q1) / 1.349


def _level_taken_over(image: sitk.Image, mask: np.ndarray, level: float) -> bool:
    """A bright structure large enough to move Otsu's threshold (a stripe artefact, a
    bright marker plate) can lift the tissue level above a whole head, which then looks
    like air and the shape rules would judge the bright structure alone. In a limb or a
    phantom few voxels lie between the air and the tissue level (edges, noise tails); a
    head below the level is a whole population there: then there is no evidence.

    The band reaches down to the air's noise, not only to a fraction of the level: stripes
    ten or a hundred times brighter than the head put the whole head below any fixed
    fraction of their level (measured: a real head under such stripes of 20 mm was taken
    for a limb, a constant cross-section)."""
    if not np.isfinite(level) or not mask.any():
        return False
    arr = sitk.GetArrayFromImage(work_grid(image))
    floor = min(_air_floor(image, level), DIM_FRACTION * level)
    dim = int(((arr > floor) & (arr < level)).sum())
    return dim > MAX_DIM_SHARE * int((arr >= level).sum())
