"""Canaries: identifiers planted everywhere an export can hide them; none may come out.

Each test checks the outputs twice: with the verifier, and with a plain case-insensitive
byte search of this file's own list of canaries (so a verifier bug cannot hide a leak).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import UID

from agent.config import Config
from agent.deid import DeidStage, VerifyStage, pseudonym_for_patient

from .helpers import SECRET, SITE, make_work, write_series

NAME = "Canarysson^Wilhelmina"
PID = "PID-CANARY-84213"
CANARIES = [
    "Canarysson", "Wilhelmina", PID, "OTHERID-CANARY-1", "19710304", "1971-03-04",
    "20190715", "15.07.2019", "Canary Row", "555 0199 7788", "Canary General Infirmary",
    "CANARYSTATION7", "SN-CANARY-5566", "ACC99887766", "STUDYCANARY1", "Featherstone",
    "Quillington", "claustrophobia", "CANARYAE", "CANARYIMPL", "CANARY CORP",
    "Nestling", "1.2.826.0.1.3680043.10.999", "Birdcage Ward", "Cagefolder",
    "DEVID-CANARY-3",
]


def _plant(ds: Dataset, i: int) -> None:
    ds.PatientName = NAME
    ds.PatientID = PID
    ds.OtherPatientIDs = "OTHERID-CANARY-1"
    ds.PatientBirthDate = "19710304"
    ds.PatientAge = "048Y"
    ds.PatientWeight = 71.5
    ds.PatientSex = "F"
    ds.PatientAddress = "12 Canary Row, Springfield"
    ds.PatientTelephoneNumbers = "+1 555 0199 7788"
    ds.InstitutionName = "Canary General Infirmary"
    ds.InstitutionalDepartmentName = "Birdcage Ward"
    ds.StationName = "CANARYSTATION7"
    ds.DeviceSerialNumber = "SN-CANARY-5566"
    ds.DeviceID = "DEVID-CANARY-3"  # outside Table E.1-1
    ds.AccessionNumber = "ACC99887766"
    ds.StudyID = "STUDYCANARY1"
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20190715"
    ds.AcquisitionDateTime = "20190715101010"
    ds.ReferringPhysicianName = "Featherstone^Hans"
    ds.OperatorsName = "Quillington^Ada"
    ds.PerformingPhysicianName = "Featherstone^Hans"
    # Free text and descriptors.
    ds.ImageComments = "Patient Canarysson complained of claustrophobia"
    ds.StudyDescription = "BRAIN Canarysson 15.07.2019"
    ds.SeriesDescription = f"T1 MPRAGE {PID}"
    ds.ProtocolName = "Canarysson protocol 20190715"
    ds.AdditionalPatientHistory = "Lives at 12 Canary Row with Wilhelmina"
    # Nested sequences: a reference, request attributes, a code, an SQ in an SQ.
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.999.77"
    ds.ReferencedStudySequence = Sequence([ref])
    req = Dataset()
    req.RequestedProcedureID = "STUDYCANARY1"
    req.ScheduledProcedureStepID = "ACC99887766"
    req.RequestedProcedureDescription = "MRI for Canarysson"
    inner = Dataset()
    inner.CodeValue = "X1"
    inner.CodingSchemeDesignator = "99LOCAL"
    inner.CodeMeaning = "Brain protocol for Wilhelmina"
    req.RequestedProcedureCodeSequence = Sequence([inner])
    ds.RequestAttributesSequence = Sequence([req])
    src_img = Dataset()
    src_img.ReferencedSOPClassUID = str(ds.SOPClassUID)
    src_img.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.10.999.{i + 1}"
    ds.SourceImageSequence = Sequence([src_img])
    # Private: an unknown creator with a name, a private sequence, a safe Siemens element.
    block = ds.private_block(0x0029, "CANARY CORP", create=True)
    block.add_new(0x01, "LO", "Canarysson Wilhelmina")
    nested = Dataset()
    nested.PatientName = "Nestling^Wilhelmina"
    block.add_new(0x02, "SQ", Sequence([nested]))
    siemens = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    siemens.add_new(0x0C, "IS", "1000")  # on the safe list: kept
    siemens.add_new(0x10, "LO", "Canarysson")  # same block, not on the list: removed
    # UN: a standard tag stored as UN, and an unknown even tag holding the name.
    ds[0x00101001] = RawDataElement(Tag(0x00101001), "UN", 10, b"Canarysson", 0, False, True)
    ds[0x00289999] = RawDataElement(Tag(0x00289999), "UN", 10, b"Wilhelmina", 0, False, True)
    # Overlay with a comment, and a curve.
    ds.add_new(0x60000022, "LO", "Overlay for Canarysson")
    ds.add_new(0x50000022, "LO", "Curve for Canarysson")
    # File meta: the source's AE title, implementation and private information.
    ds.file_meta.SourceApplicationEntityTitle = "CANARYAE"
    ds.file_meta.ImplementationVersionName = "CANARYIMPL"
    ds.file_meta.PrivateInformationCreatorUID = UID("1.2.826.0.1.3680043.10.999.5")
    ds.file_meta.PrivateInformation = b"Canarysson"
    ds.preamble = b"Canarysson".ljust(128, b"\0")


def _planted_series(tmp_path: Path, n: int = 3) -> list[Path]:
    files = write_series(tmp_path, n, _plant, folder="Cagefolder/Canarysson_Wilhelmina")
    # The source file names carry the patient ID too.
    renamed = []
    for i, f in enumerate(files):
        target = f.with_name(f"{PID}_{i}.dcm")
        f.rename(target)
        renamed.append(target)
    return renamed


def _assert_no_canary(paths: list[Path]) -> None:
    for path in paths:
        data = path.read_bytes().lower()
        text = str(path.name).lower()
        for canary in CANARIES:
            c = canary.lower()
            assert c.encode() not in data, f"{canary!r} leaked into {path.name}"
            assert c.encode("utf-16-le") not in data
            assert c not in text


def test_planted_identifiers_do_not_leak(tmp_path: Path, cfg: Config) -> None:
    sources = _planted_series(tmp_path)
    work = make_work(tmp_path, sources)
    DeidStage(cfg, SECRET)(work)
    VerifyStage(cfg)(work)  # raises LeakFound on any finding
    _assert_no_canary(work.files)
    assert len(work.files) == len(sources)
    for out in work.files:
        assert out.parent == work.workdir / "deid"
        ds = pydicom.dcmread(out)
        assert ds.PatientName == pseudonym_for_patient(SITE, SECRET, PID)
        assert ds.PatientID == ds.PatientName
        assert str(ds.PatientName).startswith(f"{SITE}-")
        assert ds.PatientIdentityRemoved == "YES"
        assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == [
            "113100", "113107", "113108", "113105", "113111"]
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
        assert "SourceApplicationEntityTitle" not in ds.file_meta
        assert "PrivateInformation" not in ds.file_meta
        assert ds.file_meta.ImplementationVersionName == "CLINIC2CLOUD_1"
        assert ds.preamble == b"\0" * 128
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert out.name == f"{ds.SOPInstanceUID}.dcm"
        # Safe private kept with its creator; everything else private gone.
        assert ds[0x00190010].value == "SIEMENS MR HEADER"
        assert ds[0x0019100C].value == "1000"
        assert 0x00191010 not in ds and 0x00290010 not in ds and 0x00291001 not in ds
        assert 0x00289999 not in ds and 0x00101001 not in ds
        assert not any(0x5000 <= (t >> 16) <= 0x60FF for t in ds.keys())
        # Characteristics and descriptors kept (cleaned).
        assert ds.SeriesDescription == "T1 MPRAGE"
        assert "BRAIN" in ds.StudyDescription
        assert "ImageComments" not in ds and "AdditionalPatientHistory" not in ds
        req = ds.RequestAttributesSequence[0] if "RequestAttributesSequence" in ds else None
        if req is not None:
            assert "Wilhelmina" not in str(req)
    assert work.patient_pseudonym == pseudonym_for_patient(SITE, SECRET, PID)
    assert len(work.study_pseudonym) == 16 and len(work.series_pseudonym) == 16
    assert work.modality == "MR" and work.series_description == "T1 MPRAGE"
    assert work.codes == ["113100", "113107", "113108", "113105", "113111"]


def test_references_follow_the_uid_mapping(tmp_path: Path, cfg: Config) -> None:
    sources = _planted_series(tmp_path, 4)
    work = make_work(tmp_path, sources)
    DeidStage(cfg, SECRET)(work)
    outs = {pydicom.dcmread(p).InstanceNumber: pydicom.dcmread(p) for p in work.files}
    # Slice i references slice i's original SOP Instance UID: it must now name the output.
    for ds in outs.values():
        ref = ds.SourceImageSequence[0].ReferencedSOPInstanceUID
        assert ref == ds.SOPInstanceUID
        assert ds.SourceImageSequence[0].ReferencedSOPClassUID == ds.SOPClassUID
        assert ds.SOPClassUID.startswith("1.2.840.10008.")
    uids = {(d.StudyInstanceUID, d.SeriesInstanceUID, d.FrameOfReferenceUID) for d in outs.values()}
    assert len(uids) == 1
    study, series, frame = uids.pop()
    assert all(u.startswith("2.25.") and len(u) <= 64 for u in (study, series, frame))


def test_dates_shift_by_one_keyed_offset(tmp_path: Path, cfg: Config) -> None:
    from datetime import date

    work = make_work(tmp_path, _planted_series(tmp_path, 1))
    DeidStage(cfg, SECRET)(work)
    ds = pydicom.dcmread(work.files[0])
    study = date.fromisoformat(f"{ds.StudyDate[:4]}-{ds.StudyDate[4:6]}-{ds.StudyDate[6:]}")
    shift = (date(2019, 7, 15) - study).days
    assert 1 <= shift <= cfg.deid.max_date_shift_days
    assert ds.AcquisitionDateTime == ds.StudyDate + "101010"
    assert "PatientBirthDate" not in ds or not ds.PatientBirthDate
    assert ds.PatientAge == "048Y" and ds.PatientSex == "F" and float(ds.PatientWeight) == 71.5


def test_big_endian_and_implicit_sources(tmp_path: Path, cfg: Config) -> None:
    from .helpers import data_file

    for name in ("MR_small_bigendian.dcm", "MR_small_implicit.dcm"):
        src = tmp_path / name
        src.write_bytes(data_file(name).read_bytes())
        work = make_work(tmp_path / name.split(".")[0], [src])
        DeidStage(cfg, SECRET)(work)
        VerifyStage(cfg)(work)
        a, b = pydicom.dcmread(src), pydicom.dcmread(work.files[0])
        assert a.file_meta.TransferSyntaxUID == b.file_meta.TransferSyntaxUID
        assert a.PixelData == b.PixelData
        assert (a.pixel_array == b.pixel_array).all()


@pytest.mark.parametrize("allowed", [(), ("US",)])
def test_pixel_identity_is_quarantined_unless_allowed(
    tmp_path: Path, cfg: Config, allowed: tuple[str, ...]
) -> None:
    from agent.config import replace
    from agent.errors import IdentityRisk

    def us(ds: Dataset, i: int) -> None:
        ds.Modality = "US"

    work = make_work(tmp_path, write_series(tmp_path, 1, us))
    stage = DeidStage(replace(cfg, deid_allow_pixel_identity=allowed), SECRET)
    if not allowed:
        with pytest.raises(IdentityRisk, match="ultrasound"):
            stage(work)
    else:
        stage(work)
        assert work.modality == "US"

    def burned(ds: Dataset, i: int) -> None:
        ds.Modality = "US"
        ds.BurnedInAnnotation = "YES"

    work = make_work(tmp_path / "b", write_series(tmp_path / "b", 1, burned))
    with pytest.raises(IdentityRisk, match="burned-in"):
        stage(work)  # allowing a modality never allows declared burned-in text


def test_unreadable_file_is_not_dicom(tmp_path: Path, cfg: Config) -> None:
    from agent.errors import NotDicom

    bad = tmp_path / "junk.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + struct.pack("<HH", 2, 1) + b"garbage" * 3)
    with pytest.raises(NotDicom):
        DeidStage(cfg, SECRET)(make_work(tmp_path, [bad]))


def test_non_ascii_names_do_not_leak(tmp_path: Path, cfg: Config) -> None:
    def plant(ds: Dataset, i: int) -> None:
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = "Müllerová^Jürgen"
        ds.PatientID = "ÄÖÜ-778899"
        ds.SeriesDescription = "T2 Müllerová FLAIR"
        ds.InstitutionName = "Klinikum Süderstraße"

    work = make_work(tmp_path, write_series(tmp_path, 2, plant))
    DeidStage(cfg, SECRET)(work)
    VerifyStage(cfg)(work)
    for out in work.files:
        data = out.read_bytes().lower()
        for word in ("müllerová", "jürgen", "äöü-778899", "süderstraße"):
            for enc in ("utf-8", "latin-1", "utf-16-le"):
                try:
                    needle = word.encode(enc)
                except UnicodeEncodeError:
                    continue
                assert needle not in data, (word, enc)
        ds = pydicom.dcmread(out)
        assert ds.SeriesDescription == "T2 FLAIR"
