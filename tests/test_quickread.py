"""The one-pass reader answers exactly as the pydicom functions it stands in for.

For every file it answers (it may decline: None), its header and completeness must equal
:func:`agent.dicomfiles.read_header` and :func:`agent.dicomfiles.is_complete` - on pydicom's
own varied test files, the real corpus, and truncated and damaged copies. And it must
actually answer for ordinary files, or nothing is gained.
"""

from __future__ import annotations

import random
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from agent.dicomfiles import expected_native_length, is_complete, read_header
from agent.quickread import Scan, pixel_bytes, scan
from tests.conftest import write_series

CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "corpus" / "dicom"
PYDICOM_DATA = Path(get_testdata_file("MR_small.dcm")).parent  # type: ignore[arg-type]


def agrees(path: Path) -> Scan | None:
    """The fast answer for ``path`` (None when it declines), checked against pydicom's."""
    data = path.read_bytes()
    found = scan(data)
    if found is None:
        return None
    header = read_header(path)
    if found.is_image_we_process:
        assert header is not None, path
        assert (found.study_uid, found.series_uid, found.instance_uid) == (
            header.study_uid, header.series_uid, header.instance_uid), path
    else:
        assert header is None, path
    if found.complete is not None:
        assert found.complete == is_complete(path), path
    announced = pixel_bytes(data, whole=True)
    if announced is not None:
        assert announced == expected_native_length(
            pydicom.dcmread(path, stop_before_pixels=True, force=True)), path
        # From the first bytes only: the same answer, or none (the header goes on).
        assert pixel_bytes(data[:len(data) // 3], whole=False) in (None, announced), path
    return found


def _pydicom_files() -> list[Path]:
    return sorted(p for p in PYDICOM_DATA.glob("*.dcm") if p.stat().st_size < 8 << 20)


@pytest.mark.parametrize("path", _pydicom_files(), ids=lambda p: p.name)
def test_agrees_on_pydicom_test_files(path: Path) -> None:
    agrees(path)


def _corpus_samples() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    out = []
    for folder in sorted({p.parent for p in CORPUS.rglob("*.dcm")}):
        files = sorted(folder.glob("*.dcm"))
        out += [files[0], files[-1]]
    return out


def test_agrees_on_the_real_corpus_and_answers_for_it() -> None:
    samples = _corpus_samples()
    if not samples:
        pytest.skip("the shared corpus (../shared/corpus) is not here")
    answered = [p for p in samples if agrees(p) is not None]
    # Every vendor's ordinary files are read in one pass (else the fast path is dead code).
    assert len(answered) == len(samples), sorted(set(samples) - set(answered))


def test_ordinary_series_answered_whole(tmp_path: Path) -> None:
    for path in write_series(tmp_path, 3):
        found = agrees(path)
        assert found is not None and found.complete is True


def _variants(path: Path, tmp: Path, count: int, seed: int) -> list[Path]:
    """Truncated copies (header and pixel data) and copies with a flipped byte."""
    data = path.read_bytes()
    rng = random.Random(seed)
    cuts = sorted({rng.randrange(132, len(data)) for _ in range(count)} | {len(data) - 1})
    out = []
    for i, cut in enumerate(cuts):
        p = tmp / f"cut{i}.dcm"
        p.write_bytes(data[:cut])
        out.append(p)
    header_end = min(len(data), 2048)
    for i in range(count):
        pos = rng.randrange(132, header_end)
        damaged = bytearray(data)
        damaged[pos] ^= 1 << rng.randrange(8)
        p = tmp / f"flip{i}.dcm"
        p.write_bytes(bytes(damaged))
        out.append(p)
    return out


@pytest.mark.parametrize("name", ["MR_small.dcm", "CT_small.dcm", "rtplan.dcm",
                                  "MR_small_implicit.dcm", "MR_small_bigendian.dcm"])
def test_agrees_on_truncated_and_damaged_copies(name: str, tmp_path: Path) -> None:
    src = Path(get_testdata_file(name))  # type: ignore[arg-type]
    answered = incomplete = 0
    for variant in _variants(src, tmp_path, 12, seed=len(name)):
        found = agrees(variant)
        answered += found is not None
        incomplete += found is not None and found.complete is False
    # A file cut inside its pixel data is told incomplete in one pass.
    assert incomplete >= 1 or name == "rtplan.dcm"
