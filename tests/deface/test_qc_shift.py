"""The QC gate's registration check measures what it says: how far a rigid registration of
the defaced head to the original moves it."""

from __future__ import annotations

import SimpleITK as sitk

from agent.deface import qc

from .conftest import Colin, make_case


def test_rigid_shift_finds_a_moved_head_and_nothing_in_an_unmoved_one(colin: Colin) -> None:
    case = make_case(colin, "axial", (2.0, 2.0, 2.0))
    assert qc.rigid_shift(case.image, case.image) < 0.1
    moved = sitk.Resample(case.image, case.image, sitk.TranslationTransform(3, (3.0, 0.0, 0.0)),
                          sitk.sitkLinear, 0.0)
    shift = qc.rigid_shift(case.image, moved)
    assert 2.0 < shift < 4.0, f"a 3 mm move measured as {shift:.2f} mm"
    # The same pair, the same number (the gate's verdict is reproducible).
    assert qc.rigid_shift(case.image, moved) == shift
