"""Receiving over DICOM on loopback: the agent's node against dcmtk's storescp.

    python bench/bench_dicomnode.py [--files 300] [--rounds 5] [--nagle] [--keep DIR]

Generates one series of real-size MR slices (256x256, 16-bit, about 130 kB a file; see
:mod:`bench.slices`) and sends it with dcmtk's ``storescu`` (one association, as a PACS
does), alternating in every round between:

* the agent: ``clinic2cloud run --headless`` with ``[dicom] listen = true`` (the whole
  process as a clinic runs it: each instance checked whole, fsynced and renamed into the
  intake before "success", the intake watcher reading its header). The quiet time is set
  long, so that no series is processed while it receives;
* ``storescp -od DIR`` receiving the same files (dcmtk's C++ SCP; it writes each file but
  does not fsync it).

Debian builds dcmtk with Nagle's algorithm on; with it every C-STORE waits for a delayed
TCP acknowledgement (about 40 ms a file on loopback), which would measure the kernel, not
the receivers. dcmtk's ``TCP_NODELAY=1`` environment switch turns it off for storescu and
storescp (pynetdicom always sets TCP_NODELAY); ``--nagle`` keeps dcmtk's default.

Prints the median wall time of the send, instances per second and MB/s for both, the
receiver's CPU milliseconds per instance (less sensitive to a busy machine than wall
time), their ratio, and the load average (the machine is shared: numbers are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slices import generate_study

from tests.dcmtk import dcmtk, find_dcmtk

ROOT = Path(__file__).resolve().parents[1]
#: The environment of the dcmtk processes (see the module docstring).
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the receiver exited ({proc.returncode}) before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)  # a benchmark may poll; tests wait on events
    raise SystemExit("the receiver never listened")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process and its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _send(port: int, called: str, files: list[Path], receiver: int) -> tuple[float, float]:
    """Wall seconds of the send, and CPU seconds the receiver spent meanwhile."""
    cpu0 = _cpu_seconds(receiver)
    t0 = time.perf_counter()
    r = subprocess.run([dcmtk("storescu"), "-aet", "BENCH", "-aec", called, "127.0.0.1", str(port),
                        *map(str, files)], capture_output=True, text=True, env=DCMTK_ENV)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"storescu failed: {r.stderr[-2000:]}")
    return wall, _cpu_seconds(receiver) - cpu0


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_agent(work: Path, files: list[Path]) -> tuple[float, float]:
    home = work / "agent-home"
    shutil.rmtree(home, ignore_errors=True)
    (work / "outbox").mkdir(exist_ok=True)
    port = _free_port()
    config = work / "bench.toml"
    config.write_text(f'[target]\npath = "{work / "outbox"}"\n[deface]\nenabled = false\n'
                      f'[dicom]\nlisten = true\nport = {port}\nbind_address = "127.0.0.1"\n'
                      "stable_seconds = 3600\n", encoding="utf-8")
    env = {**os.environ, "CLINIC2CLOUD_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--headless", "--config",
                             str(config)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port, proc)
        wall = _send(port, "CLINIC2CLOUD", files, proc.pid)
        received = len(list((home / "state" / "dicom" / "intake").glob("*.dcm")))
        if received != len(files):
            raise SystemExit(f"the agent holds {received} of {len(files)} instances")
        return wall
    finally:
        _stop(proc)


def run_storescp(work: Path, files: list[Path]) -> tuple[float, float]:
    out = work / "storescp-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    port = _free_port()
    proc = subprocess.Popen([dcmtk("storescp"), "-aet", "STORESCP", "-od", str(out), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=DCMTK_ENV)
    try:
        _wait_listening(port, proc)
        wall = _send(port, "STORESCP", files, proc.pid)
        if len(list(out.iterdir())) != len(files):
            raise SystemExit("storescp did not keep every instance")
        return wall
    finally:
        _stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: temporary)")
    parser.add_argument("--nagle", action="store_true",
                        help="leave dcmtk's Nagle algorithm on (Debian's default)")
    args = parser.parse_args()
    if args.nagle:
        DCMTK_ENV.pop("TCP_NODELAY", None)
    for tool in ("storescu", "storescp"):
        if find_dcmtk(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install dcmtk")
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-dicomnode-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        files = generate_study(work / "series", 1, args.files)
        size_mb = sum(f.stat().st_size for f in files) / 1e6
        times: dict[str, list[tuple[float, float]]] = {"agent": [], "storescp": []}
        for n in range(args.rounds):
            order = [("agent", run_agent), ("storescp", run_storescp)]
            for name, run in order if n % 2 == 0 else order[::-1]:
                times[name].append(run(work, files))
        result = {"files": len(files), "megabytes": round(size_mb, 1),
                  "rounds": args.rounds, "dcmtk_nagle": args.nagle,
                  "load_average": os.getloadavg()}
        for name, runs in times.items():
            median = statistics.median(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            result[name] = {"median_seconds": round(median, 3),
                            "instances_per_second": round(len(files) / median, 1),
                            "mb_per_second": round(size_mb / median, 1),
                            "receiver_cpu_ms_per_instance": round(1000 * cpu / len(files), 2),
                            "all_seconds": [round(w, 3) for w, _ in runs]}
        rates = {name: len(files) / statistics.median(w for w, _ in runs)
                 for name, runs in times.items()}
        result["agent_vs_storescp"] = round(rates["agent"] / rates["storescp"], 2)
        print(json.dumps(result, indent=2))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
