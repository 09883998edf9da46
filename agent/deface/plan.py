"""One series through the face decision: choose the fit, judge each volume, deface.

See :mod:`agent.deface.stage` for the order of things and :mod:`agent.deface.presence`
for the verdicts. Everything here works on de-identified objects and pseudonyms; what is
logged or returned holds no PHI.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import SimpleITK as sitk

from agent.deface import fitting, noface, phantom, projection, replace, surrogate
from agent.deface.core import DefaceReport, deface_image
from agent.deface.dicomio import MIN_SLICES, SeriesObjects
from agent.deface.fitting import Candidate, fit_volume, template_id
from agent.deface.presence import Presence, Verdict, blank, judge
from agent.deface.studyfit import Fit, PartnerPending, StudyFits, study_key
from agent.deface.template import Template, load_template
from agent.deface.volumes import Volume
from agent.errors import DefaceFailed
from agent.vocab import FaceCode, ProblemCode
from agent.work import SeriesWork

log = logging.getLogger(__name__)

#: A series' own volume replaces the study's fit when it scores this much better.
BETTER = 1.25
#: The template's own face is drawn on regular volumes with no voxel side longer than this
#: (mm); thick 2-D stacks and EPI get the mapped surrogate.
STRUCTURAL_VOXEL_MM = 3.0
#: How long the agent waits before looking again for a partner series (seconds).
RETRY_SECONDS = 120.0
_CT_MESSAGE = ("this CT may show a face, and defacing head CT in this shape (a stack that "
               "is not one regular volume) is not supported yet; the series is held back")


@dataclass
class Outcome:
    verdict: Verdict
    reason: str
    defaced: int = 0
    render: tuple[sitk.Image, sitk.Image] | None = None
    fit_source: str = ""
    #: The numbers of the first defaced volume.
    report: DefaceReport | None = None
    #: Why there is no face (:class:`~agent.vocab.FaceCode`), or DEFACED.
    code: FaceCode = FaceCode.DEFACED


def _frame_of_reference(objs: SeriesObjects) -> str:
    for ds in objs.datasets:
        value = str(ds.get("FrameOfReferenceUID", "") or "").strip()
        if value:
            return value
    return ""


def _choose_fit(fits: StudyFits, key: str | None, cands: list[Candidate], work: SeriesWork,
                template: Template, modality: str) -> tuple[Fit | None, bool, str]:
    """(fit, fitted on this series, why there is none)."""
    tid = template_id(template)
    stored = fits.get(key, tid)
    if not cands:
        return stored, False, ""
    best = cands[0]
    if stored is not None and best.score <= stored.score * BETTER:
        return stored, False, ""
    with fits.claim(key):
        stored = fits.get(key, tid)  # another series of the study may have fitted by now
        if stored is not None and best.score <= stored.score * BETTER:
            return stored, False, ""
        result = fit_volume(best.volume, source=work.series_pseudonym, template=template,
                            modality=modality)
        if result.fit is None:
            return stored, False, result.why
        if fits.offer(key, result.fit):
            log.info("series %s: its fit is now the study's (score %.2f)", work.key[:12],
                     result.fit.score)
        return result.fit, True, ""


def no_fit_source(volumes: list[Volume]) -> str:
    """Why no volume of the series can carry a fit of its own, in the clinic's words.

    A short stack (the 2-3 slices of a quick DWI, a single scout-like plane, a thin slab)
    alone is deliberately not fitted: the template placed on a few slices can land
    anywhere along the head, and a misplaced face is a face delivered. Such a stack is
    defaced from its study's fit (the mapped region), or quarantined saying so."""
    most = max(volumes, key=lambda v: (len(v.slices), min(v.extent_mm())))
    slices, thinnest = len(most.slices), min(most.extent_mm())
    if slices < fitting.MIN_FIT_SLICES or thinnest < fitting.MIN_COVERAGE_MM:
        shape = (f"a short stack of {slices} slice(s)" if slices < fitting.MIN_FIT_SLICES
                 else f"a thin slab of {slices} slices")
        return (f"it is {shape}, {thinnest:.0f} mm at its thinnest, too little to place "
                f"the face by itself: that needs {fitting.MIN_FIT_SLICES} slices covering "
                f"{fitting.MIN_COVERAGE_MM:.0f} mm in every direction")
    return (f"its voxels are too coarse to place the face by itself (over "
            f"{fitting.MAX_VOXEL_MM:.1f} mm)")


