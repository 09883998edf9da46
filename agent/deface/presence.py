"""Does a volume show a face? Decided from pixels and geometry, on positive evidence only.

Three verdicts:

* :attr:`Verdict.FACE` - the fitted template's face or ears come within
  :data:`MARGIN_MM` of the volume's field of view: the volume is defaced;
* :attr:`Verdict.NO_FACE` - there is positive evidence that no face can show: the image
  holds no tissue at all, or the fitted face and ears lie at least :data:`MARGIN_MM`
  outside the field of view *and* an independent check confirms the fit's placement
  (below); the volume is delivered as it is and the reason recorded;
* :attr:`Verdict.UNKNOWN` - anything else; the caller fits again, waits for a partner
  series, or quarantines.

The independent check, so that a head the registration misjudges (a slab slid along the
head, a fit that landed upside down) is never called "no face":

* with the study's fit from another series: the face's place was seen in that series'
  real pixels (its fit held most of the face inside its field of view), and this volume's
  own tissue lines up with the fitted head (:func:`lines_up`) - the same patient, not
  moved. In an image whose background is noise across its whole range (a phase or field
  map) the tissue is where the values are locally smooth (:func:`coherent_tissue`), not
  where they are bright;
* with a fit on this very volume: the volume must show the top of the head (tissue ends
  inside the field of view, air above it) and reach no further than
  :data:`MAX_VERTEX_DEPTH_MM` below it, measured along the patient's head-foot axis
  without the fit - less than the distance from the vertex to the brow of any head.

A phase or field map with no magnitude partner is fitted by the silhouette of its smooth
tissue (:func:`agent.deface.fitting.fit_source`) and judged and defaced like any other
volume; with a partner it uses the study's fit. Where no fit places a face at all, a shape
no face allows (:mod:`agent.deface.noface`: a limb, a phantom) is the positive evidence.

Header words (body part, descriptions) play no part: they may only add suspicion, and a
volume is always checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

import numpy as np
import SimpleITK as sitk

from agent.deface.masks import tissue_mask, work_grid
from agent.deface.register import to_work_grid
from agent.deface.template import EARS, FACE, Template
from agent.vocab import FaceCode

#: The face counts as in view when it comes this close (mm) to the field of view.
MARGIN_MM = 15.0
#: A volume showing the top of the head reaches at most this far below it (mm) to be
#: called face-free on its own fit: well under the vertex-to-brow distance of a small
#: child's head (about 70 mm), with room for a head tilted by 30 degrees.
MAX_VERTEX_DEPTH_MM = 55.0
#: At least this fraction of the volume's tissue must lie inside the fitted head.
MIN_LINE_UP = 0.9
#: A fit whose source volume held less of the face than this has not seen the face.
MIN_FACE_SEEN = 0.3
#: Margin (mm) around the fitted head within which the volume's tissue counts as inside.
HEAD_MARGIN_MM = 15.0
#: A background of noise across the range: at the in-plane edges of the view the local
#: spread (3x3x3) is at least this fraction of the image's 1-99 % range, and the values sit
#: at least this fraction above its low end. Uniform noise over the range (a phase map's
#: background) gives 0.29 and 0.5; the air of magnitude images a few hundredths and ~0.
NOISY_SPREAD = 0.15
NOISY_LEVEL = 0.25


class Verdict(Enum):
    FACE = "face"
    NO_FACE = "no-face"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Presence:
    verdict: Verdict
    #: Why, in words for the record (no PHI).
    reason: str
    #: Fraction of the template's face and ear tissue within the margin of the view.
    face_fraction: float = 0.0
    #: For a volume without a face: which evidence (the ledger's and the manifest's code).
    code: FaceCode | None = None


def blank(image: sitk.Image) -> bool:
    """The image holds nothing: every voxel has (nearly) one value."""
    arr = sitk.GetArrayViewFromImage(image)
    finite = arr[np.isfinite(arr)]
    if not finite.size:
        return True
    lo, hi = np.percentile(finite, [0.1, 99.9])
    return bool(hi - lo <= 1e-6 * max(1.0, abs(float(hi))))


@lru_cache(maxsize=2)
def _region_points(template: Template) -> np.ndarray:
    """Physical points (template space) of the face and ear tissue, subsampled."""
    head = sitk.GetArrayViewFromImage(template.head)
    level = 0.15 * float(np.percentile(head[head > 0], 95))
    sel = ((template.label_array() & (FACE | EARS)) > 0) & (head > level)
    idx = np.argwhere(sel)[:, ::-1][::5].astype(np.float64)
    tdir = np.array(template.head.GetDirection()).reshape(3, 3)
    return (tdir @ (idx * np.array(template.head.GetSpacing())).T).T + np.array(
        template.head.GetOrigin())


def _to_subject(tx: sitk.AffineTransform, points: np.ndarray) -> np.ndarray:
    mat = np.array(tx.GetMatrix()).reshape(3, 3)
    c, t = np.array(tx.GetCenter()), np.array(tx.GetTranslation())
    return (np.linalg.inv(mat) @ (points - c - t).T).T + c


def face_fraction(image: sitk.Image, tx: sitk.AffineTransform, template: Template,
                  margin: float = MARGIN_MM) -> float:
    """Fraction of the template's face and ear tissue that maps within ``margin`` mm of
    the image's field of view (voxel edges)."""
    pts = _to_subject(tx, _region_points(template))
    d = np.array(image.GetDirection()).reshape(3, 3)
    sp = np.array(image.GetSpacing())
    local = (np.linalg.inv(d) @ (pts - np.array(image.GetOrigin())).T).T  # mm, image axes
    size_mm = np.array(image.GetSize()) * sp
    lo, hi = -sp / 2 - margin, size_mm - sp / 2 + margin
    inside = np.all((local >= lo) & (local <= hi), axis=1)
    return float(inside.mean()) if len(inside) else 0.0


