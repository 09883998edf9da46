"""Writing defaced classic objects by splicing their bytes (agent.deface.splice) gives the
same objects as re-encoding them with pydicom, in every shape it takes on; other shapes
fall back to the ordinary writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from agent.deface import dicomio, splice


def _object(syntax: str, *, image_type: bool = True, deid: bool = True,
            extremes: bool = False, undefined: bool = False, trailer: bool = False,
            bits: int = 16, size: tuple[int, int] = (16, 16), k: int = 0) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    if image_type:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M"]
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.PatientName, ds.PatientID = "SYNTHETIC^TEST", "SYNTH-1"
    if deid:
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = ["Basic Profile", "Clean Descriptors Option"]
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = (
            "113100", "DCM", "Basic Application Confidentiality Profile")
        ds.DeidentificationMethodCodeSequence = Sequence([item])
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = MRImageStorage, generate_uid()
    ds.ReferencedImageSequence = Sequence([ref])
    if undefined:
        ds["ReferencedImageSequence"].is_undefined_length = True
        ds["ReferencedImageSequence"].value[0].is_undefined_length_sequence_item = True
    ds.SeriesInstanceUID, ds.FrameOfReferenceUID = "2.25.1", "2.25.2"
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [0.0, 0.0, float(k)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = 1.0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if extremes:
        ds.SmallestImagePixelValue, ds.LargestImagePixelValue = 0, 200
    arr = (np.arange(size[0] * size[1]) % 200 + k).astype(np.uint16 if bits == 16 else np.uint8)
    ds.PixelData = arr.reshape(size).tobytes() + (b"\x00" if arr.nbytes % 2 else b"")
    if trailer:
        ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 6)
    return ds


def _series(folder: Path, **kw: Any) -> list[Path]:
    folder.mkdir(parents=True)
    files = []
    for k in range(3):
        path = folder / f"{k}.dcm"
        _object(k=k, **kw).save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def _deface(files: list[Path], out: Path, splicing: bool) -> tuple[dicomio.SeriesObjects,
                                                                  dict[Path, Path]]:
    objs = dicomio.read_series(files)
    if not splicing:
        objs.spliceable.clear()
    for s in objs.slices:
        new = objs.pixels(s).copy()
        new[2:5, 3:7] = 9
        objs.put(s, new)
    return objs, objs.write(out, {p: p.name for p in files})


SHAPES: dict[str, dict[str, Any]] = {
    "explicit": {"syntax": ExplicitVRLittleEndian},
    "implicit": {"syntax": ImplicitVRLittleEndian},
    "no marks yet": {"syntax": ExplicitVRLittleEndian, "image_type": False, "deid": False},
    "extremes dropped": {"syntax": ExplicitVRLittleEndian, "extremes": True},
    "undefined lengths": {"syntax": ExplicitVRLittleEndian, "undefined": True},
    "undefined, implicit": {"syntax": ImplicitVRLittleEndian, "undefined": True},
    "padding after pixels": {"syntax": ExplicitVRLittleEndian, "trailer": True},
    "8 bits": {"syntax": ExplicitVRLittleEndian, "bits": 8},
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_spliced_objects_equal_reencoded_ones(tmp_path: Path, shape: str) -> None:
    files = _series(tmp_path / "in", **SHAPES[shape])
    objs, fast = _deface(files, tmp_path / "fast", True)
    assert len(objs.spliceable) == 3  # the shape is one the splice handles
    _, full = _deface(files, tmp_path / "full", False)
    for p in files:
        a, b = pydicom.dcmread(fast[p]), pydicom.dcmread(full[p])
        assert a == b and a.file_meta == b.file_meta
        assert a.ImageType[0] == "DERIVED"
        assert "113102" in [c.CodeValue for c in a.DeidentificationMethodCodeSequence]
        assert "SmallestImagePixelValue" not in a
        assert np.array_equal(a.pixel_array, objs.arrays[objs.paths.index(p)])
    # The datasets in memory are left as they were read.
    assert all("113102" not in [c.CodeValue for c in ds.get(
        "DeidentificationMethodCodeSequence", [])] for ds in objs.datasets)
    # The same input gives the same bytes.
    _, again = _deface(files, tmp_path / "again", True)
    assert all(again[p].read_bytes() == fast[p].read_bytes() for p in files)


def test_other_shapes_are_written_the_ordinary_way(tmp_path: Path) -> None:
    big = _series(tmp_path / "big", syntax=ExplicitVRBigEndian)
    odd = _series(tmp_path / "odd", syntax=ExplicitVRLittleEndian, bits=8, size=(5, 5))
    for files, spliceable in ((big, 0), (odd, 3)):
        objs, written = _deface(files, tmp_path / f"out-{files[0].parent.name}", True)
        assert len(objs.spliceable) == spliceable
        for p in files:  # odd: 25 bytes of pixels against 26 stored (padded)
            out = pydicom.dcmread(written[p])
            assert out.ImageType[0] == "DERIVED"
            assert np.array_equal(out.pixel_array, objs.arrays[objs.paths.index(p)])


def test_damaged_bytes_are_not_spliced() -> None:
    ds = _object(ExplicitVRLittleEndian)
    from io import BytesIO
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    raw = buf.getvalue()
    assert splice.layout(raw, ExplicitVRLittleEndian).pixel_length == 512
    with pytest.raises(splice.NotSpliceable):
        splice.layout(raw[:-10], ExplicitVRLittleEndian)  # pixel data cut short
    with pytest.raises(splice.NotSpliceable):
        splice.layout(raw[:300], ExplicitVRLittleEndian)  # the file ends in the header
    with pytest.raises(splice.NotSpliceable):
        splice.layout(b"\x00" * 128 + b"DICX" + raw[132:], ExplicitVRLittleEndian)


@pytest.mark.parametrize(("signed", "stored", "high"), [(False, 16, False), (False, 12, False),
                                                        (False, 12, True), (True, 16, False),
                                                        (True, 12, False)])
def test_values_read_from_the_bytes_are_the_decoders(tmp_path: Path, signed: bool, stored: int,
                                                     high: bool) -> None:
    ds = _object(ExplicitVRLittleEndian)
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = stored, stored - 1, int(signed)
    arr = (np.arange(256, dtype=np.int32) * 37 % 4000 - (1500 if signed else 0))
    if high:
        arr[7] = 0xF123  # bits above Bits Stored set: left to the decoder's rules
    ds.PixelData = arr.astype(np.int16 if signed else np.uint16).reshape(16, 16).tobytes()
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)
    objs = dicomio.read_series([tmp_path / "x.dcm"])
    ref = pydicom.dcmread(tmp_path / "x.dcm").pixel_array
    assert objs.arrays[0].dtype == ref.dtype and np.array_equal(objs.arrays[0], ref)
