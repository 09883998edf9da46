"""Hidden bits, overlays, embedded segments and trailing bytes: each delivered clean, the
image decoding the same; and the verifier catching each when the stage is skipped."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames

from agent.deid import DeidStage
from agent.deid.verify_pixels import PixelCheck
from agent.errors import LeakFound
from agent.pixels.ocr import OcrUnavailable, find_tessdata
from agent.pixels.stage import PixelStage, text_checked
from agent.vocab import AuditEvent

from .helpers import SECRET, copy_series, corpus_series, frames, make_config, make_work, run_stages


def _name_mask(rows: int, cols: int) -> np.ndarray:
    img = Image.new("L", (cols, rows), 0)
    ImageDraw.Draw(img).text((4, 4), "CANARYSSON", fill=1)
    return np.asarray(img).astype(np.uint16)


def test_name_in_unused_high_bits_is_cleared(tmp_path: Path) -> None:
    """A 12-bit Philips series with a name drawn in bit 13 (an embedded overlay)."""
    files = corpus_series("dcm_qa_philips/fmri")[:4]
    stored: dict[int, np.ndarray] = {}

    def edit(ds: pydicom.Dataset, i: int) -> None:
        arr = np.frombuffer(ds.PixelData, "<u2").reshape(ds.Rows, ds.Columns).copy()
        stored[i] = arr.copy()
        arr |= _name_mask(ds.Rows, ds.Columns) << 13
        ds.PixelData = arr.tobytes()
        ds.add_new(0x60000102, "US", 13)  # Overlay Bit Position: an overlay in the bits
        packed = np.packbits(_name_mask(ds.Rows, ds.Columns).astype(np.uint8).ravel(),
                             bitorder="little")
        ds.add_new(0x60020010, "US", ds.Rows)  # and a second overlay in (6002,3000)
        ds.add_new(0x60020011, "US", ds.Columns)
        ds.add_new(0x60023000, "OW", packed.tobytes())

    src = copy_series(files, tmp_path / "src", edit)
    work = make_work(tmp_path, src)
    run_stages(make_config(tmp_path), work)
    for path in work.files:
        ds = pydicom.dcmread(path)
        raw = np.frombuffer(ds.PixelData, "<u2")
        assert not np.any(raw >> 12), path.name
        assert not any(0x6000 <= t.group <= 0x601E for t in ds.keys())
    cleaned = [d for e, d in work.audit if e == AuditEvent.PIXELS_CLEANED]
    assert cleaned and int(cleaned[0]["hidden_bit_samples"]) > 0  # type: ignore[call-overload]
    # the visible image is what it was
    values = sorted(frames(p)[0].tobytes() for p in work.files)
    assert values == sorted(a.tobytes() for a in stored.values())


def test_signed_samples_keep_their_sign_extension(tmp_path: Path) -> None:
    base = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    base.BitsStored, base.HighBit = 12, 11
    assert base.PixelRepresentation == 1
    arr = np.clip(base.pixel_array.astype(np.int16), -2048, 2047)
    arr[0, :8] = -1000
    words = arr.view(np.uint16).copy()
    words[1, :8] = (words[1, :8] & 0x0FFF) | 0x5000  # garbage above High Bit
    base.PixelData = words.tobytes()
    path = tmp_path / "ct.dcm"
    base.save_as(path)
    src = copy_series([path], tmp_path / "src")
    work = make_work(tmp_path, src)
    run_stages(make_config(tmp_path), work)
    out = pydicom.dcmread(work.files[0])
    raw = np.frombuffer(out.PixelData, "<u2").reshape(out.Rows, out.Columns)
    assert np.all(raw[0, :8].view(np.int16) == -1000)  # sign extended, not zeroed
    hb = out.HighBit
    top = raw >> (hb + 1)
    sign = (raw >> hb) & 1
    assert np.all(top == np.where(sign == 1, (1 << (15 - hb)) - 1, 0))


def _jpeg_with_extras(tmp_path: Path) -> Path:
    ds = pydicom.dcmread(str(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    com = b"\xff\xfe" + (len(b"CANARYSSON WILHELMINA") + 2).to_bytes(2, "big") + \
        b"CANARYSSON WILHELMINA"
    exif_body = b"Exif\x00\x00PATIENT CANARYSSON 19610312"
    app1 = b"\xff\xe1" + (len(exif_body) + 2).to_bytes(2, "big") + exif_body
    dirty = frame[:2] + com + app1 + frame[2:].rstrip(b"\x00") + b"TRAILING CANARYSSON"
    ds.PixelData = encapsulate([dirty])
    path = tmp_path / "jpeg.dcm"
    ds.save_as(path)
    return path


def test_jpeg_comment_app_segments_and_trailing_bytes_removed(tmp_path: Path) -> None:
    path = _jpeg_with_extras(tmp_path)
    original = pydicom.dcmread(path).pixel_array
    src = copy_series([path], tmp_path / "src")
    work = make_work(tmp_path, src)
    run_stages(make_config(tmp_path), work)
    out = work.files[0]
    data = out.read_bytes()
    assert b"CANARYSSON" not in data.upper()
    ds = pydicom.dcmread(out)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"  # still JPEG
    assert np.array_equal(ds.pixel_array, original)  # decodes the same
    if shutil.which("dcm2niix"):
        res = subprocess.run(["dcm2niix", "-f", "x", "-o", str(tmp_path), str(out.parent)],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr


def test_rle_and_native_trailing_bytes_removed(tmp_path: Path) -> None:
    rle = pydicom.dcmread(str(get_testdata_file("MR_small_RLE.dcm")))
    frame = next(generate_frames(rle.PixelData, number_of_frames=1))
    rle.PixelData = encapsulate([frame + b"CANARYSSON19610312"])
    native = pydicom.dcmread(str(get_testdata_file("MR_small.dcm")))
    native.PixelData = native.PixelData + b"CANARYSSON19610312"
    for name, ds in (("rle", rle), ("native", native)):
        path = tmp_path / f"{name}.dcm"
        ds.save_as(path)
        expected = pydicom.dcmread(str(get_testdata_file(
            "MR_small_RLE.dcm" if name == "rle" else "MR_small.dcm"))).pixel_array
        src = copy_series([path], tmp_path / name / "src")
        work = make_work(tmp_path / name, src)
        run_stages(make_config(tmp_path), work)
        data = work.files[0].read_bytes()
        assert b"CANARYSSON" not in data, name
        assert np.array_equal(pydicom.dcmread(work.files[0]).pixel_array, expected), name


def test_j2k_comment_marker_removed(tmp_path: Path) -> None:
    ds = pydicom.dcmread(str(get_testdata_file("MR_small_jp2klossless.dcm")))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    siz_len = int.from_bytes(frame[4:6], "big")
    at = 4 + siz_len
    text = b"\x00\x01CANARYSSON"
    com = b"\xff\x64" + (len(text) + 2).to_bytes(2, "big") + text
    ds.PixelData = encapsulate([frame[:at] + com + frame[at:]])
    path = tmp_path / "j2k.dcm"
    ds.save_as(path)
    original = pydicom.dcmread(path).pixel_array
    src = copy_series([path], tmp_path / "src")
    work = make_work(tmp_path, src)
    run_stages(make_config(tmp_path), work)
    data = work.files[0].read_bytes()
    assert b"CANARYSSON" not in data
    assert np.array_equal(pydicom.dcmread(work.files[0]).pixel_array, original)


def test_verifier_fails_closed_when_the_pixel_stage_is_skipped(tmp_path: Path) -> None:
    """Independent checks: a COM segment, hidden bits, text - each found on its own."""
    cfg = make_config(tmp_path)
    check = PixelCheck(cfg)
    jpeg = copy_series([_jpeg_with_extras(tmp_path)], tmp_path / "j")
    work = make_work(tmp_path / "wj", jpeg)
    DeidStage(text_checked(cfg), SECRET)(work)
    with pytest.raises(LeakFound, match="comment|application|after"):
        check(work.source_files, work.files)

    files = corpus_series("dcm_qa_philips/fmri")[:2]

    def hide(ds: pydicom.Dataset, i: int) -> None:
        arr = np.frombuffer(ds.PixelData, "<u2").copy() | 0x8000
        ds.PixelData = arr.tobytes()

    work = make_work(tmp_path / "wb", copy_series(files, tmp_path / "b", hide))
    DeidStage(text_checked(cfg), SECRET)(work)
    with pytest.raises(LeakFound, match="bits"):
        check(work.source_files, work.files)


def test_missing_tesseract_is_a_clear_start_up_error(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(OcrUnavailable, match="tessdata"):
        find_tessdata(str(tmp_path))
    with pytest.raises(OcrUnavailable):
        PixelStage(make_config(tmp_path, tessdata=str(tmp_path)))
    import agent.pixels.ocr as ocr

    monkeypatch.setattr(ocr, "_CANDIDATES", ())
    monkeypatch.delenv("TESSDATA_PREFIX", raising=False)
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    with pytest.raises(OcrUnavailable, match="install"):
        find_tessdata()
