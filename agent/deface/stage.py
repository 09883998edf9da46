"""The pipeline stage: decide whether a de-identified series needs defacing, and do it.

Decision, from the headers (which the de-identifier leaves usable for this):

* not MR or CT, or a Body Part Examined that is not the head: passed through unchanged;
* a localizer/scout of the head (or of an unknown body part): quarantined, because it shows
  a face profile, unless ``deface.quarantine_localizers`` is false;
* head CT: defaced in Hounsfield units (:mod:`agent.deface.ct`), like MR otherwise;
* MR of the head: defaced (classic or enhanced multi-frame; a series of several volumes -
  time points, diffusion directions - is defaced volume by volume with one template fit);
  anything that goes wrong quarantines it;
* MR of an unknown body part: defaced when the head template fits it; passed through when
  it is not a volume or the template does not fit (it is not a head).
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from agent.config import Config
from agent.deface import dicomio
from agent.deface.core import TemplateDoesNotFit
from agent.deface.render import render_before_after
from agent.errors import DefaceFailed
from agent.work import SeriesWork

log = logging.getLogger(__name__)

HEAD_PARTS = {
    "HEAD", "BRAIN", "SKULL", "HEADNECK", "HEAD_NECK", "HEADANDNECK", "FACE", "ORBIT",
    "IAC", "SINUS", "JAW", "TMJ", "NOSE", "EAR", "PITUITARY", "CEREBRUM", "NECKHEAD",
}
_HEAD_WORDS = re.compile(
    r"brain|head|neuro|skull|cran|orbit|sella|pituit|iac|sinus|face|mprage|spgr|tof|"
    r"hippo|epilep|\bms\b|stroke|cerebr", re.I)
_LOCALIZER_WORDS = re.compile(
    r"locali[sz]er|scout|survey|tri-?pilot|3[- ]?plane|\bloc\b|aahead|\bsurvey\b|pilot", re.I)
CODE_CLEAN_VISUAL = dicomio.CLEAN_VISUAL[0]


def _text(ds: Dataset) -> str:
    return " ".join(str(getattr(ds, kw, "") or "") for kw in
                    ("SeriesDescription", "ProtocolName", "StudyDescription"))


def _is_localizer(headers: list[Dataset]) -> bool:
    first = headers[0]
    image_type = [str(v).upper() for v in (getattr(first, "ImageType", None) or [])]
    if "LOCALIZER" in image_type or _LOCALIZER_WORDS.search(_text(first)):
        return True
    orientations = {tuple(round(float(v), 2) for v in getattr(ds, "ImageOrientationPatient",
                                                              ()) or ()) for ds in headers}
    # A handful of images in two or three planes: a tri-planar scout.
    return len(orientations) > 1 and len(headers) < dicomio.MIN_SLICES


def _seed(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")


class DefaceStage:
    """A :class:`~agent.work.Stage`: replaces the face of head MR volumes (see module doc)."""

    name = "deface"

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def __call__(self, work: SeriesWork) -> None:
        headers: list[Dataset] = []
        for path in work.files:
            try:
                headers.append(pydicom.dcmread(str(path), stop_before_pixels=True))
            except Exception:  # noqa: BLE001 -- pydicom raises many types for damaged files
                raise DefaceFailed("a file of the series cannot be read as DICOM",
                                   code="deface-input") from None
        if not headers:
            return
        first = headers[0]
        modality = str(getattr(first, "Modality", "") or "").upper()
        body = re.sub(r"[^A-Z_]", "", str(getattr(first, "BodyPartExamined", "") or "").upper())
        if modality not in ("MR", "CT"):
            return
        if body and body not in HEAD_PARTS:
            return
        head = bool(body) or bool(_HEAD_WORDS.search(_text(first)))
        if _is_localizer(headers):
            if self.cfg.deface.quarantine_localizers:
                raise DefaceFailed(
                    "this is a localizer/scout of the head, which shows the face in profile; "
                    "localizers are held back (set deface.quarantine_localizers = false to "
                    "deliver them)", code="deface-localizer")
            return
        try:
            volumes, source = dicomio.load_volumes(dicomio.read_datasets(list(work.files)))
        except DefaceFailed:
            if head:
                raise
            return  # not a volume and nothing says it is a head: not ours to deface
        try:
            results = dicomio.deface_volumes(volumes, seed=_seed(work.key), modality=modality)
        except TemplateDoesNotFit:
            if head:
                raise
            log.info("series %s: head template does not fit; passed through", work.key[:12])
            return
        out_dir = work.workdir / "deface"
        names = dict(zip(work.files, _unique_names(list(work.files)), strict=True))
        new_path = dicomio.write_volumes(volumes, results, out_dir, names, source)
        work.files = [new_path[p] for p in work.files]
        work.defaced = True
        if CODE_CLEAN_VISUAL not in work.codes:
            work.codes.append(CODE_CLEAN_VISUAL)
        if self.cfg.deface.renders:
            work.render = render_before_after(
                volumes[0].image, dicomio.stored_to_image(volumes[0], results[0][1]),
                work.workdir / "render.png", modality=modality)
        r = results[0][0].report
        log.info("series %s defaced (%d volume(s)): %d voxels replaced, dice %.2f",
                 work.key[:12], len(volumes), r.voxels_replaced, r.dice)


def _unique_names(files: list[Path]) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    for i, p in enumerate(files):
        name = p.name if p.name not in seen else f"{i:05d}_{p.name}"
        seen.add(name)
        names.append(name)
    return names