def coherent_tissue(image: sitk.Image) -> sitk.Image | None:
    """The tissue of an image whose background is noise across its range (a phase or
    field map): the voxels whose 3x3x3 neighbourhood spreads less than half as much as the
    background, the largest such component. None when the background is not such noise
    (the usual, dark background: :func:`~agent.deface.masks.tissue_mask` applies)."""
    img = sitk.Cast(image, sitk.sitkFloat32)
    arr = sitk.GetArrayViewFromImage(img)
    if min(arr.shape) < 3:
        return None
    lo, hi = (float(v) for v in np.percentile(arr, [1, 99]))
    span = hi - lo
    if span <= 0:
        return None
    # The background is judged first on the in-plane edges alone (the usual answer, a dark
    # background, then costs thin slabs, not the whole volume's neighbourhood spread).
    edge_spread, edge_values = _edge_spread(img, arr)
    background = float(np.median(edge_spread))
    if background < NOISY_SPREAD * span or float(np.median(edge_values)) < lo + NOISY_LEVEL * span:
        return None
    spread = sitk.GetArrayFromImage(sitk.Noise(img, [1, 1, 1]))
    smooth = sitk.GetImageFromArray((spread < 0.5 * background).astype(np.uint8))
    smooth.CopyInformation(image)
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(smooth), sortByObjectSize=True)
    return sitk.Cast(cc == 1, sitk.sitkUInt8)


def _edge_spread(img: sitk.Image, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(3x3x3 spread, value) of the voxels one in from the in-plane edges (each once).

    The spread is ``sitk.Noise`` on slabs three voxels thick around those voxels: their
    neighbourhoods lie inside the slab, so the numbers are the whole volume's, to the bit
    (issue 11: the full-volume filter cost 2.4 CPU-s per 256^3 series, twice per series)."""
    nz, ny, nx = arr.shape
    spreads: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for y in sorted({1, ny - 2}):
        roi = sitk.RegionOfInterest(img, [nx, 3, nz], [0, y - 1, 0])
        spreads.append(sitk.GetArrayFromImage(sitk.Noise(roi, [1, 1, 1]))[:, 1, 1:-1].ravel())
        values.append(arr[:, y, 1:-1].ravel())
    if ny > 4:  # the columns' voxels not on those rows
        for x in sorted({1, nx - 2}):
            roi = sitk.RegionOfInterest(img, [3, ny, nz], [x - 1, 0, 0])
            spreads.append(sitk.GetArrayFromImage(sitk.Noise(roi, [1, 1, 1]))[:, 2:-2, 1]
                           .ravel())
            values.append(arr[:, 2:-2, x].ravel())
    return np.concatenate(spreads), np.concatenate(values)


def _tissue_on(work: sitk.Image, image: sitk.Image) -> np.ndarray:
    """The volume's tissue on its work grid (bool)."""
    coherent = coherent_tissue(image)
    if coherent is None:
        return sitk.GetArrayFromImage(tissue_mask(work)) > 0
    return sitk.GetArrayFromImage(sitk.Resample(
        coherent, work, sitk.Transform(), sitk.sitkNearestNeighbor, 0)) > 0


def lines_up(image: sitk.Image, tx: sitk.AffineTransform, template: Template) -> float:
    """Fraction of the volume's tissue that lies inside the fitted template head (grown
    by :data:`HEAD_MARGIN_MM`): near 1 when this volume shows the head the fit placed."""
    work = work_grid(image)
    tissue = _tissue_on(work, image)
    if not tissue.any():
        return 0.0
    mask = tissue_mask(to_work_grid(template.head))
    grown = sitk.BinaryDilate(mask, [max(1, int(HEAD_MARGIN_MM / 4.0))] * 3)
    mapped = sitk.GetArrayFromImage(
        sitk.Resample(grown, work, tx, sitk.sitkNearestNeighbor, 0)) > 0
    # The body goes on below any head template (neck, shoulders in a long field of view):
    # tissue that maps below the template's lowest head tissue is not judged. A patient
    # who moved up or sideways still shows tissue outside the head; below it the template
    # says nothing either way.
    below = _below_template(work, tx, mask)
    judged = tissue & ~below
    if not judged.any():
        return 0.0
    return float(mapped[judged].mean())


def _below_template(work: sitk.Image, tx: sitk.AffineTransform, mask: sitk.Image
                    ) -> np.ndarray:
    """Work-grid voxels (z, y, x) that ``tx`` maps below the lowest tissue of the template
    head ``mask`` (patient LPS z: superior is +z)."""
    idx = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)[:, ::-1].astype(np.float64)
    mdir = np.array(mask.GetDirection()).reshape(3, 3)
    bottom = float(((mdir @ (idx * np.array(mask.GetSpacing())).T).T
                    + np.array(mask.GetOrigin()))[:, 2].min())
    size = work.GetSize()
    grid = np.indices(size[::-1]).reshape(3, -1)[::-1].T.astype(np.float64)  # x, y, z
    wdir = np.array(work.GetDirection()).reshape(3, 3)
    pts = (wdir @ (grid * np.array(work.GetSpacing())).T).T + np.array(work.GetOrigin())
    mat = np.array(tx.GetMatrix()).reshape(3, 3)
    c, t = np.array(tx.GetCenter()), np.array(tx.GetTranslation())
    mapped = (mat @ (pts - c).T).T + c + t
    return (mapped[:, 2] < bottom).reshape(size[::-1])