def _cannot_place(fits: StudyFits, work: SeriesWork, why: str, modality: str,
                  images: list[sitk.Image]) -> NoReturn:
    """No fit places the face of this series: wait for a partner; then withhold it as a
    QA phantom where it looks like one (:mod:`agent.deface.phantom`: nothing leaves), or
    quarantine."""
    if fits.may_wait(work.key):
        raise PartnerPending(f"waiting for a series of the same study that places the face "
                             f"({why})", retry_after=RETRY_SECONDS)
    held = phantom.withheld(images, list(work.source_files), why)
    if held is not None:
        fits.done_waiting(work.key)
        raise held
    if modality == "CT":
        raise DefaceFailed(_CT_MESSAGE, code=ProblemCode.DEFACE_CT)
    raise DefaceFailed(
        f"where the face is in this series cannot be told ({why}), and no other series of "
        "the study gives a fit. If it is a head, export the study's 3-D T1 (or another "
        "whole-head series) together with it and retry; if it is not a head (a phantom, "
        "another body part), the site can withhold such series with [send] "
        "exclude_descriptions", code=ProblemCode.DEFACE_FIT)


def run(fits: StudyFits, work: SeriesWork, objs: SeriesObjects, volumes: list[Volume], *,
        modality: str, seed: int) -> Outcome:
    template = load_template()
    images = [v.fit_image() for v in volumes]
    live = [i for i, img in enumerate(images) if not blank(img)]
    if not live:
        return Outcome(Verdict.NO_FACE, "the images hold no tissue", code=FaceCode.NO_TISSUE)
    # A shape no face allows (a limb, a phantom) settles it before any fit: a template
    # can be made to fit a cylinder, but no fit puts a face into one.
    shapes = _shape_evidence(volumes, images, [Presence(Verdict.UNKNOWN, "") if i in live
                                               else _EMPTY for i in range(len(volumes))])
    if all(p.verdict is Verdict.NO_FACE for p in shapes):
        fits.done_waiting(work.key)
        return Outcome(Verdict.NO_FACE, shapes[live[0]].reason,
                       code=shapes[live[0]].code or FaceCode.NO_TISSUE)
    key = study_key(work.study_pseudonym, _frame_of_reference(objs))
    cands = fitting.candidates([volumes[i] for i in live])
    fit, own, why = _choose_fit(fits, key, cands, work, template, modality)
    if fit is None:
        _cannot_place(fits, work, why or no_fit_source([volumes[i] for i in live]), modality,
                      [images[i] for i in live])
    verdicts = _verdicts(volumes, images, live, fit, own, template)
    if any(p.verdict is Verdict.UNKNOWN for p in verdicts) and not own and cands:
        # The study's fit does not settle it: fit this series itself.
        result = fit_volume(cands[0].volume, source=work.series_pseudonym, template=template,
                            modality=modality)
        if result.fit is not None:
            fit, own = result.fit, True
            fits.offer(key, fit)
            again = _verdicts(volumes, images, live, fit, True, template)
            verdicts = [a if p.verdict is Verdict.UNKNOWN else p
                        for p, a in zip(verdicts, again, strict=True)]
    verdicts = [b if a.verdict is Verdict.UNKNOWN and b.verdict is Verdict.NO_FACE else a
                for a, b in zip(verdicts, shapes, strict=True)]
    unknown = [p for p in verdicts if p.verdict is Verdict.UNKNOWN]
    if unknown:
        _cannot_place(fits, work, unknown[0].reason, modality, [images[i] for i in live])
    fits.done_waiting(work.key)
    faces = [i for i, p in enumerate(verdicts) if p.verdict is Verdict.FACE]
    if not faces:
        return Outcome(Verdict.NO_FACE, verdicts[live[0]].reason, fit_source=fit.source,
                       code=verdicts[live[0]].code or FaceCode.NO_TISSUE)
    outcome = Outcome(Verdict.FACE, verdicts[faces[0]].reason, fit_source=fit.source)
    filler = surrogate.Surrogate(template, fit.transform)
    for n, i in enumerate(faces):
        before = images[i] if outcome.render is None else None
        method, report = _deface(objs, volumes[i], images[i], fit, template, filler,
                                 seed + n, modality)
        outcome.defaced += 1
        if before is not None:
            outcome.render = (before, volumes[i].fit_image())
            outcome.reason = f"{outcome.reason}; {method}"
            report.dice, report.scales, report.rotation_deg = (fit.dice, fit.scales,
                                                               fit.rotation_deg)
            report.face_in_fov = verdicts[i].face_fraction
            outcome.report = report
    return outcome


