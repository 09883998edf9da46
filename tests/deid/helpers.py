"""Shared helpers for the de-identification tests: real DICOM, real engine, real verifier."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files

from agent.config import Config, DeidConfig, SiteConfig
from agent.deid.engine import Engine
from agent.deid.verify import Rules, load_safe_private
from agent.paths import AgentPaths
from agent.work import SeriesWork

SECRET = bytes(range(32))
SITE = "TESTSITE"


def corpus_files() -> list[Path]:
    """Every DICOM-looking file of pydicom's test data, pydicom-data and deid-data."""
    import deid_data

    files = [Path(p) for p in get_testdata_files() if Path(p).is_file()]
    files += sorted(Path(os.path.dirname(deid_data.__file__)).rglob("*.dcm"))
    return sorted(set(files))


def data_file(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(str(path))


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return Config(site=SiteConfig(name=SITE), paths=AgentPaths.under(tmp_path / "home"))


@pytest.fixture
def engine() -> Engine:
    return Engine(SITE, SECRET, DeidConfig())


@pytest.fixture
def rules() -> Rules:
    return Rules(safe_private=load_safe_private())


def make_work(tmp_path: Path, files: list[Path]) -> SeriesWork:
    workdir = tmp_path / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    return SeriesWork(key="k", version=1, source_files=list(files), workdir=workdir)


def write_series(
    tmp_path: Path, n: int, mutate: Callable[[pydicom.Dataset, int], None] | None = None,
    base: str = "MR_small.dcm", folder: str = "src",
) -> list[Path]:
    """``n`` slices of one series made from a pydicom test file (new instance UIDs)."""
    src = tmp_path / folder
    src.mkdir(parents=True, exist_ok=True)
    template = pydicom.dcmread(data_file(base))
    out = []
    for i in range(n):
        ds = copy.deepcopy(template)
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.10.999.{i + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
            # Step along the slice normal so that the slices form a regular volume.
            iop = np.array([float(v) for v in ds.ImageOrientationPatient])
            normal = np.cross(iop[:3], iop[3:])
            pos = np.array([float(v) for v in ds.ImagePositionPatient]) + 5.0 * i * normal
            ds.ImagePositionPatient = [f"{v:.4f}" for v in pos]
            ds.SliceThickness = 5
            ds.SpacingBetweenSlices = 5
        if mutate is not None:
            mutate(ds, i)
        path = src / f"slice{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out
