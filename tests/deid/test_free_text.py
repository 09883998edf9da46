"""Free text end to end: ISO 2022 text cleaned without cutting an escape sequence, ages
capped, device names kept whole, site vocabulary, and the verifier's own findings."""

from __future__ import annotations

import re
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from agent.config import DeidConfig
from agent.deid.engine import Engine
from agent.deid.verify import (
    Rules,
    check_file,
    collect_identifiers,
    field_rules,
    load_safe_private,
)

from .helpers import SECRET, SITE, write_series

_ESCAPE = re.compile(rb"\x1b(\$\)C|\$B|\(B|\(J|\)I|\$\)A)")


def _one(tmp_path: Path, plant, options: DeidConfig | None = None):  # type: ignore[no-untyped-def]
    [src] = write_series(tmp_path, 1, lambda ds, i: plant(ds))
    engine = Engine(SITE, SECRET, options or DeidConfig())
    result = engine.deidentify_file(src, tmp_path)
    assert result is not None
    return src, result.path


def test_iso2022_text_is_cleaned_without_cutting_an_escape(tmp_path: Path) -> None:
    def plant(ds: Dataset) -> None:
        ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
        ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
        ds.SeriesDescription = "T1 山田太郎 MPRAGE"
        ds.EthnicGroup = "日本 山田"

    src, out = _one(tmp_path, plant)
    raw = pydicom.dcmread(out, stop_before_pixels=True)
    for tag in (0x0008103E, 0x00102160):
        data = raw.get_item(tag).value
        for at in [m.start() for m in re.finditer(rb"\x1b", data)]:
            assert _ESCAPE.match(data, at), f"broken escape sequence in {tag:08X} at {at}"
    ds = pydicom.dcmread(out)
    assert ds.SeriesDescription == "T1 MPRAGE"
    assert ds.EthnicGroup == "日本"
    assert check_file(out, collect_identifiers([src]), Rules(load_safe_private())) == []


@pytest.mark.parametrize(("age", "cap", "expected"),
                         [("095Y", 89, "090Y"), ("089Y", 89, "089Y"), ("950M", 89, "950M"),
                          ("095Y", 0, "095Y"), ("050W", 89, "050W"), ("1140M", 89, "")])
def test_ages_over_the_cap(tmp_path: Path, age: str, cap: int, expected: str) -> None:
    def plant(ds: Dataset) -> None:
        ds.PatientAge = age

    src, out = _one(tmp_path, plant, DeidConfig(age_cap_years=cap))
    assert pydicom.dcmread(out).PatientAge == expected
    rules = Rules(load_safe_private(), fields=field_rules(age_cap_years=cap))
    assert check_file(out, collect_identifiers([src]), rules) == []


def test_the_verifier_finds_an_age_over_the_cap(tmp_path: Path) -> None:
    src, out = _one(tmp_path, lambda ds: setattr(ds, "PatientAge", "070Y"))
    ds = pydicom.dcmread(out)
    ds.PatientAge = "097Y"
    ds.save_as(out, enforce_file_format=True)
    whats = [f.what for f in check_file(out, collect_identifiers([src]),
                                        Rules(load_safe_private()))]
    assert any("age above 89" in w for w in whats)


def test_model_name_is_not_truncated_by_the_institution(tmp_path: Path) -> None:
    def plant(ds: Dataset) -> None:
        ds.InstitutionName = "Prisma Fit Imaging Centre of Springfield"
        ds.ManufacturerModelName = "MAGNETOM Prisma Fit"
        ds.StudyDescription = "Research^Rorden_Prisma"
        ds.ReferringPhysicianName = "Rorden^Chris"

    src, out = _one(tmp_path, plant)
    ds = pydicom.dcmread(out)
    assert ds.ManufacturerModelName == "MAGNETOM Prisma Fit"
    assert ds.StudyDescription == "Research^Prisma"
    assert "Springfield" not in str(ds.get("InstitutionName", ""))
    assert check_file(out, collect_identifiers([src]), Rules(load_safe_private())) == []


def test_site_vocabulary_keeps_its_protocol_words(tmp_path: Path) -> None:
    site = tmp_path / "terms.txt"
    site.write_text("# our protocols\nNEUROPROT7 glioma_fu\n", encoding="utf-8")

    def plant(ds: Dataset) -> None:
        ds.SeriesDescription = "NEUROPROT7 T2 zzyzx"

    src, out = _one(tmp_path, plant, DeidConfig(vocabulary_files=(str(site),)))
    assert pydicom.dcmread(out).SeriesDescription == "NEUROPROT7 T2"
    _src, plain = _one(tmp_path / "plain", plant)
    assert pydicom.dcmread(plain).SeriesDescription == "T2"


