"""The slab-above-the-eyes rule (agent.deface.presence: the study's fit places the face
outside the view) attacked by a real head: the corpus' 1 mm T1, fitted once, then cut into
slabs as a patient who moved between series would give them - slid down the head (the
eyes now in the slab, its header still at the top), or nodding forward. None may be
called face-free: each either shows the face or cannot be told (it waits for a partner,
or is quarantined)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from agent.deface.presence import Verdict, judge
from agent.deface.register import register_template
from agent.deface.template import Template, load_template


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template()


@pytest.fixture(scope="module")
def fitted(corpus_heads: Path, template: Template) -> tuple[sitk.Image, sitk.AffineTransform]:
    """The real head on a 2 mm grid (its third axis runs foot to head) and its fit."""
    head = sitk.Shrink(sitk.ReadImage(str(corpus_heads / "otsu_t1.nii.gz"),
                                      sitk.sitkFloat32), [2, 2, 2])
    assert abs(head.GetDirection()[8]) > 0.99, "the slabs below are cut along the head"
    return head, register_template(head, template.head).transform


def top_of_head(image: sitk.Image) -> int:
    arr = sitk.GetArrayViewFromImage(image)
    levels = np.flatnonzero((arr > 0.2 * np.percentile(arr, 99)).reshape(len(arr), -1)
                            .any(axis=1))
    return int(levels.max())


def slab(image: sitk.Image, z0: int, z1: int) -> sitk.Image:
    size = image.GetSize()
    return sitk.RegionOfInterest(image, [size[0], size[1], z1 - z0], [0, 0, z0])


@pytest.mark.parametrize("slid_mm", [40, 60, 80])
def test_a_slab_slid_down_the_head_is_not_face_free(fitted: tuple[sitk.Image,
                                                                  sitk.AffineTransform],
                                                    template: Template, slid_mm: int) -> None:
    """The patient slid between series (same Frame of Reference): the slab's header says
    'above the eyes', its pixels are 40-80 mm lower, through the eyes and the nose."""
    head, tx = fitted
    end = min(head.GetSize()[2], top_of_head(head) + 6)
    at_top = slab(head, end - 31, end)
    lower = slab(head, end - slid_mm // 2 - 31, end - slid_mm // 2)
    lower.SetOrigin(at_top.GetOrigin())
    found = judge(lower, tx, template, own_fit=False, face_seen=1.0)
    assert found.verdict is not Verdict.NO_FACE, found


@pytest.mark.parametrize("degrees", [15.0, 25.0, 35.0])
def test_a_slab_of_a_nodding_head_is_not_face_free(fitted: tuple[sitk.Image,
                                                                 sitk.AffineTransform],
                                                   template: Template, degrees: float) -> None:
    """The patient nodded forward between series: the slab at the top of the view now
    holds the forehead and, lower, the eyes."""
    head, tx = fitted
    centre = head.TransformContinuousIndexToPhysicalPoint(
        [(s - 1) / 2.0 for s in head.GetSize()])
    nod = sitk.VersorRigid3DTransform()
    nod.SetCenter(centre)
    nod.SetRotation((1.0, 0.0, 0.0), float(np.deg2rad(degrees)))
    nodding = sitk.Resample(head, head, nod.GetInverse(), sitk.sitkLinear, 0.0)
    end = min(nodding.GetSize()[2], top_of_head(nodding) + 6)
    for depth_mm in (30, 50, 70):
        found = judge(slab(nodding, end - depth_mm // 2 - 6, end), tx, template,
                      own_fit=False, face_seen=1.0)
        assert found.verdict is not Verdict.NO_FACE, (depth_mm, found)
