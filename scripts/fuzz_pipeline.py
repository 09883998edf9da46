#!/usr/bin/env python3
"""Fuzz the agent with thousands of mutated real DICOM files; count crashes and hangs.

    python scripts/fuzz_pipeline.py --cases 3000 [--workers 2] [--cpu-limit 60] [--seed 1]

Each case is a real file (vendor corpus from ``../shared/corpus``, pydicom's test files)
mutated by one to three operations of :mod:`tests.fuzzing`, then run through what the
agent does to an export (header and completeness checks, ``clinic2cloud process``: de-
identify, verify, the last look, delivery) in a long-lived worker process. A case is a
*crash* when an exception escapes, a *hang* when its worker spends more than
``--cpu-limit`` seconds of CPU on it (a loop), or gives no answer within ``--timeout``
seconds of wall time (a deadlock: nothing runs, nothing answers) - the worker is then
killed and replaced - and *invalid* when a delivered file does not parse, is short of
pixel data or does not decode. CPU time, not wall time, is what a case's cost is judged
by: on a loaded machine (two cores shared by eight people) a case that needs 2 s of CPU
has been seen to take more than 120 s of wall time. Every case is reproducible from its
seed file and operations (``--only N``), printed for each failure; ``internal`` endings
are bucketed by where the unconverted library error came from.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
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

    # Answers go to a copy of stdout; what C libraries print (Tesseract, Leptonica, GDCM)
    # goes to stderr, so that it can never be read as an answer.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    with tempfile.TemporaryDirectory(prefix="c2c-fuzz-") as tmp:
        runner = Runner(Path(tmp))
        for line in sys.stdin:
            case = json.loads(line)
            data = mutate(Path(case["seed"]).read_bytes(), [tuple(o) for o in case["ops"]])
            cpu = time.process_time()
            try:
                result: dict[str, Any] = runner.run(data)
            except BaseException as exc:
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                result = {"crash": type(exc).__name__,
                          "where": traceback.format_exc().strip().splitlines()[-12:]}
            result["cpu"] = round(time.process_time() - cpu, 2)
            print(json.dumps(result), file=answers, flush=True)
    return 0


class Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)

    def cpu_seconds(self) -> float:
        """CPU time the worker has used (all its threads); 0 where /proc is missing."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def ask(self, case: dict[str, Any], cpu_limit: float, timeout: float
            ) -> dict[str, Any] | None:
        """The worker's answer, or None when it hung or died (it is then replaced)."""
        import selectors

        assert self.proc.stdin is not None and self.proc.stdout is not None
        cpu_before, asked = self.cpu_seconds(), time.monotonic()
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            while not sel.select(1.0):
                if (self.cpu_seconds() - cpu_before > cpu_limit
                        or time.monotonic() - asked > timeout or self.proc.poll() is not None):
                    self.kill()
                    return None
        finally:
            sel.close()
        line = self.proc.stdout.readline()
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
    if args.only:
        todo = [c for c in todo if c["n"] in set(args.only)]
    tally: Counter[str] = Counter()
    states: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    failures: list[dict[str, Any]] = []
    internal: Counter[str] = Counter()
    internal_cases: dict[str, dict[str, Any]] = {}
    wall: list[tuple[float, int]] = []
    cpu: list[tuple[float, int]] = []
    started = time.monotonic()

    def lane(part: list[dict[str, Any]]) -> None:
        w = Worker()
        for i, case in enumerate(part):
            asked = time.monotonic()
            answer = w.ask(case, args.cpu_limit, args.timeout)
            wall.append((round(time.monotonic() - asked, 2), case["n"]))
            if answer is None:
                tally["hangs"] += 1
                failures.append({"kind": "hang", **case})
                w = Worker()
                continue
            tally["cases"] += 1
            cpu.append((answer.get("cpu", 0.0), case["n"]))
            if "crash" in answer:
                tally["crashes"] += 1
                failures.append({"kind": "crash", **case, **answer})
                continue
            if answer["invalid"]:
                tally["invalid_deliveries"] += 1
                failures.append({"kind": "invalid", **case, "invalid": answer["invalid"]})
            states.update(answer["states"] or ["no series"])
            codes.update(c for c in answer["codes"] if c)
            reasons.update(f"{c}: {re.sub(r'[0-9][0-9,]*', 'N', r)}"
                           for c, r in zip(answer["codes"], answer["reasons"], strict=True)
                           if c)
            if "internal" in answer["codes"]:
                said = [r for r, c in zip(answer["reasons"], answer["codes"], strict=True)
                        if c == "internal"]
                for origin in answer["failures"] or [f"(not logged) {r}" for r in said]:
                    internal[origin] += 1
                    internal_cases.setdefault(origin, case)
            tally["delivered_files_checked"] += int(answer["delivered"])
            if (i + 1) % 250 == 0:
                print(f"  {sum(states.values())} done ({time.monotonic() - started:.0f} s)",
                      flush=True)
        w.close()

    lanes = [todo[k::args.workers] for k in range(args.workers)]
    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(lane, lanes))
    return {"cases": len(todo), "answered": tally["cases"], "crashes": tally["crashes"],
            "hangs": tally["hangs"], "invalid_deliveries": tally["invalid_deliveries"],
            "outcomes": dict(states), "codes": dict(codes.most_common()),
            "seconds": round(time.monotonic() - started, 1),
            "most_cpu_seconds": sorted(cpu, reverse=True)[:10],
            "most_wall_seconds": sorted(wall, reverse=True)[:10],
            "reasons": [f"{k:5d}  {r}" for r, k in reasons.most_common()],
            "internal_by_origin": [{"count": k, "origin": o, "example": internal_cases[o]}
                                   for o, k in internal.most_common()],
            "failures": failures[:50]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    parser.add_argument("--cpu-limit", type=float, default=60.0,
                        help="CPU seconds a case may use before it counts as a hang")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="wall seconds without an answer before a case counts as a hang")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", type=int, nargs="*", help="run only these case numbers")
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
