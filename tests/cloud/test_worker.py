"""The worker against a real Azurite: verified deliveries, the step contract, failures
recorded for the agent, nothing processed twice, a lease between workers."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from clinic2cloud_worker.cli import drain
from clinic2cloud_worker.config import Config, StorageConfig, WorkerConfig
from clinic2cloud_worker.job import Outcome, run_job
from clinic2cloud_worker.messages import Job, agent_message
from clinic2cloud_worker.results import ResultsStore
from clinic2cloud_worker.storage import open_storage
from tests.sync.azurite import blobs_under, download

from .conftest import Storage

LOCATION = "SITE1/SITE1-0A1B2C3D4E/0123456789abcdef/fedcba9876543210"

#: A step following the contract; what it does is chosen by its first argument.
STEP = '''
import pathlib, sys, time
mode, src, dst = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
if mode == "fail":
    sys.exit(7)
if mode == "sleep":
    time.sleep(60)
if mode == "nothing":
    sys.exit(0)
names = sorted(p.name for p in src.iterdir())
(dst / "sub").mkdir()
(dst / "sub" / "listing.txt").write_text("\\n".join(names))
'''


@pytest.fixture
def step_script(tmp_path: Path) -> Path:
    path = tmp_path / "step.py"
    path.write_text(STEP)
    return path


@pytest.fixture
def worker_cfg(storage: Storage, step_script: Path, tmp_path: Path) -> Callable[..., Config]:
    def make(mode: str = "ok", **worker: object) -> Config:
        fields: dict[str, object] = {
            "results_container": storage.results, "queue_name": storage.queue_name,
            "step": f"{sys.executable} {step_script} {mode} {{input}} {{output}}",
            "work_dir": str(tmp_path / "work"), "max_attempts": 2}
        fields.update(worker)
        return Config(storage=StorageConfig(container=storage.deliveries,
                                            connection_string=storage.connection_string),
                      worker=WorkerConfig(**fields))  # type: ignore[arg-type]
    return make


def deliver(storage: Storage, location: str = LOCATION, *, tamper: bool = False,
            names: tuple[str, ...] = ("a.dcm", "b.dcm")) -> None:
    """A delivery as the agent leaves it: files, then manifest.json."""
    cc = storage.blob.service().get_container_client(storage.deliveries)
    files = []
    for i, name in enumerate(names):
        data = f"file {i} of {location}".encode() * 100
        cc.upload_blob(f"{location}/{name}", data + (b"x" if tamper and i == 1 else b""),
                       overwrite=True)
        files.append({"path": name, "size": len(data),
                      "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {"format": "clinic2cloud-manifest/1", "content_sha256": "0" * 64,
                "files": files}
    cc.upload_blob(f"{location}/manifest.json", json.dumps(manifest).encode(), overwrite=True)


def _results(storage: Storage, location: str = LOCATION) -> dict[str, object]:
    return blobs_under(storage.blob, storage.results, location + "/")


def test_delivery_verified_processed_and_results_written_manifest_last(
        storage: Storage, worker_cfg: Callable[..., Config]) -> None:
    deliver(storage)
    cfg = worker_cfg()
    assert run_job(cfg, open_storage(cfg.storage), Job(storage.deliveries, LOCATION)) \
        == Outcome.DONE
    blobs = _results(storage)
    assert set(blobs) == {f"{LOCATION}/sub/listing.txt", f"{LOCATION}/manifest.json",
                          f"{LOCATION}/.lock"}
    manifest = json.loads(download(storage.blob, storage.results, f"{LOCATION}/manifest.json"))
    assert manifest["format"] == "clinic2cloud-results/1" and manifest["location"] == LOCATION
    [entry] = manifest["files"]
    listing = download(storage.blob, storage.results, f"{LOCATION}/sub/listing.txt")
    assert listing == b"a.dcm\nb.dcm"  # the step saw the verified delivery
    assert entry == {"path": "sub/listing.txt", "size": len(listing),
                     "sha256": hashlib.sha256(listing).hexdigest()}
    assert manifest["delivery"]["files"] == 2
    # The manifest was written after every file it lists.
    written = {n: getattr(b, "last_modified") for n, b in blobs.items()}  # noqa: B009
    assert written[f"{LOCATION}/manifest.json"] >= written[f"{LOCATION}/sub/listing.txt"]
    # Nothing processed twice: the same job again changes nothing.
    etag = blobs[f"{LOCATION}/manifest.json"].etag  # type: ignore[attr-defined]
    assert run_job(cfg, open_storage(cfg.storage), Job(storage.deliveries, LOCATION)) \
        == Outcome.ALREADY_DONE
    assert _results(storage)[f"{LOCATION}/manifest.json"].etag == etag  # type: ignore[attr-defined]


def test_tampered_delivery_is_never_processed_and_the_failure_is_final(
        storage: Storage, worker_cfg: Callable[..., Config]) -> None:
    deliver(storage, tamper=True)
    cfg = worker_cfg()
    assert run_job(cfg, open_storage(cfg.storage), Job(storage.deliveries, LOCATION)) \
        == Outcome.FAILED_FINAL
    failure = json.loads(download(storage.blob, storage.results, f"{LOCATION}/failure.json"))
    assert failure["code"] == "delivery-invalid" and failure["final"] is True
    assert "b.dcm" in failure["message"]
    assert f"{LOCATION}/manifest.json" not in _results(storage)


def test_failing_step_is_retried_then_final_and_a_reprocess_succeeds(
        storage: Storage, worker_cfg: Callable[..., Config]) -> None:
    deliver(storage)
    cfg = worker_cfg("fail")
    st = open_storage(cfg.storage)
    job = Job(storage.deliveries, LOCATION)
    assert run_job(cfg, st, job) == Outcome.RETRY
    first = json.loads(download(storage.blob, storage.results, f"{LOCATION}/failure.json"))
    assert (first["code"], first["attempts"], first["final"], first["exit_code"]) == \
        ("step-failed", 1, False, 7)
    assert run_job(cfg, st, job) == Outcome.FAILED_FINAL
    assert run_job(cfg, st, job) == Outcome.FAILED_FINAL  # final: not tried a third time
    last = json.loads(download(storage.blob, storage.results, f"{LOCATION}/failure.json"))
    assert (last["attempts"], last["final"]) == (2, True)
    # A retry asked from the clinic (reprocess) runs again; the failure record goes.
    good = worker_cfg("ok")
    assert run_job(good, open_storage(good.storage),
                   Job(storage.deliveries, LOCATION, reprocess=True)) == Outcome.DONE
    assert f"{LOCATION}/failure.json" not in _results(storage)


@pytest.mark.parametrize(("mode", "code"), [("sleep", "step-timeout"),
                                            ("nothing", "step-no-output")])
def test_step_timeout_and_empty_output_are_failed_attempts(
        storage: Storage, worker_cfg: Callable[..., Config], mode: str, code: str) -> None:
    deliver(storage)
    cfg = worker_cfg(mode, step_timeout_minutes=0.03, max_attempts=1)
    started = time.monotonic()
    assert run_job(cfg, open_storage(cfg.storage), Job(storage.deliveries, LOCATION)) \
        == Outcome.FAILED_FINAL
    assert time.monotonic() - started < 30
    failure = json.loads(download(storage.blob, storage.results, f"{LOCATION}/failure.json"))
    assert failure["code"] == code


def test_a_second_worker_leaves_a_leased_delivery_alone(
        storage: Storage, worker_cfg: Callable[..., Config]) -> None:
    deliver(storage)
    cfg = worker_cfg()
    st = open_storage(cfg.storage)
    lease = ResultsStore(st.container(storage.results), "results").lock(LOCATION)
    assert lease is not None
    try:
        assert run_job(cfg, st, Job(storage.deliveries, LOCATION)) == Outcome.BUSY
    finally:
        lease.release()
    assert run_job(cfg, st, Job(storage.deliveries, LOCATION)) == Outcome.DONE


def test_drain_takes_queue_messages_and_deletes_them_when_done(
        storage: Storage, worker_cfg: Callable[..., Config]) -> None:
    other = LOCATION[:-1] + "1"
    deliver(storage)
    deliver(storage, other)
    cfg = worker_cfg(max_messages=5)
    queue = QueueClient.from_connection_string(storage.connection_string, storage.queue_name,
                                               message_encode_policy=TextBase64EncodePolicy())
    queue.send_message(agent_message(storage.deliveries, LOCATION))
    queue.send_message("not a manifest message")
    plain = QueueClient.from_connection_string(storage.connection_string, storage.queue_name)
    plain.send_message(json.dumps({  # Event Grid's BlobCreated, as plain JSON
        "eventType": "Microsoft.Storage.BlobCreated",
        "subject": f"/blobServices/default/containers/{storage.deliveries}/blobs/{other}/"
                   "manifest.json", "data": {}}))
    plain.close()
    import threading

    assert drain(cfg, open_storage(cfg.storage), threading.Event(), listen=False) == 3
    assert queue.get_queue_properties().approximate_message_count == 0
    for loc in (LOCATION, other):
        assert f"{loc}/manifest.json" in _results(storage, loc)
    queue.close()


def test_cli_explains_a_wrong_config_and_a_bad_location(tmp_path: Path) -> None:
    cfg = tmp_path / "w.toml"
    cfg.write_text('[target]\nkind = "folder"\n')
    run = [sys.executable, "-m", "clinic2cloud_worker.cli", "--config", str(cfg)]
    out = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "[target.kind]" in out.stderr
    cfg.write_text('[target]\ncontainer = "deliveries"\nconnection_string = "x"\n'
                   '[worker]\nstep_timeout = 3\n')
    out = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "unknown key 'step_timeout' in [worker]" in out.stderr
    cfg.write_text('[target]\ncontainer = "deliveries"\n'
                   'connection_string = "AccountName=a;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:9/a;"\n')
    out = subprocess.run([*run, "--location", "../../etc/passwd"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "--location" in out.stderr
