"""Real corpus series rewritten in the multi-frame, derived and mosaic shapes of other
vendors (tests/deface/variants_mf.py) become the same volumes as the series they came from.

Default run: shapes only (no defacing), each case a few seconds: a Philips-style enhanced
4-D object (fMRI; DTI with b0, directions and the isotropic trace), a GE DWI cut into a
Concatenation, two stacks in one object, derived maps (ADC, TRACEW told apart only by
numbering), mosaics whose private headers are gone (tiling read from the pixels, the wrong
Acquisition Matrix of an interpolated reconstruction overruled, noise refused), orientation
cosines whose last digits vary. Soak run: each through the one-shot engine, delivered
defaced in the form it came (enhanced stays one enhanced object, a mosaic stays a mosaic),
or, a short EPI alone, quarantined saying what to do.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from agent.config import Config, load_config, replace
from agent.deface import dicomio
from agent.deface.volumes import Volume, build_volumes
from agent.errors import DefaceFailed
from agent.oneshot import process_folder
from agent.paths import AgentPaths

from . import variants, variants_mf

CORPUS = variants.CORPUS


def _volumes(files: list[Path]) -> list[Volume]:
    objs = dicomio.read_series(files, files)
    return build_volumes(objs.slices, objs.pixels)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name != "LICENSE")


def _signature(volumes: list[Volume]) -> list[tuple[tuple[float, ...], bytes]]:
    """Each volume as (its slice positions, its stored values), in the volumes' order."""
    out = []
    for v in volumes:
        pos = tuple(round(c, 2) for s in v.slices for c in s.plane.origin)
        out.append((pos, v.stored.tobytes()))
    return out


def _need(folder: Path) -> Path:
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    return folder


def _dti_subset(folder: Path, volumes: int) -> list[Dataset]:
    """The b0, the first diffusion directions and the isotropic trace of the Philips DTI:
    its files are numbered position by position, 17 volumes at each (b0, 15 directions,
    trace), so every 17th file belongs to one volume."""
    files = _files(folder)
    assert len(files) == 17 * 40
    chosen = {*range(volumes - 1), 16}
    return [pydicom.dcmread(p) for i, p in enumerate(files) if i % 17 in chosen]


@pytest.mark.parametrize("case", ["fmri", "dti"])
def test_enhanced_4d_object_is_the_classic_series(case: str, corpus: Path,
                                                  tmp_path: Path) -> None:
    philips = _need(CORPUS / "dcm_qa_philips")
    if case == "fmri":
        datasets = variants_mf.load(philips / "fmri")
    else:
        datasets = _dti_subset(philips / "601_WIP_dti_ax", 5)
    classic = variants_mf.load(philips / "fmri") if case == "fmri" else datasets
    classic_files = []
    for n, d in enumerate(classic):
        path = tmp_path / "classic" / f"IM{n:04d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        d.save_as(path)
        classic_files.append(path)
    ref = _volumes(classic_files)
    files = variants_mf.enhanced_4d(datasets, tmp_path / "enh", slice_major=True)
    assert len(files) == 1 and pydicom.dcmread(files[0]).NumberOfFrames == len(datasets)
    got = _volumes(files)
    assert len(got) == len(ref) == (3 if case == "fmri" else 5)
    assert sorted(_signature(got)) == sorted(_signature(ref))
    if case == "dti":  # the b0 first, the trace (isotropic, no direction) a volume of its own
        assert "bvalue=0" in got[0].label


def test_concatenation_is_one_object(corpus: Path, tmp_path: Path) -> None:
    """A GE DWI (7 volumes of 2 slices) cut into 2 files mid-volume: still 7 volumes."""
    ge = _need(CORPUS / "dcm_qa_ge" / "01_Ax_DWI_TENSOR_R2")
    ref = _volumes(_files(ge))
    files = variants_mf.enhanced_4d(variants_mf.load(ge), tmp_path / "enh", parts=2,
                                    private="GEMS_IDEN_01", manufacturer="GE MEDICAL SYSTEMS")
    assert len(files) == 2
    got = _volumes(files)
    assert len(got) == len(ref) == 7 and all(len(v.slices) == 2 for v in got)
    assert sorted(_signature(got)) == sorted(_signature(ref))


