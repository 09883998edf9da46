"""A defaced JPEG Lossless (SV1) image goes out as JPEG Lossless where the encoder
(imagecodecs) is installed, every stored value as defaced; uncompressed otherwise."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, JPEGLossless, JPEGLosslessSV1

from agent.deface import dicomio, jpeglossless
from agent.deface.dicomio import read_series
from agent.deface.volumes import build_volumes

from .builders import write_enhanced
from .test_volumes import phantom

needs_encoder = pytest.mark.skipif(not jpeglossless.available(),
                                   reason="imagecodecs (the JPEG Lossless encoder) is absent")


def _deface_corner(files: list[Path], out: Path) -> tuple[list[np.ndarray], list[Path]]:
    """Change a corner of every image (signed values made negative where they can be)."""
    objs = read_series(files, files)
    expected = []
    for v in build_volumes(objs.slices, objs.pixels):
        for i, s in enumerate(v.slices):
            new = v.stored[i].copy()
            low = -5 if np.issubdtype(new.dtype, np.signedinteger) else 0
            new[:6, :6] = low
            new[-3:, -3:] = new.max()
            objs.put(s, new)
    written = objs.write(out, {p: p.name for p in files})
    for p in files:
        expected.append(np.asarray(objs.arrays[files.index(p)]))
    return expected, [written[p] for p in files]


def _rewrite(name: str, out: Path) -> tuple[np.ndarray, pydicom.Dataset]:
    """A corner of a pydicom test image changed (negative where signed) and written back
    as defacing writes it."""
    ds = pydicom.dcmread(str(get_testdata_file(name)))
    arr = np.array(ds.pixel_array, copy=True)
    arr[:6, :6] = -5 if np.issubdtype(arr.dtype, np.signedinteger) else 0
    arr[-3:, -3:] = arr.max()
    dicomio._set_pixels(ds, arr)
    ds.save_as(out, enforce_file_format=True)
    return arr, pydicom.dcmread(out)


@needs_encoder
@pytest.mark.parametrize("name", ["JPGLosslessP14SV1_1s_1f_8b.dcm", "JPEG-LL.dcm"])
def test_jpeg_lossless_stays_jpeg_lossless(name: str, tmp_path: Path) -> None:
    """8-bit unsigned and 16-bit signed (negative values written) images."""
    arr, back = _rewrite(name, tmp_path / "out.dcm")
    assert back.file_meta.TransferSyntaxUID == JPEGLosslessSV1
    assert np.array_equal(back.pixel_array, arr)


@needs_encoder
@pytest.mark.parametrize("option, syntax", [(["+e1"], JPEGLosslessSV1),
                                            (["+el", "+sv", "6"], JPEGLossless)])
def test_multiframe_jpeg_lossless_12_bit(option: list[str], syntax: str,
                                         tmp_path: Path) -> None:
    """dcmtk writes a 12-bit enhanced object as SV1 or with predictor 6 (a Process 14
    image): it keeps its syntax."""
    if shutil.which("dcmcjpeg") is None:
        pytest.skip("dcmtk's dcmcjpeg is absent")
    images = [phantom("sagittal", size=(32, 24, 6), offset=300.0 * v) for v in range(2)]
    (plain,) = write_enhanced(images, tmp_path / "plain", one_per_volume=False)
    src = tmp_path / "in" / "enh.dcm"
    src.parent.mkdir()
    subprocess.run(["dcmcjpeg", *option, str(plain), str(src)], check=True,
                   capture_output=True)
    assert pydicom.dcmread(src).file_meta.TransferSyntaxUID == syntax
    expected, (out,) = _deface_corner([src], tmp_path / "out")
    ds = pydicom.dcmread(out)
    assert ds.file_meta.TransferSyntaxUID == syntax and ds.NumberOfFrames == 12
    assert np.array_equal(ds.pixel_array, expected[0])
    # dcmtk decodes what was written (another decoder than the one that checked it).
    subprocess.run(["dcmdjpeg", str(out), str(tmp_path / "plain-out.dcm")], check=True,
                   capture_output=True)
    assert np.array_equal(pydicom.dcmread(tmp_path / "plain-out.dcm").pixel_array,
                          expected[0])


def test_without_the_encoder_written_uncompressed(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jpeglossless, "_codec", lambda: None)
    arr, back = _rewrite("JPGLosslessP14SV1_1s_1f_8b.dcm", tmp_path / "out.dcm")
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(back.pixel_array, arr)
