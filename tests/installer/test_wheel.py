"""`pip install .` (not only the frozen bundle) carries what the pipeline needs at run time."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_holds_profile_and_templates_where_the_locator_looks(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    [wheel] = tmp_path.glob("clinic2cloud-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "agent/deid/data/ps3.15-table-E.1-1-2024b.json" in names
    data = [n for n in names if ".data/data/share/clinic2cloud/templates/" in n]
    assert {Path(n).name for n in data} == {"head.nii.gz", "labels.nii.gz", "weight.nii.gz",
                                           "surface.nii.gz", "README.md"}

    from agent.deface.template import template_dirs

    assert Path(sys.prefix) / "share" / "clinic2cloud" / "templates" in template_dirs()
