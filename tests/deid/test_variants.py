"""The cleaner's identity variants: every spelling of a study's identifiers is found,
imaging words are not."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from agent.deid.dates import date_spans
from agent.deid.folding import Folded, fold
from agent.deid.variants import identity_variants

from .helpers import data_file


@pytest.fixture(scope="module")
def study() -> Dataset:
    ds = pydicom.dcmread(data_file("MR_small.dcm"))
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Smith-Jones^Müller Anna=王^小明=ワン^シャオミン"
    ds.PatientID = "AB-123 456"
    ds.InstitutionName = "Klinikum Süderstraße Hamburg"
    ds.PatientTelephoneNumbers = "+1 555 0199 7788"
    ds.StudyDate = "20210312"
    ds.PatientBirthDate = "19450102"
    item = Dataset()
    item.PersonName = "Ivanova^Olga"  # a relative, in a sequence
    ds.PatientMotherBirthName = "ΠΑΠΑΔΟΠΟΥΛΟΥ^ΕΛΕΝΗ"
    ds.ContributingEquipmentSequence = Sequence([item])
    ds.ReferringPhysicianName = "DTI^Frank"
    return ds


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("T1 Smith 12 March 2021", ["name", "date"]),
        ("Dr. SMITH-JONES", ["name"]),
        ("jones", ["name"]),
        ("MUELLER", ["name"]),
        ("muller anna", ["name"]),
        ("ab123456", ["id"]),
        ("AB 12-34-56", ["id"]),
        ("患者王小明", ["name"]),
        ("Wang Xiaoming", ["name"]),
        ("ИВАНОВА", ["name"]),
        ("Papadopoulou", ["name"]),
        ("Suederstrasse", ["place"]),
        ("call 0199-7788", ["phone"]),
        ("ORIGINAL\\PRIMARY\\SMITH", ["name"]),
        ("born 2.1.1945", ["date"]),
        ("12MAR2021", ["date"]),
        ("2021年3月12日", ["date"]),
        ("12 марта 2021", ["date"]),
    ],
)
def test_every_spelling_is_found(study: Dataset, text: str, kinds: list[str]) -> None:
    ids = identity_variants(study)
    assert ids.find(text) == kinds
    if text.isascii():
        assert ids.may_occur(text.encode())


@pytest.mark.parametrize("text", ["T1 MPRAGE SAG", "timing", "ep2d_bold_moco", "b1000",
                                  "ORIGINAL\\PRIMARY\\M\\ND", "13 March 2021"])
def test_ordinary_text_is_not_an_identifier(study: Dataset, text: str) -> None:
    assert identity_variants(study).find(text) == []


def test_a_lone_name_part_that_is_an_imaging_term(study: Dataset) -> None:
    ids = identity_variants(study)
    assert ids.find("DTI ax") == ["name"]
    assert ids.find("DTI ax", keep_core=True) == []  # in descriptors: the protocol word
    assert ids.find("Frank DTI", keep_core=True) == ["name"]  # never as part of a name


def test_spans_cut_whole_characters() -> None:
    folded = Folded.of("Dr. Müller-Lüdenscheidt")
    [(a, b)] = folded.find("muller", whole=False, breaks=frozenset())
    assert folded.span(a, b) == (4, 10)
    assert fold("ΠΑΠΑΔΟΠΟΥΛΟΣ") == "papadopoulos"
    assert fold("ヤマダ") == "yamada"


def test_dates_in_words_and_numbers() -> None:
    day = {(2021, 3, 12)}
    for text in ("12 March 2021", "March 12, 2021", "12-mar-21", "2021-03-12", "12.03.2021",
                 "03/12/2021", "12 de marzo de 2021", "12. März 2021", "20210312",
                 "12 Μαρτίου 2021", "2021년 3월 12일"):
        assert date_spans(text, day), text
    assert date_spans("11 March 2021", day) == []
    assert date_spans("11 March 2021") != []  # any date, for descriptors
    assert date_spans("TR 2000 TE 30 b 1000") == []
