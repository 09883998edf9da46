"""The cloud loop on one machine: Azurite (blob + queue), the worker as a real process, the
agent. Shared by the round-trip test and ``bench/bench_roundtrip.py``.

The exported head is Colin27 (Debian mricron-data, a real head) written as a 181-slice
DICOM MR series carrying a planted, obviously synthetic identity: finding any of it in
cloud storage, the ledger or the re-link store's file is a leak.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import SimpleITK as sitk

from tests.sync.azurite import ACCOUNT, ACCOUNT_KEY, Azurite
from tests.waiting import wait_until

COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")
ROOT = Path(__file__).resolve().parents[2]

IDENTITY = {
    "PatientName": "Roundtripova^Rosalind^Canary",
    "PatientID": "RT-CANARY-90417",
    "PatientBirthDate": "19610203",
    "PatientSex": "F",
    "AccessionNumber": "ACC-CANARY-7731",
    "StudyDate": "20240917",
    "StudyTime": "101112",
    "StudyID": "ST-CANARY-5",
}
#: Strings that must never be found outside the workstation (and not in its ledger).
SECRETS = ("Roundtripova", "Rosalind", "RT-CANARY-90417", "ACC-CANARY-7731", "19610203",
           "ST-CANARY-5")


@dataclass
class Exported:
    files: list[Path]
    study_uid: str
    series_uid: str
    frame_uid: str
    sop_uids: set[str] = field(default_factory=set)


def write_head(folder: Path, *, slices: int = 181) -> Exported:
    """Colin27 as an axial MR series (``slices`` slices of 1 mm) with :data:`IDENTITY`."""
    from tests.deface.dicom_writer import write_mr_series

    image = sitk.ReadImage(str(COLIN), sitk.sitkFloat32)
    if slices < image.GetSize()[2]:
        start = (image.GetSize()[2] - slices) // 2
        image = image[:, :, start:start + slices]
    staging = folder.with_name(folder.name + ".writing")
    paths = write_mr_series(image, staging)
    folder.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    sops: set[str] = set()
    ds = None
    for p in sorted(paths):
        ds = pydicom.dcmread(p)
        for keyword, value in IDENTITY.items():
            setattr(ds, keyword, value)
        ds.InstitutionName = "Canary General Hospital"
        del ds.PatientIdentityRemoved
        target = folder / p.name
        tmp = target.with_name(target.name + ".part")
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, target)  # a viewer's export: each file appears whole
        sops.add(str(ds.SOPInstanceUID))
        out.append(target)
        p.unlink()
    staging.rmdir()
    assert ds is not None
    return Exported(out, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                    str(ds.FrameOfReferenceUID), sops)


def connection_string(blob: Azurite, queue: Azurite) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={blob.url};QueueEndpoint={queue.url};")


def worker_config(path: Path, conn: str, *, deliveries: str, results: str, queue: str,
                  step: str | None = None, work_dir: Path | None = None,
                  **worker: object) -> Path:
    step = step or f'"{sys.executable}" -m clinic2cloud_worker.reference.cli {{input}} {{output}}'
    lines = ["[target]", 'kind = "azure"', f'container = "{deliveries}"',
             f'connection_string = "{conn}"', f'queue_name = "{queue}"', "", "[worker]",
             f'results_container = "{results}"', f"step = '{step}'", "poll_seconds = 0.2"]
    if work_dir is not None:
        lines.append(f'work_dir = "{work_dir}"')
    for key, value in worker.items():
        lines.append(f"{key} = {value!r}" if not isinstance(value, str) else f'{key} = "{value}"')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class WorkerProcess:
    """``clinic2cloud-worker --config FILE --listen`` as a real process."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self._log = open(log, "ab")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "cloud"), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clinic2cloud_worker.cli", "--config", str(config),
             "--listen"], stdout=self._log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()
        return int(self.proc.returncode)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def wait_for_files(folder: Path, pattern: str, count: int, timeout: float) -> list[Path]:
    def found() -> list[Path]:
        return [p for p in folder.rglob(pattern) if ".partial" not in str(p)]

    wait_until(lambda: len(found()) >= count, timeout)
    return found()
