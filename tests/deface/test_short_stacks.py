"""Short stacks (2-3 slices) decided deliberately (agent.deface.plan):

* with a study partner (the study's fit), the face is replaced from the mapped region;
* alone, no fit is tried on so few slices (it could land anywhere along the head): the
  agent waits for a partner, and once none can come the series is quarantined saying that
  it is a short stack and what to do;
* alone but too small for any face in two directions: delivered as it is, the reason on
  the record.

The template head itself is the subject where a study fit is needed (its fit is the
identity), so the test is about the decision, not about registration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid

from agent.config import Config
from agent.deface import DefaceStage
from agent.deface.fitting import template_id
from agent.deface.studyfit import Fit, PartnerPending, StudyFits, study_key
from agent.deface.template import BRAIN, FACE, Template, load_template
from agent.errors import DefaceFailed
from agent.status import SeriesSummary
from agent.ui.text import series_row
from agent.vocab import FaceCode
from agent.work import SeriesWork

from ..conftest import StartAgent
from ..waiting import wait_until
from .conftest import Colin, make_case
from .dicom_writer import write_mr_series

STUDY = "STUDY-SHORT"


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template()


def stack(image: sitk.Image, labels: sitk.Image, slices: int
          ) -> tuple[sitk.Image, np.ndarray]:
    """``slices`` axial slices of 5 mm through the middle of the face (image, labels)."""
    ref = sitk.Image([int(s * p / 2.0) for s, p in zip(image.GetSize()[:2],
                                                       image.GetSpacing()[:2], strict=True)]
                     + [int(image.GetSize()[2] * image.GetSpacing()[2] / 5.0)],
                     sitk.sitkFloat32)
    ref.SetSpacing((2.0, 2.0, 5.0))
    ref.SetOrigin(image.GetOrigin())
    ref.SetDirection(image.GetDirection())
    img = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkLinear, 0.0)
    lab = sitk.GetArrayFromImage(sitk.Resample(labels, ref, sitk.Transform(),
                                               sitk.sitkNearestNeighbor, 0))
    face_levels = np.flatnonzero((lab & FACE).reshape(len(lab), -1).any(axis=1))
    start = int(np.median(face_levels))
    size = [*img.GetSize()[:2], slices]
    return (sitk.RegionOfInterest(img, size, [0, 0, start]), lab[start:start + slices])


def work_for(files: list[Path], tmp: Path, name: str) -> SeriesWork:
    (tmp / name).mkdir(parents=True, exist_ok=True)
    work = SeriesWork(key=f"{name:x<64}"[:64], version=1, source_files=list(files),
                      workdir=tmp / name)
    work.study_pseudonym, work.series_pseudonym = STUDY, f"SERIES-{name}"
    return work


def in_study(image: sitk.Image, folder: Path, frame: str) -> list[Path]:
    files = write_mr_series(image, folder, description="ep2d_diff 3 scan trace",
                            body_part="")
    for p in files:
        ds = pydicom.dcmread(p)
        ds.FrameOfReferenceUID = frame
        ds.save_as(p)
    return files


def pixels(files: list[Path]) -> np.ndarray:
    dss = sorted((pydicom.dcmread(p) for p in files), key=lambda d: int(d.InstanceNumber))
    return np.stack([d.pixel_array for d in dss])


@pytest.mark.parametrize("slices", [2, 3])
def test_a_short_stack_is_defaced_from_the_study_fit(template: Template, tmp_path: Path,
                                                     slices: int) -> None:
    image, labels = stack(template.head, template.labels, slices)
    frame = generate_uid()
    files = in_study(image, tmp_path / "in", frame)
    fits = StudyFits(tmp_path / "fits")
    fits.offer(study_key(STUDY, frame), Fit.from_transform(
        sitk.AffineTransform(3), dice=0.95, scales=(1.0, 1.0, 1.0), rotation_deg=0.0,
        score=1.0, source="SERIES-T1", face_seen=1.0, template=template_id(template)))
    work = work_for(files, tmp_path, "short")
    DefaceStage(Config(), fits)(work)
    assert work.defaced and "mapped surrogate" in work.face["reason"], work.face
    before, after = pixels(files), pixels(work.files)
    changed = before != after
    assert not changed[(labels & BRAIN) > 0].any(), "brain changed"
    face = ((labels & FACE) > 0) & (before > 0.15 * before.max())
    assert float(changed[face].mean()) >= 0.85


@pytest.mark.parametrize("slices, at, said", [
    (3, 0.25, "short stack of 3 slice(s)"),  # through the face
    (12, 0.75, "thin slab of 12 slices, 60 mm"),  # above the eyes: alone, it cannot be told
])
def test_a_short_stack_alone_waits_then_is_quarantined_saying_why(
        colin: Colin, tmp_path: Path, slices: int, at: float, said: str) -> None:
    case = make_case(colin, "axial", (2.0, 2.0, 5.0))
    size = case.image.GetSize()
    start = min(int(at * size[2]), size[2] - slices)
    short = sitk.RegionOfInterest(case.image, [size[0], size[1], slices], [0, 0, start])
    files = in_study(short, tmp_path / "in", generate_uid())
    stage = DefaceStage(Config(), StudyFits(tmp_path / "fits"))
    with pytest.raises(PartnerPending):
        stage(work_for(files, tmp_path, "first"))
    stage.intake_closed()
    with pytest.raises(DefaceFailed) as info:
        stage(work_for(files, tmp_path, "again"))
    message = str(info.value)
    assert info.value.code == "deface-fit"
    assert said in message, message
    assert "3-D T1" in message and "together" in message and "[send]" in message


def test_a_short_stack_too_small_for_a_face_is_delivered(tmp_path: Path) -> None:
    """Two 5 mm slices of a 36 mm field of view (a finger, a small-animal coil): no face
    fits in it, whatever it shows."""
    rng = np.random.default_rng(3)
    arr = rng.normal(300.0, 20.0, (2, 36, 36)).astype(np.float32)
    img = sitk.GetImageFromArray(np.clip(arr, 0, None))
    img.SetSpacing((1.0, 1.0, 5.0))
    files = in_study(img, tmp_path / "in", generate_uid())
    work = work_for(files, tmp_path, "tiny")
    DefaceStage(Config(), StudyFits(tmp_path / "fits"))(work)
    assert not work.defaced and work.face["code"] == FaceCode.TOO_SMALL.value


def test_the_agent_shows_why_a_short_stack_waits(colin: Colin, running_agent: StartAgent,
                                                 export_dir: Path) -> None:
    """Waiting minutes for the rest of the study must not look like a series silently
    queued: the status and the window say what it waits for (a short stack alone)."""
    case = make_case(colin, "axial", (2.0, 2.0, 5.0))
    size = case.image.GetSize()
    short = sitk.RegionOfInterest(case.image, [size[0], size[1], 3],
                                  [0, 0, int(0.25 * size[2])])
    agent = running_agent(deface_enabled=True)
    in_study(short, export_dir / "short", generate_uid())

    def waiting() -> SeriesSummary | None:
        return next((s for s in agent.status().recent
                     if "waiting for a series of the same study" in s.reason), None)

    assert wait_until(waiting, timeout=120), agent.status().recent
    summary = waiting()
    assert summary is not None and summary.state == "staged"
    assert "short stack of 3 slice(s)" in series_row(summary)[4]
