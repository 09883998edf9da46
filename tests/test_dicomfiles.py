from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from agent.dicomfiles import is_complete, read_header, why_incomplete
from tests.conftest import write_series


def test_header_identifies_series(tmp_path: Path) -> None:
    [path] = write_series(tmp_path, 1)
    header = read_header(path)
    ds = pydicom.dcmread(path)
    assert header is not None
    assert (header.study_uid, header.series_uid) == (ds.StudyInstanceUID, ds.SeriesInstanceUID)


def test_non_dicom_and_dicomdir_are_ignored(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    assert read_header(text) is None
    dicomdir = get_testdata_file("DICOMDIR")
    assert dicomdir is not None and read_header(Path(dicomdir)) is None
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    assert read_header(empty) is None


def test_truncated_pixel_data_is_incomplete(tmp_path: Path) -> None:
    [path] = write_series(tmp_path, 1)
    assert is_complete(path)
    data = path.read_bytes()
    half = tmp_path / "half.dcm"
    half.write_bytes(data[: len(data) - 100])
    assert read_header(half) is not None  # the header is there ...
    assert not is_complete(half)          # ... but the pixels are not
    assert why_incomplete(path) is None
    assert why_incomplete(half) == (f"is cut short at byte {len(data) - 100:,}, in the "
                                    "elements after its pixel data (or bytes were appended)")
    half.write_bytes(data[: len(data) - 400])
    padding = pydicom.dcmread(path)[0xFFFCFFFC]
    end = len(data) - 12 - len(padding.value)  # where the pixel data end, the padding starts
    assert why_incomplete(half) == (f"is cut short at byte {len(data) - 400:,} (its pixel "
                                    f"data should end at byte {end:,})")


def test_truncated_compressed_file_is_incomplete(tmp_path: Path) -> None:
    src = Path(get_testdata_file("JPEG2000.dcm"))  # type: ignore[arg-type]
    assert is_complete(src)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(src.read_bytes()[:-50])
    assert not is_complete(cut)
    reason = why_incomplete(cut)
    assert reason is not None and "do not end with their delimiter" in reason


def test_a_header_cut_short_and_pixels_short_of_the_header_are_told_apart(
        tmp_path: Path) -> None:
    [path] = write_series(tmp_path, 1)
    data = path.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:400])
    assert why_incomplete(cut) == ("ends at byte 400, before its pixel data (it is cut "
                                   "short or garbled)")
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData[:100]
    ds.save_as(tmp_path / "short.dcm")
    assert why_incomplete(tmp_path / "short.dcm") == (
        f"holds 100 bytes of pixel data where its header describes {ds.Rows * ds.Columns * 2:,}")


def _deflated(tmp_path: Path, name: str = "deflated.dcm") -> Path:
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    [src] = write_series(tmp_path / "plain", 1)
    ds = pydicom.dcmread(src)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out = tmp_path / name
    ds.save_as(out, enforce_file_format=True)
    return out


def test_deflated_files_are_judged_complete_correctly(tmp_path: Path) -> None:
    path = _deflated(tmp_path)
    assert read_header(path) is not None
    assert is_complete(path)
    data = path.read_bytes()
    for cut in (3, 50, len(data) // 2):  # (a last pad byte after the stream may go)
        short = tmp_path / f"short{cut}.dcm"
        short.write_bytes(data[:-cut])  # the deflate stream does not end yet
        assert not is_complete(short), cut


def test_a_deflate_bomb_is_not_inflated(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from agent import dicomfiles

    path = _deflated(tmp_path)
    monkeypatch.setattr(dicomfiles, "MAX_INFLATED", 1000)  # the file inflates to ~10 kB
    assert read_header(path) is None
    assert not is_complete(path)


def test_an_unknown_vr_is_not_a_crash(tmp_path: Path) -> None:
    """A fuzzed file with VR 'UH' (no such VR) crashed ``clinic2cloud process``."""
    [path] = write_series(tmp_path, 1)
    data = bytearray(path.read_bytes())
    at = data.index(b"CS", 200)  # an explicit-VR element after the file meta
    data[at:at + 2] = b"UH"
    path.write_bytes(bytes(data))
    read_header(path)  # None or a header: no exception either way
    is_complete(path)


def test_files_declaring_explicit_vr_but_written_implicit_are_complete() -> None:
    path = get_testdata_file("SC_rgb_jpeg.dcm")  # real-world quirk pydicom reads
    assert path is not None and is_complete(Path(path))


def test_ybr_422_native_length_is_two_samples_per_pixel() -> None:
    path = get_testdata_file("SC_ybr_full_422_uncompressed.dcm")
    assert path is not None and is_complete(Path(path))


def test_a_header_with_an_unknown_vr_in_the_image_group_announces_nothing(
        tmp_path: Path) -> None:
    from agent.dicomfiles import expected_native_length

    [path] = write_series(tmp_path, 1)
    data = bytearray(path.read_bytes())
    at = data.index(b"\x28\x00\x10\x00US")  # (0028,0010) Rows, explicit VR US
    data[at + 4:at + 6] = b"QQ"
    path.write_bytes(bytes(data))
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert expected_native_length(ds) == 0  # not NotImplementedError from pydicom