_EMPTY = Presence(Verdict.NO_FACE, "the image holds no tissue", code=FaceCode.NO_TISSUE)


def _geometry(volume: Volume, image: sitk.Image) -> tuple[object, ...]:
    return (image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection(),
            volume.projection)


def _shape_evidence(volumes: list[Volume], images: list[sitk.Image],
                    verdicts: list[Presence]) -> list[Presence]:
    """Verdicts where the undecided volumes that show a shape no face allows
    (:mod:`agent.deface.noface`) become NO_FACE; the others stay as they were. A FACE
    verdict is never changed. Volumes of one geometry are judged by the first of them."""
    out = list(verdicts)
    by_geometry: dict[tuple[object, ...], Presence | None] = {}
    for i, p in enumerate(verdicts):
        if p.verdict is not Verdict.UNKNOWN or volumes[i].projection:
            continue
        key = _geometry(volumes[i], images[i])
        if key not in by_geometry:
            found = noface.evidence(images[i])
            by_geometry[key] = None if found is None else Presence(
                Verdict.NO_FACE, found.reason, code=found.code)
        spared = by_geometry[key]
        if spared is not None:
            out[i] = spared
    return out


def _verdicts(volumes: list[Volume], images: list[sitk.Image], live: list[int], fit: Fit,
              own: bool, template: Template) -> list[Presence]:
    """A verdict per volume. Volumes in one geometry (the time points, directions and
    echoes of a 4-D series) share the verdict of the first of them that holds tissue:
    where the face is depends on the geometry, and the first volume (a b0, the first time
    point) shows the most tissue to line up."""
    by_geometry: dict[tuple[object, ...], Presence] = {}
    out = []
    for i, image in enumerate(images):
        if i not in live:
            out.append(_EMPTY)
            continue
        key = _geometry(volumes[i], image)
        if key not in by_geometry:
            by_geometry[key] = _judge(volumes[i], image, fit, own, template)
        out.append(by_geometry[key])
    return out


def _judge(volume: Volume, image: sitk.Image, fit: Fit, own: bool, template: Template
           ) -> Presence:
    rays = projection.ray_grid(volume.block_image(0)) if volume.projection else None
    try:
        return judge(image, fit.transform, template, own_fit=own, face_seen=fit.face_seen,
                     rays=rays)
    except DefaceFailed as exc:  # e.g. a head mask cannot be found
        return Presence(Verdict.UNKNOWN, str(exc))


def _structural(volume: Volume) -> bool:
    sides = (*volume.plane.spacing, volume.median_step())
    return (volume.is_regular() and len(volume.slices) >= MIN_SLICES
            and max(sides) <= STRUCTURAL_VOXEL_MM)


