"""A real head as an identifiable MR DICOM series, for end-to-end runs of installed builds.

Colin27 (``ch2.nii.gz`` from the Debian package mricron-data: a real head with a face) is
resampled to an axial 2 mm grid and written as one classic MR Image Storage file per slice
(the defacing tests' writer, tests/deface/dicom_writer.py), then planted with identifiers
that de-identification must remove. Used by installer/ci-linux.sh and the CI workflow:

    python -m tests.installer.head_series OUT_FOLDER [--spacing MM] [--compress j2k|rle]

prints the canary strings (one per line) that must not appear in any delivered file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.uid import JPEG2000Lossless, RLELossless

COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")

#: Identifiers planted in every slice. Finding one in a delivered file is a leak.
CANARIES = {
    "PatientName": "Installson^Ingrid",
    "PatientID": "PID-INSTALLER-55120",
    "PatientBirthDate": "19610307",
    "InstitutionName": "Saint Canary Hospital",
    "ReferringPhysicianName": "Doctor^Referring^Canary",
    "AccessionNumber": "ACC-CANARY-9931",
    "StudyID": "STUDY-CANARY-7",
    "OperatorsName": "Operator^Canary",
}


def axial_grid(head: sitk.Image, spacing: float) -> sitk.Image:
    """An axial (identity direction) grid covering ``head`` at ``spacing`` mm."""
    size = np.array(head.GetSize()) * np.array(head.GetSpacing()) / spacing
    ref = sitk.Image([int(np.ceil(v)) for v in size], sitk.sitkFloat32)
    ref.SetSpacing((spacing,) * 3)
    ref.SetOrigin(head.TransformIndexToPhysicalPoint((0, 0, 0)))
    ref.SetDirection(head.GetDirection())
    return ref


#: ``--compress`` choices: transfer syntaxes whose decoders the frozen app must carry
#: (pylibjpeg-openjpeg, pydicom's RLE handler), found through entry points at run time.
COMPRESSIONS = {"j2k": JPEG2000Lossless, "rle": RLELossless}


def make_head_series(folder: Path, spacing: float = 2.0, colin: Path = COLIN,
                     compress: str = "") -> list[Path]:
    """Write the series into ``folder`` (optionally compressed); returns its files."""
    from tests.deface.dicom_writer import write_mr_series

    if not colin.is_file():
        raise FileNotFoundError(f"{colin} not found: apt-get install mricron-data")
    head = sitk.ReadImage(str(colin), sitk.sitkFloat32)
    image = sitk.Resample(head, axial_grid(head, spacing), sitk.Transform(), sitk.sitkLinear,
                          0.0, sitk.sitkFloat32)
    paths = write_mr_series(image, folder, bits_stored=12)
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword, value in CANARIES.items():
            setattr(ds, keyword, value)
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = "20240517"
        ds.StudyTime = "101500"
        # The writer marks its synthetic output as already de-identified; this one is not.
        del ds.PatientIdentityRemoved
        if compress:
            ds.compress(COMPRESSIONS[compress])
        ds.save_as(path, enforce_file_format=True)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--spacing", type=float, default=2.0)
    parser.add_argument("--compress", choices=sorted(COMPRESSIONS), default="")
    args = parser.parse_args(argv)
    paths = make_head_series(args.out, args.spacing, compress=args.compress)
    print(f"{len(paths)} slices written to {args.out}", file=sys.stderr)
    for value in CANARIES.values():
        print(value)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
