"""The real corpus (four vendors) through the engine and the verifier: every file
verified clean, and the protocol descriptions kept (tokens counted)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pydicom
import pytest

from agent.config import DeidConfig
from agent.deid.engine import Engine
from agent.deid.verify import Rules, check_file, collect_identifiers, load_safe_private
from agent.errors import IdentityRisk

from .helpers import SECRET, SITE
from .planting import CORPUS

#: The descriptors the profile keeps (Image Comments and other long text are removed).
DESCRIPTORS = ("SeriesDescription", "ProtocolName", "StudyDescription",
               "PerformedProcedureStepDescription", "RequestedProcedureDescription",
               "CodeMeaning")
_TOKEN = re.compile(r"[^\W_]+")
#: Words of the corpus descriptors that are people's or sites' names (investigators,
#: test subjects), expected to go: "Research^Rorden_Prisma", "Cheng test", "Konvertertest".
NAMES = {"rorden", "cheng", "konvertertest"}


def _series() -> list[list[Path]]:
    if not CORPUS.is_dir():
        return []
    out = []
    for folder in sorted(p for p in CORPUS.glob("*/*") if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.is_file())
        out.append(files[:2] + files[-1:] if len(files) > 3 else files)
    return out


def _tokens(ds: pydicom.Dataset, within: set[int] | None = None) -> list[str]:
    """The descriptor words of ``ds``; with ``within``, only those under these top-level
    tags (what the profile keeps with a value: a sequence it removes, such as Acquisition Context,
    takes its code meanings with it, which is the profile's decision, not the cleaner's)."""
    words = []
    ds.pop("DeidentificationMethodCodeSequence", None)  # ours, not the source's
    for top in ds:
        if within is not None and top.tag not in within:
            continue
        items = [top] if top.VR != "SQ" else [e for item in top.value for e in item.iterall()]
        for elem in items:
            if elem.keyword in DESCRIPTORS and elem.value:
                words += [w.lower() for w in _TOKEN.findall(str(elem.value))]
    return words


def test_real_corpus_keeps_protocol_descriptions(tmp_path: Path) -> None:
    series = _series()
    if not series:
        pytest.skip(f"the real corpus is not at {CORPUS}")
    engine = Engine(SITE, SECRET, DeidConfig())
    rules = Rules(safe_private=load_safe_private())
    before = after = expected = 0
    lost: set[str] = set()
    for files in series:
        ids = collect_identifiers(files)
        for src in files:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    result = engine.deidentify_file(src, tmp_path)
                except IdentityRisk:
                    continue  # pixel-identity rules are issues 10 and 13's
                assert result is not None
                out = pydicom.dcmread(result.path, stop_before_pixels=True)
                a = _tokens(pydicom.dcmread(src, stop_before_pixels=True, force=True),
                            within={int(e.tag) for e in out if e.value})
                b = _tokens(out)
            assert check_file(result.path, ids, rules) == [], src
            before += len(a)
            after += len(b)
            wanted = [t for t in a if t not in NAMES]
            expected += len(wanted)
            lost |= set(wanted) - set(b)
    print(f"\nreal corpus descriptors: {after} of {before} tokens kept "
          f"({after / max(1, expected):.1%} of the {expected} that are not names); "
          f"lost: {sorted(lost)}")
    assert not (set(_names_kept(tmp_path)) & NAMES)
    assert after >= 0.95 * expected


def _names_kept(folder: Path) -> list[str]:
    words: list[str] = []
    for path in folder.glob("*.dcm"):
        words += _tokens(pydicom.dcmread(path, stop_before_pixels=True))
    return words
