"""A series no head template places a face on, that looks like a QA phantom, is withheld.

Where no fit places the face and no shape rule (:mod:`agent.deface.noface`) proves there is
none, the series would be quarantined. For a QA phantom - the geometry phantoms' plates,
the bottles scanners are tested on - that asks a person to act on something nothing is
wrong with. Such a series ends **withheld** (policy ``qa-phantom``): nothing of it leaves,
so a mistaken "phantom" can never leak a face. That is why, unlike delivery, this ending
may rest on evidence a head could also show:

* the images: in every volume the structure runs one way, in stripes of :data:`STRIPE_MM`
  or more (:func:`parallel_stripes`: the plates and grids of a geometry phantom; a head's
  outline is a closed curve and its inside is structured every way). A head under a strong
  stripe artefact can show this too; it is then withheld instead of quarantined - held
  back either way, never delivered;
* the headers of the originals: a patient or series named a phantom
  (``phantom_words`` in ``agent/data/send_policy.json``; QA, QC and ACR only as the
  patient's name or ID, ``phantom_patient_words``). Header words may only ever hold
  data back, never let it through.

Only asked where the series would otherwise be quarantined (after waiting for a partner
series): a phantom-like series the template does fit is judged and defaced as any other.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from agent.errors import Withheld
from agent.policy import rules
from agent.vocab import WithheldCode

#: Header fields whose words may name a phantom (read from the originals, never logged).
NAME_FIELDS = ("PatientName", "PatientID", "SeriesDescription", "ProtocolName",
               "StudyDescription", "ImageComments")
#: Of those, the fields that name the patient: a few more words name a phantom there.
PATIENT_FIELDS = ("PatientName", "PatientID")

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


def phantom_words(patient: bool = False) -> re.Pattern[str]:
    """The words that name a phantom in any of :data:`NAME_FIELDS` - and with ``patient``,
    those that name one as the patient (rules as data, read with the product's other
    fixed rules: :func:`agent.policy.rules`)."""
    fixed = rules()
    return fixed.phantom_patient_words if patient else fixed.phantom_words


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


def parallel_stripes(image: sitk.Image) -> str | None:
    """Why every image's structure runs one way, in stripes of :data:`STRIPE_MM` or more;
    None when it does not. The middle image is measured first: a head fails there."""
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
    return (f"the structure of every image runs one way ({100 * agreeing / total:.0f}% "
            f"of it within {STRIPE_DEG:.0f} degrees), in stripes {length:.0f} mm long, as "
            "a geometry phantom's plates do")


def named_phantom(sources: Sequence[Path]) -> bool:
    """A patient or series named a phantom in the originals' headers (first and last file)."""
    picks = list(dict.fromkeys([*sources[:1], *sources[-1:]]))
    for path in picks:
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True,
                                 specific_tags=list(NAME_FIELDS))
        except Exception:  # noqa: BLE001 - an unreadable original says nothing here
            continue
        for name in NAME_FIELDS:
            if phantom_words(name in PATIENT_FIELDS).search(str(ds.get(name, "") or "")):
                return True
    return False


def withheld(images: Sequence[sitk.Image], sources: Sequence[Path], why: str
             ) -> Withheld | None:
    """The ``qa-phantom`` ending for a series whose face no fit places (``why``), or None
    when it does not look like a phantom (it is quarantined)."""
    if not images:
        return None
    stripes: str | None = None
    for img in _one_per_geometry(images):  # every geometry must show them: stop at one not
        stripes = parallel_stripes(img)
        if stripes is None:
            break
    if stripes is not None:
        evidence = stripes
    elif named_phantom(sources):
        evidence = "its headers name a phantom"
    else:
        return None
    return Withheld(f"not sent: this series looks like a QA phantom ({evidence}) and no "
                    f"head template fits it ({why}), so it is held back rather than "
                    "delivered unchecked. If it is in fact a patient, export the study's "
                    "3-D T1 together with it and retry", code=WithheldCode.QA_PHANTOM)


def _one_per_geometry(images: Sequence[sitk.Image]) -> list[sitk.Image]:
    seen: set[tuple[object, ...]] = set()
    out = []
    for img in images:
        key = (img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection())
        if key not in seen:
            seen.add(key)
            out.append(img)
    return out