def test_two_stacks_in_one_object(corpus: Path, tmp_path: Path) -> None:
    src = next(p for p in _files(_need(variants.T1)) if p.suffix == ".dcm")
    classic = variants.enhanced_to_classic(src, tmp_path / "classic")
    sub = classic[::4]  # a thinned stack keeps the case cheap
    tilted = variants.oblique(sub, tmp_path / "oblique", degrees=25.0)
    files = variants_mf.two_stacks(variants_mf.load(tmp_path / "classic")[::4],
                                   variants_mf.load(tmp_path / "oblique"), tmp_path / "two")
    got = _volumes(files)
    assert len(got) == 2 and [len(v.slices) for v in got] == [len(sub), len(tilted)]
    normals = [v.plane.normal for v in got]
    assert abs(float(normals[0] @ normals[1])) == pytest.approx(np.cos(np.deg2rad(25)),
                                                                abs=1e-3)


def test_derived_maps_one_image_per_position_or_told_by_numbering(corpus: Path,
                                                                  tmp_path: Path) -> None:
    dwi = _dti_subset(_need(CORPUS / "dcm_qa_philips" / "601_WIP_dti_ax"), 4)
    (adc,) = _volumes(variants_mf.derived_maps(dwi, tmp_path / "adc", "adc"))
    assert len(adc.slices) == 40 and adc.is_regular()
    b0, trace = _volumes(variants_mf.derived_maps(dwi, tmp_path / "tracew", "tracew"))
    assert len(b0.slices) == len(trace.slices) == 40
    # The b0 is numbered first and is the brighter one: the numbering told them apart.
    assert float(b0.stored.mean()) > float(trace.stored.mean())


def test_mosaics_without_any_private_header(corpus: Path, tmp_path: Path) -> None:
    folder = _need(CORPUS / "dcm_qa_mosaic" / "cmrr_Asc_6")
    ref = _signature(_volumes(_files(folder)))
    datasets = variants_mf.load(folder)
    for name, matrix in (("matrix", [64, 0, 0, 64]), ("none", None),
                         ("interpolated", [32, 0, 0, 32])):
        files = variants_mf.bare_mosaic(datasets, tmp_path / name, matrix)
        assert _signature(_volumes(files)) == ref, name
    # Tiles that do not look like neighbouring slices: no tiling is certain, refused.
    files = variants_mf.bare_mosaic(datasets[:1], tmp_path / "noise", None)
    ds = pydicom.dcmread(files[0])
    rng = np.random.default_rng(5)
    arr = ds.pixel_array.copy()
    arr[arr > 0] = rng.integers(1, 3000, int((arr > 0).sum()))
    ds.PixelData = arr.tobytes()
    ds.save_as(files[0])
    with pytest.raises(DefaceFailed, match="tiling cannot be told") as info:
        _volumes(files)
    assert info.value.code == "deface-input"


def test_orientation_digits_varying_across_a_stack(corpus: Path, tmp_path: Path) -> None:
    """Cosines written 0.00045 on some slices and 0.00055 on others (scanner round-off
    either side of a rounding boundary) are one stack."""
    src = next(p for p in _files(_need(variants.T1)) if p.suffix == ".dcm")
    classic = variants.enhanced_to_classic(src, tmp_path / "classic")[::3]
    ref = _volumes(classic)
    for n, p in enumerate(classic):
        ds = pydicom.dcmread(p)
        iop = [float(v) for v in ds.ImageOrientationPatient]
        iop[0] = 0.00045 if n % 2 else 0.00055
        ds.ImageOrientationPatient = [f"{v:.5f}" for v in iop]
        ds.save_as(p)
    (got,) = _volumes(classic)
    assert len(got.slices) == len(ref[0].slices) and got.is_regular()


def test_volumes_in_numeric_order(corpus: Path) -> None:
    """Time points 1, 2 ... 10, not 1, 10, 2: the first volume is the first time point."""
    got = _volumes(_files(_need(CORPUS / "dcm_qa_ge" / "2_fMRI_Multiphase_Des")))
    temporal = [dict(v.slices[0].key)["temporal"] for v in got]
    assert temporal == [str(n) for n in range(1, 11)]


