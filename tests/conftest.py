"""Fixtures shared by every test: an isolated agent home, configs, and real DICOM series.

Series are made from pydicom's own MR test file (public test data): each slice gets its own
SOP Instance UID, instance number and position, and planted identifiers that the
de-identification must remove.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
import pytest
from pydicom.uid import generate_uid

from agent.config import Config, load_config, replace
from agent.paths import AgentPaths

if TYPE_CHECKING:
    from agent.main import Agent

MR_SMALL = Path(pydicom.data.get_testdata_file("MR_small.dcm"))  # type: ignore[arg-type]

#: Identifiers planted in generated series. A test that finds one in an output has found a leak.
PATIENT_NAME = "Canarysson^Wilhelmina"
PATIENT_ID = "PID-CANARY-84213"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory,
                   monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own agent home: no test touches the real user's config or state."""
    home = tmp_path_factory.mktemp("agent-home")
    monkeypatch.setenv("CLINIC2CLOUD_HOME", str(home))
    yield home


@pytest.fixture
def agent_paths(_isolated_home: Path) -> AgentPaths:
    return AgentPaths.under(_isolated_home)


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    d = tmp_path / "export ü folder"
    d.mkdir()
    return d


@pytest.fixture
def outbox_dir(tmp_path: Path) -> Path:
    d = tmp_path / "outbox"
    d.mkdir()
    return d


@pytest.fixture
def make_config(agent_paths: AgentPaths, export_dir: Path,
                outbox_dir: Path) -> Callable[..., Config]:
    """A config watching ``export_dir`` and delivering to ``outbox_dir``; keyword arguments
    are ``section_key=value`` overrides (see :func:`agent.config.replace`)."""

    def make(**overrides: object) -> Config:
        cfg = load_config(None, paths=agent_paths)
        base: dict[str, object] = {
            "watch_folder": str(export_dir),
            "watch_stable_seconds": 0.5,
            "watch_rescan_seconds": 2.0,
            "target_path": str(outbox_dir),
            "deface_enabled": False,
            "pipeline_workers": 2,
        }
        base.update(overrides)
        return replace(cfg, **base)

    return make


def make_slice(template: pydicom.Dataset, study_uid: str, series_uid: str, index: int,
               patient_name: str, patient_id: str) -> pydicom.Dataset:
    ds = copy.deepcopy(template)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [0.0, 0.0, float(index) * 5.0]
    ds.SliceLocation = float(index) * 5.0
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.InstitutionName = "Canary Memorial Hospital"
    return ds


def write_series(folder: Path, n: int = 5, *, study_uid: str | None = None,
                 series_uid: str | None = None, patient_name: str = PATIENT_NAME,
                 patient_id: str = PATIENT_ID, prefix: str = "IMG") -> list[Path]:
    """Write ``n`` slices of one MR series into ``folder``; returns the file paths."""
    template = pydicom.dcmread(MR_SMALL)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        ds = make_slice(template, study_uid, series_uid, i, patient_name, patient_id)
        path = folder / f"{prefix}{i:05d}.dcm"
        tmp = path.with_name(path.name + ".part")
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
        out.append(path)
    return out


@pytest.fixture
def series_writer() -> Callable[..., list[Path]]:
    return write_series


def manifests(outbox: Path) -> list[Path]:
    """Manifests of finished deliveries in a folder target, not of one still in flight
    (the target's hidden ``.partial`` folder)."""
    return sorted(m for m in outbox.rglob("manifest.json")
                  if not any(part.endswith(".partial") for part in m.parts))


@pytest.fixture
def started_agent(make_config: Callable[..., Config]) -> Iterator[Agent]:
    """A real Agent on ``make_config()``'s defaults, started; stopped at teardown."""
    from agent.main import Agent

    agent = Agent(make_config())
    agent.start()
    yield agent
    agent.stop()
