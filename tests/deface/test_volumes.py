"""Every series shape becomes volumes, and every object is written back in the form it came.

Fast tests on small synthetic volumes (no defacing): classic stacks in any orientation,
gaps and uneven spacing, 4-D series told apart by time, b-value or only by numbering,
Siemens mosaics (with and without their private headers), enhanced objects (one per volume,
or one holding a 4-D series), and the transfer syntax on writing back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from agent.deface import dicomio
from agent.deface.dicomio import read_series
from agent.deface.volumes import Volume, build_volumes
from agent.errors import DefaceFailed

from .builders import write_classic_4d, write_enhanced, write_mosaic
from .conftest import direction
from .dicom_writer import write_mr_series


def phantom(kind: str = "axial", size: tuple[int, int, int] = (24, 20, 12),
            spacing: tuple[float, float, float] = (2.0, 2.5, 3.0), offset: float = 0.0
            ) -> sitk.Image:
    """A small volume whose every voxel has its own value (so misplaced slices show)."""
    z, y, x = np.mgrid[0:size[2], 0:size[1], 0:size[0]]
    arr = (100 + 7 * x + 3 * y + 41 * z + offset).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetDirection(tuple(direction(kind).ravel()))
    img.SetOrigin((-20.0, 15.0, -30.0))
    return img


def volumes_of(files: list[Path], sources: list[Path] | None = None
               ) -> tuple[dicomio.SeriesObjects, list[Volume]]:
    objs = read_series(files, sources)
    return objs, build_volumes(objs.slices, objs.pixels)


def same_values(volume: Volume, image: sitk.Image) -> bool:
    """The volume's fit image holds ``image``'s values at the same physical places."""
    res = sitk.Resample(volume.fit_image(), image, sitk.Transform(), sitk.sitkNearestNeighbor,
                        -1.0)
    return bool(np.array_equal(sitk.GetArrayFromImage(res), sitk.GetArrayFromImage(image)))


@pytest.mark.parametrize("kind", ["axial", "sagittal", "coronal", "oblique"])
def test_classic_stack_in_any_orientation(kind: str, tmp_path: Path) -> None:
    image = phantom(kind)
    files = write_mr_series(image, tmp_path / "in")
    _, volumes = volumes_of(files)
    assert len(volumes) == 1
    (v,) = volumes
    assert v.is_regular() and len(v.slices) == image.GetSize()[2]
    assert same_values(v, image)
    assert np.allclose(v.extent_mm(), np.array(image.GetSize()) * image.GetSpacing())


def test_short_stacks_and_single_images_are_volumes(tmp_path: Path) -> None:
    image = phantom("sagittal", size=(16, 16, 2))
    _, volumes = volumes_of(write_mr_series(image, tmp_path / "two"))
    assert [len(v.slices) for v in volumes] == [2] and same_values(volumes[0], image)
    one = phantom("coronal", size=(16, 16, 1))
    _, volumes = volumes_of(write_mr_series(one, tmp_path / "one"))
    assert [len(v.slices) for v in volumes] == [1]
    assert volumes[0].block_image(0).GetSize() == (16, 16, 1)


def test_gaps_and_uneven_spacing_make_blocks_in_native_geometry(tmp_path: Path) -> None:
    image = phantom("axial", size=(16, 16, 14))
    files = write_mr_series(image, tmp_path / "in")
    by_number = {int(pydicom.dcmread(p).InstanceNumber): p for p in files}
    for n in (5, 6, 11):  # a gap of two slices and one of one slice
        by_number.pop(n).unlink()
    objs, volumes = volumes_of(sorted(by_number.values()))
    (v,) = volumes
    assert v.blocks == [(0, 4), (4, 8), (8, 11)]
    for b, (start, stop) in enumerate(v.blocks):
        block = v.block_image(b)
        assert block.GetSize()[2] == stop - start
        assert block.GetSpacing()[2] == pytest.approx(3.0)
    fit = v.fit_image()
    assert fit.GetSize()[2] == 14 and fit.GetSpacing()[2] == pytest.approx(3.0)
    # The resampled fit image holds the native values where there were slices.
    arr = sitk.GetArrayFromImage(fit)
    orig = sitk.GetArrayFromImage(image)
    for k in (0, 3, 6, 9, 13):
        assert np.array_equal(arr[k], orig[k])
    # Writing a block back changes exactly its own slices' objects.
    new = v.stored.copy()
    new[4:8] += 1
    for i in range(4, 8):
        objs.put(v.slices[i], new[i])
    written = objs.write(tmp_path / "out", {p: p.name for p in objs.paths})
    changed = [p for p, q in written.items() if p != q]
    assert len(changed) == 4
    for p in changed:
        before, after = pydicom.dcmread(p), pydicom.dcmread(written[p])
        assert np.array_equal(after.pixel_array, before.pixel_array + 1)
        assert after.ImagePositionPatient == before.ImagePositionPatient
        assert after.ImageType[0] == "DERIVED"


def test_uneven_steps_are_separate_blocks(tmp_path: Path) -> None:
    image = phantom("axial", size=(12, 12, 8))
    files = write_mr_series(image, tmp_path / "in")
    for p in files:  # slices 4..7 shifted by half a step: two steps in one series
        ds = pydicom.dcmread(p)
        if int(ds.InstanceNumber) > 4:
            pos = [float(v) for v in ds.ImagePositionPatient]
            ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + 1.5]
            ds.save_as(p)
    _, (v,) = volumes_of(files)
    assert len(v.blocks) == 2 and not v.is_regular()


@pytest.mark.parametrize("key", ["temporal", "bvalue", None])
def test_4d_classic_series_split_into_volumes(key: str | None, tmp_path: Path) -> None:
    images = [phantom("axial", size=(12, 12, 6), offset=1000.0 * v) for v in range(4)]
    files = write_classic_4d(images, tmp_path / "in", key=key)
    _, volumes = volumes_of(files)
    assert len(volumes) == 4
    found = sorted(int(v.stored.min()) for v in volumes)
    assert found == [100 + 1000 * v for v in range(4)]
    for v in volumes:
        offset = 1000.0 * ((int(v.stored.min()) - 100) // 1000)
        assert same_values(v, phantom("axial", size=(12, 12, 6), offset=offset))


def test_mosaic_unpacked_in_place_and_written_back_as_mosaic(tmp_path: Path) -> None:
    images = [phantom("oblique", size=(16, 16, 7), offset=500.0 * v) for v in range(2)]
    files = write_mosaic(images, tmp_path / "in")
    objs, volumes = volumes_of(files)
    assert len(volumes) == 2 and all(len(v.slices) == 7 for v in volumes)
    for v in volumes:
        offset = 500.0 * ((int(v.stored.min()) - 100) // 500)
        assert same_values(v, phantom("oblique", size=(16, 16, 7), offset=offset))
    v = volumes[0]
    for i, s in enumerate(v.slices):
        objs.put(s, v.stored[i] + 3)
    written = objs.write(tmp_path / "out", {p: p.name for p in files})
    src = pydicom.dcmread(files[v.slices[0].obj])
    out = pydicom.dcmread(written[files[v.slices[0].obj]])
    assert (out.Rows, out.Columns) == (src.Rows, src.Columns) == (48, 48)
    assert "MOSAIC" in out.ImageType
    diff = out.pixel_array.astype(int) - src.pixel_array.astype(int)
    assert set(np.unique(diff)) == {0, 3}
    assert int((diff == 3).sum()) == 7 * 16 * 16  # the padding tiles are left alone


def test_mosaic_without_private_headers(tmp_path: Path) -> None:
    images = [phantom("axial", size=(16, 16, 5))]
    with_csa = write_mosaic(images, tmp_path / "csa", private19=False)
    only_19 = write_mosaic(images, tmp_path / "p19", csa=False)
    deidentified = write_mosaic(images, tmp_path / "none", csa=False, private19=False)
    bare = write_mosaic(images, tmp_path / "bare", csa=False, private19=False, matrix=False)
    for files, sources in ((with_csa, None), (only_19, None), (deidentified, with_csa),
                           (deidentified, None), (bare, None)):
        _, volumes = volumes_of(files, sources)
        assert [len(v.slices) for v in volumes] == [5]
        assert same_values(volumes[0], images[0])
    # No header, and tiles that do not look like neighbouring slices: refused, saying so.
    ds = pydicom.dcmread(bare[0])
    noise = np.random.default_rng(3).integers(1, 4000, (ds.Rows, ds.Columns), np.uint16)
    ds.PixelData = noise.tobytes()
    ds.save_as(bare[0])
    with pytest.raises(DefaceFailed, match="tiling cannot be told"):
        volumes_of(bare)


def test_real_mosaics_match_dcm2niix_geometry(corpus: Path, dcm2niix: object) -> None:
    for name, slices in (("ep2d_Asc_2", 36), ("cmrr_Asc_6", 40)):
        folder = corpus / "dcm_qa_mosaic" / name
        files = sorted(p for p in folder.iterdir() if p.name != "LICENSE")
        _, volumes = volumes_of(files, files)
        assert len(volumes) == 6 and all(len(v.slices) == slices for v in volumes)
        ref = dcm2niix(folder)  # type: ignore[operator]
        ours = volumes[0].fit_image()
        assert ours.GetSize() == ref.GetSize()[:3]
        # dcm2niix may order the voxels differently: the same 8 corners in space.
        theirs = corners(ref)
        for point in corners(ours):
            assert np.linalg.norm(theirs - point, axis=1).min() < 0.05


def corners(image: sitk.Image) -> np.ndarray:
    size = image.GetSize()
    pts = []
    for i in (0, size[0] - 1):
        for j in (0, size[1] - 1):
            for k in (0, size[2] - 1):
                index = (i, j, k, 0)[:image.GetDimension()]
                pts.append(image.TransformIndexToPhysicalPoint(index)[:3])
    return np.array(pts)


@pytest.mark.parametrize("one_per_volume", [True, False])
def test_enhanced_objects_one_or_many_per_series(one_per_volume: bool, tmp_path: Path) -> None:
    images = [phantom("sagittal", size=(12, 14, 6), offset=1000.0 * v) for v in range(3)]
    files = write_enhanced(images, tmp_path / "in", one_per_volume=one_per_volume,
                           bvalues=[0.0, 1000.0, 1000.0])
    objs, volumes = volumes_of(files)
    assert len(files) == (3 if one_per_volume else 1)
    assert len(volumes) == 3 and all(len(v.slices) == 6 for v in volumes)
    for v in volumes:
        offset = 1000.0 * ((int(v.stored.min()) - 100) // 1000)
        assert same_values(v, phantom("sagittal", size=(12, 14, 6), offset=offset))
    v = volumes[-1]
    for i, s in enumerate(v.slices):
        objs.put(s, v.stored[i] + 1)
    written = objs.write(tmp_path / "out", {p: p.name for p in files})
    outs = [pydicom.dcmread(written[p]) for p in files]
    assert sum(o.NumberOfFrames for o in outs) == 18
    changed = [o for o, p in zip(outs, files, strict=True) if written[p] != p]
    assert len(changed) == 1
    frame = changed[0].PerFrameFunctionalGroupsSequence[0].MRImageFrameTypeSequence[0]
    assert frame.FrameType[0] == "DERIVED"


@pytest.mark.parametrize("name, syntax", [
    ("MR_small_RLE.dcm", RLELossless),
    ("MR_small_jp2klossless.dcm", JPEG2000Lossless),
    ("MR_small.dcm", ExplicitVRLittleEndian),
    ("MR_small_bigendian.dcm", ExplicitVRBigEndian),
])
def test_written_back_in_the_syntax_it_came(name: str, syntax: str, tmp_path: Path) -> None:
    src = Path(str(get_testdata_file(name)))
    objs, (v,) = volumes_of([src])
    new = v.stored[0].copy()
    new[:8, :8] = 7
    objs.put(v.slices[0], new)
    out = objs.write(tmp_path, {src: "out.dcm"})[src]
    ds = pydicom.dcmread(out)
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert np.array_equal(ds.pixel_array, new)


def test_lossy_input_is_written_uncompressed(tmp_path: Path) -> None:
    """(JPEG Lossless without its encoder: tests/deface/test_jpeglossless.py.)"""
    for name in ("JPEG2000.dcm", "JPGExtended.dcm"):
        ds = pydicom.dcmread(str(get_testdata_file(name)))
        assert ds.file_meta.TransferSyntaxUID.is_compressed
        arr = np.array(ds.pixel_array, copy=True)
        arr[:4, :4] = 1
        dicomio._set_pixels(ds, arr)
        ds.save_as(tmp_path / "out.dcm", enforce_file_format=True)
        back = pydicom.dcmread(tmp_path / "out.dcm")
        assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert np.array_equal(back.pixel_array, arr)


def test_images_without_geometry_are_refused_with_a_reason(tmp_path: Path) -> None:
    files = write_mr_series(phantom(), tmp_path / "in")
    ds = pydicom.dcmread(files[0])
    del ds.ImageOrientationPatient
    ds.save_as(files[0])
    with pytest.raises(DefaceFailed) as info:
        read_series(files)
    assert info.value.code == "deface-geometry"


def test_the_replaced_values_of_a_float_map_are_not_cut_to_an_integer_range() -> None:
    """A parametric map in real units (a phase in radians, a CBF map with negative noise)
    has no Bits Stored: its new face may take any finite value (it was cut to 0-65535);
    integer images keep the range their Bits Stored and sign allow."""
    from pydicom.dataset import Dataset

    lo, hi = dicomio.stored_range(Dataset(), np.dtype(np.float32))
    assert lo < -1e30 and hi > 1e30 and np.isfinite([lo, hi]).all()
    ds = Dataset()
    ds.BitsStored, ds.PixelRepresentation = 12, 0
    assert dicomio.stored_range(ds, np.dtype(np.uint16)) == (0, 4095)
    ds.PixelRepresentation = 1
    assert dicomio.stored_range(ds, np.dtype(np.int16)) == (-2048, 2047)
