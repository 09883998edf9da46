"""Defacing as a user meets it: `clinic2cloud deface` and the whole pipeline on a real head."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from PIL import Image

from agent.sync.manifest import verify_folder

from .conftest import Colin, make_case
from .dicom_writer import write_mr_series


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLINIC2CLOUD_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True,
                          text=True, timeout=180, env=env)


def test_deface_command_on_nifti_with_render(colin: Colin, tmp_path: Path) -> None:
    case = make_case(colin, "axial", (2.0, 2.0, 2.0))
    src = tmp_path / "head.nii.gz"
    sitk.WriteImage(case.image, str(src))
    out, render = tmp_path / "defaced.nii.gz", tmp_path / "render.png"
    r = _cli("deface", str(src), str(out), "--render", str(render), home=tmp_path / "home")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["brain_voxels_changed"] == 0 and report["voxels_replaced"] > 1000
    before = sitk.GetArrayFromImage(case.image)
    after = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert after.shape == before.shape
    assert np.array_equal(after[case.brain], before[case.brain])
    assert (after[case.face] != before[case.face]).mean() >= 0.85
    with Image.open(render) as img:
        assert img.width > img.height > 32  # before and after, side by side


def test_deface_command_refusal_is_one_line(tmp_path: Path) -> None:
    r = _cli("deface", str(tmp_path / "missing"), str(tmp_path / "o"), home=tmp_path / "home")
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1


def process_defaced(tmp_path: Path) -> Path:
    """``clinic2cloud process`` of ``tmp_path/export`` into ``tmp_path/out``: one delivery,
    defaced; its manifest."""
    r = _cli("process", str(tmp_path / "export"), "--out", str(tmp_path / "out"), "--json",
             home=tmp_path / "home")
    assert r.returncode == 0, r.stdout + r.stderr
    [manifest] = list((tmp_path / "out").rglob("manifest.json"))
    doc = json.loads(manifest.read_text())
    assert doc["defaced"] is True and "113102" in doc["deidentification_codes"]
    return manifest


def test_process_defaces_a_head_series_end_to_end(colin: Colin, tmp_path: Path) -> None:
    image = make_case(colin, "sagittal", (2.0, 2.0, 2.0)).image
    files = write_mr_series(image, tmp_path / "export" / "Doe John")
    manifest = process_defaced(tmp_path)
    assert verify_folder(manifest.parent) == []
    outputs = sorted(manifest.parent.glob("*.dcm"))
    assert len(outputs) == len(files)
    ds = pydicom.dcmread(outputs[0])
    assert ds.ImageType[0] == "DERIVED"
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert "113100" in codes and "113102" in codes


def test_deface_command_on_dicom_refuses_to_write_identity(colin: Colin, tmp_path: Path
                                                           ) -> None:
    """A DICOM series keeps its headers when only defaced: refused unless the user says
    --keep-identity, and then with a warning."""
    image = make_case(colin, "axial", (2.4, 2.4, 2.4)).image
    write_mr_series(image, tmp_path / "in", patient_name="Doe^Jane")
    r = _cli("deface", str(tmp_path / "in"), str(tmp_path / "out"), home=tmp_path / "home")
    assert r.returncode == 2
    assert "--keep-identity" in r.stderr and "clinic2cloud process" in r.stderr
    assert not (tmp_path / "out").exists()
    r = _cli("deface", str(tmp_path / "in"), str(tmp_path / "out"), "--keep-identity",
             home=tmp_path / "home")
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and "identity" in r.stderr
    ds = pydicom.dcmread(sorted((tmp_path / "out").iterdir())[0])
    assert str(ds.PatientName) == "Doe^Jane" and ds.ImageType[0] == "DERIVED"