def vertex_depth(image: sitk.Image) -> float | None:
    """How far (mm) the tissue reaches below the top of the head, along the patient's
    head-foot axis; None when the top of the head is not inside the field of view."""
    work = work_grid(image)
    mask = sitk.GetArrayFromImage(tissue_mask(work)) > 0
    if not mask.any():
        return None
    idx = np.argwhere(mask)[:, ::-1].astype(np.float64)  # x, y, z
    d = np.array(work.GetDirection()).reshape(3, 3)
    pts = (d @ (idx * np.array(work.GetSpacing())).T).T + np.array(work.GetOrigin())
    superior = pts[:, 2]  # LPS: +z is superior
    top = float(superior.max())
    size = np.array(work.GetSize())
    corners = np.array([[i, j, k] for i in (0, size[0] - 1) for j in (0, size[1] - 1)
                        for k in (0, size[2] - 1)], np.float64)
    fov_top = float(((d @ (corners * np.array(work.GetSpacing())).T).T
                     + np.array(work.GetOrigin()))[:, 2].max())
    if fov_top - top < 2 * max(work.GetSpacing()):
        return None  # tissue reaches the top of the view: the vertex may be above it
    return top - float(superior.min())


def _judge_projection(rays: sitk.Image, tx: sitk.AffineTransform, template: Template,
                      face_seen: float) -> Presence:
    fraction = face_fraction(rays, tx, template)
    if fraction > 0:
        return Presence(Verdict.FACE, f"the rays of this projection cross "
                        f"{100 * fraction:.0f}% of the face and ears", fraction)
    if face_seen < MIN_FACE_SEEN:
        return Presence(Verdict.UNKNOWN, "the study's fit never saw the face")
    return Presence(Verdict.NO_FACE, "no ray of this projection crosses the face or the "
                    "ears as the study's fit places them", code=FaceCode.RAYS_MISS_FACE)


def judge(image: sitk.Image, tx: sitk.AffineTransform, template: Template, *,
          own_fit: bool, face_seen: float, rays: sitk.Image | None = None) -> Presence:
    """The verdict for one volume (its regular fit image) under one fit. ``rays``: for a
    projection, the volume its rays sweep (the face shows wherever a ray meets it)."""
    if blank(image):
        return Presence(Verdict.NO_FACE, "the image holds no tissue", code=FaceCode.NO_TISSUE)
    if rays is not None:
        return _judge_projection(rays, tx, template, face_seen)
    if not own_fit:
        aligned = lines_up(image, tx, template)
        if aligned < MIN_LINE_UP:
            return Presence(Verdict.UNKNOWN, (
                f"only {100 * aligned:.0f}% of this series' tissue lines up with the "
                "study's fit (the patient may have moved)"))
    fraction = face_fraction(image, tx, template)
    if fraction > 0:
        return Presence(Verdict.FACE, f"{100 * fraction:.0f}% of the face and ears in view",
                        fraction)
    if own_fit:
        depth = vertex_depth(image)
        if depth is not None and depth <= MAX_VERTEX_DEPTH_MM:
            return Presence(Verdict.NO_FACE, (
                f"no face in the field of view: the face lies more than {MARGIN_MM:.0f} mm "
                f"outside it, and the image reaches only {depth:.0f} mm below the top of "
                "the head"), code=FaceCode.FACE_OUT_OF_VIEW)
        return Presence(Verdict.UNKNOWN, "the fit places the face outside the field of "
                        "view, but the image alone cannot confirm it")
    if face_seen < MIN_FACE_SEEN:
        return Presence(Verdict.UNKNOWN, "the study's fit never saw the face")
    return Presence(Verdict.NO_FACE, (
        f"no face in the field of view: the study's fit places the face and ears more than "
        f"{MARGIN_MM:.0f} mm outside it, and this series lines up with that fit"),
        code=FaceCode.FACE_OUT_OF_VIEW)
