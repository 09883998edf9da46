"""De-identification throughput: Clinic2Cloud vs dicognito vs GDCM's gdcmanon, one run.

    python bench/bench_deid.py [--files 2000] [--rounds 3] [--keep DIR]

Generates ``--files`` real-size MR slices (256x256x16-bit, ~130 kB, from pydicom's
MR_small.dcm header with identifying elements and a few private tags planted), then times:

* clinic2cloud: engine + independent verifier (the ``deidentify`` and ``verify`` stages),
  with one process and with one process per core;
* dicognito (Python API, one process: its CLI entry point is broken in this version);
* gdcmanon ``-e`` (PS3.15 Basic Profile, C++, needs a certificate: a throw-away self-signed
  one is made with openssl) and ``--dumb`` (only the few tags given on the command line).

Every tool runs once per round, the tools alternated, and the medians are printed (CPU time
includes the pool's workers), with the range of the per-round ratios. Prints files/s for
each and the ratios against the targets (>= 4x dicognito, >= 1/3 of gdcmanon).

Each round de-identifies with a site secret of its own: the engine remembers, per secret,
what it decided for each value (UIDs, dates, cleaned text), and a running agent meets a
series once - a round must not be served by what an earlier round of the same files left.
The pool is warmed up (started, engine imported) with yet another secret.
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.config import DeidConfig
from agent.deid.stage import deidentify_files
from agent.deid.verify import Rules, load_safe_private, verify_series

SECRET = b"benchmark-secret-0123456789abcdef"


def generate(folder: Path, n: int) -> list[Path]:
    """``n`` slices of 4 series of one study, identifiers planted."""
    template = pydicom.dcmread(str(get_testdata_file("MR_small.dcm")))
    template.Rows = template.Columns = 256
    template.PatientName = "Benchmark^Patient^Middle"
    template.PatientID = "BENCH-0001"
    template.PatientBirthDate = "19700101"
    template.InstitutionName = "Bench General Hospital"
    template.ReferringPhysicianName = "Referrer^Rita"
    template.StationName = "BENCHMR01"
    template.AccessionNumber = "ACC123456"
    template.StudyDescription = "BRAIN ROUTINE"
    block = template.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    block.add_new(0x0C, "IS", "1000")
    block.add_new(0x10, "LO", "private text")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256]
    base = (2000 * np.exp(-((yy - 128) ** 2 + (xx - 128) ** 2) / 5000)).astype(np.int16)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        ds = copy.deepcopy(template)
        series = i % 4
        ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.10.777.1.{series}"
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.10.777.2.{i}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesNumber = series + 1
        ds.InstanceNumber = i // 4 + 1
        noise = rng.integers(0, 50, size=(256, 256), dtype=np.int16)
        ds.PixelData = (base + noise).astype("<i2").tobytes()
        path = folder / f"IM{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


class Clock:
    """Wall time and CPU time (this process and its reaped children: pools, gdcmanon).

    Other work on a shared machine slows the wall clock of every tool differently; CPU
    seconds per file are the fair comparison there, wall time the one a user feels.
    """

    def __enter__(self) -> Clock:
        self.wall0 = time.perf_counter()
        self.cpu0 = self._cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = self._cpu() - self.cpu0

    @staticmethod
    def _cpu() -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime + _pool_cpu()


def _pool_cpu() -> float:
    """CPU seconds of the live pool workers (Linux /proc): they are the fork server's
    children, never reaped by this process, so RUSAGE_CHILDREN does not count them."""
    from agent import procpool

    pool = procpool._pool
    total = 0.0
    for pid in list(getattr(pool, "_processes", None) or {}):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def bench_ours(files: list[Path], out: Path, processes: int, secret: bytes
               ) -> tuple[Clock, Clock]:
    """(engine, engine + verifier) clocks, series by series as the pipeline does."""
    groups = [files[s::4] for s in range(4)]
    rules = Rules(safe_private=load_safe_private())
    if processes > 1:
        # The agent's pool lives as long as the agent: start it (and let its workers import
        # the engine) before timing, as a running agent has long done.
        warm = files[:128]
        results = deidentify_files(warm, out / "warm", site_name="BENCH",
                                   site_secret=SECRET + b"-warm-up",
                                   options=DeidConfig(), processes=processes)
        verify_series(warm, [r.path for r in results], rules, processes=processes)
    outputs = []
    with Clock() as engine:
        for k, group in enumerate(groups):
            results = deidentify_files(
                group, out / str(k), site_name="BENCH", site_secret=secret,
                options=DeidConfig(), processes=processes,
            )
            outputs.append((group, [r.path for r in results]))
    with Clock() as verifier:
        for group, outs in outputs:
            verify_series(group, outs, rules, processes=processes)
    total = Clock()
    total.wall, total.cpu = engine.wall + verifier.wall, engine.cpu + verifier.cpu
    return engine, total


def bench_dicognito(files: list[Path], out: Path) -> Clock | None:
    try:
        from dicognito.anonymizer import Anonymizer
    except ImportError:
        return None
    out.mkdir(parents=True, exist_ok=True)
    anonymizer = Anonymizer()
    with Clock() as clock:
        for f in files:
            ds = pydicom.dcmread(f)
            anonymizer.anonymize(ds)
            ds.save_as(out / f.name)
    return clock


def bench_gdcmanon(src: Path, out: Path, n: int, tmp: Path, dumb: bool) -> Clock | None:
    exe = shutil.which("gdcmanon")
    if exe is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    if dumb:
        cmd = [exe, "--dumb", "--continue", "-r", "--empty", "10,10", "--remove", "10,20",
               "-i", str(src), "-o", str(out)]
    else:
        key, cert = tmp / "key.pem", tmp / "cert.pem"
        if not cert.exists():
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                 str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=bench"],
                check=True, capture_output=True,
            )
        cmd = [exe, "-e", "-c", str(cert), "--continue", "-r", "-i", str(src), "-o", str(out)]
    with Clock() as clock:
        run = subprocess.run(cmd, capture_output=True, text=True)
    made = sum(1 for _ in out.rglob("*.dcm"))
    if run.returncode != 0 or made < n:
        print(f"  gdcmanon {'--dumb' if dumb else '-e'}: exit {run.returncode}, {made} files; "
              f"{run.stderr.strip()[:200]}")
    return clock


def one_round(files: list[Path], src: Path, tmp: Path, cores: int, index: int
              ) -> dict[str, Clock | None]:
    results: dict[str, Clock | None] = {}
    n = len(files)
    for procs in sorted({1, cores}):
        shutil.rmtree(tmp / "ours", ignore_errors=True)
        secret = SECRET + f"-round-{index}-{procs}".encode()  # nothing remembered from before
        engine, total = bench_ours(files, tmp / "ours", procs, secret)
        results[f"clinic2cloud, {procs} process(es), engine only"] = engine
        results[f"clinic2cloud, {procs} process(es), engine + verifier"] = total
    shutil.rmtree(tmp / "dicognito", ignore_errors=True)
    results["dicognito, 1 process"] = bench_dicognito(files, tmp / "dicognito")
    for dumb in (False, True):
        out = tmp / ("gdcm-dumb" if dumb else "gdcm")
        shutil.rmtree(out, ignore_errors=True)
        label = "gdcmanon --dumb" if dumb else "gdcmanon -e (Basic Profile)"
        results[label] = bench_gdcmanon(src, out, n, tmp, dumb)
    return results


def median_clock(clocks: list[Clock | None]) -> Clock | None:
    """Median wall time and median CPU time of several rounds (None if a tool is absent)."""
    got = [c for c in clocks if c is not None]
    if not got:
        return None
    out = Clock()
    out.wall = statistics.median(c.wall for c in got)
    out.cpu = statistics.median(c.cpu for c in got)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--keep", type=Path, help="keep the generated data here")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of every tool, alternated; medians are printed")
    args = parser.parse_args()
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="bench-deid-"))
    src = tmp / "src"
    files = sorted(src.glob("*.dcm")) if src.exists() else []
    if len(files) != args.files:
        shutil.rmtree(src, ignore_errors=True)
        t0 = time.perf_counter()
        files = generate(src, args.files)
        size = sum(f.stat().st_size for f in files) / len(files) / 1024
        print(f"generated {len(files)} files, {size:.0f} kB each, "
              f"in {time.perf_counter() - t0:.1f} s")
    cores = os.cpu_count() or 1
    n = len(files)
    try:
        rounds: list[dict[str, Clock | None]] = []
        for index in range(args.rounds):  # alternated: a busy machine slows every tool alike
            rounds.append(one_round(files, src, tmp, cores, index))
        results = {label: median_clock([r[label] for r in rounds]) for label in rounds[0]}
        load = os.getloadavg()[0]
        print(f"\n{n} files, {cores} cores, {args.rounds} rounds (medians), "
              f"load average {load:.1f}")
        print(f"  {'':<52} {'wall files/s':>12} {'files/CPU-s':>12}")
        for label, c in results.items():
            if c is None:
                print(f"  {label:<52} {'n/a':>12}")
            else:
                print(f"  {label:<52} {rate(n, c.wall):12.1f} {rate(n, c.cpu):12.1f}")

        def ratio(a: str, b: str, attr: str) -> str:
            """How many times faster ``a`` is than ``b``: the medians' ratio and the
            range of the rounds' own ratios (how stable the figure is)."""
            ca, cb = results.get(a), results.get(b)
            if ca is None or cb is None:
                return "n/a"
            each = sorted(getattr(y, attr) / getattr(x, attr) for x, y in
                          ((r[a], r[b]) for r in rounds) if x is not None and y is not None)
            spread = f" [{each[0]:.2f}-{each[-1]:.2f}]" if len(each) > 1 else ""
            return f"{getattr(cb, attr) / getattr(ca, attr):.2f}x{spread}"

        ours_1 = "clinic2cloud, 1 process(es), engine + verifier"
        ours_n = f"clinic2cloud, {cores} process(es), engine + verifier"
        for ref, target in (("dicognito, 1 process", "4x"), ("gdcmanon -e (Basic Profile)",
                                                             "1/3")):
            print(f"  ours vs {ref} (target >= {target}): wall {ratio(ours_n, ref, 'wall')}"
                  f" ({cores} proc), {ratio(ours_1, ref, 'wall')} (1 proc);"
                  f" per CPU-second {ratio(ours_1, ref, 'cpu')}")
        print("  (median of the rounds' times; [range] of the per-round ratios)")
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