def test_a_name_part_that_is_a_protocol_word(tmp_path: Path) -> None:
    """"DTI" of the patient's name is the protocol word in a descriptor; the same part in
    another field, or with the rest of the name, is the patient."""
    def plant(ds: Dataset) -> None:
        ds.PatientName = "Dti^Anna"
        ds.SeriesDescription = "DTI_ax b1000"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "DTI"]

    src, out = _one(tmp_path, plant)
    ds = pydicom.dcmread(out)
    assert ds.SeriesDescription == "DTI_ax b1000"
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "DTI"]
    ids = collect_identifiers([src])
    rules = Rules(load_safe_private())
    assert check_file(out, ids, rules) == []
    ds.ContentDescription = "DTI"  # outside descriptors and code strings: the patient
    ds.SeriesDescription = "DTI Anna"
    ds.save_as(out, enforce_file_format=True)
    wheres = {f.where for f in check_file(out, ids, rules)}
    assert {"(0070,0081)", "(0008,103E)"} <= wheres


def _verified(tmp_path: Path, edit) -> set[str]:  # type: ignore[no-untyped-def]
    def plant(ds: Dataset) -> None:
        ds.PatientName = "Quillfeather^Maud"
        ds.OtherPatientNames = "Field^Rose"  # a relative named with ordinary words

    src, out = _one(tmp_path, plant)
    ds = pydicom.dcmread(out)
    edit(ds)
    ds.save_as(out, enforce_file_format=True)
    return {f"{f.where} {f.what}" for f in check_file(out, collect_identifiers([src]),
                                                       Rules(load_safe_private()))}


def test_verifier_reads_un_elements(tmp_path: Path) -> None:
    def edit(ds: Dataset) -> None:
        ds[0x00101081] = RawDataElement(Tag(0x00101081), "UN", 12, b"QUILLFEATHER", 0, False,
                                        True)

    found = _verified(tmp_path, edit)
    assert any("(0010,1081)" in f and "name" in f for f in found)


def test_verifier_reads_code_strings_and_sequences(tmp_path: Path) -> None:
    def edit(ds: Dataset) -> None:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "FIELD ROSE"]
        item = Dataset()
        item.CodeValue = "X"
        item.CodingSchemeDesignator = "99LOCAL"
        item.CodeMeaning = "for Rose Field"
        ds.ProcedureCodeSequence = Sequence([item])

    found = _verified(tmp_path, edit)
    assert any(f.startswith("(0008,0008) original name") for f in found)
    assert any(f.startswith("(0008,1032)[0].(0008,0104) original name") for f in found)


def test_verifier_finds_names_and_dates_of_nobody_in_the_study(tmp_path: Path) -> None:
    def edit(ds: Dataset) -> None:
        ds.SeriesDescription = "T1 for Jennifer"
        ds.StudyDescription = "BRAIN 12 March 2011"

    found = _verified(tmp_path, edit)
    assert "(0008,103E) a person name in free text" in found
    assert "(0008,1030) a date in free text" in found


def test_a_shifted_date_equal_to_another_original_date_is_no_leak(tmp_path: Path) -> None:
    """A child's study shifted by exactly its age lands on the birth date: chance, not a
    leak. A date attribute that kept its own original is one."""
    def plant(ds: Dataset) -> None:
        ds.PatientBirthDate = "20150301"
        ds.StudyDate = "20210301"

    src, out = _one(tmp_path, plant)
    ids = collect_identifiers([src])
    rules = Rules(load_safe_private())
    ds = pydicom.dcmread(out)
    ds.StudyDate = "20150301"  # as if the keyed offset were exactly the age
    ds.save_as(out, enforce_file_format=True)
    assert check_file(out, ids, rules) == []
    ds.StudyDate = "20210301"  # not shifted at all
    ds.save_as(out, enforce_file_format=True)
    assert any(f.where == "(0008,0020)" for f in check_file(out, ids, rules))


def test_a_name_the_header_does_not_hold_leaves_kept_technical_text(tmp_path: Path) -> None:
    """A nurse's name (two listed names in a row) in text the profile keeps outside the
    descriptors: cut out by the cleaner, found by the verifier; one listed word alone, an
    ordinary DICOM word that is also a name, and the device description stay."""
    def plant(ds: Dataset) -> None:
        ds.ContentDescription = "checked by nurse Alice Garcia"
        ds.SequenceName = "*tfl_Jane_Smith"
        ds.EthnicGroup = "Hans Schroeder"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "FISCHER_JONES"]
        ds.ConvolutionKernel = ["LUNG", "SHARP"]
        ds.AcquisitionTerminationCondition = "MANU"
        ds.ManufacturerModelName = "github.com/fedorov/dcmqi"

    src, out = _one(tmp_path, plant)
    ds = pydicom.dcmread(out)
    assert "garcia" not in str(ds.get("ContentDescription", "")).lower()
    assert str(ds.SequenceName) == "*tfl"
    assert "EthnicGroup" not in ds or not ds.EthnicGroup
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "M"]
    assert list(ds.ConvolutionKernel) == ["LUNG", "SHARP"]
    assert ds.AcquisitionTerminationCondition == "MANU"
    assert ds.ManufacturerModelName == "github.com/fedorov/dcmqi"
    assert check_file(out, collect_identifiers([src]), Rules(load_safe_private())) == []

    def edit(ds: Dataset) -> None:
        ds.ContentDescription = "checked by nurse Alice Garcia"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "SCHMIDT_HANS"]

    found = _verified(tmp_path / "edited", edit)
    assert "(0070,0081) a person name in kept text" in found
    assert "(0008,0008) a person name in kept text" in found
