#!/usr/bin/env python3
"""Fuzz the agent with thousands of mutated real DICOM files; count crashes and hangs.

    python scripts/fuzz_pipeline.py --cases 3000 [--workers 2] [--timeout 120] [--seed 1]

Each case is a real file (vendor corpus from ``../shared/corpus``, pydicom's test files)
mutated by one to three operations of :mod:`tests.fuzzing`, then run through what the
agent does to an export (header and completeness checks, ``clinic2cloud process``: de-
identify, verify, the last look, delivery) in a long-lived worker process. A case is a
*crash* when an exception escapes, a *hang* when its worker gives no answer within
``--timeout`` seconds (the worker is killed and replaced), *invalid* when a delivered file
does not parse, is short of pixel data or does not decode. Every case is reproducible from
its seed file and operations, printed for each failure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def worker() -> int:
    """Read cases (JSON lines) on stdin, answer each with a JSON line."""
    import warnings

    warnings.simplefilter("ignore")
    from tests.fuzzing import Runner, mutate

    with tempfile.TemporaryDirectory(prefix="c2c-fuzz-") as tmp:
        runner = Runner(Path(tmp))
        for line in sys.stdin:
            case = json.loads(line)
            data = mutate(Path(case["seed"]).read_bytes(), [tuple(o) for o in case["ops"]])
            try:
                result: dict[str, Any] = runner.run(data)
            except BaseException as exc:
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                result = {"crash": type(exc).__name__,
                          "where": traceback.format_exc().strip().splitlines()[-12:]}
            print(json.dumps(result), flush=True)
    return 0


class Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)

    def ask(self, case: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """The worker's answer, or None when it hung or died (it is then replaced)."""
        import selectors

        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout)
        sel.close()
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.kill()
            return None
        answer: dict[str, Any] = json.loads(line)
        return answer

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()


def cases(n: int, seed: int) -> list[dict[str, Any]]:
    from tests.fuzzing import random_ops, seed_files

    seeds = seed_files()
    rng = random.Random(seed)
    return [{"n": i, "seed": str(rng.choice(seeds)), "ops": random_ops(rng)}
            for i in range(n)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    todo = cases(args.cases, args.seed)
    tally: Counter[str] = Counter()
    states: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    failures: list[dict[str, Any]] = []
    started = time.monotonic()

    def lane(part: list[dict[str, Any]]) -> None:
        w = Worker()
        for i, case in enumerate(part):
            answer = w.ask(case, args.timeout)
            if answer is None:
                tally["hangs"] += 1
                failures.append({"kind": "hang", **case})
                w = Worker()
                continue
            tally["cases"] += 1
            if "crash" in answer:
                tally["crashes"] += 1
                failures.append({"kind": "crash", **case, **answer})
                continue
            if answer["invalid"]:
                tally["invalid_deliveries"] += 1
                failures.append({"kind": "invalid", **case, "invalid": answer["invalid"]})
            states.update(answer["states"] or ["no series"])
            codes.update(c for c in answer["codes"] if c)
            tally["delivered_files_checked"] += int(answer["delivered"])
            if (i + 1) % 250 == 0:
                print(f"  {sum(states.values())} done ({time.monotonic() - started:.0f} s)",
                      flush=True)
        w.close()

    lanes = [todo[k::args.workers] for k in range(args.workers)]
    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(lane, lanes))
    return {"cases": args.cases, "answered": tally["cases"], "crashes": tally["crashes"],
            "hangs": tally["hangs"], "invalid_deliveries": tally["invalid_deliveries"],
            "outcomes": dict(states), "codes": dict(codes.most_common()),
            "seconds": round(time.monotonic() - started, 1), "failures": failures[:50]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the summary as JSON here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker()
    summary = run(args)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0 if not (summary["crashes"] or summary["hangs"]
                     or summary["invalid_deliveries"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
