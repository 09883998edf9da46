"""Re-identified results to where the clinic reads them: the results folder and/or a PACS.

Folder layout (local, so it may show identity)::

    <[results] folder>/<Patient ID> <Family^Given>/<Study Date> <Accession>/<series>/<files>

``<series>`` is the delivery's series pseudonym (with its ``.vN``), so the results of two
series of one study stay apart. The folder appears whole: written as ``<series>.partial``
and renamed; results fetched again (a retry) replace the earlier copy.

PACS (``[results] pacs = "AE@host:port"``): the DICOM objects are sent by C-STORE through
the DICOM node's storage SCU (``agent.dicomnode``, issue 17) when it is installed: this
module calls ``agent.dicomnode.scu.send_files(paths, ae_title=, host=, port=)``. Without it
the folder delivery still happens and the ledger says the PACS was skipped.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from agent.errors import TargetUnavailable
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


def pacs_address(pacs: str) -> tuple[str, str, int]:
    ae, _, address = pacs.partition("@")
    host, _, port = address.rpartition(":")
    return ae, host, int(port)


def to_pacs(files: list[Path], pacs: str) -> bool:
    """Send ``files`` by C-STORE; False when the DICOM node is not installed. Raises
    TargetUnavailable when the PACS cannot be reached (retried later)."""
    try:
        from agent.dicomnode import scu
    except ImportError:
        return False
    ae, host, port = pacs_address(pacs)
    try:
        scu.send_files(files, ae_title=ae, host=host, port=port)
    except TargetUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - converted at the module boundary
        raise TargetUnavailable(f"the PACS {ae} could not take the results "
                                f"({type(exc).__name__}); they are sent again later") from None
    return True
