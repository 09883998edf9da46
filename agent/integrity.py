"""The last look before delivery: every file parses and holds pixel data that decode.

Called by the pipeline just before a series leaves. Whatever the stages did, nothing that
a receiving system would choke on is delivered: each DICOM file must parse to its end, its
native Pixel Data must be as long as its header announces, an encapsulated one must be
closed, and its frames must decode - every file of a small series, a spread sample of a
large one (first, last and evenly between; for multi-frame objects a spread sample of
frames). A file that fails is named by its position and the
series is quarantined with the reason.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement

from agent.deid.pool import chunked
from agent.dicomfiles import expected_native_length, is_complete
from agent.errors import SeriesProblem, is_library_panic
from agent.procpool import WORTH_POOLING, worker_count
from agent.quickread import QUICK_MAX_BYTES, scan
from agent.vocab import ProblemCode

#: Outputs that are not DICOM (renders, sidecars) are not checked here.
NOT_DICOM = frozenset({".png", ".json", ".txt", ".csv"})
#: Files decoded in full per series; larger series are sampled.
DECODED_FILES = 16
#: Frames decoded per multi-frame file; larger objects are sampled.
DECODED_FRAMES = 8


def spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)``, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def _problem(index: int, total: int, what: str) -> SeriesProblem:
    return SeriesProblem(
        f"file {index + 1} of {total} prepared for delivery {what}; the series was kept back "
        "so that no receiving system gets a broken file. Export the series again; if it "
        "happens again, send the log folder to support.", code=ProblemCode.INVALID_OUTPUT)


def check_deliverable(files: Sequence[Path], pool: Executor | None = None
                      ) -> dict[Path, tuple[int, str]]:
    """Raise SeriesProblem for the first file of ``files`` that should not be delivered;
    else the size and SHA-256 of every file, from the same read (the manifest's: each
    output is read once for both).

    Every file's element structure and pixel length are walked (:mod:`agent.quickread`,
    which answers as :func:`is_complete` does); pydicom parses and converts every value of
    a spread sample, and of every file the walk does not vouch for. (A full pydicom parse
    of each file was half the main process's time on a 2,000-file series, and the
    verifier has already parsed every output with its own parser.)

    With ``pool`` (the agent's process pool) a large series is checked in its workers,
    in parts: the same checks, off the agent's own process, which stages and delivers
    the other series meanwhile. A pool that cannot take the work (shut down, broken)
    leaves the check to this process: it is never skipped."""
    dicoms = list(enumerate(f for f in files if f.suffix.lower() not in NOT_DICOM))
    total = len(dicoms)
    sampled = frozenset(spread(total, DECODED_FILES))
    if pool is None or total < POOL_FILES:
        return _check_part((dicoms, total, sampled))
    parts = [(part, total, sampled) for part in chunked(dicoms, worker_count())]
    described: dict[Path, tuple[int, str]] = {}
    try:
        for found in pool.map(_check_part, parts):  # in order: the first bad file's part
            described.update(found)                 # raises first
    except RuntimeError:  # BrokenExecutor, or shut down: the pool is gone (stopping?)
        return _check_part((dicoms, total, sampled))
    return described


#: A series with fewer files is checked in the calling process (a pool task's round trip
#: costs more than it saves); a larger one in parts cut as the stages cut theirs.
POOL_FILES = WORTH_POOLING


def _check_part(task: tuple[list[tuple[int, Path]], int, frozenset[int]]
                ) -> dict[Path, tuple[int, str]]:
    """:func:`check_deliverable` for some of a series' files, given with their index in
    the series of ``total`` (``sampled``: the indices parsed and decoded in full)."""
    files, total, sampled = task
    described: dict[Path, tuple[int, str]] = {}
    frames: dict[int, int | None] = {}  # the sampled files' frames (None: no pixels)
    for i, path in files:
        whole, desc = _read(path)
        if desc is not None:
            described[path] = desc
        if i in sampled or not whole:
            ds = _parse(path, i, total)
            _check_length(ds, i, total)
            if not whole and not is_complete(path):  # (the walk answers as it does)
                raise _problem(i, total, "is cut short or holds broken elements")
            if i in sampled:
                frames[i] = _frames(ds, i, total)
    for i, path in files:
        count = frames.get(i)
        if count is not None:
            _check_decodes(path, i, total, count)
    return described


def _read(path: Path) -> tuple[bool, tuple[int, str] | None]:
    """Whether the one-pass walk finds the file whole (False: pydicom must decide), and
    its size and SHA-256 from the same read (None when it could not be read: the parse
    that follows says why)."""
    try:
        if path.stat().st_size > QUICK_MAX_BYTES:
            return False, None
        data = path.read_bytes()
    except OSError:
        return False, None
    found = scan(data)
    return (found is not None and found.complete is True,
            (len(data), hashlib.sha256(data).hexdigest()))


_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})


def _convert_all(ds: pydicom.Dataset) -> None:
    """Convert every element's value at any depth (pixel data left on disk)."""
    for tag in list(ds.keys()):
        if tag in _PIXEL_TAGS:
            continue
        elem = ds[tag]
        if elem.VR == "SQ":
            for item in elem.value:
                _convert_all(item)


def _parse(path: Path, index: int, total: int) -> pydicom.Dataset:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # real data warns for much pydicom handles
            ds = pydicom.dcmread(path, defer_size=1024)
            _convert_all(ds)
    except Exception as exc:  # noqa: BLE001 -- pydicom raises many types for broken files
        raise _problem(index, total, f"does not parse ({type(exc).__name__})") from None
    return ds


def _check_length(ds: pydicom.Dataset, index: int, total: int) -> None:
    """Native pixel data at least as long as the header announces. (Bytes beyond the last
    sample are the pixel stage's to remove: they are not what breaks a reader.)"""
    if "PixelData" not in ds or "Rows" not in ds or "Columns" not in ds:
        return
    raw = ds.get_item("PixelData")
    if isinstance(raw, RawDataElement):
        length = int(raw.length)
    elif raw is None or raw.is_undefined_length:
        return
    else:
        length = len(raw.value or b"")
    if length == 0xFFFFFFFF:
        return  # encapsulated: its sequence was checked by is_complete, frames below
    expected = expected_native_length(ds)
    if length < expected:
        raise _problem(index, total, f"holds {length} bytes of pixel data where its header "
                                     f"announces {expected}")


def _frames(ds: pydicom.Dataset, index: int, total: int) -> int | None:
    """The frames a parsed file announces (None without pixel data), from the full parse
    the length check made. (The header parse that used to answer this stopped before
    the pixel data, so it never found any: no sampled frame was ever decoded.)"""
    if "PixelData" not in ds and "FloatPixelData" not in ds and \
            "DoubleFloatPixelData" not in ds:
        return None
    try:
        return int(str(ds.get("NumberOfFrames", 1) or 1))
    except ValueError as exc:
        raise _problem(index, total, f"has frames that do not decode ({type(exc).__name__})"
                       ) from None


def _check_decodes(path: Path, index: int, total: int, frames: int) -> None:
    from pydicom.pixels import iter_pixels  # type: ignore[attr-defined]

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in iter_pixels(path, indices=spread(frames, DECODED_FRAMES)):
                pass
    except BaseException as exc:
        if not isinstance(exc, Exception) and not is_library_panic(exc):
            raise
        raise _problem(index, total, f"has frames that do not decode ({type(exc).__name__})"
                       ) from None
