"""A damaged or malformed header ends the series with its own reason before any stage runs
(agent/headers.py, on the parse of the decoded-size check), never as the agent's bug."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from agent.config import LimitsConfig
from agent.errors import SeriesProblem
from agent.headers import check_header
from agent.limits import check_decoded_size
from agent.vocab import ProblemCode
from tests.conftest import PATIENT_NAME, write_series

CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "corpus" / "dicom"


def _problem(files: list[Path]) -> SeriesProblem:
    with pytest.raises(SeriesProblem) as caught:
        check_decoded_size(files, LimitsConfig())
    return caught.value


def test_a_vr_dicom_does_not_define_is_a_damaged_file_named_by_its_place(tmp_path: Path
                                                                        ) -> None:
    files = write_series(tmp_path, 3)
    data = files[1].read_bytes()
    modality = b"\x08\x00\x60\x00CS"  # (0008,0060) Modality, explicit VR little endian
    assert data.count(modality) == 1
    files[1].write_bytes(data.replace(modality, b"\x08\x00\x60\x00QQ"))
    problem = _problem(files)
    assert problem.code == ProblemCode.DAMAGED
    assert str(problem).startswith("unreadable DICOM: file 2 of 3 of the series is damaged: "
                                   "its element (0008,0060) has the value representation 'QQ'")
    assert "export the series again" in str(problem)
    assert files[1].name not in str(problem) and PATIENT_NAME not in str(problem)


@pytest.mark.parametrize(("keyword", "value", "said"), [
    ("NumberOfFrames", "1A", "Number of Frames (0028,0008) is not a whole number"),
    ("NumberOfFrames", "2\\3", "Number of Frames (0028,0008) is not a whole number"),
    ("SamplesPerPixel", 0, "Samples per Pixel (0028,0002) is 0"),
    ("Rows", 0, "Rows (0028,0010) is 0"),
])
def test_an_image_description_no_image_can_have_is_malformed(
        tmp_path: Path, keyword: str, value: object, said: str) -> None:
    [path] = write_series(tmp_path, 1)
    ds = pydicom.dcmread(path)
    if isinstance(value, str):  # pydicom refuses to write an invalid IS: put its bytes in
        setattr(ds, keyword, "9753")
        ds.save_as(path)
        data = path.read_bytes()
        assert data.count(b"9753") == 1
        path.write_bytes(data.replace(b"9753", value.encode().ljust(4)))
    else:
        setattr(ds, keyword, value)
        ds.save_as(path)
    problem = _problem([path])
    assert problem.code == ProblemCode.MALFORMED
    assert said in str(problem) and "file 1 of 1 of the series" in str(problem)


def test_ordinary_headers_pass_and_empty_values_are_left_to_the_stages(tmp_path: Path
                                                                      ) -> None:
    [path] = write_series(tmp_path, 1)
    ds = pydicom.dcmread(path)
    check_header(ds, 0, 1)
    ds.PlanarConfiguration = None  # present but empty: the stages' defaults apply
    check_header(ds, 0, 1)


def test_no_file_of_the_real_corpus_is_refused() -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"the vendor corpus is not at {CORPUS}")
    files = [f for f in sorted(CORPUS.rglob("*")) if f.is_file()]
    checked = 0
    for path in files[::7]:  # a spread of every vendor's series, in a few seconds
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError):
            continue
        check_header(ds, 0, 1)
        checked += 1
    assert checked >= 50


def test_an_item_tag_inside_a_sequence_item_is_a_damaged_file(tmp_path: Path) -> None:
    [path] = write_series(tmp_path, 1)
    ds = pydicom.dcmread(path)
    item = pydicom.Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3"
    ds.SourceImageSequence = [item]
    ds.save_as(path)
    data = path.read_bytes()
    ref = b"\x08\x00\x55\x11UI"  # (0008,1155) inside the item, explicit VR little endian
    assert data.count(ref) == 1
    path.write_bytes(data.replace(ref, b"\xfe\xff\x00\xe0UI"))  # an item tag in its place
    problem = _problem([path])
    assert problem.code == ProblemCode.DAMAGED
    assert "its element (FFFE,E000) is an item tag where an element should be" in str(problem)
