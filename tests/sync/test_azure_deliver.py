"""AzureTarget against a real Azurite: layout, integrity, idempotence, versions, blocks."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.config import Config
from agent.errors import SeriesProblem
from agent.sync import open_target
from agent.sync.azure import AzureTarget
from agent.sync.azure_blocks import block_id
from agent.sync.azure_progress import ProgressStore

from .azurite import Azurite, assert_delivered, blobs_under, download, make_delivery

MB = 1 << 20
PSEUDONYM = re.compile(r"^SITE1/PAT-7f3a/STU-91c2/SER-04(\.v\d+)?/(IM\d{5}\.dcm|manifest\.json)$")


def test_open_target_picks_azure(make_azure_config: Callable[..., Config]) -> None:
    target = open_target(make_azure_config())
    try:
        assert isinstance(target, AzureTarget)
        assert "AccountKey" not in target.description and "Eby8" not in target.description
    finally:
        target.close()


def test_delivers_whole_series_with_integrity_and_pseudonyms_only(
    tmp_path: Path, azurite: Azurite, container: str, make_azure_config: Callable[..., Config]
) -> None:
    delivery = make_delivery(tmp_path, [1000, 300_000, 2 * MB + 17, 5 * MB + 3])
    target = AzureTarget(make_azure_config(block_size_mb=1))
    try:
        receipt = target.deliver(delivery)
    finally:
        target.close()
    assert receipt.location == delivery.series_path and not receipt.already_present
    assert receipt.bytes_sent >= sum(f.size for f in delivery.files)
    manifest = assert_delivered(azurite, container, delivery.location)
    assert manifest["content_sha256"] == delivery.manifest["content_sha256"]
    # Nothing anywhere in the container but our pseudonymous names.
    names = list(blobs_under(azurite, container))
    assert names and all(PSEUDONYM.match(n) for n in names), names
    # Multi-block files were committed with our deterministic block IDs.
    big = delivery.files[-1]
    blocks = azurite.service().get_blob_client(
        container, f"{delivery.location}/{big.path}"
    ).get_block_list("committed")[0]
    # (the SDK decodes the base64 IDs the service holds)
    assert [b.id for b in blocks] == [block_id(big.sha256, i) for i in range(6)]
    assert target.stats.commits == 2 and target.stats.blocks_staged == 3 + 6


def test_manifest_is_the_last_blob_written(
    tmp_path: Path, azurite: Azurite, container: str, make_azure_config: Callable[..., Config]
) -> None:
    delivery = make_delivery(tmp_path, [3 * MB, 100, 200])
    target = AzureTarget(make_azure_config(block_size_mb=1, concurrency=8))
    try:
        target.deliver(delivery)
    finally:
        target.close()
    blobs = blobs_under(azurite, container, delivery.location + "/")
    created = {n: b.creation_time for n, b in blobs.items()}  # type: ignore[attr-defined]
    manifest_time = created.pop(f"{delivery.location}/manifest.json")
    assert all(t <= manifest_time for t in created.values())


def test_redelivery_is_idempotent_and_sends_nothing(
    tmp_path: Path, azurite: Azurite, container: str, make_azure_config: Callable[..., Config]
) -> None:
    delivery = make_delivery(tmp_path, [2 * MB + 5, 700])
    cfg = make_azure_config(block_size_mb=1)
    target = AzureTarget(cfg)
    try:
        target.deliver(delivery)
        before = {n: b.etag for n, b in blobs_under(azurite, container).items()}  # type: ignore[attr-defined]
        again = target.deliver(delivery)
    finally:
        target.close()
    assert again.already_present and again.bytes_sent == 0
    # A fresh target (a restarted agent) says the same, from the progress store.
    target2 = AzureTarget(cfg)
    try:
        third = target2.deliver(delivery)
        assert third.already_present and target2.stats.bytes_sent == 0
    finally:
        target2.close()
    after = {n: b.etag for n, b in blobs_under(azurite, container).items()}  # type: ignore[attr-defined]
    assert after == before


def test_new_version_goes_beside_the_old_one(
    tmp_path: Path, azurite: Azurite, container: str, make_azure_config: Callable[..., Config]
) -> None:
    v1 = make_delivery(tmp_path, [1000, 2000], seed=1)
    v2 = make_delivery(tmp_path, [1000, 2000, 3000], seed=2, version=2)
    target = AzureTarget(make_azure_config())
    try:
        r1, r2 = target.deliver(v1), target.deliver(v2)
    finally:
        target.close()
    assert (r1.location, r2.location) == (v1.series_path, v1.series_path + ".v2")
    assert len(assert_delivered(azurite, container, r1.location)["files"]) == 2
    assert len(assert_delivered(azurite, container, r2.location)["files"]) == 3


def test_foreign_content_is_never_overwritten_delivery_moves_to_next_version(
    tmp_path: Path, azurite: Azurite, container: str, make_azure_config: Callable[..., Config]
) -> None:
    delivery = make_delivery(tmp_path, [1500, 2 * MB + 1])
    cc = azurite.service().get_container_client(container)
    squatter = f"{delivery.location}/{delivery.files[1].path}"
    cc.upload_blob(squatter, b"someone else's bytes")
    target = AzureTarget(make_azure_config(block_size_mb=1))
    try:
        receipt = target.deliver(delivery)
        again = target.deliver(delivery)  # the pipeline retrying: same answer, nothing new
    finally:
        target.close()
    assert receipt.location == delivery.series_path + ".v2"
    assert again.location == receipt.location and again.already_present
    assert download(azurite, container, squatter) == b"someone else's bytes"
    manifest = assert_delivered(azurite, container, receipt.location)
    assert manifest["version"] == 2
    assert f"{delivery.location}/manifest.json" not in blobs_under(azurite, container)


def test_existing_identical_manifest_is_recognised_with_read_access(
    tmp_path: Path, azurite: Azurite, container: str
) -> None:
    """Another installation (its own progress store) delivering the same content."""
    delivery = make_delivery(tmp_path, [4000, 5000])
    from .azurite import azure_config

    first = AzureTarget(azure_config(tmp_path / "a", azurite, container))
    second = AzureTarget(azure_config(tmp_path / "b", azurite, container))
    try:
        first.deliver(delivery)
        receipt = second.deliver(delivery)
    finally:
        first.close()
        second.close()
    assert receipt.location == delivery.location and receipt.already_present
    assert len(blobs_under(azurite, container)) == 3


def test_lost_uncommitted_blocks_are_staged_again(
    tmp_path: Path, azurite: Azurite, container: str, make_azure_config: Callable[..., Config]
) -> None:
    """The store says blocks were staged, the service never got them (storage reset,
    7-day expiry): the commit is refused, every block is sent again, the file arrives."""
    delivery = make_delivery(tmp_path, [3 * MB + 10])
    cfg = make_azure_config(block_size_mb=1)
    f = delivery.files[0]
    blob = f"{delivery.location}/{f.path}"
    target = AzureTarget(cfg)
    where = target._conn.where
    target.close()
    store = ProgressStore(cfg.paths.state_dir / "uploads.sqlite3")
    store.begin(where, blob, f.sha256, f.size, 1 * MB)
    for i in range(4):
        store.block_staged(where, blob, i)
    store.close()
    target = AzureTarget(cfg)
    try:
        target.deliver(delivery)
    finally:
        target.close()
    assert target.stats.restaged_files == 1 and target.stats.blocks_staged == 4
    assert_delivered(azurite, container, delivery.location)


def test_file_changed_after_manifest_is_a_series_problem(
    tmp_path: Path, azurite: Azurite, container: str, make_azure_config: Callable[..., Config]
) -> None:
    delivery = make_delivery(tmp_path, [1000, 2 * MB])
    for f in delivery.files:
        data = bytearray(f.local.read_bytes())
        data[10] ^= 0xFF
        f.local.write_bytes(bytes(data))
    target = AzureTarget(make_azure_config(block_size_mb=1))
    try:
        with pytest.raises(SeriesProblem) as info:
            target.deliver(delivery)
    finally:
        target.close()
    assert info.value.code == "integrity"
    assert not any(n.endswith("manifest.json") for n in blobs_under(azurite, container))


def test_concurrent_deliveries_from_worker_threads(
    tmp_path: Path, azurite: Azurite, container: str, make_azure_config: Callable[..., Config]
) -> None:
    deliveries = [
        make_delivery(tmp_path, [MB + i, 3000, 2 * MB], seed=i,
                      series_path=f"SITE1/PAT-7f3a/STU-91c2/SER-{i:02d}")
        for i in range(6)
    ]
    target = AzureTarget(make_azure_config(block_size_mb=1, concurrency=3))
    errors: list[BaseException] = []

    def run(d: object) -> None:
        try:
            target.deliver(d)  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(d,)) for d in deliveries]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        target.close()
    assert not errors
    for d in deliveries:
        assert_delivered(azurite, container, d.location)


def test_bandwidth_cap_is_respected(
    tmp_path: Path, azurite: Azurite, container: str, make_azure_config: Callable[..., Config]
) -> None:
    delivery = make_delivery(tmp_path, [MB] * 4 + [2 * MB])
    target = AzureTarget(make_azure_config(block_size_mb=1, max_mbps=24.0))  # 3 MB/s
    start = time.monotonic()
    try:
        target.deliver(delivery)
    finally:
        target.close()
    elapsed = time.monotonic() - start
    # 6 MiB at 3 MB/s is ~2.1 s, less the half-second burst allowance.
    assert elapsed >= 1.4, elapsed
    assert_delivered(azurite, container, delivery.location)


def test_same_version_with_other_files_never_mixes_into_the_delivered_one(
    tmp_path: Path, azurite: Azurite, container: str, make_azure_config: Callable[..., Config]
) -> None:
    """A (buggy or repeated) delivery of other content under a delivered version's name:
    nothing is added to the delivered folder, the content goes to the next version."""
    first = make_delivery(tmp_path, [1000, 2000], seed=1)
    other = make_delivery(tmp_path, [1000, 2000, 3000], seed=2)  # also version 1
    from .azurite import azure_config

    ours = AzureTarget(make_azure_config())
    elsewhere = AzureTarget(azure_config(tmp_path / "other-agent", azurite, container))
    try:
        ours.deliver(first)
        before = set(blobs_under(azurite, container, first.location + "/"))
        r_same_agent = ours.deliver(other)          # knows from its progress store
        r_other_agent = elsewhere.deliver(other)    # finds out by reading the manifest
    finally:
        ours.close()
        elsewhere.close()
    assert set(blobs_under(azurite, container, first.location + "/")) == before
    assert r_same_agent.location == first.series_path + ".v2"
    assert r_other_agent.location == first.series_path + ".v2"
    assert r_other_agent.already_present
    assert_delivered(azurite, container, r_same_agent.location)
