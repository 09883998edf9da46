"""Mutating real DICOM files, for the fuzz tests and ``scripts/fuzz_pipeline.py``.

Seeds are real files: the vendor corpus (``../shared/corpus/dicom`` from the repository
root, two files per series) and pydicom's own test files. A mutation is a list of
``(operation, seed)`` pairs applied in order, each operation deterministic in its seed, so
any failure is reproduced from its description alone. Operations work on bytes (flips,
cuts, insertions, length fields set to extremes, a VR replaced by letters that are no VR)
and on meaning (a header that promises more pixels than there are, a transfer syntax that
does not match the data, frames that claim to be compressed) - the two ways real damaged
and hostile files go wrong.
"""

from __future__ import annotations

import io
import logging
import random
import re
import struct
import warnings
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import pydicom

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / ".." / "shared" / "corpus" / "dicom"
_MAX_SEED_BYTES = 4 << 20


@lru_cache(maxsize=1)
def seed_files() -> tuple[Path, ...]:
    """Real files to mutate: the corpus (when present) and pydicom's test files."""
    from pydicom.data import get_testdata_files

    seeds: list[Path] = []
    if CORPUS.is_dir():
        for series in sorted(p for p in CORPUS.glob("*/*") if p.is_dir()):
            files = sorted(f for f in series.iterdir() if f.is_file())
            seeds += [files[0], files[len(files) // 2]] if len(files) > 1 else files
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seeds += [Path(p) for p in get_testdata_files("*.dcm")]
    usable = []
    for path in seeds:
        try:
            if path.stat().st_size > _MAX_SEED_BYTES:
                continue
            head = path.read_bytes()[:132]
        except OSError:
            continue
        if head[128:132] == b"DICM":  # Part 10 files: what exports are
            usable.append(path)
    return tuple(dict.fromkeys(usable))


# -- byte-level operations -------------------------------------------------------------------

def _flip(data: bytearray, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 16)):
        at = rng.randrange(len(data))
        data[at] ^= 1 << rng.randrange(8)


def _header_bytes(data: bytearray, rng: random.Random) -> None:
    """Random bytes in the first kilobytes, where the elements that steer parsing are."""
    end = min(len(data), 4096)
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(132, max(133, end))] = rng.randrange(256)


def _truncate(data: bytearray, rng: random.Random) -> None:
    del data[rng.randrange(132, max(133, len(data))):]


def _insert(data: bytearray, rng: random.Random) -> None:
    at = rng.randrange(132, max(133, len(data)))
    data[at:at] = rng.randbytes(rng.randint(1, 64))


def _extreme_length(data: bytearray, rng: random.Random) -> None:
    """A 4-byte value somewhere set to 0, 0xFFFFFFFF or a huge number."""
    at = rng.randrange(132, max(133, len(data) - 4))
    data[at:at + 4] = struct.pack("<I", rng.choice([0, 0xFFFFFFFF, 0x7FFFFFFF, 0xFFFFFFF0,
                                                    rng.randrange(1 << 32)]))


def _bad_vr(data: bytearray, rng: random.Random) -> None:
    """A VR replaced by two capitals that are no VR ('UH', 'QQ' ...)."""
    vrs = [b"CS", b"LO", b"SH", b"DS", b"IS", b"UI", b"US", b"OB", b"OW", b"SQ", b"UN", b"PN"]
    spots: list[int] = []
    # bytes.find, not a slice compared at every offset: that cost 14 s of CPU on a 3 MB
    # seed, which a loaded machine stretched past the fuzz run's 120 s timeout.
    for vr in vrs:
        at = data.find(vr, 132)
        while at != -1 and len(spots) < 4000:
            spots.append(at)
            at = data.find(vr, at + 1)
    if spots:
        at = rng.choice(spots)
        data[at:at + 2] = rng.choice([b"UH", b"QQ", b"ZZ", b"AA", b"X1"])


def _duplicate(data: bytearray, rng: random.Random) -> None:
    start = rng.randrange(132, max(133, len(data)))
    chunk = data[start:start + rng.randint(8, 512)]
    at = rng.randrange(132, max(133, len(data)))
    data[at:at] = chunk


# -- meaning-level operations ----------------------------------------------------------------

def _dataset(data: bytes) -> pydicom.Dataset | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(io.BytesIO(data))
    except Exception:  # noqa: BLE001 -- an earlier mutation broke it: nothing to do here
        return None


def _rewrite(data: bytearray, change: Callable[[pydicom.Dataset], None]) -> None:
    ds = _dataset(bytes(data))
    if ds is None:
        return
    try:
        change(ds)
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(buf, enforce_file_format=False)
    except Exception:  # noqa: BLE001 -- pydicom refused to write it: keep the bytes
        return
    data[:] = buf.getvalue()


def _more_pixels_claimed(data: bytearray, rng: random.Random) -> None:
    def change(ds: pydicom.Dataset) -> None:
        if rng.random() < 0.5:
            ds.Rows = int(ds.get("Rows", 64) or 64) * rng.choice([2, 16, 1024])
        else:
            ds.NumberOfFrames = rng.choice([2, 100, 65535])
    _rewrite(data, change)


def _pixels_cut(data: bytearray, rng: random.Random) -> None:
    def change(ds: pydicom.Dataset) -> None:
        if "PixelData" in ds:
            raw = ds.PixelData
            ds.PixelData = raw[: rng.randrange(max(1, len(raw)))]
    _rewrite(data, change)


