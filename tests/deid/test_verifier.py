"""The verifier on its own: it catches a broken engine and broken outputs, and accepts what
the defacing stage legitimately changes. Messages never contain the identifier itself."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from agent.config import Config, DeidConfig
from agent.deid.engine import Engine
from agent.deid.profile import Action
from agent.deid.verify import Rules, VerifyStage, check_file, collect_identifiers
from agent.errors import LeakFound
from agent.work import SeriesWork

from .helpers import SECRET, SITE, make_work, write_series

INSTITUTION = "Verifier Memorial Clinic"
OTHER_NAME = "Verifiersson^Gudrun"
PID = "VRF-PID-123987"


def _plant(ds: Dataset, i: int) -> None:
    ds.PatientID = PID
    ds.PatientName = "Verifiersson^Karl"
    ds.OtherPatientNames = OTHER_NAME
    ds.InstitutionName = INSTITUTION
    ds.StudyDate = "20180203"
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.998.4242"
    ds.SourceImageSequence = Sequence([ref])


def _run(tmp_path: Path, cfg: Config, engine: Engine) -> list[Path]:
    sources = write_series(tmp_path, 2, _plant)
    out = tmp_path / "out"
    out.mkdir()
    work = make_work(tmp_path, sources)
    work.files = [r.path for s in sources if (r := engine.deidentify_file(s, out))]
    with pytest.raises(LeakFound) as err:
        VerifyStage(cfg)(work)
    message = str(err.value)
    for secret in (INSTITUTION, "Verifiersson", "Gudrun", PID, "20180203", "4242"):
        assert secret.lower() not in message.lower(), "the finding must not repeat PHI"
    return [Path(message)]


def _broken(actions: dict[int, Action], options: DeidConfig | None = None) -> Engine:
    engine = Engine(SITE, SECRET, options or DeidConfig())
    engine.profile = dataclasses.replace(
        engine.profile, actions={**engine.profile.actions, **actions}
    )
    return engine


@pytest.mark.parametrize(
    ("actions", "where", "kind"),
    [
        ({0x00101001: Action.KEEP}, "(0010,1001)", "name"),
        ({0x00080080: Action.KEEP}, "(0008,0080)", "place"),
        ({0x00080020: Action.KEEP}, "(0008,0020)", "date"),
        ({0x00081155: Action.KEEP}, "(0008,2112)[0].(0008,1155)", "uid"),
    ],
)
def test_broken_profile_is_caught(
    tmp_path: Path, cfg: Config, actions: dict[int, Action], where: str, kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The text screen would still cut the kept identifiers out: break it too.
    monkeypatch.setattr("agent.deid.engine.screen", lambda *args: None)
    [message] = _run(tmp_path, cfg, _broken(actions))
    assert where in str(message) and kind in str(message)


def test_kept_source_meta_is_caught(tmp_path: Path, cfg: Config) -> None:
    class KeepsMeta(Engine):
        def _meta_values(self, ds: Dataset) -> list[tuple[int, str, bytes]]:
            # the source's Source Application Entity Title kept in the new file meta
            return [*super()._meta_values(ds), (0x00020016, "AE", b"SCANNERAE ")]

    [message] = _run(tmp_path, cfg, KeepsMeta(SITE, SECRET, DeidConfig()))
    assert "(0002,0016)" in str(message)


def test_unsafe_private_and_un_are_caught(tmp_path: Path, cfg: Config, rules: Rules) -> None:
    engine = Engine(SITE, SECRET, DeidConfig())
    [src] = write_series(tmp_path, 1, _plant)
    result = engine.deidentify_file(src, tmp_path)
    assert result is not None
    ids = collect_identifiers([src])
    assert check_file(result.path, ids, rules) == []
    ds = pydicom.dcmread(result.path)
    block = ds.private_block(0x0041, "SOME VENDOR", create=True)
    block.add_new(0x01, "DS", "1.5")  # harmless value, but not on the safe list
    ds.add_new(0x60003000, "OW", b"\0\0")  # overlay data
    ds.add_new(0x00189999, "UN", b"ab")  # UN
    ds.PatientIdentityRemoved = "NO"
    ds.save_as(result.path, enforce_file_format=True)
    whats = {f.where: f.what for f in check_file(result.path, ids, rules)}
    assert "private" in whats["(0041,1001)"]
    assert "overlay" in whats["(6000,3000)"]
    assert "UN" in whats["(0018,9999)"] or "unknown" in whats["(0018,9999)"]
    assert "(0012,0062)" in whats


@pytest.mark.parametrize(
    "planted",
    [
        "scan of 03.02.2018", "02/03/2018", "2018-02-03", "verifiersson",
        "VERIFIER MEMORIAL CLINIC",
        "x1.2.826.0.1.3680043.10.998.4242.7",
    ],
)
def test_identifier_in_any_form_is_found(
    tmp_path: Path, rules: Rules, planted: str
) -> None:
    engine = Engine(SITE, SECRET, DeidConfig())
    [src] = write_series(tmp_path, 1, _plant)
    result = engine.deidentify_file(src, tmp_path)
    assert result is not None
    ds = pydicom.dcmread(result.path)
    ds.DerivationDescription = planted
    ds.save_as(result.path, enforce_file_format=True)
    findings = check_file(result.path, collect_identifiers([src]), rules)
    assert {f.where for f in findings} == {"(0008,2111)"}


def test_utf16_and_file_name_are_scanned(tmp_path: Path, rules: Rules) -> None:
    engine = Engine(SITE, SECRET, DeidConfig())
    [src] = write_series(tmp_path, 1, _plant)
    result = engine.deidentify_file(src, tmp_path)
    assert result is not None
    ds = pydicom.dcmread(result.path)
    ds.add_new(0x00189998, "OB", "Verifiersson".encode("utf-16-le"))
    named = result.path.with_name(f"{PID}.dcm")
    ds.save_as(named, enforce_file_format=True)
    wheres = [f.where for f in check_file(named, collect_identifiers([src]), rules)]
    assert "file name" in wheres
    assert any("(0018,9998)" in w for w in wheres)


def _deidentified(tmp_path: Path) -> SeriesWork:
    """A planted series, de-identified by the real engine, as the verify stage gets it."""
    engine = Engine(SITE, SECRET, DeidConfig())
    sources = write_series(tmp_path, 2, _plant)
    out = tmp_path / "out"
    out.mkdir()
    work = make_work(tmp_path, sources)
    work.files = [r.path for s in sources if (r := engine.deidentify_file(s, out))]
    return work


def test_defacing_changes_are_accepted(tmp_path: Path, cfg: Config) -> None:
    """What the deface stage does: new pixels, DERIVED, 113102 appended, re-saved."""
    work = _deidentified(tmp_path)
    for path in work.files:
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array.copy()
        arr[:10, :] = 0
        ds.PixelData = np.ascontiguousarray(arr).tobytes()
        ds.ImageType = ["DERIVED", "SECONDARY", "DEFACED"]
        item = Dataset()
        item.CodeValue = "113102"
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = "Clean Recognizable Visual Features Option"
        ds.DeidentificationMethodCodeSequence.append(item)
        ds.save_as(path, enforce_file_format=True)
    VerifyStage(cfg)(work)  # no exception


def test_generic_values_are_not_identifiers(tmp_path: Path) -> None:
    def generic(ds: Dataset, i: int) -> None:
        ds.InstitutionName = "HEAD"
        ds.StationName = "MR"
        ds.PatientID = "1234"
        ds.AccessionNumber = "12345678"

    [src] = write_series(tmp_path, 1, generic)
    ids = collect_identifiers([src])
    assert b"head" not in ids.text and b"mr" not in ids.text
    assert b"1234" not in ids.numbers
    assert ids.numbers[b"12345678"] == "id"


@pytest.mark.parametrize("text", [INSTITUTION.upper(), PID, "20180203",
                                  "1.2.826.0.1.3680043.10.998.4242"])
def test_text_written_into_pixel_data_is_found(tmp_path: Path, cfg: Config, text: str) -> None:
    """A program that wrote an identifier byte for byte into the sample values (a burned-in
    label stored as text) is caught, among ordinary 16-bit samples."""
    work = _deidentified(tmp_path)
    VerifyStage(cfg)(work)  # clean before
    ds = pydicom.dcmread(work.files[1])
    raw = bytearray(ds.PixelData)
    at = len(raw) // 2
    raw[at:at + len(text)] = text.encode()
    ds.PixelData = bytes(raw)
    ds.save_as(work.files[1], enforce_file_format=True)
    with pytest.raises(LeakFound) as err:
        VerifyStage(cfg)(work)
    assert text.lower() not in str(err.value).lower()


@pytest.mark.parametrize("kind", ["bytes", "16-bit", "text-heavy", "edges"])
def test_pixel_text_runs_are_the_exact_runs(kind: str) -> None:
    """The fast search for runs of text bytes in Pixel Data (a numpy pre-pass, then exact
    reading around candidates) finds exactly the runs one pass over the value finds, at
    any offset and alignment, in any kind of sample values."""
    from agent.deid.verify import _TEXT_TABLE, _runs, _text_runs

    rng = np.random.default_rng(7)
    for trial in range(300):
        n = int(rng.integers(0, 600))
        if kind == "bytes":
            a = rng.integers(0, 256, n, dtype=np.uint8)
        elif kind == "16-bit":
            a = rng.integers(0, 4096, n // 2 + 1).astype("<u2").view(np.uint8)[:n]
        elif kind == "text-heavy":
            a = np.where(rng.random(n) < 0.85, 0x41, 0x05).astype(np.uint8)
        else:  # text bytes next to 0x7F and control bytes, the table's edges
            a = rng.choice(np.array([0x1F, 0x20, 0x7E, 0x7F, 0x80, 0xFF], np.uint8), n)
        head = bytes(rng.integers(0, 256, trial % 5, dtype=np.uint8))
        data = head + a.tobytes() + b"tail"
        begin, stop = len(head), len(head) + n
        want = [(begin + s, begin + e) for s, e in _runs(data[begin:stop], _TEXT_TABLE)]
        assert sorted(set(_text_runs(data, begin, stop))) == want


@pytest.mark.parametrize("where", ["start", "odd", "end"])
def test_text_at_the_edges_of_pixel_data_is_found(tmp_path: Path, cfg: Config,
                                                  where: str) -> None:
    """Text written at the first byte, at an odd offset or up to the last byte of the
    sample values is found as anywhere else."""
    work = _deidentified(tmp_path)
    ds = pydicom.dcmread(work.files[0])
    raw = bytearray(ds.PixelData)
    text = PID.encode()
    at = {"start": 0, "odd": len(raw) // 3 | 1, "end": len(raw) - len(text)}[where]
    raw[at:at + len(text)] = text
    ds.PixelData = bytes(raw)
    ds.save_as(work.files[0], enforce_file_format=True)
    with pytest.raises(LeakFound):
        VerifyStage(cfg)(work)
