"""The whole loop: a real head exported, delivered to Azurite, processed by the worker
process, results brought home and re-identified locally. Nothing identifying in the cloud,
the ledger or the re-link store's file."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from agent.config import Config
from agent.main import Agent
from agent.status import AgentEvent
from agent.vocab import AuditEvent, EventKind
from tests.sync.azurite import blobs_under, download
from tests.waiting import wait_until

from .conftest import Storage
from .roundtrip import (
    COLIN,
    IDENTITY,
    SECRETS,
    Exported,
    WorkerProcess,
    wait_for_files,
    worker_config,
    write_head,
)

pytestmark = pytest.mark.skipif(not COLIN.is_file(),
                                reason="Colin27 not found: apt-get install mricron-data")


def _uids(ds: pydicom.Dataset) -> set[str]:
    return {str(v) for e in ds.iterall() if e.VR == "UI"
            for v in (e.value if isinstance(e.value, (list, pydicom.multival.MultiValue))
                      else [e.value])}


def test_head_series_goes_round_trip_and_comes_home_reidentified(
        make_config: Callable[..., Config], storage: Storage, export_dir: Path,
        tmp_path: Path) -> None:
    results_dir = tmp_path / "results"
    cfg = make_config(target_kind="azure", target_container=storage.deliveries,
                      target_connection_string=storage.connection_string,
                      target_queue_name=storage.queue_name, results_enabled=True,
                      results_folder=str(results_dir), results_container=storage.results,
                      results_poll_seconds=0.3)
    worker = WorkerProcess(worker_config(
        tmp_path / "worker.toml", storage.connection_string, deliveries=storage.deliveries,
        results=storage.results, queue=storage.queue_name, work_dir=tmp_path / "worker"),
        tmp_path / "worker.log")
    agent = Agent(cfg)
    events: list[AgentEvent] = []
    got_results = threading.Event()

    def on_event(event: AgentEvent) -> None:
        events.append(event)
        if event.kind == EventKind.RESULTS:
            got_results.set()

    agent.subscribe(on_event)
    agent.start()
    try:
        exported = write_head(export_dir / "Roundtripova Rosalind")
        assert got_results.wait(150), worker.output()[-3000:]
        seg_sr = wait_for_files(results_dir, "*.dcm", 2, timeout=5)
        # A duplicate notification (Event Grid and the agent both notify, at least once):
        # the worker must not process the delivery twice.
        [manifest_name] = [n for n in blobs_under(storage.blob, storage.results)
                           if n.endswith("/manifest.json")]
        before = blobs_under(storage.blob, storage.results)[manifest_name]
        location = manifest_name.rsplit("/", 1)[0]
        queue = QueueClient.from_connection_string(
            storage.connection_string, storage.queue_name,
            message_encode_policy=TextBase64EncodePolicy())
        queue.send_message(json.dumps({"event": "clinic2cloud.manifest",
                                       "container": storage.deliveries,
                                       "blob": f"{location}/manifest.json",
                                       "location": location}))
        assert wait_until(lambda: queue.get_queue_properties().approximate_message_count == 0
                          and "already-done" in worker.output(), timeout=30)
        queue.close()
        [ready] = [e for e in events if e.kind == EventKind.RESULTS]
        assert ready.series_id is not None
        shown = agent.results_identity(ready.series_id)
    finally:
        agent.stop()
        code = worker.stop()
    assert code == 0, worker.output()[-2000:]
    after = blobs_under(storage.blob, storage.results)[manifest_name]
    assert after.etag == before.etag  # type: ignore[attr-defined]

    _check_result_objects(seg_sr, exported, results_dir)
    _check_nothing_in_the_cloud(storage, exported)
    _check_ledger(agent, exported)
    _check_store_sealed(cfg, exported)
    # The tray's notification: the event names the pseudonym; the identity is read locally.
    assert not any(s in ready.message for s in SECRETS)
    assert shown == "Roundtripova, Rosalind"


def _check_result_objects(seg_sr: list[Path], exported: Exported, results_dir: Path) -> None:
    # The result objects carry the original identity and reference the original study.
    objects = [pydicom.dcmread(p) for p in seg_sr]
    by_modality = {str(ds.Modality): ds for ds in objects}
    assert set(by_modality) == {"SEG", "SR"}
    for ds in objects:
        assert str(ds.PatientName) == IDENTITY["PatientName"]
        assert ds.PatientID == IDENTITY["PatientID"]
        assert ds.PatientBirthDate == IDENTITY["PatientBirthDate"]
        assert ds.AccessionNumber == IDENTITY["AccessionNumber"]
        assert ds.StudyDate == IDENTITY["StudyDate"]
        assert ds.StudyInstanceUID == exported.study_uid
        assert ds.PatientIdentityRemoved == "NO"
        assert "DeidentificationMethod" not in ds
    seg = by_modality["SEG"]
    assert seg.FrameOfReferenceUID == exported.frame_uid
    [ref_series] = seg.ReferencedSeriesSequence
    assert ref_series.SeriesInstanceUID == exported.series_uid
    referenced = {str(i.ReferencedSOPInstanceUID) for i in ref_series.ReferencedInstanceSequence}
    assert referenced and referenced <= exported.sop_uids
    sr_uids = _uids(by_modality["SR"])
    assert exported.series_uid in sr_uids and str(seg.SOPInstanceUID) in sr_uids
    assert referenced & sr_uids  # the SR's evidence names the original images
    # The results folder is named for the clinician (local), the report came along.
    assert IDENTITY["PatientID"] in str(seg_sr[0])
    report = json.loads(next(results_dir.rglob("report.json")).read_text())
    assert 1000 < report["brain_volume_ml"] < 2000


def _check_nothing_in_the_cloud(storage: Storage, exported: Exported) -> None:
    # Nothing identifying in the cloud: blob names and every blob's bytes.
    originals = (exported.study_uid, exported.series_uid, *list(exported.sop_uids)[:5])
    for container in (storage.deliveries, storage.results):
        for name in blobs_under(storage.blob, container):
            data = download(storage.blob, container, name)
            for secret in (*SECRETS, *originals):
                assert secret not in name and secret.encode() not in data, (container, name)


def _check_ledger(agent: Agent, exported: Exported) -> None:
    # Every step in the ledger, with hashes and pseudonyms only.
    events_logged = [r.event for r in agent.ledger.audit_rows()]
    for step in (AuditEvent.RESULTS_EXPECTED, AuditEvent.RESULTS_RECEIVED,
                 AuditEvent.RESULTS_REIDENTIFIED, AuditEvent.RESULTS_DELIVERED):
        assert events_logged.count(step) == 1, step
    assert agent.ledger.verify_chain() == []
    ledger_text = agent.ledger.export("json")
    for secret in (*SECRETS, exported.study_uid, exported.series_uid):
        assert secret not in ledger_text


def _check_store_sealed(cfg: Config, exported: Exported) -> None:
    # The re-link store is encrypted at rest: its files hold none of the identity.
    store_files = list(cfg.paths.state_dir.glob("relink.sqlite3*"))
    assert store_files
    for f in store_files:
        data = f.read_bytes()
        for secret in (*SECRETS, exported.study_uid, exported.series_uid, "Canary"):
            assert secret.encode() not in data, f.name