@pytest.fixture(scope="module")
def thin_t1(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The XA30 T1 as a classic stack, every third slice (cheap, still a head)."""
    src = next(p for p in _files(_need(variants.T1)) if p.suffix == ".dcm")
    out = tmp_path_factory.mktemp("t1")
    return variants.enhanced_to_classic(src, out / "classic")[::3]


def test_classic_series_holding_several_stacks(thin_t1: list[Path], tmp_path: Path) -> None:
    """Two orientations, two matrix sizes, or the same positions twice in one series: one
    volume per stack (the repeat told apart by its numbering), each with its own voxels."""
    (ref,) = _volumes(thin_t1)
    tilted = variants.oblique(thin_t1, tmp_path / "oblique", degrees=20.0)
    axial = variants.resliced(thin_t1, tmp_path / "axial", "rows")
    for name, parts, sizes in (
            ("orientations", [thin_t1, tilted], [len(thin_t1), len(tilted)]),
            ("sizes", [thin_t1, axial], [len(thin_t1), len(axial)]),
            ("repeat", [thin_t1, thin_t1], [len(thin_t1)] * 2)):
        got = _volumes(variants_mf.one_series(parts, tmp_path / name))
        assert sorted(len(v.slices) for v in got) == sorted(sizes), name
        assert all(v.is_regular() for v in got), name
        assert any(np.array_equal(v.stored, ref.stored) for v in got), name
    repeat = _volumes(variants_mf.one_series([thin_t1, thin_t1], tmp_path / "repeat2"))
    assert [min(s.order for s in v.slices) for v in repeat] == [1.0, len(thin_t1) + 1.0]


def test_single_frame_enhanced_objects_and_foreign_headers(thin_t1: list[Path],
                                                           tmp_path: Path) -> None:
    """One single-frame enhanced object per slice (geometry only in its functional
    groups), a multi-echo enhanced object, and United Imaging / Hitachi style private
    creators: the same voxels as the classic stack; the enhanced written back enhanced."""
    (ref,) = _volumes(thin_t1)
    datasets: list[Dataset] = [pydicom.dcmread(p) for p in thin_t1]
    per_slice = variants_mf.enhanced_per_slice(datasets, tmp_path / "per-slice")
    objs = dicomio.read_series(per_slice, per_slice)
    (v,) = build_volumes(objs.slices, objs.pixels)
    assert _signature([v]) == _signature([ref])
    objs.put(v.slices[0], v.stored[0] + 1)
    written = objs.write(tmp_path / "out", {p: p.name for p in per_slice})
    changed = [q for p, q in written.items() if p != q]
    assert len(changed) == 1
    out = pydicom.dcmread(changed[0])
    assert out.SOPClassUID == pydicom.uid.EnhancedMRImageStorage and out.NumberOfFrames == 1
    assert "PerFrameFunctionalGroupsSequence" in out and out.ImageType[0] == "DERIVED"
    # ... and so are its Frame Types (Image Type DERIVED over ORIGINAL frames contradicts)
    frame_types = [item.FrameType[0] for group in (out.PerFrameFunctionalGroupsSequence[0],
                                                   *out.get("SharedFunctionalGroupsSequence", []))
                   for elem in group if elem.keyword.endswith("FrameTypeSequence")
                   for item in elem.value if "FrameType" in item]
    assert frame_types and set(frame_types) == {"DERIVED"}
    echoes = variants.multi_echo(thin_t1, tmp_path / "echo-classic")
    got = _volumes(variants_mf.enhanced_4d(variants_mf.load(tmp_path / "echo-classic"),
                                           tmp_path / "echo"))
    assert sorted(_signature(got)) == sorted(_signature(_volumes(echoes)))
    assert len(got) == 2 and got[0].label.endswith("echo=2.5")
    for vendor, group, creator in (("UIH", 0x0065, "Image Private Header"),
                                   ("Hitachi Medical Corporation", 0x0029, "HMC - MR - ID")):
        files = variants_mf.foreign_headers(thin_t1, tmp_path / vendor[:3], vendor, group,
                                            creator)
        assert _signature(_volumes(files)) == _signature([ref]), vendor


def test_float_parametric_map_is_an_image(thin_t1: list[Path], tmp_path: Path) -> None:
    """A Parametric Map with float pixel data holds the head's voxels (it was delivered
    unjudged, face and all): read as a volume, written back as float pixel data."""
    (ref,) = _volumes(thin_t1)
    (enh,) = variants_mf.enhanced_4d(variants_mf.load(thin_t1[0].parent)[::3], tmp_path / "e")
    (path,) = variants_mf.float_map(enh, tmp_path / "map")
    objs = dicomio.read_series([path], [path])
    (v,) = build_volumes(objs.slices, objs.pixels)
    assert v.stored.dtype == np.float32 and len(v.slices) == len(ref.slices)
    assert np.array_equal(v.stored, (ref.stored.astype(np.float32) * np.float32(0.1)))
    objs.put(v.slices[0], v.stored[0] + 1.5)
    out = pydicom.dcmread(objs.write(tmp_path / "out", {path: "map.dcm"})[path])
    assert "PixelData" not in out and out.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"
    assert np.array_equal(out.pixel_array[v.slices[0].frame], v.stored[0] + 1.5)


#: Each variant and the corpus series it was made from (its ending must be the same).
_SOURCES = {
    "philips-enhanced-dti": "dcm_qa_philips/601_WIP_dti_ax",
    "philips-enhanced-fmri": "dcm_qa_philips/fmri",
    "ge-enhanced-dwi-concatenation": "dcm_qa_ge/01_Ax_DWI_TENSOR_R2",
    "canon-enhanced-fmri-concatenation": "dcm_qa_philips/fmri",
    "adc": "dcm_qa_philips/601_WIP_dti_ax",
    "fa": "dcm_qa_philips/601_WIP_dti_ax",
    "tracew": "dcm_qa_philips/601_WIP_dti_ax",
    "mosaic-no-private": "dcm_qa_mosaic/cmrr_Asc_6",
    "mosaic-interpolated-matrix": "dcm_qa_mosaic/cmrr_Asc_6",
    "two-stacks": "dcm_qa_xa30/5_anat-T1w_acq-tfl",
    "single-frame-enhanced": "dcm_qa_xa30/5_anat-T1w_acq-tfl",
    "two-orientations": "dcm_qa_xa30/5_anat-T1w_acq-tfl",
    "united-imaging": "dcm_qa_xa30/5_anat-T1w_acq-tfl",
    "float-parametric-map": "dcm_qa_xa30/5_anat-T1w_acq-tfl",
}


def _build_all(out: Path) -> dict[str, Path]:
    philips, ge = CORPUS / "dcm_qa_philips", CORPUS / "dcm_qa_ge"
    mosaic = CORPUS / "dcm_qa_mosaic" / "cmrr_Asc_6"
    dti = variants_mf.load(philips / "601_WIP_dti_ax")
    fmri = variants_mf.load(philips / "fmri")
    src = next(p for p in _files(variants.T1) if p.suffix == ".dcm")
    classic = variants.enhanced_to_classic(src, out / "tmp" / "classic")
    tilted = variants.oblique(classic, out / "tmp" / "oblique")
    makers = {
        "philips-enhanced-dti": lambda o: variants_mf.enhanced_4d(dti, o, slice_major=True),
        "philips-enhanced-fmri": lambda o: variants_mf.enhanced_4d(fmri, o),
        "ge-enhanced-dwi-concatenation": lambda o: variants_mf.enhanced_4d(
            variants_mf.load(ge / "01_Ax_DWI_TENSOR_R2"), o, parts=2,
            private="GEMS_IDEN_01", manufacturer="GE MEDICAL SYSTEMS"),
        "canon-enhanced-fmri-concatenation": lambda o: variants_mf.enhanced_4d(
            fmri, o, parts=3, private="TOSHIBA_MEC_MR3", manufacturer="CANON_MEC"),
        "adc": lambda o: variants_mf.derived_maps(dti, o, "adc"),
        "fa": lambda o: variants_mf.derived_maps(dti, o, "fa"),
        "tracew": lambda o: variants_mf.derived_maps(dti, o, "tracew"),
        "mosaic-no-private": lambda o: variants_mf.bare_mosaic(
            variants_mf.load(mosaic), o, None),
        "mosaic-interpolated-matrix": lambda o: variants_mf.bare_mosaic(
            variants_mf.load(mosaic), o, [32, 0, 0, 32]),
        "two-stacks": lambda o: variants_mf.two_stacks(
            variants_mf.load(out / "tmp" / "classic"), variants_mf.load(out / "tmp" / "oblique"),
            o),
        "single-frame-enhanced": lambda o: variants_mf.enhanced_per_slice(
            variants_mf.load(out / "tmp" / "classic"), o),
        "two-orientations": lambda o: variants_mf.one_series([classic, tilted], o),
        "united-imaging": lambda o: variants_mf.foreign_headers(
            classic, o, "UIH", 0x0065, "Image Private Header"),
        "float-parametric-map": lambda o: variants_mf.float_map(src, o),
    }
    folders = {}
    for name, make in makers.items():
        make(out / name)
        folders[name] = out / name
    return folders


def _form(folder: Path) -> list[tuple[str, int, int, int, bool]]:
    """What must survive defacing: SOP class, frames, matrix, mosaic or not, per object."""
    out = []
    for p in _files(folder):
        if p.suffix == ".json":
            continue
        d = pydicom.dcmread(p, stop_before_pixels=True)
        out.append((str(d.SOPClassUID), int(d.get("NumberOfFrames", 1) or 1), int(d.Rows),
                    int(d.Columns), "MOSAIC" in (d.get("ImageType") or [])))
    return sorted(out)


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_every_shape_ends_as_its_source_in_its_form(corpus: Path, agent_paths: AgentPaths,
                                                    tmp_path: Path) -> None:
    """Each variant ends as the corpus series it was made from (delivered defaced, or
    withheld / quarantined for the same reason); a delivered one keeps its form."""
    _need(CORPUS / "dcm_qa_philips")
    cfg: Config = replace(load_config(None, paths=agent_paths),
                          target_path=str(tmp_path / "out"), pipeline_workers=2)
    endings: dict[str, list[tuple[str, str, bool]]] = {}

    def ending(folder: Path, out: Path) -> list[tuple[str, str, bool]]:
        summary = process_folder(cfg, folder, out)
        defaced = [bool(json.loads(m.read_text())["defaced"]) for m in out.rglob(
            "manifest.json")]
        return [(str(o.state), o.code or "", all(defaced)) for o in summary.series]

    for name, folder in _build_all(tmp_path / "in").items():
        source = _SOURCES[name]
        if source not in endings:
            endings[source] = ending(CORPUS / source, tmp_path / "ref" / source)
        got = ending(folder, tmp_path / "out" / name)
        assert got == endings[source], name
        if got[0][0] == "delivered":
            (manifest,) = (tmp_path / "out" / name).rglob("manifest.json")
            assert _form(manifest.parent) == _form(folder), name


def test_header_less_mosaic_tiling_from_any_certain_mosaic(corpus: Path,
                                                           tmp_path: Path) -> None:
    """The first mosaic (by number) tells nothing for certain (a noisy volume); the
    series' tiling is read from the next one, and holds for all."""
    folder = _need(CORPUS / "dcm_qa_mosaic" / "cmrr_Asc_6")
    ref = _volumes(_files(folder))
    files = variants_mf.bare_mosaic(variants_mf.load(folder), tmp_path / "bare", None)
    first = min(files, key=lambda p: int(pydicom.dcmread(p).InstanceNumber))
    ds = pydicom.dcmread(first)
    arr = ds.pixel_array.copy()
    arr[arr > 0] = np.random.default_rng(7).integers(1, 3000, int((arr > 0).sum()))
    ds.PixelData = arr.tobytes()
    ds.save_as(first)
    got = _volumes(files)
    assert [len(v.slices) for v in got] == [len(v.slices) for v in ref] == [40] * 6
