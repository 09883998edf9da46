"""Descriptors cleaned by allow-list; other kept text loses the study's identifiers."""

from __future__ import annotations

import pytest

from agent.deid.clean import Cleaner
from agent.deid.variants import build_variants
from agent.deid.vocabulary import vocabulary

IDENTITY = {("name", "Rorden^Chris"), ("name", "Bold^Anna"), ("id", "MRN-55 1234"),
            ("place", "Prisma Imaging Center Springfield"), ("date", "20190715")}


@pytest.fixture(scope="module")
def cleaner() -> Cleaner:
    vocab = vocabulary()
    return Cleaner(build_variants(IDENTITY, vocab.core), vocab)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("T1 MPRAGE SAG", "T1 MPRAGE SAG"),
        ("t1_mprage_sag_p2_iso", "t1_mprage_sag_p2_iso"),
        ("3D Ax T1 MP-RAGE_R22", "3D Ax T1 MP-RAGE_R22"),
        ("ep2d_bold_moco 2.5mm b1000", "ep2d_bold_moco 2.5mm b1000"),
        ("func-bold_task-fa_run-1", "func-bold_task-fa_run-1"),
        ("AxT2FLAIR", "AxT2FLAIR"),
        ("Research^Rorden_Prisma", "Research^Prisma"),
        ("Cheng test", "test"),
        ("BOLD resting", "BOLD resting"),  # Bold is a name part, and a protocol word
        ("Anna Bold scan", "scan"),
        ("T1 15.07.2019 MRN 551234", "T1"),
        ("DWI July 15, 2019", "DWI"),
        ("brain 03.04.1999 for Wilhelmina", "brain"),
        ("T2 john.doe@example.org", "T2"),
        # a connecting word is dropped only where something next to it was taken away
        ("fMRI Multiphase Des", "fMRI Multiphase Des"),
        ("DTI for Wilhelmina", "DTI"),
        ("for Rorden DTI", "DTI"),
        ("of T1 of", "of T1 of"),
    ],
)
def test_descriptors(cleaner: Cleaner, text: str, expected: str) -> None:
    assert cleaner.descriptor(text) == expected


def test_device_text_keeps_the_model_name(cleaner: Cleaner) -> None:
    # The institution shares "Prisma" with the model; the model is not truncated.
    assert cleaner.scrub("MAGNETOM Prisma Fit", places=False) == "MAGNETOM Prisma Fit"
    assert cleaner.scrub("Prisma Imaging Center Springfield") == ""
    assert cleaner.scrub("Dr Rorden's unit") == "Dr 's unit"


def test_code_strings_drop_identifying_values(cleaner: Cleaner) -> None:
    assert cleaner.code_string(["ORIGINAL", "PRIMARY", "RORDEN"]) == ["ORIGINAL", "PRIMARY"]
    assert cleaner.code_string(["ORIGINAL", "BOLD"]) == ["ORIGINAL", "BOLD"]


def test_undecoded_values_are_screened_cheaply(cleaner: Cleaner) -> None:
    assert not cleaner.may_contain(b"ORIGINAL\\PRIMARY\\M\\ND")
    assert cleaner.may_contain(b"RORDEN")
    assert cleaner.may_contain(b"55-12 34")
    assert cleaner.may_contain("Müller".encode("latin-1"))  # not ASCII: always decoded
    assert cleaner.may_contain(b"\x1b$B;3ED\x1b(B")  # ISO 2022: always decoded
