"""The two pipeline stages end to end: pools, determinism, options, deflate, lookup."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from agent.config import Config, replace
from agent.deid import DeidStage, VerifyStage, pseudonym_for_patient
from agent.deid.stage import POOL_THRESHOLD
from agent.errors import LeakFound, SeriesProblem

from .helpers import SECRET, SITE, make_work, write_series


def _outputs(paths: list[Path]) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in paths}


def test_pool_gives_the_same_result_as_one_process(tmp_path: Path, cfg: Config) -> None:
    sources = write_series(tmp_path, POOL_THRESHOLD + 6)
    one = make_work(tmp_path / "one", sources)
    DeidStage(replace(cfg, pipeline_workers=1), SECRET)(one)
    VerifyStage(replace(cfg, pipeline_workers=1))(one)
    two = make_work(tmp_path / "two", sources)
    DeidStage(replace(cfg, pipeline_workers=2), SECRET)(two)
    VerifyStage(replace(cfg, pipeline_workers=2))(two)
    assert _outputs(one.files) == _outputs(two.files)
    assert len(one.files) == len(sources)
    assert (one.patient_pseudonym, one.study_pseudonym, one.series_pseudonym) == (
        two.patient_pseudonym, two.study_pseudonym, two.series_pseudonym)


def test_rerun_is_deterministic_and_replaces_partial_outputs(tmp_path: Path, cfg: Config) -> None:
    sources = write_series(tmp_path, 3)
    work = make_work(tmp_path, sources)
    stage = DeidStage(cfg, SECRET)
    stage(work)
    first = _outputs(work.files)
    (work.workdir / "deid" / "stale.partial").write_bytes(b"x")
    work.files = list(work.source_files)
    stage(work)
    assert _outputs(work.files) == first
    assert not (work.workdir / "deid" / "stale.partial").exists()


def test_options_off(tmp_path: Path, cfg: Config) -> None:
    def plant(ds: pydicom.Dataset, i: int) -> None:
        ds.StudyDate = "20200202"
        block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
        block.add_new(0x0C, "IS", "1000")

    strict = replace(cfg, deid_retain_safe_private=False,
                     deid_retain_longitudinal_modified_dates=False,
                     deid_retain_patient_characteristics=False, deid_clean_descriptors=False)
    work = make_work(tmp_path, write_series(tmp_path, 1, plant))
    DeidStage(strict, SECRET)(work)
    VerifyStage(strict)(work)
    ds = pydicom.dcmread(work.files[0])
    assert work.codes == ["113100"]
    assert not any(t.group & 1 for t in ds.keys())
    assert ds.StudyDate == ""  # Z without the dates option
    assert "SeriesDescription" not in ds or ds.SeriesDescription in ("",)
    assert "PatientSex" not in ds or ds.PatientSex == ""


def test_verifier_rejects_safe_private_when_the_option_is_off(
    tmp_path: Path, cfg: Config
) -> None:
    def plant(ds: pydicom.Dataset, i: int) -> None:
        ds.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0C, "IS", "1")

    work = make_work(tmp_path, write_series(tmp_path, 1, plant))
    DeidStage(cfg, SECRET)(work)  # default: safe private retained
    with pytest.raises(LeakFound, match=r"\(0019,100C\)"):
        VerifyStage(replace(cfg, deid_retain_safe_private=False))(work)


def test_deflated_input(tmp_path: Path, cfg: Config) -> None:
    def deflate(ds: pydicom.Dataset, i: int) -> None:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian

    sources = write_series(tmp_path, 2, deflate)
    work = make_work(tmp_path, sources)
    DeidStage(cfg, SECRET)(work)
    VerifyStage(cfg)(work)
    for src, out in zip(sorted(sources), sorted(work.files, key=lambda p: pydicom.dcmread(
            p).InstanceNumber), strict=True):
        a, b = pydicom.dcmread(src), pydicom.dcmread(out)
        assert b.file_meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian
        assert a.PixelData == b.PixelData
    # The verifier reads the inflated stream: a name hidden in a deflated output is found.
    leaky = pydicom.dcmread(work.files[0])
    leaky.OtherPatientNames = str(pydicom.dcmread(sources[0]).PatientName)
    leaky.save_as(work.files[0], enforce_file_format=True)
    assert leaky.PatientName.family_name.encode() not in work.files[0].read_bytes()[300:]
    with pytest.raises(LeakFound, match=r"\(0010,1001\): original name"):
        VerifyStage(cfg)(work)


def test_series_mixing_patients_is_refused(tmp_path: Path, cfg: Config) -> None:
    def two_patients(ds: pydicom.Dataset, i: int) -> None:
        ds.PatientID = f"PATIENT-{i}"

    work = make_work(tmp_path, write_series(tmp_path, 2, two_patients))
    with pytest.raises(SeriesProblem, match="more than one patient"):
        DeidStage(cfg, SECRET)(work)


def test_lookup_matches_and_is_keyed(tmp_path: Path, cfg: Config) -> None:
    def pid(ds: pydicom.Dataset, i: int) -> None:
        ds.PatientID = "LOOKUP-42"

    work = make_work(tmp_path, write_series(tmp_path, 1, pid))
    DeidStage(cfg, SECRET)(work)
    assert work.patient_pseudonym == pseudonym_for_patient(SITE, SECRET, "LOOKUP-42")
    assert work.patient_pseudonym == pseudonym_for_patient(SITE, SECRET, " LOOKUP-42 ")
    other = pseudonym_for_patient(SITE, b"another site secret 32 bytes....", "LOOKUP-42")
    assert other != work.patient_pseudonym and other.startswith(f"{SITE}-")
    assert len(work.patient_pseudonym) == len(SITE) + 11
