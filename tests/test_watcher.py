"""The watcher against a real folder: slow exports, stalls, junk, many files."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest

from agent.config import Config
from agent.keys import keyed_hash
from agent.series import FileState
from agent.watcher import ExportWatcher
from tests.conftest import write_series


class Collector:
    def __init__(self) -> None:
        self.ready: list[tuple[str, dict[str, FileState], float]] = []
        self.expired: list[str] = []
        self.event = threading.Event()

    def on_ready(self, key: str, files: dict[str, FileState]) -> None:
        self.ready.append((key, files, time.monotonic()))
        self.event.set()

    def on_expired(self, key: str, files: dict[str, FileState]) -> None:
        self.expired.append(key)
        self.event.set()

    def wait_for(self, n: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.ready) + len(self.expired) < n and time.monotonic() < deadline:
            self.event.wait(0.1)
            self.event.clear()


StartWatcher = Callable[..., tuple[ExportWatcher, Collector]]


@pytest.fixture
def start_watcher(make_config: Callable[..., Config]) -> Iterator[StartWatcher]:
    started: list[ExportWatcher] = []

    def start(**overrides: object) -> tuple[ExportWatcher, Collector]:
        cfg = make_config(**overrides)
        got = Collector()
        w = ExportWatcher(cfg.watch, series_key=lambda a, b: keyed_hash(b"k" * 32, a, b),
                          path_hash=lambda p: keyed_hash(b"k" * 32, p), handled={},
                          on_ready=got.on_ready, on_expired=got.on_expired)
        w.start()
        started.append(w)
        return w, got

    yield start
    for w in started:
        w.stop()


def test_slow_export_with_stalled_half_file(start_watcher: StartWatcher, export_dir: Path,
                                            tmp_path: Path) -> None:
    """A viewer writes slices one by one; one file stops halfway for longer than
    stable_seconds. Nothing is handed over before the export is complete."""
    staging = tmp_path / "made"
    files = write_series(staging, 6)
    _, got = start_watcher(watch_stable_seconds=0.6)
    finished = threading.Event()

    def viewer() -> None:
        for i, f in enumerate(files):
            data = f.read_bytes()
            dst = export_dir / "Patient Folder" / f.name
            dst.parent.mkdir(exist_ok=True)
            if i == 3:
                with open(dst, "wb") as fh:
                    fh.write(data[: len(data) // 2])
                    fh.flush()
                    time.sleep(2.0)  # a stall: > 3x stable_seconds
                    fh.write(data[len(data) // 2:])
            else:
                dst.write_bytes(data)
            time.sleep(0.2)
        finished.set()

    t = threading.Thread(target=viewer)
    t.start()
    got.wait_for(1)
    t.join()
    assert finished.is_set()
    assert len(got.ready) == 1
    key, handed, _ = got.ready[0]
    assert len(handed) == 6
    assert all(Path(p).stat().st_size == st.size for p, st in handed.items())


def test_junk_and_incomplete_forever(start_watcher: StartWatcher, export_dir: Path,
                                     tmp_path: Path) -> None:
    (export_dir / "readme.txt").write_text("not dicom")
    (export_dir / "DICOMDIR").write_bytes(b"\0" * 200)
    files = write_series(tmp_path / "made", 2)
    data = files[0].read_bytes()
    (export_dir / "cut.dcm").write_bytes(data[:-300])  # truncated forever
    _, got = start_watcher(watch_stable_seconds=0.3, watch_max_wait_seconds=1.5)
    got.wait_for(1, timeout=10)
    assert got.expired and not got.ready


def test_files_grouped_by_header_across_folders(start_watcher: StartWatcher,
                                                export_dir: Path) -> None:
    _, got = start_watcher(watch_stable_seconds=0.5)
    a1 = write_series(export_dir / "x", 3, prefix="A")
    study = __import__("pydicom").dcmread(a1[0]).StudyInstanceUID
    series = __import__("pydicom").dcmread(a1[0]).SeriesInstanceUID
    write_series(export_dir / "y with spaces", 2, study_uid=study, series_uid=series, prefix="B")
    write_series(export_dir / "x", 4, prefix="C")  # another series in the same folder
    got.wait_for(2)
    sizes = sorted(len(files) for _, files, _ in got.ready)
    assert sizes == [4, 5]


def test_polling_and_long_unicode_paths(start_watcher: StartWatcher, export_dir: Path) -> None:
    _, got = start_watcher(watch_stable_seconds=0.3, watch_polling=True,
                           watch_rescan_seconds=1.0)
    deep = export_dir
    for i in range(8):
        deep = deep / f"Ünïcødé folder {i} {'x' * 20}"
    write_series(deep, 3)
    got.wait_for(1)
    assert len(got.ready) == 1 and len(got.ready[0][1]) == 3


def _copies(folder: Path, n: int, prefix: str) -> list[Path]:
    """``n`` instances of one series, made from one written slice by giving each copy its
    own SOP Instance UID of the same length (writing 2,000 slices with pydicom was most of
    this test's time; the watcher reads only the series and wholeness)."""
    first = write_series(folder, 1, prefix=prefix)[0]
    data = first.read_bytes()
    uid = pydicom.dcmread(first, stop_before_pixels=True).SOPInstanceUID.encode()
    out = [first]
    for i in range(1, n):
        path = folder / f"{prefix}{i:05d}.dcm"
        path.write_bytes(data.replace(uid, uid[:-7] + b"9" + b"%06d" % i))
        out.append(path)
    return out


def test_many_interleaved_series(start_watcher: StartWatcher, export_dir: Path,
                                 tmp_path: Path) -> None:
    """A 2,000-file export of several series arriving interleaved."""
    made = [_copies(tmp_path / f"s{i}", 400, prefix=f"S{i}_") for i in range(5)]
    _, got = start_watcher(watch_stable_seconds=1.0, watch_rescan_seconds=5.0)
    for group in zip(*made, strict=True):
        for f in group:
            (export_dir / f.name).write_bytes(f.read_bytes())
    got.wait_for(5, timeout=60)
    assert sorted(len(files) for _, files, _ in got.ready) == [400] * 5
