"""Re-identification of result objects, locally, from the re-link store.

A result object (a SEG, an SR, a secondary capture ...) made in the cloud carries the
delivery's pseudonymous patient and study and references pseudonymous series, instances
and frame of reference. Here:

* the study is looked up by its pseudonymous Study Instance UID, and must be the study of
  the delivery the results were filed under (its pseudonym in the results path) and carry
  that delivery's patient pseudonym - results are never filed to another patient;
* every UID anywhere in the object (any depth) that the store knows is replaced by the
  original: the object files into the original study and references the original series
  and images (and overlays them in the original frame of reference);
* the patient and study attributes get their original values; Patient Identity Removed
  becomes NO and the de-identification method attributes are removed, since the object
  now identifies the patient; text is written as UTF-8 (ISO_IR 192).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from agent.results.relink import RelinkStore, StudyIdentity


class NotRelinkable(Exception):
    """A result object cannot be re-identified (the message says why; no PHI)."""


_REMOVE = (0x00120063, 0x00120064, 0x00280303)  # method, method codes, dates modified


def _map_uids(ds: Dataset, original: Callable[[str], str | None]) -> int:
    mapped = 0
    for elem in ds.iterall():
        if elem.VR != "UI" or elem.value in (None, ""):
            continue
        if isinstance(elem.value, (list, MultiValue)):
            values = [original(str(v)) or str(v) for v in elem.value]
            mapped += sum(1 for a, b in zip(values, elem.value, strict=True) if a != str(b))
            elem.value = values
        else:
            new = original(str(elem.value))
            if new is not None:
                elem.value = new
                mapped += 1
    return mapped


def reidentify_dataset(ds: Dataset, store: RelinkStore, *, patient_pseudonym: str,
                       study_pseudonym: str) -> tuple[StudyIdentity, int]:
    """Re-identify ``ds`` in place; the identity restored and the number of UIDs mapped."""
    pseudo_study = str(ds.get("StudyInstanceUID", "")).strip()
    identity = store.study_by_uid(pseudo_study) if pseudo_study else None
    if identity is None:
        raise NotRelinkable("a result object names a study the re-link store does not know "
                            "(recorded on another workstation, or removed by retention)")
    if identity.study_pseudonym != study_pseudonym or \
            identity.patient_pseudonym != patient_pseudonym:
        raise NotRelinkable("a result object names another study than the delivery it was "
                            "filed under; it is not filed to any patient")
    pid = str(ds.get("PatientID", "")).strip()
    if pid and pid != patient_pseudonym:
        raise NotRelinkable("a result object names another patient than its delivery; it is "
                            "not filed to any patient")
    mapped = _map_uids(ds, store.original_uid)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id
    ds.PatientBirthDate = identity.birth_date
    ds.PatientSex = identity.sex
    ds.AccessionNumber = identity.accession
    ds.StudyDate = identity.study_date
    ds.StudyTime = identity.study_time
    ds.StudyID = identity.study_id
    ds.StudyInstanceUID = identity.study_uid
    ds.PatientIdentityRemoved = "NO"
    for tag in _REMOVE:
        if tag in ds:
            del ds[tag]
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return identity, mapped


def is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def reidentify_file(src: Path, dst: Path, store: RelinkStore, *, patient_pseudonym: str,
                    study_pseudonym: str) -> StudyIdentity:
    """Read ``src``, re-identify it, write ``dst``."""
    try:
        ds = pydicom.dcmread(src)
    except (InvalidDicomError, OSError, ValueError, TypeError, KeyError, EOFError):
        raise NotRelinkable("a result object is not readable DICOM") from None
    identity, _ = reidentify_dataset(ds, store, patient_pseudonym=patient_pseudonym,
                                     study_pseudonym=study_pseudonym)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        ds.save_as(dst, enforce_file_format=True)
    except (ValueError, TypeError, AttributeError, KeyError):
        raise NotRelinkable("a re-identified result object could not be written") from None
    return identity
