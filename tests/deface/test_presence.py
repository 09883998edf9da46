"""The face-presence verdicts on positive evidence only, with a known fit.

The template head itself is the subject (its fit is the identity), so every verdict here
is about the decision, not about registration: the face in view, a slab above the eyes
confirmed by the vertex or by a study fit that saw the face, and the cases that must stay
"cannot be told" (a slab with neither, a series that does not line up with the fit).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from agent.config import Config
from agent.deface import DefaceStage
from agent.deface.presence import (
    Verdict,
    blank,
    coherent_tissue,
    face_fraction,
    judge,
    lines_up,
    vertex_depth,
)
from agent.deface.template import Template, load_template
from agent.work import SeriesWork

from .conftest import Colin, make_case
from .dicom_writer import write_mr_series
from .helpers import read_stored


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template()


@pytest.fixture(scope="module")
def head(template: Template) -> sitk.Image:
    """The template head with air above the vertex (its own grid ends at the vertex)."""
    return sitk.ConstantPad(template.head, [0, 0, 0], [0, 0, 12], 0.0)


def identity() -> sitk.AffineTransform:
    return sitk.AffineTransform(3)


def slab(image: sitk.Image, z0: int, z1: int) -> sitk.Image:
    size = list(image.GetSize())
    return sitk.RegionOfInterest(image, [size[0], size[1], z1 - z0], [0, 0, z0])


def test_the_whole_head_shows_its_face(template: Template, head: sitk.Image) -> None:
    p = judge(head, identity(), template, own_fit=True, face_seen=1.0)
    assert p.verdict is Verdict.FACE and p.face_fraction > 0.95
    assert vertex_depth(head) is not None and vertex_depth(head) > 150  # type: ignore[operator]


def test_slab_above_the_eyes_on_its_own_fit(template: Template, head: sitk.Image) -> None:
    top = slab(head, 99, head.GetSize()[2])  # template z >= 62 mm; face and ears end at 42 mm
    assert face_fraction(top, identity(), template) == 0
    depth = vertex_depth(top)
    assert depth is not None and depth < 55
    p = judge(top, identity(), template, own_fit=True, face_seen=0.0)
    assert p.verdict is Verdict.NO_FACE and "below the top of the head" in p.reason


def test_slab_with_neither_vertex_nor_face_cannot_be_told(template: Template,
                                                           head: sitk.Image) -> None:
    mid = slab(head, 99, 115)  # through the brain: no face, and the vertex is above it
    assert vertex_depth(mid) is None
    p = judge(mid, identity(), template, own_fit=True, face_seen=0.0)
    assert p.verdict is Verdict.UNKNOWN


def test_slab_placed_by_the_study_fit(template: Template, head: sitk.Image) -> None:
    mid = slab(head, 99, 115)
    assert lines_up(mid, identity(), template) > 0.95
    p = judge(mid, identity(), template, own_fit=False, face_seen=0.9)
    assert p.verdict is Verdict.NO_FACE and "study's fit" in p.reason
    # A fit that never saw the face cannot vouch for its absence.
    assert judge(mid, identity(), template, own_fit=False,
                 face_seen=0.1).verdict is Verdict.UNKNOWN


def test_a_series_that_does_not_line_up_is_not_trusted(template: Template,
                                                       head: sitk.Image) -> None:
    moved = slab(head, 99, 115)
    moved.SetOrigin(tuple(np.array(moved.GetOrigin()) + np.array([70.0, 0.0, 0.0])))
    assert lines_up(moved, identity(), template) < 0.9
    p = judge(moved, identity(), template, own_fit=False, face_seen=0.9)
    assert p.verdict is Verdict.UNKNOWN and "lines up" in p.reason


def test_the_neck_below_the_head_does_not_count_as_moved(template: Template,
                                                        head: sitk.Image) -> None:
    """A long field of view runs down over the neck and shoulders, below any head
    template: that tissue is not judged, so the series still lines up; a patient moved
    sideways still does not."""
    arr = sitk.GetArrayFromImage(head)
    level = float(np.percentile(arr[arr > 0], 90))
    neck = np.zeros((60, *arr.shape[1:]), np.float32)  # 120 mm of body below the head
    yy, xx = np.indices(arr.shape[1:])
    neck[:, np.hypot(yy - arr.shape[1] / 2, (xx - arr.shape[2] / 2) / 2) < 40] = level
    long_view = sitk.GetImageFromArray(np.concatenate([neck, arr]))
    long_view.SetSpacing(head.GetSpacing())
    long_view.SetDirection(head.GetDirection())
    long_view.SetOrigin(head.TransformIndexToPhysicalPoint((0, 0, -60)))
    lower = slab(long_view, 0, 90)  # the neck and the lower half of the head
    assert lines_up(lower, identity(), template) >= 0.9
    lower.SetOrigin(tuple(np.array(lower.GetOrigin()) + np.array([70.0, 0.0, 0.0])))
    assert lines_up(lower, identity(), template) < 0.9


def test_the_face_just_outside_the_view_counts(template: Template, head: sitk.Image) -> None:
    """Within the 15 mm margin the face is taken as in view (a fit is never exact)."""
    near = slab(head, 91, head.GetSize()[2])  # starts 4 mm above the face region
    assert face_fraction(near, identity(), template) > 0
    assert judge(near, identity(), template, own_fit=True,
                 face_seen=0.0).verdict is Verdict.FACE


def test_blank_images(head: sitk.Image) -> None:
    empty = sitk.Image(head.GetSize(), sitk.sitkFloat32) + 7.0
    assert blank(empty) and not blank(head)


def phase_map(head: sitk.Image, seed: int = 3) -> sitk.Image:
    """A phase (field) map of ``head``: a smooth field inside the head, uniform noise over
    the whole range outside it, as scanners store phase."""
    arr = sitk.GetArrayFromImage(head)
    inside = arr > 0.1 * float(np.percentile(arr[arr > 0], 95))
    rng = np.random.default_rng(seed)
    z, y, _ = np.mgrid[:arr.shape[0], :arr.shape[1], :arr.shape[2]]
    field = 2048 + 1200 * np.sin(z / 9.0) * np.cos(y / 13.0) + rng.normal(0, 40, arr.shape)
    out = sitk.GetImageFromArray(np.where(inside, field, rng.uniform(0, 4095, arr.shape))
                                 .astype(np.float32))
    out.CopyInformation(head)
    return out


def test_a_phase_map_lines_up_by_its_smooth_tissue(template: Template,
                                                    head: sitk.Image) -> None:
    """Noise across the range around the head is no tissue: the phase map of a head lines
    up with the fit of its magnitude series (and shows its face); moved, it does not."""
    assert coherent_tissue(head) is None  # a dark background: the usual tissue mask
    phase = phase_map(head)
    assert coherent_tissue(phase) is not None
    assert lines_up(phase, identity(), template) > 0.95
    p = judge(phase, identity(), template, own_fit=False, face_seen=0.9)
    assert p.verdict is Verdict.FACE
    moved = phase_map(head)
    moved.SetOrigin(tuple(np.array(moved.GetOrigin()) + np.array([70.0, 0.0, 0.0])))
    assert judge(moved, identity(), template, own_fit=False,
                 face_seen=0.9).verdict is Verdict.UNKNOWN


def test_a_phase_map_alone_is_fitted_by_its_silhouette(colin: Colin, tmp_path: Path) -> None:
    """A phase map with no magnitude partner (none will come): fitted by the silhouette of
    its smooth tissue, its face replaced; the brain's values kept bit for bit."""
    case = make_case(colin, "axial", (3.5, 3.5, 3.5))
    phase = phase_map(case.image, seed=5)
    files = write_mr_series(phase, tmp_path / "in", body_part="", description="")
    (tmp_path / "work").mkdir()
    work = SeriesWork(key="ef" * 32, version=1, source_files=list(files),
                      workdir=tmp_path / "work")
    stage = DefaceStage(Config())
    stage.intake_closed()
    stage(work)
    assert work.defaced and work.face["decision"] == "defaced", work.face
    before, _ = read_stored(files[0].parent)
    after, _ = read_stored(work.files[0].parent)
    assert np.array_equal(before[case.brain], after[case.brain])
    face = case.face & case.valid
    assert float((before[face] != after[face]).mean()) > 0.9
