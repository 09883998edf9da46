"""De-identification (DICOM PS3.15 Annex E Basic Profile with options) and its verifier.

* :class:`DeidStage` - the pipeline stage ``deidentify`` (engine: :mod:`agent.deid.engine`).
* :class:`VerifyStage` - the pipeline stage ``verify``, an independent code path
  (:mod:`agent.deid.verify`).
* :func:`pseudonym_for_patient` - the site pseudonym of a Patient ID (``clinic2cloud lookup``).
"""

from __future__ import annotations

from agent.deid.engine import Engine, FileResult, deidentify_file
from agent.deid.lookup import pseudonym_for_patient
from agent.deid.stage import DeidStage, deidentify_files
from agent.deid.verify import VerifyStage, verify_series

__all__ = [
    "DeidStage",
    "Engine",
    "FileResult",
    "VerifyStage",
    "deidentify_file",
    "deidentify_files",
    "pseudonym_for_patient",
    "verify_series",
]
