"""The select stage: what is withheld by a stated policy, and what the site chooses."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from agent.config import Config, load_config, replace
from agent.errors import ConfigError, Withheld
from agent.policy import SelectStage, decide, read_facts
from agent.vocab import WithheldCode
from agent.work import SeriesWork

CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "corpus" / "dicom"
MR = "1.2.840.10008.5.1.4.1.1.4"
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def write(folder: Path, n: int = 3, *, sop: str = MR, modality: str = "MR",
          image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "ND"),
          description: str = "t1_mprage", orientations: list[list[float]] | None = None,
          **extra: object) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    paths = []
    for i in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = UID(sop)
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SOPClassUID = sop
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", series
        ds.Modality, ds.ImageType = modality, list(image_type)
        ds.SeriesDescription = description
        ds.ImageOrientationPatient = (orientations or [AXIAL])[i % len(orientations or [AXIAL])]
        for k, v in extra.items():
            setattr(ds, k, v)
        path = folder / f"{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def held(files: list[Path], cfg: Config | None = None) -> Withheld | None:
    return decide(read_facts(files), cfg or Config())


def test_ordinary_images_are_sent(tmp_path: Path) -> None:
    assert held(write(tmp_path / "t1", 30)) is None
    # Philips writes an empty Conversion Type on every MR image: not a capture.
    assert held(write(tmp_path / "philips", 4, ConversionType="")) is None


@pytest.mark.parametrize("kwargs, code", [
    ({"sop": "1.2.840.10008.5.1.4.1.1.88.22", "modality": "SR"}, WithheldCode.REPORT),
    ({"image_type": ("ORIGINAL", "PRIMARY", "OTHER", "CSA REPORT"),
      "description": "PhoenixZIPReport"}, WithheldCode.REPORT),
    ({"sop": "1.2.840.10008.5.1.4.1.1.104.1", "modality": "DOC"}, WithheldCode.REPORT),
    ({"sop": "1.2.840.10008.5.1.4.1.1.66"}, WithheldCode.RAW_DATA),
    ({"sop": "1.3.12.2.1107.5.9.1"}, WithheldCode.RAW_DATA),
    ({"sop": "1.2.840.10008.5.1.4.1.1.4.2"}, WithheldCode.RAW_DATA),
    ({"sop": "1.2.840.10008.5.1.4.1.1.11.1", "modality": "PR"}, WithheldCode.NOT_AN_IMAGE),
    ({"image_type": ("ORIGINAL", "PRIMARY", "LOCALIZER")}, WithheldCode.LOCALIZER),
    ({"description": "AAHead_Scout_32ch"}, WithheldCode.LOCALIZER),
    ({"description": "3-Plane Loc"}, WithheldCode.LOCALIZER),
    ({"description": "SmartExam Survey"}, WithheldCode.LOCALIZER),
])
def test_withheld_by_the_products_rules(tmp_path: Path, kwargs: dict[str, object],
                                        code: WithheldCode) -> None:
    result = held(write(tmp_path / "s", **kwargs))  # type: ignore[arg-type]
    assert result is not None and result.code == code
    assert str(result).startswith("not sent: this series is")


def test_tri_planar_scout_by_its_planes(tmp_path: Path) -> None:
    planes = [AXIAL, [0.0, 1.0, 0.0, 0.0, 0.0, -1.0], [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]]
    result = held(write(tmp_path / "tri", 9, description="tra", orientations=planes))
    assert result is not None and result.code == WithheldCode.LOCALIZER


def test_projections_are_not_localizers(tmp_path: Path) -> None:
    """Philips 'Projected from' MIPs: a few derived images in several planes."""
    planes = [AXIAL, [0.0, 1.0, 0.0, 0.0, 0.0, -1.0], [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]]
    variants: dict[str, dict[str, object]] = {
        "philips": {"image_type": ("DERIVED", "PRIMARY", "PROJECTION IMAGE", "M"),
                    "description": "MIP TOF", "DerivationDescription": "Projected from 401"},
        "mip": {"image_type": ("DERIVED", "SECONDARY", "MIP"), "description": "tof_mip"},
        "words": {"image_type": ("DERIVED", "SECONDARY"), "description": "Projected from 5"},
    }
    for name, kwargs in variants.items():
        files = write(tmp_path / name, 6, orientations=planes, **kwargs)  # type: ignore[arg-type]
        assert held(files) is None, name


def test_switches_send_what_is_withheld_by_default(tmp_path: Path) -> None:
    loc = write(tmp_path / "loc", image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    sr = write(tmp_path / "sr", sop="1.2.840.10008.5.1.4.1.1.88.22", modality="SR")
    assert held(loc, replace(Config(), send_localizers=True)) is None
    assert held(loc, replace(Config(), deface_quarantine_localizers=False)) is None
    assert held(sr, replace(Config(), send_reports=True)) is None


def test_screen_captures_are_left_to_the_pixel_checks(tmp_path: Path) -> None:
    """Captures go on to the pixels stage, which reads, redacts or withholds them."""
    for name, kwargs in {
        "sc": {"sop": "1.2.840.10008.5.1.4.1.1.7", "modality": "OT"},
        "converted": {"ConversionType": "WSD"},
        "screen": {"image_type": ("DERIVED", "SECONDARY", "SCREEN SAVE")},
    }.items():
        assert held(write(tmp_path / name, **kwargs)) is None, name  # type: ignore[arg-type]


def test_site_selection(tmp_path: Path) -> None:
    t1 = write(tmp_path / "t1", description="t1_mprage_sag", MRAcquisitionType="3D")
    dwi = write(tmp_path / "dwi", description="ep2d_diff", MRAcquisitionType="2D",
                image_type=("DERIVED", "PRIMARY", "DIFFUSION", "ADC"))
    ct = write(tmp_path / "ct", modality="CT", sop="1.2.840.10008.5.1.4.1.1.2")
    cases: list[tuple[dict[str, object], list[Path], str]] = [
        ({"send_modalities": ("MR",)}, ct, "modality CT"),
        ({"send_exclude_image_types": ("adc",)}, dwi, "ADC"),
        ({"send_exclude_descriptions": r"diff|dwi"}, dwi, "exclude_descriptions"),
        ({"send_include_descriptions": r"mprage"}, dwi, "include_descriptions"),
        ({"send_only_3d": True}, dwi, "3-D"),
    ]
    for overrides, files, words in cases:
        cfg = replace(Config(), **overrides)
        result = held(files, cfg)
        assert result is not None and result.code == WithheldCode.SITE_POLICY, overrides
        assert words in str(result)
        assert held(t1, cfg) is None, overrides  # the 3-D T1 goes through each time
    assert held(ct, replace(Config(), send_only_3d=True)) is None


def test_stage_raises_withheld(tmp_path: Path) -> None:
    files = write(tmp_path / "sr", sop="1.2.840.10008.5.1.4.1.1.88.22", modality="SR")
    work = SeriesWork(key="k" * 64, version=1, source_files=files, workdir=tmp_path / "w")
    with pytest.raises(Withheld) as info:
        SelectStage(Config())(work)
    assert info.value.code == WithheldCode.REPORT
    SelectStage(Config())(SeriesWork(key="k" * 64, version=1, source_files=write(
        tmp_path / "t1"), workdir=tmp_path / "w"))


def test_bad_patterns_are_config_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[send]\nexclude_descriptions = "(unclosed"\n')
    with pytest.raises(ConfigError, match=r"send.exclude_descriptions"):
        load_config(cfg)
    cfg.write_text('[send]\nmodalities = "MR"\n')
    with pytest.raises(ConfigError, match=r"send.modalities"):
        load_config(cfg)


@pytest.mark.skipif(not CORPUS.is_dir(), reason="the real DICOM corpus is not at ../shared")
def test_real_corpus_series() -> None:
    """The Phoenix protocol report is withheld; every real image series is sent."""
    for folder in sorted(p for p in CORPUS.glob("*/*") if p.is_dir()):
        files = sorted(f for f in folder.iterdir() if f.name != "LICENSE")
        result = held(files)
        if folder.name == "99_Phoenix_Document":
            assert result is not None and result.code == WithheldCode.REPORT
        else:
            assert result is None, (folder.name, result)
