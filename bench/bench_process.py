"""Throughput as a user sees it: whole processes on the same files, side by side.

    python bench/bench_process.py [--series 10] [--files-per-series 200] [--rounds 5]
                                  [--keep DIR] [--skip-agent]

Generates ``series x files-per-series`` real-size MR slices (256x256, 16-bit, identifiers
and private tags planted; see :mod:`bench.slices`), then, alternating the tools in every
round so that a busy machine slows them alike, times as whole processes:

* ``clinic2cloud process SRC --out DIR`` with defacing off (what a user runs: staging copy,
  de-identification, the independent verifier, delivery, SHA-256, manifest, ledger);
* dicognito's command line (``dicognito -o DIR SRC``; run through ``python -c`` because the
  console script of 0.19 is broken);
* GDCM's ``gdcmanon -e`` (PS3.15 Basic Profile, C++).

Then the agent: ``clinic2cloud run --headless`` watching an export folder, the same files
copied in, the time from the last file written to the last manifest in the outbox.

Prints medians of wall time, files/s, CPU seconds and peak memory (largest process), the
ratios against the issue's targets (>= 4x dicognito, >= 0.5x gdcmanon) and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from slices import generate_study

ROOT = Path(__file__).resolve().parents[1]
DICOGNITO = "import sys; from dicognito.__main__ import main; main(sys.argv[1:])"


@dataclass
class Run:
    wall: float
    cpu: float
    max_rss_mb: float


@dataclass
class Tool:
    name: str
    runs: list[Run] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)


GNU_TIME = Path("/usr/bin/time")


def timed(cmd: list[str], env: dict[str, str] | None = None) -> Run:
    """Run ``cmd`` to its end; wall time, CPU time and peak RSS of its largest process.

    A child forked from this (large) Python process inherits its resident size in its
    peak-RSS counter, so the peak is measured by GNU time, a small process, where present.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        full = ([str(GNU_TIME), "-f", "%M", "-o", rss.name, *cmd] if GNU_TIME.exists()
                else cmd)
        t0 = time.perf_counter()
        proc = subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        if code != 0:
            print(f"  {Path(cmd[0]).name} exited {code}: {err.strip()[-300:]}")
        text = rss.read().strip().splitlines()
        peak_kb = float(text[-1]) if text and text[-1].isdigit() else usage.ru_maxrss
    return Run(wall=wall, cpu=usage.ru_utime + usage.ru_stime, max_rss_mb=peak_kb / 1024)


def self_signed(tmp: Path) -> Path:
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=bench"],
                       check=True, capture_output=True)
    return cert


def clinic2cloud() -> str:
    exe = Path(sys.executable).with_name("clinic2cloud")
    return str(exe) if exe.exists() else "clinic2cloud"


def run_round(tools: dict[str, Tool], src: Path, tmp: Path, config: Path, n: int) -> None:
    env = {**os.environ, "CLINIC2CLOUD_HOME": str(tmp / "home")}
    commands: dict[str, tuple[list[str], dict[str, str] | None]] = {
        "clinic2cloud process": (
            [clinic2cloud(), "process", str(src), "--out", str(tmp / "out-c2c"), "--config",
             str(config), "--json"], env),
        "dicognito": ([sys.executable, "-c", DICOGNITO, "--quiet", "-o",
                       str(tmp / "out-dicognito"), str(src)], None),
    }
    gdcm = shutil.which("gdcmanon")
    if gdcm:
        commands["gdcmanon -e"] = ([gdcm, "-e", "-c", str(self_signed(tmp)), "--continue",
                                    "-r", "-i", str(src), "-o", str(tmp / "out-gdcm")], None)
    for name, (cmd, cmd_env) in commands.items():
        out = Path(cmd[cmd.index("--out") + 1] if "--out" in cmd else
                   cmd[cmd.index("-o") + 1])
        shutil.rmtree(out, ignore_errors=True)
        run = timed(cmd, cmd_env)
        made = sum(1 for p in out.rglob("*") if p.is_file() and p.name != "manifest.json")
        if made < n:
            print(f"  {name}: only {made} of {n} files written")
        tools.setdefault(name, Tool(name)).runs.append(run)


def agent_latency(src: Path, tmp: Path, stable: float, series: int) -> float:
    """Seconds from the last exported file to the last manifest, with a running agent."""
    export, outbox, home = tmp / "agent-export", tmp / "agent-outbox", tmp / "agent-home"
    for d in (export, outbox, home):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    config = tmp / "agent.toml"
    config.write_text(
        f'[watch]\nfolder = "{export}"\nstable_seconds = {stable}\n'
        f'[target]\nkind = "folder"\npath = "{outbox}"\n[deface]\nenabled = false\n')
    env = {**os.environ, "CLINIC2CLOUD_HOME": str(home)}
    agent = subprocess.Popen([clinic2cloud(), "run", "--headless", "--config", str(config)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2.0)  # let it start and finish its first (empty) scan
        shutil.copytree(src, export / "study", dirs_exist_ok=True)
        last = time.perf_counter()
        deadline = last + 600
        while time.perf_counter() < deadline:
            if sum(1 for _ in outbox.rglob("manifest.json")) >= series:
                return time.perf_counter() - last
            time.sleep(0.05)
        raise RuntimeError("the agent did not deliver every series within 10 minutes")
    finally:
        agent.terminate()
        agent.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--files-per-series", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stable-seconds", type=float, default=2.0)
    parser.add_argument("--keep", type=Path, help="keep the generated data here")
    parser.add_argument("--skip-agent", action="store_true")
    args = parser.parse_args()
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="bench-process-"))
    src = tmp / "src"
    n = args.series * args.files_per_series
    if sum(1 for _ in src.rglob("*.dcm")) != n:
        shutil.rmtree(src, ignore_errors=True)
        generate_study(src, args.series, args.files_per_series)
    size = sum(p.stat().st_size for p in src.rglob("*.dcm"))
    config = tmp / "nodeface.toml"
    config.write_text("[deface]\nenabled = false\n")
    try:
        tools: dict[str, Tool] = {}
        for _ in range(args.rounds):
            run_round(tools, src, tmp, config, n)
        load = os.getloadavg()[0]
        print(f"\n{n} files ({size / 1e6:.0f} MB), {os.cpu_count()} cores, "
              f"{args.rounds} rounds, load average {load:.1f}")
        print(f"  {'':<22} {'wall s':>8} {'files/s':>9} {'CPU s':>7} {'peak MB':>8}")
        for t in tools.values():
            wall = t.median("wall")
            print(f"  {t.name:<22} {wall:8.2f} {n / wall:9.0f} {t.median('cpu'):7.2f} "
                  f"{t.median('max_rss_mb'):8.0f}")
        ours = tools["clinic2cloud process"].median("wall")
        report = {"files": n, "load": load}
        for ref, target in (("dicognito", 4.0), ("gdcmanon -e", 0.5)):
            if ref in tools:
                ratio = tools[ref].median("wall") / ours
                report[ref] = ratio
                print(f"  clinic2cloud vs {ref}: {ratio:.2f}x (target >= {target}x)")
        if not args.skip_agent:
            latency = agent_latency(src, tmp, args.stable_seconds, args.series)
            budget = args.stable_seconds + ours + 2.0
            print(f"  agent: last exported file -> last manifest {latency:.2f} s "
                  f"(target <= stable {args.stable_seconds:.0f} s + process {ours:.2f} s "
                  f"+ 2 s = {budget:.2f} s)")
            report["agent_latency"] = latency
        print(json.dumps(report))
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
