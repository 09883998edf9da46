"""Faults against a real Azurite: the uploading process killed with SIGKILL, the storage
killed and restarted - the series still arrives whole, exactly once."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from agent.errors import TargetUnavailable
from agent.sync.azure import DEFAULT_RETRY_BUDGET, AzureTarget
from agent.sync.azure_auth import BudgetRetry
from agent.sync.base import Delivery, Receipt
from tests.waiting import wait_until

from .azurite import Azurite, assert_delivered, azure_config, blobs_under, make_delivery

MB = 1 << 20
CHILD = Path(__file__).with_name("azure_child.py")


def recorded_blocks(db: Path) -> dict[str, int]:
    """Blocks the progress store holds per blob (read-only, beside the writer)."""
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = con.execute("SELECT blob, COUNT(*) FROM blocks GROUP BY blob").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        con.close()
    return {str(b): int(n) for b, n in rows}


def committed_blobs(db: Path) -> set[str]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return {str(r[0]) for r in con.execute("SELECT blob FROM uploads WHERE state = 1")}
    finally:
        con.close()


def wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    assert wait_until(predicate, timeout, step=0.02), "timed out"


def test_sigkill_mid_upload_resumes_without_resending(
    tmp_path: Path, azurite: Azurite, container: str
) -> None:
    delivery = make_delivery(tmp_path, [20 * MB, 20 * MB, 20 * MB])
    target_fields = {
        "kind": "azure", "container": container,
        "connection_string": azurite.connection_string,
        "block_size_mb": 1, "concurrency": 4,
        "max_mbps": 160.0,  # ~20 MB/s: the whole series would take about 3 s
    }
    job = tmp_path / "job.json"
    job.write_text(json.dumps({
        "root": str(tmp_path), "target": target_fields,
        "delivery": {**asdict(delivery), "files": [
            {**asdict(f), "local": str(f.local)} for f in delivery.files
        ]},
    }, default=str))
    db = tmp_path / "state" / "uploads.sqlite3"
    child = subprocess.Popen([sys.executable, str(CHILD), str(job)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: sum(recorded_blocks(db).values()) >= 25, timeout=60)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    names = {f"{delivery.location}/{f.path}": f for f in delivery.files}
    done = committed_blobs(db) & set(names)
    recorded = recorded_blocks(db)
    total_blocks = 60
    expected_restage = sum(
        20 - recorded.get(name, 0) for name in names if name not in done
    )
    assert 0 < expected_restage < total_blocks - 20
    # Nothing is visible to the cloud yet: no manifest.
    assert not any(n.endswith("manifest.json") for n in blobs_under(azurite, container))

    cfg = azure_config(tmp_path, azurite, container, block_size_mb=1, concurrency=4)
    target = AzureTarget(cfg)
    try:
        receipt = target.deliver(delivery)
    finally:
        target.close()
    # Exactly the blocks never confirmed were sent again, nothing else.
    assert target.stats.blocks_staged == expected_restage
    assert target.stats.blocks_skipped == sum(recorded.get(n, 0) for n in names if n not in done)
    assert receipt.bytes_sent <= expected_restage * MB + 4096
    # Whole, exactly once, nothing stray, no uncommitted leftovers.
    assert_delivered(azurite, container, delivery.location)
    assert set(blobs_under(azurite, container)) == set(names) | {
        f"{delivery.location}/manifest.json"
    }
    for name in names:
        _, uncommitted = azurite.service().get_blob_client(container, name).get_block_list("all")
        assert uncommitted == []


def test_storage_killed_and_restarted_mid_upload(
    tmp_path: Path, azurite_factory: Callable[..., Azurite]
) -> None:
    server = azurite_factory()
    container = server.new_container()
    # A graceful restart makes Azurite persist the container (it saves its metadata lazily;
    # a SIGKILL right after creation would lose the container itself).
    server.stop(signal.SIGTERM)
    server.start()
    delivery = make_delivery(tmp_path, [12 * MB, 12 * MB, 300])
    cfg = azure_config(tmp_path, server, container, block_size_mb=1, concurrency=4,
                       max_mbps=120.0)
    db = cfg.paths.state_dir / "uploads.sqlite3"
    target = AzureTarget(cfg, retry_budget=2.0)
    outcome: list[Receipt | BaseException] = []
    run = _deliver_into(outcome, target, delivery)
    thread = threading.Thread(target=run)
    try:
        thread.start()
        wait_for(lambda: sum(recorded_blocks(db).values()) >= 8, timeout=60)
        server.stop(signal.SIGKILL)
        time.sleep(1.0)
        server.start()
        thread.join(120)
        assert not thread.is_alive()
        attempts = 1
        # What the pipeline does: TargetUnavailable keeps the series queued; retry.
        while isinstance(outcome[-1], TargetUnavailable) and attempts < 5:
            attempts += 1
            run()
        assert isinstance(outcome[-1], Receipt), outcome
    finally:
        target.close()
    assert_delivered(server, container, delivery.location)
    assert len(blobs_under(server, container)) == 4


def test_retry_budget_bounds_the_backoff() -> None:
    policy = BudgetRetry(DEFAULT_RETRY_BUDGET)
    ceilings = [policy._ceiling(i) for i in range(policy.total_retries)]
    assert 20.0 <= sum(ceilings) <= DEFAULT_RETRY_BUDGET
    for count in range(policy.total_retries):
        wait_s = policy.get_backoff_time({"count": count})
        assert ceilings[count] / 2 <= wait_s <= ceilings[count]


def test_close_during_delivery_fails_fast_without_hanging(
    tmp_path: Path, azurite: Azurite, container: str
) -> None:
    delivery = make_delivery(tmp_path, [12 * MB])
    cfg = azure_config(tmp_path, azurite, container, block_size_mb=1, concurrency=2,
                       max_mbps=16.0)  # 2 MB/s: the file would take 6 s
    target = AzureTarget(cfg)
    outcome: list[Receipt | BaseException] = []
    thread = threading.Thread(target=_deliver_into(outcome, target, delivery))
    thread.start()
    time.sleep(1.0)
    start = time.monotonic()
    target.close()
    thread.join(30)
    assert not thread.is_alive() and time.monotonic() - start < 10
    assert isinstance(outcome[0], TargetUnavailable)
    assert not any(n.endswith("manifest.json") for n in blobs_under(azurite, container))


def _deliver_into(outcome: list[Receipt | BaseException], target: AzureTarget,
                  delivery: Delivery) -> Callable[[], None]:
    """A callable that delivers once and appends the receipt or the exception to ``outcome``
    (for a delivery running in a thread while the test breaks things)."""

    def run() -> None:
        try:
            outcome.append(target.deliver(delivery))
        except BaseException as exc:  # noqa: BLE001 -- reported to the test
            outcome.append(exc)

    return run
