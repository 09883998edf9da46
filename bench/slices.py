"""Real-size MR slices for the benchmarks: identifiable, with private tags, as scanners write.

The header is pydicom's public MR_small.dcm test file with identifying elements and a
vendor private block planted; the pixels are a smooth head-like blob plus noise on a
256 x 256 16-bit grid (about 130 kB a file, as a clinical 2D slice).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file


def _template() -> pydicom.Dataset:
    template = pydicom.dcmread(str(get_testdata_file("MR_small.dcm")))
    template.Rows = template.Columns = 256
    template.PatientName = "Benchmark^Patient^Middle"
    template.PatientID = "BENCH-0001"
    template.PatientBirthDate = "19700101"
    template.InstitutionName = "Bench General Hospital"
    template.ReferringPhysicianName = "Referrer^Rita"
    template.StationName = "BENCHMR01"
    template.AccessionNumber = "ACC123456"
    template.StudyDescription = "BRAIN ROUTINE"
    # An acquired slice, as a scanner writes it (the public file says DERIVED\SECONDARY,
    # which makes the pixels stage read every frame whole: see --derived).
    template.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    block = template.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    block.add_new(0x0C, "IS", "1000")
    block.add_new(0x10, "LO", "private text")
    return template


def generate_study(folder: Path, series: int, per_series: int) -> list[Path]:
    """``series`` series of ``per_series`` slices each, one study, one folder per series."""
    template = _template()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256]
    base = (2000 * np.exp(-((yy - 128) ** 2 + (xx - 128) ** 2) / 5000)).astype(np.int16)
    files = []
    for s in range(series):
        out = folder / f"series{s + 1:02d}"
        out.mkdir(parents=True, exist_ok=True)
        for i in range(per_series):
            ds = copy.deepcopy(template)
            ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.10.778.1.{s}"
            ds.SOPInstanceUID = f"1.2.826.0.1.3680043.10.778.2.{s}.{i}"
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.SeriesNumber = s + 1
            ds.InstanceNumber = i + 1
            ds.ImagePositionPatient = [-128.0, -128.0, float(i)]
            ds.SliceLocation = float(i)
            noise = rng.integers(0, 50, size=(256, 256), dtype=np.int16)
            ds.PixelData = (base + noise).astype("<i2").tobytes()
            path = out / f"IM{i:05d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
    return files
