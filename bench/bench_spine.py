"""Spine benchmarks: export-to-manifest latency, and the idle cost of a big export folder.

    python bench/bench_spine.py [--files 200] [--idle-files 50000]

1. Latency: a 200-file MR series is exported into the watched folder of a running
   `clinic2cloud run --headless` (de-identification and verification on, defacing off);
   the time from the last byte written to its manifest appearing, minus stable_seconds,
   is the spine's own processing time.
2. Idle: an export folder holding 50,000 files (1,000 DICOM files in 10 series that get
   delivered, the rest other files); once everything is delivered, CPU and memory of the
   agent process are sampled over 30 s of doing nothing (rescan every 60 s).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import write_series

STABLE = 2.0


def _agent(home: Path, export: Path, outbox: Path, rescan: float) -> subprocess.Popen[bytes]:
    cfg = home / "c.toml"
    home.mkdir(parents=True, exist_ok=True)
    cfg.write_text(f'[watch]\nfolder = "{export}"\nstable_seconds = {STABLE}\n'
                   f'rescan_seconds = {rescan}\n[target]\npath = "{outbox}"\n'
                   "[deface]\nenabled = false\n")
    env = {**os.environ, "CLINIC2CLOUD_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "agent", "run", "--headless", "--config",
                             str(cfg)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
    return total


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _rss_mb(pid: int) -> float:
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _wait_manifests(outbox: Path, n: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list(outbox.rglob("manifest.json"))) >= n:
            return time.monotonic()
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {n} manifests")


def latency(root: Path, n: int) -> None:
    made = write_series(root / "made", n)
    export, outbox = root / "export", root / "outbox"
    export.mkdir(parents=True)
    outbox.mkdir(parents=True)
    proc = _agent(root / "home", export, outbox, rescan=60)
    try:
        time.sleep(2.0)
        for f in made:
            shutil.copyfile(f, export / f.name)
        last_byte = time.monotonic()
        done = _wait_manifests(outbox, 1, 300)
    finally:
        proc.terminate()
        proc.wait(10)
    took = done - last_byte
    print(f"latency: {n}-file export, last byte -> manifest {took:.2f} s "
          f"(stable_seconds {STABLE:.0f} + {took - STABLE:.2f} s processing)")


def idle(root: Path, total: int) -> None:
    export, outbox = root / "export", root / "outbox"
    export.mkdir(parents=True)
    outbox.mkdir(parents=True)
    for s in range(10):
        write_series(export / f"study{s}", 100, prefix=f"S{s}_")
    junk = export / "other"
    junk.mkdir()
    for i in range(total - 1000):
        sub = junk / f"d{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir()
        (sub / f"f{i:06d}.txt").write_bytes(b"x" * 64)
    proc = _agent(root / "home", export, outbox, rescan=60)
    try:
        t0 = time.monotonic()
        _wait_manifests(outbox, 10, 600)
        print(f"idle: first pass over {total} files and 10 deliveries took "
              f"{time.monotonic() - t0:.1f} s")
        time.sleep(3)
        # One full rescan period: the average includes exactly one rescan of every file.
        c0, w0 = _cpu_seconds(proc.pid), time.monotonic()
        time.sleep(60)
        c1, w1 = _cpu_seconds(proc.pid), time.monotonic()
        print(f"idle: CPU {100 * (c1 - c0) / (w1 - w0):.2f} % of one core averaged over "
              f"{w1 - w0:.0f} s (one rescan period), {c1 - c0:.2f} CPU-s in all; "
              f"RSS {_rss_mb(proc.pid):.0f} MB")
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--idle-files", type=int, default=50_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        latency(Path(tmp) / "lat", args.files)
    with tempfile.TemporaryDirectory() as tmp:
        idle(Path(tmp) / "idle", args.idle_files)


if __name__ == "__main__":
    main()
