"""Re-identified results to where the clinic reads them: the results folder and/or a PACS.

Folder layout (local, so it may show identity)::

    <[results] folder>/<Patient ID> <Family^Given>/<Study Date> <Accession>/<series>/<files>

``<series>`` is the delivery's series pseudonym (with its ``.vN``), so the results of two
series of one study stay apart. The folder appears whole: written as ``<series>.partial``
and renamed; results fetched again (a retry) replace the earlier copy.

PACS (``[results] pacs = "AE@host:port"``): the re-identified DICOM objects are sent by
C-STORE through the DICOM node's storage SCU (:func:`agent.dicomnode.scu.send_files`),
with its retries and a state per object.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from agent.config import Config
from agent.results.relink import StudyIdentity

_UNSAFE = re.compile(r"[^\w .,()+-]", re.UNICODE)


def _safe(text: str, fallback: str) -> str:
    clean = _UNSAFE.sub("_", text).strip(" .")[:64]
    return clean or fallback


def study_folder(root: Path, identity: StudyIdentity) -> Path:
    patient = _safe(f"{identity.patient_id} {identity.patient_name}", "patient")
    study = _safe(f"{identity.study_date} {identity.accession}", "study")
    return root / patient / study


def to_folder(staged: Path, root: Path, identity: StudyIdentity, series: str) -> Path:
    """Move the re-identified ``staged`` folder into place; the final folder."""
    parent = study_folder(root, identity)
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / _safe(series, "results")
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(staged, partial)
    if final.exists():
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(partial, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, final)
    return final


def to_pacs(files: list[Path], cfg: Config) -> tuple[int, int]:
    """Send ``files`` by C-STORE to ``[results] pacs`` through the DICOM node's SCU, calling
    as ``[dicom] ae_title`` (over TLS when ``[dicom] send_tls``); (sent, not sent). Never
    raises for the network: objects not sent are counted, and sent again on a retry."""
    from agent.dicomnode.remote import RemoteNode
    from agent.dicomnode.scu import send_files

    node = RemoteNode.configured(cfg.results.pacs, cfg.dicom)
    report = send_files(files, node, attempts=cfg.dicom.send_attempts)
    return len(report.sent), len(report.not_sent)
