from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

from agent.dicomfiles import is_complete, read_header
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


def test_truncated_compressed_file_is_incomplete(tmp_path: Path) -> None:
    src = Path(get_testdata_file("JPEG2000.dcm"))  # type: ignore[arg-type]
    assert is_complete(src)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(src.read_bytes()[:-50])
    assert not is_complete(cut)
