"""The results service against a real Azurite results container: failures, timeouts and
invalid results recorded (hashes only) and notified; a retry; results for another patient
never filed."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from agent.config import Config, replace
from agent.ledger import Ledger
from agent.results.fetch import ResultsSource, open_results
from agent.results.relink import StudyIdentity
from agent.results.service import ResultsService
from agent.status import AgentEvent
from agent.vocab import AuditEvent, EventKind, ResultsState, SeriesState
from tests.dcmtk import dcmtk, find_dcmtk
from tests.sync.azurite import free_port
from tests.waiting import wait_until

from .conftest import Storage

PATIENT, STUDY, SERIES = "SITE1-0A1B2C3D4E", "0123456789abcdef", "fedcba9876543210"
LOCATION = f"SITE1/{PATIENT}/{STUDY}/{SERIES}"
IDENTITY = StudyIdentity(
    patient_name="Quillfeather^Anselm", patient_id="MRN-31415926", birth_date="19500101",
    sex="M", accession="ACC-2718", study_uid="1.2.826.0.1.99.1", study_date="20240202",
    study_time="090000", study_id="9", patient_pseudonym=PATIENT, study_pseudonym=STUDY)
PSEUDO_STUDY, PSEUDO_SERIES, ORIGINAL_SERIES = "2.25.1001", "2.25.1002", "1.2.826.0.1.99.2"


Fixture = tuple[ResultsService, list[AgentEvent], Ledger]


@pytest.fixture
def service(make_config: Callable[..., Config], storage: Storage, tmp_path: Path
            ) -> Iterator[tuple[ResultsService, list[AgentEvent], Ledger]]:
    cfg = make_config(target_kind="azure", target_container=storage.deliveries,
                      target_connection_string=storage.connection_string,
                      results_enabled=True, results_folder=str(tmp_path / "results"),
                      results_container=storage.results, results_timeout_minutes=60.0)
    cfg.paths.state_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(cfg.paths.ledger)
    row = ledger.open_version("k" * 32, [])
    for state in (SeriesState.STAGED, SeriesState.PROCESSED, SeriesState.VERIFIED):
        ledger.set_state(row.id, state, patient=PATIENT, study=STUDY, series=SERIES)
    ledger.set_state(row.id, SeriesState.DELIVERED, location=LOCATION)
    events: list[AgentEvent] = []
    client, where = open_results(cfg)
    svc = ResultsService(cfg, ledger, b"k" * 32, events.append,
                         source=ResultsSource(client, where))
    svc.store.record(IDENTITY, PSEUDO_STUDY, [(PSEUDO_STUDY, IDENTITY.study_uid),
                                              (PSEUDO_SERIES, ORIGINAL_SERIES)])
    assert svc.expect(row.id) and not svc.expect(row.id)  # once per location
    yield svc, events, ledger
    svc.stop()
    ledger.close()


def _put(storage: Storage, name: str, data: bytes) -> None:
    storage.blob.service().get_blob_client(storage.results, f"{LOCATION}/{name}").upload_blob(
        data, overwrite=True)


def _result_object(patient_id: str = PATIENT) -> bytes:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = "2.25.5555"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.PatientName, ds.PatientID, ds.StudyInstanceUID = patient_id, patient_id, PSEUDO_STUDY
    ds.SeriesInstanceUID, ds.Modality, ds.PatientIdentityRemoved = "2.25.5556", "OT", "YES"
    ref = pydicom.Dataset()
    ref.SeriesInstanceUID = PSEUDO_SERIES
    ds.ReferencedSeriesSequence = [ref]
    import io

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _publish(storage: Storage, files: dict[str, bytes], *, lie: bool = False) -> None:
    entries = []
    for name, data in files.items():
        _put(storage, name, data)
        entries.append({"path": name, "size": len(data),
                        "sha256": hashlib.sha256(data + (b"!" if lie else b"")).hexdigest()})
    _put(storage, "manifest.json", json.dumps({
        "format": "clinic2cloud-results/1", "location": LOCATION, "content_sha256": "c" * 64,
        "files": entries}).encode())


def _audit(ledger: Ledger) -> list[str]:
    return [r.event for r in ledger.audit_rows()]


def _state(svc: ResultsService) -> ResultsState | None:
    e = svc.tracker.get(LOCATION)
    return None if e is None else e.state


def _one_look(svc: ResultsService) -> None:
    [due] = svc.tracker.due(float("inf"))
    svc.look(due)


def test_results_are_reidentified_into_the_results_folder(service: Fixture,
                                                          storage: Storage) -> None:
    svc, events, ledger = service
    _one_look(svc)  # nothing there yet: still waiting
    assert _state(svc) == ResultsState.WAITING
    _publish(storage, {"sc/obj.dcm": _result_object(), "report.json": b"{}"})
    _one_look(svc)
    assert _state(svc) == ResultsState.DELIVERED
    [obj] = list(Path(svc.cfg.results.folder).rglob("obj.dcm"))
    ds = pydicom.dcmread(obj)
    assert (ds.PatientID, str(ds.PatientName)) == ("MRN-31415926", "Quillfeather^Anselm")
    assert ds.StudyInstanceUID == IDENTITY.study_uid
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == ORIGINAL_SERIES
    assert "MRN-31415926 Quillfeather" in str(obj)
    assert [e.kind for e in events] == [EventKind.RESULTS]
    assert AuditEvent.RESULTS_DELIVERED in _audit(ledger)
    assert svc.tracker.due(float("inf")) == []  # never fetched twice


def test_final_job_failure_is_recorded_notified_and_retryable(service: Fixture, storage: Storage
                                                              ) -> None:
    svc, events, ledger = service
    _put(storage, "failure.json", json.dumps({"code": "step-failed", "final": False,
                                              "attempts": 1, "message": "exit 7"}).encode())
    _one_look(svc)
    assert _state(svc) == ResultsState.WAITING
    assert AuditEvent.RESULTS_ATTEMPT_FAILED in _audit(ledger) and not events
    _put(storage, "failure.json", json.dumps({"code": "step-failed", "final": True,
                                              "attempts": 3, "message": "exit 7"}).encode())
    _one_look(svc)
    e = svc.tracker.get(LOCATION)
    assert e is not None and (e.state, e.code) == (ResultsState.FAILED, "step-failed")
    assert [ev.kind for ev in events] == [EventKind.RESULTS_FAILED]
    assert AuditEvent.RESULTS_FAILED in _audit(ledger)
    assert svc.tracker.due(float("inf")) == []
    assert svc.retry(e.series_id) == ResultsState.FAILED
    assert svc.retry(e.series_id + 1000) is None
    assert _state(svc) == ResultsState.WAITING
    assert AuditEvent.RESULTS_RETRIED in _audit(ledger)


def test_no_results_in_time_is_a_timeout_and_still_watched(service: Fixture,
                                                           storage: Storage) -> None:
    svc, events, ledger = service
    svc.cfg = svc.cfg.__class__(**{**svc.cfg.__dict__, "results": svc.cfg.results.__class__(
        **{**svc.cfg.results.__dict__, "timeout_minutes": 1e-6})})
    _one_look(svc)
    assert _state(svc) == ResultsState.TIMED_OUT
    assert [ev.kind for ev in events] == [EventKind.RESULTS_FAILED]
    assert _audit(ledger).count(AuditEvent.RESULTS_TIMEOUT) == 1
    _publish(storage, {"sc/obj.dcm": _result_object()})  # late results still come home
    _one_look(svc)
    assert _state(svc) == ResultsState.DELIVERED


@pytest.mark.parametrize("case", ["hash", "other-patient"])
def test_invalid_results_are_not_filed(service: Fixture, storage: Storage, case: str) -> None:
    svc, events, ledger = service
    if case == "hash":
        _publish(storage, {"sc/obj.dcm": _result_object()}, lie=True)
    else:
        _publish(storage, {"sc/obj.dcm": _result_object("SITE1-FFFFFFFFFF")})
    _one_look(svc)
    e = svc.tracker.get(LOCATION)
    assert e is not None and e.state == ResultsState.INVALID
    assert not list(Path(svc.cfg.results.folder).rglob("*.dcm"))
    assert [ev.kind for ev in events] == [EventKind.RESULTS_FAILED]
    assert AuditEvent.RESULTS_INVALID in _audit(ledger)
    text = ledger.export("json")
    assert "MRN-31415926" not in text and "Quillfeather" not in text


@pytest.mark.skipif(find_dcmtk("storescp") is None, reason="dcmtk storescp not installed")
def test_results_go_to_the_pacs_reidentified(service: Fixture, storage: Storage,
                                             tmp_path: Path) -> None:
    svc, events, ledger = service
    port = free_port()
    received = tmp_path / "pacs"
    received.mkdir()
    scp = subprocess.Popen([dcmtk("storescp"), "-aet", "PACS", "-od", str(received), str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: _listening(port), timeout=20)
        svc.cfg = replace(svc.cfg, results_pacs=f"PACS@127.0.0.1:{port}")
        _publish(storage, {"sc/obj.dcm": _result_object()})
        _one_look(svc)
        assert wait_until(lambda: any(received.iterdir()), timeout=20)
    finally:
        scp.terminate()
        scp.wait(timeout=10)
    [got] = list(received.iterdir())
    ds = pydicom.dcmread(got)
    assert ds.PatientID == "MRN-31415926" and ds.StudyInstanceUID == IDENTITY.study_uid
    [delivered] = [r for r in ledger.audit_rows() if r.event == AuditEvent.RESULTS_DELIVERED]
    assert json.loads(delivered.detail)["pacs"] == "1 sent"
    assert [e.kind for e in events] == [EventKind.RESULTS]


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