def _wrong_syntax(data: bytearray, rng: random.Random) -> None:
    from pydicom import uid

    def change(ds: pydicom.Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = uid.UID(rng.choice([
            uid.JPEGBaseline8Bit, uid.JPEG2000Lossless, uid.RLELossless, uid.JPEGLSLossless,
            uid.ImplicitVRLittleEndian, uid.ExplicitVRBigEndian, "1.2.3.4.5"]))
    _rewrite(data, change)


def _bits(data: bytearray, rng: random.Random) -> None:
    def change(ds: pydicom.Dataset) -> None:
        name = rng.choice(["BitsAllocated", "BitsStored", "HighBit", "SamplesPerPixel",
                           "PixelRepresentation", "PlanarConfiguration"])
        setattr(ds, name, rng.choice([0, 1, 3, 7, 12, 33, 64, 255]))
    _rewrite(data, change)


OPERATIONS: dict[str, Callable[[bytearray, random.Random], None]] = {
    "flip": _flip, "header": _header_bytes, "truncate": _truncate, "insert": _insert,
    "length": _extreme_length, "vr": _bad_vr, "duplicate": _duplicate,
    "more-pixels": _more_pixels_claimed, "pixels-cut": _pixels_cut,
    "syntax": _wrong_syntax, "bits": _bits,
}


def mutate(data: bytes, ops: list[tuple[str, int]]) -> bytes:
    """``data`` with each ``(operation, seed)`` applied in turn."""
    out = bytearray(data)
    for name, seed in ops:
        if len(out) <= 140:
            break
        OPERATIONS[name](out, random.Random(seed))
    return bytes(out)


def random_ops(rng: random.Random) -> list[tuple[str, int]]:
    """One to three operations, for the script's own sampling."""
    names = sorted(OPERATIONS)
    return [(rng.choice(names), rng.randrange(1 << 32)) for _ in range(rng.randint(1, 3))]


# -- running one mutated file through the agent ----------------------------------------------

_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


class FailureLog(logging.Handler):
    """The agent's unexpected failures (``agent.logs.log_failure``) while a case runs, each
    as its origin: the exception's type, the innermost frame and the innermost frame of the
    agent's own code - what a fuzz run buckets its ``internal`` endings by."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.origins: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        first, _, frames = text.partition("\n")
        kind = first.rsplit(": ", 1)[-1]
        found = _FRAME.findall(frames)
        if not found:
            self.origins.append(f"{kind} (no frames): {first[:80]}")
            return
        def name(f: tuple[str, str, str]) -> str:
            path = f[0].split("/site-packages/")[-1].split("/w18/")[-1]
            return f"{path}:{f[1]} {f[2]}"
        ours = [f for f in found if "/agent/" in f[0] and "site-packages" not in f[0]]
        self.origins.append(f"{kind} at {name(found[-1])}"
                            + (f" via {name(ours[-1])}" if ours and ours[-1] != found[-1] else ""))


class Runner:
    """Runs mutated files through what the agent does to an export: the watcher's header
    and completeness checks, then ``clinic2cloud process`` (de-identify, verify, the last
    look, delivery to a folder), and checks every delivered file. Reuses one configuration
    and one set of stages (as the running agent does)."""

    def __init__(self, work: Path) -> None:
        from agent.config import load_config, replace
        from agent.paths import AgentPaths
        from agent.pipeline import build_stages

        self.work = work
        self.cfg = replace(load_config(None, paths=AgentPaths.under(work / "home")),
                           deface_enabled=False, pipeline_workers=1)
        self.stages = build_stages(self.cfg, b"f" * 32)
        self.n = 0

    def run(self, data: bytes) -> dict[str, object]:
        """What happened to one file; raises only for a crash (an escaped exception)."""
        import shutil

        from agent.dicomfiles import is_complete, read_header
        from agent.integrity import check_deliverable
        from agent.oneshot import process_folder
        from agent.sync.manifest import verify_folder
        from tests.conftest import manifests

        self.n += 1
        case = self.work / f"case{self.n}"
        src, out = case / "src", case / "out"
        src.mkdir(parents=True)
        path = src / "f.dcm"
        path.write_bytes(data)
        try:
            header = read_header(path, src)
        except OSError:
            header = None
        complete = is_complete(path, src)
        failures = FailureLog()
        logging.getLogger("agent").addHandler(failures)
        try:
            summary = process_folder(self.cfg, src, out, stages=self.stages)
        finally:
            logging.getLogger("agent").removeHandler(failures)
        invalid: list[str] = []
        delivered = 0
        for manifest in manifests(out):
            delivered += 1
            invalid += verify_folder(manifest.parent)
            files = sorted(p for p in manifest.parent.iterdir() if p.name != "manifest.json")
            try:
                check_deliverable(files)
            except Exception as exc:  # noqa: BLE001 -- recorded: a broken file went out
                invalid.append(str(exc))
        result: dict[str, object] = {
            "header": header is not None, "complete": complete,
            "states": [str(o.state) for o in summary.series],
            "codes": [str(o.code) for o in summary.series],
            "reasons": [o.reason for o in summary.series],
            "failures": failures.origins,
            "delivered": delivered, "invalid": invalid,
        }
        shutil.rmtree(case, ignore_errors=True)
        return result
