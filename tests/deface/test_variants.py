"""The real XA30 T1 rewritten in other vendors' shapes (tests/deface/variants.py).

Default run: the shapes alone - every variant becomes one volume over the same patient
space with the same voxels (no defacing: cheap). Soak run: every variant through the
one-shot engine, each delivered defaced, in the transfer syntax it came in where an
encoder exists (JPEG Lossless where imagecodecs is installed, else written uncompressed);
a 2- or 3-image stack alone is quarantined (nothing places its face), with the study's T1 defaced.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from agent.config import Config, load_config, replace
from agent.deface import dicomio, jpeglossless
from agent.deface.volumes import Volume, build_volumes
from agent.oneshot import process_folder
from agent.paths import AgentPaths

from . import variants


def _volumes(folder: Path) -> list[Volume]:
    files = sorted(p for p in folder.rglob("*.dcm"))
    objs = dicomio.read_series(files, files)
    return build_volumes(objs.slices, objs.pixels)


def _points(volume: Volume) -> dict[tuple[int, int, int], int]:
    """Voxel value by patient position (rounded to 0.1 mm) of a volume's first column."""
    out = {}
    for s, stored in zip(volume.slices, volume.stored, strict=True):
        origin, col = np.array(s.plane.origin), np.array(s.plane.col)
        for i in range(0, s.plane.shape[0], 7):
            p = origin + col * s.plane.spacing[0] * i
            x, y, z = (int(round(10 * v)) for v in p)
            out[(x, y, z)] = int(stored[i, 0])
    return out


@pytest.fixture(scope="module")
def built(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not variants.T1.is_dir():
        pytest.skip(f"{variants.T1} is absent")
    return variants.build_all(tmp_path_factory.mktemp("variants"),
                              only={"reversed", "missing-slice", "toshiba"})


def test_every_variant_is_the_same_volume(built: dict[str, Path]) -> None:
    (classic,) = _volumes(built["classic"])
    assert len(classic.slices) == 96 and len(classic.blocks) == 1
    ref = _points(classic)
    for name in ("reversed", "toshiba"):
        (v,) = _volumes(built[name])
        assert len(v.slices) == 96 and len(v.blocks) == 1, name
        assert _points(v) == ref, name
    (gap,) = _volumes(built["missing-slice"])
    assert len(gap.slices) == 95 and len(gap.blocks) == 2
    assert set(_points(gap).items()) <= set(ref.items())


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_every_variant_is_delivered_defaced(corpus: Path, agent_paths: AgentPaths,
                                            tmp_path: Path) -> None:
    if not variants.T1.is_dir():
        pytest.skip(f"{variants.T1} is absent")
    cfg: Config = replace(load_config(None, paths=agent_paths),
                          target_path=str(tmp_path / "out"), pipeline_workers=2)
    folders = variants.build_all(tmp_path / "in")
    keeps = {"jpeg-ls": "1.2.840.10008.1.2.4.80", "rle": "1.2.840.10008.1.2.5",
             "j2k-lossless": "1.2.840.10008.1.2.4.90"}
    if jpeglossless.available():  # its encoder is an optional package (imagecodecs)
        keeps["jpeg-lossless"] = "1.2.840.10008.1.2.4.70"
    for name, folder in folders.items():
        out = tmp_path / "out" / name
        summary = process_folder(cfg, folder, out)
        if name in ("2-slices-nose", "3-slices-nose"):  # alone: nothing places the face
            assert [(o.state, o.code) for o in summary.series] == [
                ("quarantined", "deface-fit")], name
            continue
        assert summary.series and all(o.state == "delivered" for o in summary.series), (
            name, summary.as_dict())
        manifests = list(out.rglob("manifest.json"))
        assert len(manifests) == len(summary.series), name
        for m in manifests:
            assert json.loads(m.read_text())["defaced"], name
            if name in keeps:
                first = next(m.parent.glob("*.dcm"))
                syntax = pydicom.dcmread(first, stop_before_pixels=True).file_meta
                assert syntax.TransferSyntaxUID == keeps[name], name