def _deface(objs: SeriesObjects, volume: Volume, image: sitk.Image, fit: Fit,
            template: Template, filler: surrogate.Surrogate, seed: int, modality: str
            ) -> tuple[str, DefaceReport]:
    """Deface one volume in place (objects updated); returns how, and its numbers."""
    if modality == "CT":
        # Head CT is the defacing core's (Hounsfield units, bone): its answer stands.
        if not volume.is_regular():
            raise DefaceFailed(_CT_MESSAGE, code=ProblemCode.DEFACE_CT)
        result = deface_image(image, template, seed=seed,
                              registration=fit.registration(image), modality="CT")
        replace.apply_block(objs, volume, 0, result)
        return "template face (CT)", result.report
    if volume.projection:
        return _deface_projection(objs, volume, fit, template, seed)
    if _structural(volume):
        try:
            result = deface_image(image, template, seed=seed,
                                  registration=fit.registration(image), modality="MR")
            replace.apply_block(objs, volume, 0, result)
            return "template face", result.report
        except DefaceFailed as exc:
            log.info("template face not drawn (%s: %s); using the mapped surrogate", exc.code,
                     exc)
    calib = filler.calibrate(image)
    tally = replace.Tally()
    registration = fit.registration(image)
    for b in range(len(volume.blocks)):
        block = volume.block_image(b)
        maps = filler.maps(block)
        if maps is None:
            continue
        result = surrogate.fill(block, maps, calib, seed * 131 + b, registration)
        replace.apply_block(objs, volume, b, result, tally)
    replace.check_volume(tally)
    report = DefaceReport(voxels_replaced=tally.changed, fraction_changed=tally.fraction,
                          shape=tuple(int(v) for v in image.GetSize()[::-1]))  # type: ignore[arg-type]
    return "mapped surrogate", report


def _deface_projection(objs: SeriesObjects, volume: Volume, fit: Fit, template: Template,
                       seed: int) -> tuple[str, DefaceReport]:
    """Every slice of a projection series on its own rays (:mod:`projection`)."""
    tally = replace.Tally()
    for b in range(len(volume.blocks)):
        start, stop = volume.blocks[b]
        for i in range(start, stop):
            sub = Volume(slices=[volume.slices[i]], stored=volume.stored[i:i + 1],
                         blocks=[(0, 1)])
            block = sub.block_image(0)
            maps = projection.maps(block, template, fit.transform)
            if maps is None:
                continue
            calib = projection.calibrate(block, template, fit.transform)
            result = surrogate.fill(block, maps, calib, seed * 131 + i,
                                    fit.registration(block))
            replace.apply_block(objs, sub, 0, result, tally)
            volume.stored[i] = sub.stored[0]
    replace.check_volume(tally)
    return "projected surrogate", DefaceReport(voxels_replaced=tally.changed,
                                               fraction_changed=tally.fraction)


def deface_dicom_files(files: list[Path], out_dir: Path, *, render: Path | None = None,
                       base: Path | None = None) -> DefaceReport:
    """``clinic2cloud deface`` on the DICOM files of one series: the same decision as the
    pipeline, written to ``out_dir`` under the same relative names (a series without a face
    is copied unchanged)."""
    import hashlib
    import shutil
    import tempfile
    import time

    from agent.deface import dicomio
    from agent.deface.render import render_before_after
    from agent.deface.volumes import build_volumes

    t0 = time.perf_counter()
    objs = dicomio.read_series(files, files)
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in objs.datasets}
    if len(series) > 1:
        raise DefaceFailed("the folder holds several series; deface one series at a time",
                           code=ProblemCode.DEFACE_INPUT)
    digest = hashlib.sha256(";".join(sorted(series)).encode()).hexdigest()
    names = {p: str(p.relative_to(base)) if base else p.name for p in files}
    outcome = Outcome(Verdict.NO_FACE, "not an image")
    with tempfile.TemporaryDirectory(prefix="clinic2cloud-fits-") as tmp:
        fits = StudyFits(Path(tmp))
        fits.partners_expected = False  # one series alone: no partner will come
        if objs.slices:
            work = SeriesWork(key=digest, version=1, source_files=files, workdir=Path(tmp),
                              study_pseudonym="", series_pseudonym=digest[:16])
            outcome = run(fits, work, objs, build_volumes(objs.slices, objs.pixels),
                          modality=modality_of(objs), seed=int(digest[:8], 16))
    for src, dst in objs.write(out_dir, names).items():
        if dst == src:  # unchanged: copied as it is
            (out_dir / names[src]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out_dir / names[src])
    report = outcome.report or DefaceReport()
    if outcome.render is not None and render is not None:
        render_before_after(*outcome.render, render, modality=modality_of(objs))
    report.notes.append(f"{outcome.verdict.value}: {outcome.reason}")
    report.seconds = time.perf_counter() - t0
    return report


def modality_of(objs: SeriesObjects) -> str:
    for ds in objs.datasets:
        value = str(ds.get("Modality", "") or "").strip().upper()
        if value:
            return value
    return "MR"
