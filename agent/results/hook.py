"""Pipeline stage ``relink``: fill the re-link store when a series is de-identified.

Runs right after ``deidentify`` (only with ``[results] enabled``). It reads the staged
source headers - never the de-identification engine's state - and computes the pseudonymous
UIDs the engine wrote with the same keyed function (:class:`agent.deid.pseudo.UidMapper`
with the site secret), then records identity and UID pairs in the encrypted store
(:mod:`agent.results.relink`). It checks its mapping against the de-identified output's
Study Instance UID: if the two ever disagree the results could not be filed, so it says
so in the log (no PHI) instead of recording pairs that would never match.

It never quarantines or withholds: results coming back are a convenience, delivery is not.
"""

from __future__ import annotations

import logging

import pydicom
from pydicom.errors import InvalidDicomError

from agent.deid.pseudo import UidMapper
from agent.results.relink import RelinkStore, StudyIdentity
from agent.work import SeriesWork

log = logging.getLogger(__name__)

_UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                 "FrameOfReferenceUID")
_TAGS = ["SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
         "AccessionNumber", "StudyDate", "StudyTime", "StudyID", *_UID_KEYWORDS]


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


class RelinkStage:
    """Records what restores the identity of this series' results (module docstring)."""

    name = "relink"

    def __init__(self, store: RelinkStore, site_secret: bytes) -> None:
        self.store = store
        self.uids = UidMapper(site_secret)

    def __call__(self, work: SeriesWork) -> None:
        first: pydicom.Dataset | None = None
        pairs: set[tuple[str, str]] = set()
        for path in work.source_files:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_TAGS)
            except (InvalidDicomError, OSError, ValueError, TypeError, KeyError):
                continue  # de-identification already judged the file
            first = first or ds
            for keyword in _UID_KEYWORDS:
                original = _text(ds, keyword)
                if original:
                    pairs.add((self.uids(original), original))
        if first is None or not _text(first, "StudyInstanceUID"):
            return
        study_uid = _text(first, "StudyInstanceUID")
        pseudo_study = self.uids(study_uid)
        if not self._agrees(work, pseudo_study):
            log.warning("series %s: the de-identified Study Instance UID differs from the "
                        "re-link mapping; results of this series cannot be re-identified",
                        work.key)
            return
        identity = StudyIdentity(
            patient_name=_text(first, "PatientName"), patient_id=_text(first, "PatientID"),
            birth_date=_text(first, "PatientBirthDate"), sex=_text(first, "PatientSex"),
            accession=_text(first, "AccessionNumber"), study_uid=study_uid,
            study_date=_text(first, "StudyDate"), study_time=_text(first, "StudyTime"),
            study_id=_text(first, "StudyID"), patient_pseudonym=work.patient_pseudonym,
            study_pseudonym=work.study_pseudonym)
        rows = self.store.record(identity, pseudo_study, sorted(pairs))
        log.info("series %s: %d re-link entries recorded", work.key, rows)

    @staticmethod
    def _agrees(work: SeriesWork, pseudo_study: str) -> bool:
        for path in work.files[:1]:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True,
                                     specific_tags=["StudyInstanceUID"])
            except (InvalidDicomError, OSError, ValueError, TypeError, KeyError):
                return True  # nothing to compare with; the verifier judges the outputs
            return _text(ds, "StudyInstanceUID") == pseudo_study
        return True
