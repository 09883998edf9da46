"""Run one Azure delivery in a separate process (the kill -9 test kills it mid-upload).

Usage: python azure_child.py JOB.json - the job names the storage, the state folder and the
files of the delivery; the receipt and counters are printed as JSON when it completes.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from agent.config import Config, TargetConfig, replace
from agent.paths import AgentPaths
from agent.sync.azure import AzureTarget
from agent.sync.base import Delivery, DeliveryFile


def main(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    cfg = replace(
        Config(paths=AgentPaths.under(Path(job["root"])), target=TargetConfig(**job["target"])),
        site_name="SITE1",
    )
    d = job["delivery"]
    delivery = Delivery(
        series_key=d["series_key"], series_path=d["series_path"], version=d["version"],
        files=tuple(DeliveryFile(path=f["path"], local=Path(f["local"]), size=f["size"],
                                 sha256=f["sha256"]) for f in d["files"]),
        manifest=d["manifest"],
    )
    target = AzureTarget(cfg)
    try:
        receipt = target.deliver(delivery)
    finally:
        target.close()
    print(json.dumps({"receipt": asdict(receipt), "stats": target.stats.snapshot()}))


if __name__ == "__main__":
    main(sys.argv[1])
