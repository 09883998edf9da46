"""cloud/ builds on its own (pip install ./cloud): a wheel with the worker, its reference
step and both console scripts, and none of the agent."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cloud_builds_alone_as_its_own_wheel(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "-q", "-w", str(tmp_path), str(ROOT / "cloud")],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    [wheel] = list(tmp_path.glob("clinic2cloud_worker-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        [entry_points] = [n for n in names if n.endswith("entry_points.txt")]
        scripts = z.read(entry_points).decode()
    assert "clinic2cloud_worker/reference/brainmask.py" in names
    assert not any(n.startswith("agent/") for n in names)
    assert "clinic2cloud-worker = clinic2cloud_worker.cli:main" in scripts
    assert "clinic2cloud-reference-step = clinic2cloud_worker.reference.cli:main" in scripts
