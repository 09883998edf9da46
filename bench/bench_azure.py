"""Upload throughput of the Azure target against a plain SDK upload, on a local Azurite.

    python bench/bench_azure.py [--files 250 --size-mb 2] [--concurrency 4] [--rounds 2]

Writes an export of ``files`` x ``size-mb`` random files, then uploads it to Azurite on
loopback twice per round, into fresh containers:

* **sdk**: ``ContainerClient.upload_blob(name, file, max_concurrency=C)`` for each file in
  turn - the SDK's own parallel block upload, no resume, no verification;
* **sdk+md5**: the same with ``validate_content=True`` - the service (here Azurite, on the
  same cores) checks an MD5 of every request body, as it does for the target;
* **target**: ``AzureTarget.deliver`` of the same files as one series - deterministic
  block IDs recorded in the progress store (resume), SHA-256 checked against the manifest,
  transactional MD5 on every block, Content-MD5 on every blob, conditional writes,
  manifest last.

Prints the throughputs (best round of each), the ratios of the best rounds and the median of
the per-round ratios (runs are paired, which evens out a busy machine). Needs ``azurite-blob`` on
PATH. The export and Azurite's data live in a temporary folder that is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from azure.storage.blob import BlobServiceClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.config import Config, TargetConfig, replace
from agent.paths import AgentPaths
from agent.sync.azure import AzureTarget
from agent.sync.base import Delivery
from agent.sync.manifest import build_manifest, describe_files

KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def start_azurite(location: Path | None) -> tuple[subprocess.Popen[bytes], str]:
    """Azurite on a free loopback port; in memory when ``location`` is None."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    where = ["--location", str(location)] if location else ["--inMemoryPersistence"]
    proc = subprocess.Popen(
        ["azurite-blob", "--blobHost", "127.0.0.1", "--blobPort", str(port), *where,
         "--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("azurite-blob did not start") from None
            time.sleep(0.1)
    cs = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};"
          f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
    return proc, cs


def make_export(folder: Path, files: int, size: int) -> Delivery:
    folder.mkdir(parents=True)
    pairs = []
    for i in range(files):
        path = folder / f"IM{i:05d}.dcm"
        path.write_bytes(os.urandom(size))
        pairs.append((path.name, path))
    described = describe_files(pairs)
    manifest = build_manifest(described, ledger_head="0" * 64, site="BENCH",
                              patient="PAT-0001", study="STU-0001", series="SER-0001")
    return Delivery(series_key="bench", series_path="BENCH/PAT-0001/STU-0001/SER-0001",
                    version=1, files=described, manifest=manifest)


def run_sdk(svc: BlobServiceClient, delivery: Delivery, concurrency: int,
            validate: bool = False) -> float:
    container = svc.create_container(f"sdk{uuid.uuid4().hex[:12]}")
    start = time.perf_counter()
    for f in delivery.files:
        with open(f.local, "rb") as fh:
            container.upload_blob(f"{delivery.location}/{f.path}", fh, length=f.size,
                                  max_concurrency=concurrency, validate_content=validate)
    return time.perf_counter() - start


def run_target(svc: BlobServiceClient, cs: str, root: Path, delivery: Delivery,
               concurrency: int, block_mb: int) -> float:
    name = f"tgt{uuid.uuid4().hex[:12]}"
    svc.create_container(name)
    cfg = replace(
        Config(paths=AgentPaths.under(root / name),
               target=TargetConfig(kind="azure", container=name, connection_string=cs,
                                   concurrency=concurrency, block_size_mb=block_mb)),
        site_name="BENCH",
    )
    target = AzureTarget(cfg)
    try:
        start = time.perf_counter()
        receipt = target.deliver(delivery)
        elapsed = time.perf_counter() - start
    finally:
        target.close()
    assert not receipt.already_present
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=250)
    ap.add_argument("--size-mb", type=float, default=2.0)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--block-mb", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--disk", action="store_true",
                    help="let Azurite persist to disk (noisier: its writes dominate)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="c2c-bench-azure-"))
    proc = None
    try:
        proc, cs = start_azurite(tmp / "azurite" if args.disk else None)
        svc = BlobServiceClient.from_connection_string(cs)
        delivery = make_export(tmp / "export", args.files, int(args.size_mb * (1 << 20)))
        total_mb = sum(f.size for f in delivery.files) / 1e6
        print(f"export: {args.files} files x {args.size_mb} MB = {total_mb:.0f} MB, "
              f"concurrency {args.concurrency}, block {args.block_mb} MiB, Azurite "
              f"{'on disk' if args.disk else 'in memory'}")
        best = {"sdk": float("inf"), "sdk+md5": float("inf"), "target": float("inf")}
        paired: list[float] = []
        for r in range(args.rounds):
            times = {
                "sdk": run_sdk(svc, delivery, args.concurrency),
                "target": run_target(svc, cs, tmp, delivery, args.concurrency, args.block_mb),
                "sdk+md5": run_sdk(svc, delivery, args.concurrency, validate=True),
            }
            for k, v in times.items():
                best[k] = min(best[k], v)
            paired.append(times["sdk"] / times["target"])
            print(f"round {r + 1}: " + "   ".join(
                f"{k} {total_mb / v:6.1f} MB/s" for k, v in times.items())
                + f"   target/sdk {paired[-1]:.2f}")
        rate = {k: total_mb / v for k, v in best.items()}
        print(f"plain SDK upload_blob(max_concurrency={args.concurrency}):      "
              f"{rate['sdk']:.1f} MB/s")
        print(f"SDK upload_blob(..., validate_content=True): {rate['sdk+md5']:.1f} MB/s")
        print(f"AzureTarget.deliver (resume + verification):  {rate['target']:.1f} MB/s")
        print(f"ratio target/sdk (best rounds): {rate['target'] / rate['sdk']:.2f}   "
              f"target/sdk+md5: {rate['target'] / rate['sdk+md5']:.2f}   "
              f"median of per-round target/sdk: {statistics.median(paired):.2f}")
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
