"""Every DICOM file bundled with pydicom, pydicom-data and deid-data through the engine.

Each file either comes out valid (parses, pixel data byte-identical, verifier finds
nothing) or is refused with a SeriesProblem whose class says why (IdentityRisk for objects
that may show identity in their pixels, NotDicom for what cannot be read).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
import pytest

from agent.deid.engine import Engine
from agent.deid.risk import pixel_risks
from agent.deid.verify import Rules, check_file, collect_identifiers
from agent.errors import IdentityRisk, NotDicom, SeriesProblem

from .helpers import corpus_files

CORPUS = corpus_files()
#: Image objects that must be delivered, not refused (the MR/CT a clinic sends).
MUST_DELIVER = {
    "MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_expb.dcm",
    "CT_small.dcm", "emri_small.dcm", "emri_small_big_endian.dcm", "emri_small_RLE.dcm",
    "emri_small_jpeg_2k_lossless.dcm", "eCT_Supplemental.dcm", "rtplan.dcm", "MR2_UNCR.dcm",
    "MR2_J2KR.dcm", "693_UNCI.dcm", "693_J2KR.dcm",
}


def _pixel_bytes(path: Path) -> bytes | None:
    ds = pydicom.dcmread(path, force=True)
    elem = ds.get("PixelData")
    return None if elem is None else bytes(elem)


@pytest.mark.parametrize("src", CORPUS, ids=[f"{p.parent.name}/{p.name}" for p in CORPUS])
def test_corpus_file(src: Path, engine: Engine, rules: Rules, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the deliberately odd files
        try:
            result = engine.deidentify_file(src, tmp_path)
        except IdentityRisk:
            ds = pydicom.dcmread(src, force=True, stop_before_pixels=True)
            assert pixel_risks(ds), "IdentityRisk must come from a documented rule"
            assert src.name not in MUST_DELIVER
            return
        except NotDicom:
            assert src.name not in MUST_DELIVER
            return
        except SeriesProblem as exc:
            assert src.name not in MUST_DELIVER
            assert str(exc)  # a sentence a person can act on
            return
        if result is None:  # DICOMDIR: never delivered
            assert "DICOMDIR" in src.name
            assert list(tmp_path.iterdir()) == []
            return
        out = result.path
        assert out.parent == tmp_path and out.name.startswith("2.25.")
        ds = pydicom.dcmread(out)
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert _pixel_bytes(out) == _pixel_bytes(src)
        src_meta = pydicom.dcmread(src, force=True, stop_before_pixels=True).file_meta
        if "TransferSyntaxUID" in src_meta:
            assert ds.file_meta.TransferSyntaxUID == src_meta.TransferSyntaxUID
        findings = check_file(out, collect_identifiers([src]), rules)
        assert findings == []


def test_corpus_delivers_the_clinical_images(engine: Engine, tmp_path: Path) -> None:
    names = {p.name: p for p in CORPUS}
    missing = MUST_DELIVER - set(names)
    assert not missing, f"test data moved: {missing}"
    for name in sorted(MUST_DELIVER):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert engine.deidentify_file(names[name], tmp_path) is not None, name
