"""The cloud loop as a clinician waits for it: last exported file -> results on disk.

Colin27 (a real head, Debian mricron-data) is exported as a 181-slice MR series with a
planted identity into the watched folder of a real agent delivering to Azurite (blob +
queue, on loopback); ``clinic2cloud-worker --listen`` runs as its own process with the
reference step (brain mask, SEG + SR); the agent's results poller brings the results home
and re-identifies them. Each round is a new study. Printed per round: seconds from the last
exported file to the re-identified SEG and SR in the results folder, and the same minus
``stable_seconds`` (the time the agent waits on purpose). Target: under 60 s on 2 cores
with the reference step.

    python bench/bench_roundtrip.py                 # 3 rounds, defacing on (the default)
    python bench/bench_roundtrip.py --no-deface --rounds 5 --stable 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from azure.storage.queue import QueueServiceClient

from agent.config import load_config, replace
from agent.main import Agent
from agent.paths import AgentPaths
from agent.status import AgentEvent
from agent.vocab import EventKind
from tests.results.roundtrip import (
    COLIN,
    WorkerProcess,
    connection_string,
    wait_for_files,
    worker_config,
    write_head,
)
from tests.sync.azurite import Azurite


def _phases(agent: Agent, last: float, done: float) -> str:
    """Where the time went, from the ledger's audit timestamps of the newest series."""
    rows = agent.ledger.audit_rows()
    newest = max(r.series_id for r in rows if r.series_id is not None)
    at = {r.event: r.ts for r in rows if r.series_id == newest}
    marks = [("stable", "stable"), ("agent", "delivered"), ("cloud", "results-received"),
             ("home", "results-delivered")]
    out, prev = [], last
    for label, event in marks:
        if event in at:
            out.append(f"{label} {at[event] - prev:.1f}")
            prev = at[event]
    out.append(f"written {done - prev:.1f}")
    return "phases s: " + ", ".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stable", type=float, default=2.0, help="[watch] stable_seconds")
    parser.add_argument("--poll", type=float, default=1.0, help="[results] poll_seconds")
    parser.add_argument("--no-deface", action="store_true")
    args = parser.parse_args()
    if not COLIN.is_file():
        print("Colin27 not found: apt-get install mricron-data", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="bench-roundtrip-"))
    os.environ["CLINIC2CLOUD_HOME"] = str(root / "home")
    blob, queue = Azurite(root / "blob"), Azurite(root / "queue", service="queue")
    blob.start()
    queue.start()
    worker: WorkerProcess | None = None
    agent: Agent | None = None
    try:
        conn = connection_string(blob, queue)
        deliveries, results, qname = blob.new_container(), blob.new_container(), "manifests"
        QueueServiceClient.from_connection_string(conn).create_queue(qname)
        worker = WorkerProcess(worker_config(root / "worker.toml", conn, deliveries=deliveries,
                                             results=results, queue=qname,
                                             work_dir=root / "worker"), root / "worker.log")
        export, out = root / "export", root / "results"
        export.mkdir()
        cfg = replace(load_config(None, paths=AgentPaths.under(root / "home")),
                      watch_folder=str(export), watch_stable_seconds=args.stable,
                      watch_rescan_seconds=5.0, target_kind="azure",
                      target_container=deliveries, target_connection_string=conn,
                      target_queue_name=qname, deface_enabled=not args.no_deface,
                      results_enabled=True, results_folder=str(out),
                      results_container=results, results_poll_seconds=args.poll)
        agent = Agent(cfg)
        ready = threading.Semaphore(0)

        def on_event(event: AgentEvent) -> None:
            if event.kind in (EventKind.RESULTS, EventKind.RESULTS_FAILED,
                              EventKind.QUARANTINED):
                ready.release()

        agent.subscribe(on_event)
        agent.start()
        totals = []
        print(f"defacing {'off' if args.no_deface else 'on'}, stable_seconds {args.stable}, "
              f"poll {args.poll} s, {os.cpu_count()} cores")
        for n in range(args.rounds):
            written = write_head(export / f"patient-{uuid.uuid4().hex[:6]}")
            last = max(p.stat().st_mtime for p in written.files)
            assert ready.acquire(timeout=600), "no results in 10 minutes"
            found = wait_for_files(out, "*.dcm", 2 * (n + 1), timeout=10)
            if len(found) < 2 * (n + 1):
                print(f"round {n + 1}: no results (see {root}/worker.log)")
                return 1
            done = max(p.stat().st_mtime for p in found)
            total = done - last
            totals.append(total)
            print(f"round {n + 1}: {total:6.1f} s last file -> results on disk "
                  f"({total - args.stable:5.1f} s beyond stable_seconds); "
                  + _phases(agent, last, done))
        med = statistics.median(totals)
        print(f"median {med:.1f} s ({med - args.stable:.1f} s beyond stable_seconds; "
              "target < 60 s)")
        return 0
    finally:
        if agent is not None:
            agent.stop()
        if worker is not None:
            worker.stop()
        blob.stop()
        queue.stop()
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
