"""Throughput as a user sees it: whole processes on the same files, side by side.

    python bench/bench_process.py [--series 10] [--files-per-series 200] [--rounds 5]
                                  [--keep DIR] [--skip-agent] [--stages]

Generates ``series x files-per-series`` real-size MR slices (256x256, 16-bit, identifiers
and private tags planted; see :mod:`bench.slices`), then, alternating the tools in every
round so that a busy machine slows them alike, times as whole processes:

* ``clinic2cloud process SRC --out DIR`` with defacing off (what a user runs: staging copy,
  de-identification, the independent verifier, delivery, SHA-256, manifest, ledger);
* dicognito's command line (``dicognito -o DIR SRC``; run through ``python -c`` because the
  console script of 0.19 is broken);
* GDCM's ``gdcmanon -e`` (PS3.15 Basic Profile, C++).

With ``--stages``: the CPU of each step (survey, staging copy, size check, every stage,
delivery), the whole run in one thread so that each step is measured where it runs.

Then the agent: ``clinic2cloud run --headless`` watching an export folder, the same files
copied in, the time from the last file written to the last manifest in the outbox.

With ``--head``: a 180-slice 1 mm head series (Colin27, Debian mricron-data) through
``clinic2cloud process`` with defacing on, whole process, and the time of each stage (the
issue's target: <= 5 s on 2 cores).

Prints medians of wall time, files/s, CPU seconds (all processes) and peak memory (the
whole process tree), the
ratios against the issue's targets (>= 4x dicognito, >= 0.5x gdcmanon) and the load average.

Session 6 (2,000 files, 266 MB; the machine shared, load 2-4: CPU seconds compared, old and
new alternated). ``process`` as a whole process, CPU of every process of it (sampled from
/proc per process): e0ae57b 9.21 s -> b405e52 7.21 s (medians of 4 alternated rounds; the
main process 3.67 -> 2.77 s); main with this session's pool and staging commits reverted
10.36 s against 7.91 s with them. What went: the fork server and its resource tracker (the
one-shot forks its workers from itself: 0.65 s), the staging copy (hard links, checked
before delivery: 266 MB less written to the page cache), every worker's person-name filter
(0.14 s each). This script at load 3.4: process 6.33 CPU-s / 7.38 s wall, dicognito 7.32 /
7.91, gdcmanon 0.94 / 1.04 - 2.3x dicognito and 0.30x gdcmanon by CPU on idle cores (the
targets need about 3.7 CPU-s for either). At session start (load 4.9) process was 10.72
CPU-s beside dicognito's 9.10.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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


def _become_subreaper() -> None:
    """Adopt orphaned descendants (Linux): a fork server and its workers outlive no one,
    but they are not children of the command, so only a subreaper reaps them - and only
    what is reaped counts in RUSAGE_CHILDREN, the CPU time measured here."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _tree_sum(root: int, value: Callable[[list[str]], float]) -> float:
    """The sum of ``value`` (of a process's /proc stat fields after the command name) over
    ``root`` and its live descendants (Linux /proc)."""
    procs: dict[int, tuple[int, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            procs[int(stat.parent.name)] = (int(fields[1]), value(fields))
        except (OSError, ValueError, IndexError):
            continue
    children: dict[int, list[int]] = {}
    for pid, (ppid, _value) in procs.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += procs.get(pid, (0, 0.0))[1]
        todo += children.get(pid, [])
    return total


def _tree_rss_mb(root: int) -> float:
    """Resident memory of ``root`` and its descendants now, in MB."""
    return _tree_sum(root, lambda f: int(f[21])) * os.sysconf("SC_PAGE_SIZE") / 1e6


def timed(cmd: list[str], env: dict[str, str] | None = None) -> Run:
    """Run ``cmd`` to its end; wall time, CPU time of it and every descendant (workers of
    a pool, a fork server), and the peak resident memory of the whole process tree
    (sampled every 0.1 s; shared pages count in each process)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)
    peak = 0.0
    err = b""
    while proc.poll() is None:
        peak = max(peak, _tree_rss_mb(proc.pid))
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    if proc.stderr:
        err = proc.stderr.read()
        proc.stderr.close()
    if proc.returncode != 0:
        print(f"  {Path(cmd[0]).name} exited {proc.returncode}: "
              f"{err.decode(errors='replace').strip()[-300:]}")
    while True:  # reap the adopted descendants (a fork server ends when its parent does)
        try:
            os.wait()
        except ChildProcessError:
            break
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(wall=wall, cpu=cpu, max_rss_mb=peak)


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


def _manifests(outbox: Path) -> int:
    """Delivered manifests (a delivery's folder may be renamed while it is walked)."""
    return sum("manifest.json" in files and not Path(root).name.endswith(".partial")
               for root, _dirs, files in os.walk(outbox))


@dataclass
class AgentRun:
    #: Seconds from the last exported file written to the last manifest in the outbox.
    latency: float
    #: CPU seconds of the agent and its pool from the first exported file to the last
    #: manifest (start-up before the export excluded).
    cpu: float
    max_rss_mb: float


def _tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of ``root`` and its live descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    return _tree_sum(root, lambda f: (int(f[11]) + int(f[12])) / ticks)


def agent_latency(src: Path, tmp: Path, stable: float, series: int,
                  command: list[str] | None = None) -> AgentRun:
    """A running agent (``command``, default ``clinic2cloud``) watching an export folder:
    the time from the last exported file to the last manifest, its CPU meanwhile (the
    pool's workers are its descendants) and its peak memory."""
    export, outbox, home = tmp / "agent-export", tmp / "agent-outbox", tmp / "agent-home"
    for d in (export, outbox, home):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    config = tmp / "agent.toml"
    config.write_text(
        f'[watch]\nfolder = "{export}"\nstable_seconds = {stable}\n'
        f'[target]\nkind = "folder"\npath = "{outbox}"\n[deface]\nenabled = false\n')
    env = {**os.environ, "CLINIC2CLOUD_HOME": str(home)}
    agent = subprocess.Popen([*(command or [clinic2cloud()]), "run", "--headless",
                              "--config", str(config)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2.0)  # let it start and finish its first (empty) scan
        cpu0 = _tree_cpu(agent.pid)
        shutil.copytree(src, export / "study", dirs_exist_ok=True)
        last = time.perf_counter()
        deadline = last + 600
        peak = 0.0
        while time.perf_counter() < deadline:
            if _manifests(outbox) >= series:
                return AgentRun(time.perf_counter() - last, _tree_cpu(agent.pid) - cpu0,
                                max(peak, _tree_rss_mb(agent.pid)))
            peak = max(peak, _tree_rss_mb(agent.pid))
            time.sleep(0.1)
        raise RuntimeError("the agent did not deliver every series within 10 minutes")
    finally:
        agent.terminate()
        agent.wait(30)


COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")
HEAD_STAGES = r"""
import json, sys, time
from pathlib import Path
import agent.pipeline as p
import agent.oneshot as o
from agent.config import load_config
times = {}
build = p.build_stages
def timed_stages(cfg, key):
    stages = build(cfg, key)
    for stage in stages:
        call = type(stage).__call__
        def wrap(self, work, call=call, name=stage.name):
            t0 = time.perf_counter()
            try:
                return call(self, work)
            finally:
                times[name] = times.get(name, 0.0) + time.perf_counter() - t0
        type(stage).__call__ = wrap
    return stages
o.build_stages = timed_stages
for name in ("take", "_deliver"):
    call = getattr(p.Pipeline, name)
    def wrap(self, *a, call=call, name=name, **k):
        t0 = time.perf_counter()
        try:
            return call(self, *a, **k)
        finally:
            times[name.strip("_")] = times.get(name.strip("_"), 0.0) + time.perf_counter() - t0
    setattr(p.Pipeline, name, wrap)
cfg = load_config(Path(sys.argv[3]))
t0 = time.perf_counter()
summary = o.process_folder(cfg, Path(sys.argv[1]), Path(sys.argv[2]))
times["total"] = time.perf_counter() - t0
times["delivered"] = summary.delivered
print(json.dumps(times))
"""


STAGE_CPU = r"""
import collections, json, sys, time
from pathlib import Path
import agent.integrity as integrity
import agent.limits as limits
import agent.oneshot as o
import agent.pipeline as p
import agent.staging as st
from agent.config import load_config
cpu = collections.Counter()
def timed(owner, name, label):
    call = getattr(owner, name)
    def wrap(*a, **k):
        t0 = time.process_time()
        try:
            return call(*a, **k)
        finally:
            cpu[label] += time.process_time() - t0
    setattr(owner, name, wrap)
build = p.build_stages
def timed_stages(cfg, key):
    stages = build(cfg, key)
    for stage in stages:
        timed(type(stage), "__call__", stage.name)
    return stages
o.build_stages = timed_stages
timed(o, "survey_export", "survey")
timed(st.Staging, "take", "staging copy")
timed(p, "check_decoded_size", "size check")
timed(p.Pipeline, "_deliver", "delivery")
class InThisThread:  # one series after the other, every stage in this thread: CPU = time
    def __init__(self, *a, **k): pass
    def __enter__(self): return self
    def __exit__(self, *a): pass
    def map(self, f, items): return [f(x) for x in items]
o.ThreadPoolExecutor = InThisThread
cfg = load_config(Path(sys.argv[3]))
t0 = time.process_time()
summary = o.process_folder(cfg, Path(sys.argv[1]), Path(sys.argv[2]))
cpu["total"] = time.process_time() - t0
cpu["other"] = 2 * cpu["total"] - sum(cpu.values())
print(json.dumps({"delivered": summary.delivered, **cpu}))
"""


def stage_cpu(src: Path, tmp: Path, n: int) -> None:
    """CPU seconds of each step of ``clinic2cloud process``, all in one thread (one worker,
    no pool), so that every step's CPU is measured where it runs."""
    config = tmp / "stages.toml"
    config.write_text("[deface]\nenabled = false\n[pipeline]\nworkers = 1\n")
    out = tmp / "out-stages"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "CLINIC2CLOUD_HOME": str(tmp / "home-stages")}
    run = subprocess.run([sys.executable, "-c", STAGE_CPU, str(src), str(out), str(config)],
                         env=env, capture_output=True, text=True, check=False, cwd=ROOT)
    lines = run.stdout.strip().splitlines()
    if run.returncode != 0 or not lines:
        print(f"  stage timing failed: {run.stderr.strip()[-500:]}")
        return
    cpu = json.loads(lines[-1])
    total = cpu["total"]
    print(f"  CPU per step, one thread ({cpu.pop('delivered')} series delivered, load "
          f"{os.getloadavg()[0]:.1f}):")
    for name, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]):
        print(f"    {name:<14} {seconds:7.2f} s {1000 * seconds / n:7.2f} ms/file "
              f"{100 * seconds / total:5.1f} %")


def head_series(tmp: Path, slices: int = 180) -> Path:
    """Colin27 resampled to 256 x 256 x ``slices`` voxels of 1 mm, as an MR DICOM series."""
    import numpy as np
    import SimpleITK as sitk

    sys.path.insert(0, str(ROOT))
    from tests.deface.dicom_writer import write_mr_series

    out = tmp / "head"
    if len(list(out.glob("*.dcm"))) == slices:
        return out
    shutil.rmtree(out, ignore_errors=True)
    head = sitk.ReadImage(str(COLIN), sitk.sitkFloat32)
    size = np.array(head.GetSize())
    centre = np.array(head.TransformContinuousIndexToPhysicalPoint(
        [float(v) for v in (size - 1) / 2.0]))
    shape = np.array([256, 256, slices])
    ref = sitk.Image([int(v) for v in shape], sitk.sitkFloat32)
    ref.SetSpacing((1.0, 1.0, 1.0))
    ref.SetOrigin(tuple(centre - (shape - 1) / 2.0))
    img = sitk.Resample(head, ref, sitk.Transform(), sitk.sitkLinear, 0.0) * 8.0
    write_mr_series(img, out, bits_stored=12)
    return out


def head_bench(tmp: Path, rounds: int) -> None:
    """The defacing-on target: one 180-slice 1 mm head, whole process, and its stages."""
    if not COLIN.is_file():
        raise SystemExit("Colin27 not found: apt-get install mricron-data")
    src = head_series(tmp)
    config = tmp / "deface.toml"
    config.write_text("[deface]\nenabled = true\n")
    env = {**os.environ, "CLINIC2CLOUD_HOME": str(tmp / "home-head")}
    runs = []
    for _ in range(rounds):
        out = tmp / "out-head"
        shutil.rmtree(out, ignore_errors=True)
        runs.append(timed([clinic2cloud(), "process", str(src), "--out", str(out),
                           "--config", str(config), "--json"], env))
        if not list(out.rglob("manifest.json")):
            print("  the head series was not delivered (quarantined or withheld?)")
    shutil.rmtree(tmp / "out-head", ignore_errors=True)
    stages = subprocess.run([sys.executable, "-c", HEAD_STAGES, str(src), str(tmp / "out-head"),
                             str(config)], env=env, capture_output=True, text=True, check=False)
    wall = statistics.median(r.wall for r in runs)
    print(f"\n180-slice 1 mm head, defacing on, {rounds} rounds, load average "
          f"{os.getloadavg()[0]:.1f}: whole process {wall:.2f} s wall (target <= 5 s), "
          f"CPU {statistics.median(r.cpu for r in runs):.2f} s, "
          f"peak {statistics.median(r.max_rss_mb for r in runs):.0f} MB")
    lines = stages.stdout.strip().splitlines()
    if stages.returncode == 0 and lines:
        print("  in-process stage times (s): " + ", ".join(
            f"{k} {v:.2f}" for k, v in json.loads(lines[-1]).items()))
    else:
        print(f"  stage timing failed: {stages.stderr.strip()[-500:]}")


def compare(tools: dict[str, Tool], n: int, size: int, rounds: int
            ) -> tuple[dict[str, float], float]:
    """The table of medians and the ratios against the targets; (report, our wall)."""
    load = os.getloadavg()[0]
    print(f"\n{n} files ({size / 1e6:.0f} MB), {os.cpu_count()} cores, "
          f"{rounds} rounds, load average {load:.1f}")
    print(f"  {'':<22} {'wall s':>8} {'files/s':>9} {'CPU s':>7} {'CPU ms/file':>12} "
          f"{'peak MB':>8}")
    for t in tools.values():
        wall, cpu = t.median("wall"), t.median("cpu")
        print(f"  {t.name:<22} {wall:8.2f} {n / wall:9.0f} {cpu:7.2f} {1000 * cpu / n:12.2f} "
              f"{t.median('max_rss_mb'):8.0f}")
    # Wall time on a shared machine depends on what else runs; CPU seconds much less.
    # On 2 idle cores a tool using both finishes in about CPU / 2.
    c2c_cpu = tools["clinic2cloud process"].median("cpu")
    ours = tools["clinic2cloud process"].median("wall")
    report: dict[str, float] = {"files": n, "load": load}
    for ref, target in (("dicognito", 4.0), ("gdcmanon -e", 0.5)):
        if ref in tools:
            ratio = tools[ref].median("wall") / ours
            report[ref] = ratio
            by_cpu = tools[ref].median("cpu") / (c2c_cpu / min(2, os.cpu_count() or 1))
            report[f"{ref} (cpu)"] = by_cpu
            print(f"  clinic2cloud vs {ref}: {ratio:.2f}x wall, {by_cpu:.2f}x by CPU on "
                  f"idle cores (target >= {target}x)")
    return report, ours


def agent_report(src: Path, tmp: Path, args: argparse.Namespace, ours: float) -> float:
    run = agent_latency(src, tmp, args.stable_seconds, args.series)
    budget = args.stable_seconds + ours + 2.0
    print(f"  agent: last exported file -> last manifest {run.latency:.2f} s "
          f"(target <= stable {args.stable_seconds:.0f} s + process {ours:.2f} s "
          f"+ 2 s = {budget:.2f} s), CPU {run.cpu:.2f} s from the first exported file, "
          f"peak {run.max_rss_mb:.0f} MB, load {os.getloadavg()[0]:.1f}")
    return run.latency


def compiled_like_installed() -> None:
    """Byte-compile the agent's sources, as installing a wheel does: where the environment
    says PYTHONDONTWRITEBYTECODE, every run would otherwise compile them again (about half a
    second of CPU per interpreter), which no installed agent and no other tool here pays."""
    import compileall

    compileall.compile_dir(str(ROOT / "agent"), quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--files-per-series", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stable-seconds", type=float, default=2.0)
    parser.add_argument("--keep", type=Path, help="keep the generated data here")
    parser.add_argument("--skip-agent", action="store_true")
    parser.add_argument("--stages", action="store_true",
                        help="also the CPU of each step, measured in one thread")
    parser.add_argument("--head", action="store_true",
                        help="the defacing-on head series instead (see the module doc)")
    args = parser.parse_args()
    _become_subreaper()
    compiled_like_installed()
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="bench-process-"))
    if args.head:
        try:
            head_bench(tmp, args.rounds)
        finally:
            if args.keep is None:
                shutil.rmtree(tmp, ignore_errors=True)
        return
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
        report, ours = compare(tools, n, size, args.rounds)
        if args.stages:
            stage_cpu(src, tmp, n)
        if not args.skip_agent:
            report["agent_latency"] = agent_report(src, tmp, args, ours)
        print(json.dumps(report))
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
