"""Burned-in text on real series: found, redacted (or quarantined), recorded; clean
series untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from agent.errors import IdentityRisk, Withheld
from agent.pixels.identity import StudyIdentity, fold
from agent.pixels.ocr import Reader, find_tessdata
from agent.vocab import AuditEvent

from .helpers import (
    NAME,
    SHOWN,
    burn,
    copy_series,
    corpus_series,
    frames,
    make_config,
    make_work,
    planted_identity,
    reads_identity,
    run_stages,
)

MPRAGE = "dcm_qa_ge/05_3D_Ax_T1_MP_RAGE_R22"


def _identity() -> StudyIdentity:
    return planted_identity()


def readable(files: list[Path]) -> list[str]:
    """Identifiers an independent OCR pass still reads anywhere in ``files``."""
    reader = Reader(find_tessdata())
    ident = planted_identity()
    found = []
    for path in files:
        for frame in frames(path):
            kind = reads_identity(reader, ident, frame)
            if kind:
                found.append(f"{path.name}: {kind}")
    return found


CASES = [  # text, x, y, size, font, relative value
    (SHOWN[0], 4, 4, 12, "DejaVuSans.ttf", 1.0),
    (SHOWN[1], 150, 6, 10, "DejaVuSansMono.ttf", 0.7),
    (SHOWN[2], 6, 236, 11, "DejaVuSerif-Bold.ttf", 0.5),
    (SHOWN[5], 60, 120, 14, "DejaVuSansCondensed-Oblique.ttf", 1.0),  # over anatomy
    (SHOWN[4], 170, 236, 9, None, 0.8),
]


@pytest.fixture(scope="module")
def burned_series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    tmp = tmp_path_factory.mktemp("burned")
    files = corpus_series(MPRAGE)[40:80]
    marked = [3, 17, 31]

    def edit(ds: pydicom.Dataset, i: int) -> None:
        if i in marked:
            arr = ds.pixel_array.copy()
            peak = float(arr.max())
            for text, x, y, size, font_name, rel in CASES:
                burn(arr, text, x, y, size=size, font_name=font_name, value=peak * rel)
            ds.PixelData = arr.tobytes()

    copy_series(files, tmp / "src", edit)
    return tmp, marked


def test_burned_text_on_real_slices_is_redacted_and_recorded(
        burned_series: tuple[Path, list[int]], tmp_path: Path) -> None:
    tmp, marked = burned_series
    src = sorted((tmp / "src").glob("*.dcm"))
    assert readable([src[i] for i in marked])  # the planted text is readable before
    work = make_work(tmp_path, src)
    run_stages(make_config(tmp_path), work)
    assert readable(work.files) == []
    redacted = [d for e, d in work.audit if e == AuditEvent.PIXELS_REDACTED]
    assert len(redacted) == len(marked)
    assert all("boxes" in d and "name" in list(d["kinds"]) for d in redacted)  # type: ignore[call-overload]
    assert NAME.split("^")[0] not in repr(work.audit)  # where, never what


def test_quarantine_mode_keeps_the_series_back(burned_series: tuple[Path, list[int]],
                                               tmp_path: Path) -> None:
    tmp, _ = burned_series
    work = make_work(tmp_path, sorted((tmp / "src").glob("*.dcm")))
    with pytest.raises(IdentityRisk, match="on_identifier"):
        run_stages(make_config(tmp_path, on_identifier="quarantine"), work)


def test_clean_real_series_are_not_touched(tmp_path: Path) -> None:
    """No false redaction of anatomy: clean corpus series come out byte for byte as the
    de-identifier wrote them."""
    for name in (MPRAGE, "dcm_qa_mosaic/ep2d_Asc_2", "dcm_qa_mosaic/cmrr_Asc_6",
                 "dcm_qa_philips/fmri", "dcm_qa_ge/01_Ax_DWI_TENSOR_R2"):
        files = corpus_series(name)[:60]
        work = make_work(tmp_path / name.replace("/", "_"), files)
        from agent.deid import DeidStage
        from agent.pixels import PixelStage, text_checked

        from .helpers import SECRET
        cfg = make_config(tmp_path)
        DeidStage(text_checked(cfg), SECRET)(work)
        before = {p: p.read_bytes() for p in work.files}
        PixelStage(cfg)(work)
        assert [e for e, _ in work.audit if e == AuditEvent.PIXELS_REDACTED] == [], name
        assert {p: p.read_bytes() for p in work.files} == before, name


def test_rgb_screen_capture_is_delivered_redacted_or_withheld(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    base = pydicom.dcmread(str(get_testdata_file("SC_rgb.dcm")))

    def edit(ds: pydicom.Dataset, i: int) -> None:
        arr = np.zeros((300, 400, 3), np.uint8)
        arr[:, :, 2] = 40
        burn(arr, "Patient: CANARYSSON, WILHELMINA", 10, 10, size=16)
        burn(arr, "MRN 84213977   DOB 12.03.1961", 10, 40, size=14, value=200)
        burn(arr, "Axial T1 post contrast", 10, 260, size=14)
        ds.Rows, ds.Columns = 300, 400
        ds.PixelData = arr.tobytes()
        ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SHOT"]

    path = tmp_path / "sc.dcm"
    base.save_as(path)
    src = copy_series([path], tmp_path / "src", edit)
    work = make_work(tmp_path / "a", src)
    run_stages(make_config(tmp_path), work)
    assert readable(work.files) == []
    out = frames(work.files[0])[0]
    assert out[260:280, 10:200].max() > 100  # the harmless line is kept
    with pytest.raises(Withheld):
        run_stages(make_config(tmp_path, deliver_captures=False), make_work(tmp_path / "b", src))


def test_matcher_reads_identity_in_the_forms_images_show_it() -> None:
    ident = _identity()
    for text in SHOWN + ("CANARY550N W1LHELMINA", "DOB: March 12, 1961", "84213977",
                         "12MAR1961"):
        assert ident.match(text) is not None, text
    for text in ("TR 500 TE 15", "Se: 4 Im: 17", "L", "SAG T1 FLAIR", "FOV 240x240"):
        assert ident.match(text) is None, text
    assert fold("Müller-Lüdenscheidt") == fold("MULLER LUDENSCHEIDT")


def test_mosaic_and_mpr_series_are_read_whole(tmp_path: Path) -> None:
    """A Siemens mosaic with a name in one tile, and an MPR (DERIVED\\SECONDARY\\MPR) made
    of real slices with faint text: none delivered readable."""
    mosaic = corpus_series("dcm_qa_mosaic/ep2d_Asc_2")[:3]

    def in_tile(ds: pydicom.Dataset, i: int) -> None:
        arr = ds.pixel_array.copy()
        burn(arr, "CANARYSSON", 66, 100, size=11, font_name="DejaVuSansMono.ttf")
        burn(arr, "84213977", 200, 6, size=10)
        ds.PixelData = arr.tobytes()

    work = make_work(tmp_path / "m", copy_series(mosaic, tmp_path / "m" / "src", in_tile))
    run_stages(make_config(tmp_path), work)
    assert readable(work.files) == []

    def mpr(ds: pydicom.Dataset, i: int) -> None:
        ds.ImageType = ["DERIVED", "SECONDARY", "MPR"]
        if i == 1:
            arr = ds.pixel_array.copy()
            burn(arr, SHOWN[3], 150, 230, size=12, value=float(arr.max()) * 0.3)
            ds.PixelData = arr.tobytes()

    files = corpus_series(MPRAGE)[60:63]
    work = make_work(tmp_path / "p", copy_series(files, tmp_path / "p" / "src", mpr))
    run_stages(make_config(tmp_path), work)
    assert readable(work.files) == []


def test_declared_burned_in_without_findable_text_is_quarantined(tmp_path: Path) -> None:
    files = corpus_series(MPRAGE)[60:62]

    def declared(ds: pydicom.Dataset, i: int) -> None:
        ds.BurnedInAnnotation = "YES"

    work = make_work(tmp_path, copy_series(files, tmp_path / "src", declared))
    with pytest.raises(IdentityRisk, match="Burned In Annotation"):
        run_stages(make_config(tmp_path), work)


def test_redact_all_text_removes_harmless_lines_too(tmp_path: Path) -> None:
    files = corpus_series(MPRAGE)[60:61]

    def annotate(ds: pydicom.Dataset, i: int) -> None:
        arr = ds.pixel_array.copy()
        burn(arr, "Se 4 Im 17 TR 500", 4, 4, size=12)
        ds.PixelData = arr.tobytes()

    src = copy_series(files, tmp_path / "src", annotate)
    kept = make_work(tmp_path / "k", src)
    run_stages(make_config(tmp_path), kept)
    assert [e for e, _ in kept.audit if e == AuditEvent.PIXELS_REDACTED] == []
    gone = make_work(tmp_path / "g", src)
    run_stages(make_config(tmp_path, redact_all_text=True), gone)
    assert frames(gone.files[0])[0][4:18, 4:120].max() < frames(kept.files[0])[0][4:18,
                                                                                   4:120].max()
