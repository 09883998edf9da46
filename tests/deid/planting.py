"""Planting identities in real files: scripts, character sets, spellings and fields.

Shared by the property tests (random plantings) and the MIDI-B-style score (a fixed
planted set). The leak check here is the tests' own (a third reading, neither the
cleaner's nor the verifier's): every text value of the output, decoded by pydicom and
folded with ``anyascii`` to lower-case letters and digits, must not hold the folded
identity, and the raw bytes must not hold it in the planted encoding.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pydicom
from anyascii import anyascii
from pydicom.charset import convert_encodings, encode_string
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus" / "dicom"

#: One real file of each corpus series shape that is quick to process (multi-frame files
#: of thousands of frames are left to the corpus acceptance test).
CORPUS_FILES = [
    "dcm_qa_ge/01_Ax_DWI_TENSOR_R2/i22.MRDC.1",
    "dcm_qa_philips/fmri/201_EPI_asc_CLEAR_0001_01.dcm",
    "dcm_qa_mosaic/ep2d_Asc_2/IM-0001-0001.dcm",
    "dcm_qa_ge/2_fMRI_Multiphase_Des/0001.dcm",
]
PYDICOM_FILES = ["MR_small.dcm", "CT_small.dcm", "rtstruct.dcm", "MR_small_implicit.dcm"]

#: Specific Character Set -> (Python codec for planting, script of the names).
CHARSETS = {
    "ISO_IR 100": ("latin_1", "latin"),
    "ISO_IR 192": ("utf-8", "any"),
    "ISO_IR 144": ("iso8859_5", "cyrillic"),
    "ISO_IR 126": ("iso8859_7", "greek"),
    "GB18030": ("gb18030", "chinese"),
    "\\ISO 2022 IR 87": ("iso2022_jp", "japanese"),
    "\\ISO 2022 IR 149": ("euc_kr", "korean"),
}


def base_files() -> list[Path]:
    """Real corpus files (when the corpus is there) and pydicom's files."""
    out = [CORPUS / f for f in CORPUS_FILES if (CORPUS / f).is_file()]
    for name in PYDICOM_FILES:
        path = get_testdata_file(name)
        if path is not None:
            out.append(Path(str(path)))
    return out


def fold(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", anyascii(unicodedata.normalize("NFKC", text)).lower())


@dataclass(frozen=True)
class Field:
    """Where a text is planted: an attribute path, the VR, how it is written."""

    name: str

    def plant(self, ds: Dataset, text: str) -> None:
        _PLANTERS[self.name](ds, text)


def _code_item(meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = "X1"
    item.CodingSchemeDesignator = "99LOCAL"
    item.CodeMeaning = meaning
    return item


def _nested(ds: Dataset, text: str) -> None:
    inner = Dataset()
    inner.ContentDescription = text  # not a table attribute: kept, screened
    middle = Dataset()
    middle.ReferencedSeriesSequence = Sequence([inner])
    ds.ContributingEquipmentSequence = Sequence([middle])


def _un(ds: Dataset, text: str) -> None:
    # encoded as pydicom writes text of this character set (ISO 2022 escapes included)
    data = encode_string(text, convert_encodings(_charset(ds)))
    if len(data) % 2:
        data += b" "
    # A standard descriptor (Requested Procedure Description) written with VR UN: the
    # dictionary types it as LO.
    ds[0x00321060] = RawDataElement(Tag(0x00321060), "UN", len(data), data, 0, False, True)


def _private(ds: Dataset, text: str) -> None:
    block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    block.add_new(0x08, "CS", "IMAGE NUM 4")  # safe
    other = ds.private_block(0x0041, "ACME NOTES", create=True)
    other.add_new(0x01, "LO", text)


def _roi(ds: Dataset, text: str) -> None:
    item = Dataset()
    item.ROINumber = 1
    item.ROIName = text
    ds.StructureSetROISequence = Sequence([item])


def _image_type(ds: Dataset, text: str) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", _cs(text)]


def _scan_options(ds: Dataset, text: str) -> None:
    ds.ScanOptions = ["FS", _cs(text)]


def _cs(text: str) -> str:
    # CS allows upper-case letters, digits, space and underscore only
    return (re.sub(r"[^A-Z0-9 _]", "_", anyascii(text).upper()) or "X")[:16]


def _charset(ds: Dataset) -> list[str]:
    value = ds.get("SpecificCharacterSet", "ISO_IR 100")
    return [str(v) for v in value] if isinstance(value, (list, MultiValue)) else [str(value)]


_PLANTERS = {
    "MedicalAlerts": lambda ds, t: setattr(ds, "MedicalAlerts", t),
    "Allergies": lambda ds, t: setattr(ds, "Allergies", t),
    "Occupation": lambda ds, t: setattr(ds, "Occupation", t[:16]),
    "EthnicGroup": lambda ds, t: setattr(ds, "EthnicGroup", t[:16]),
    "SeriesDescription": lambda ds, t: setattr(ds, "SeriesDescription", f"T1 MPRAGE {t}"),
    "StudyDescription": lambda ds, t: setattr(ds, "StudyDescription", f"Research^{t}_Prisma"),
    "ProtocolName": lambda ds, t: setattr(ds, "ProtocolName", f"ep2d_bold {t}"),
    "ImageComments": lambda ds, t: setattr(ds, "ImageComments", f"seen by {t}"),
    "CodeMeaning": lambda ds, t: setattr(ds, "ProcedureCodeSequence",
                                         Sequence([_code_item(f"Brain MRI {t}")])),
    "ROIName": _roi,
    "ImageType": _image_type,
    "ScanOptions": _scan_options,
    "UN": _un,
    "Private": _private,
    "Nested": _nested,
}
FIELDS = [Field(n) for n in _PLANTERS]


def planted_file(base: Path, out: Path, charset: str, identity: dict[str, str],
                 field: Field, copy: str) -> Path:
    """``base`` with the study's identity (PN and ID elements) set and ``copy`` planted
    in ``field``; written with ``charset``."""
    ds = pydicom.dcmread(base, force=True)
    ds.SpecificCharacterSet = charset
    ds.PatientName = identity["name"]
    ds.PatientID = identity["id"]
    ds.ReferringPhysicianName = identity.get("physician", "")
    ds.PatientMotherBirthName = identity.get("relative", "")
    ds.StudyDate = identity.get("date", "20190715")
    ds.PatientAge = identity.get("age", "045Y")
    field.plant(ds, copy)
    keep_un = pydicom.config.replace_un_with_known_vr
    pydicom.config.replace_un_with_known_vr = False  # the planted UN is written as UN
    try:
        ds.save_as(out, enforce_file_format=True)
    finally:
        pydicom.config.replace_un_with_known_vr = keep_un
    return out


def leaked(path: Path, secrets: list[str], codec: str) -> list[str]:
    """The secrets found in ``path`` (folded text of every value; raw bytes)."""
    data = path.read_bytes()
    ds = pydicom.dcmread(path, force=True)
    texts = []
    for elem in ds.iterall():
        if elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "SQ", "UI") or elem.tag == 0x7FE00010:
            continue
        value = elem.value
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        texts.append(fold(str(value)))
    folded = "\x00".join(texts)
    out = []
    for secret in secrets:
        f = fold(secret)
        if len(f) >= 3 and f in folded:
            out.append(secret)
            continue
        try:
            raw = secret.encode(codec)
        except UnicodeEncodeError:
            continue
        if len(raw) >= 4 and raw in data:
            out.append(secret)
    return out
