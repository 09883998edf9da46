"""The engine's fast reader and the verifier's own parser agree with pydicom on real files."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.sequence import Sequence

from agent.config import DeidConfig
from agent.deid.engine import Engine, read_dicom
from agent.deid.fastread import read_fast
from agent.deid.verify_parse import ParseError, parse
from agent.errors import NotDicom

from .helpers import SECRET, SITE, corpus_files, data_file

CORPUS = [p for p in corpus_files() if p.suffix == ".dcm"]


def test_fast_reader_matches_dcmread_on_the_corpus() -> None:
    used = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in CORPUS:
            fast = read_fast(path.read_bytes(), str(path))
            if fast is None:
                continue  # deflate, no Part 10 header, truncated ...: dcmread reads those
            used += 1
            ref = pydicom.dcmread(path, force=True)
            assert [int(t) for t in fast.keys()] == [int(t) for t in ref.keys()], path.name
            for tag in ref.keys():
                a, b = fast.get_item(tag), ref.get_item(tag)
                if isinstance(b.value, Sequence):
                    assert len(fast[tag].value) == len(b.value), (path.name, tag)
                elif isinstance(a, type(b)):
                    assert a.value == b.value, (path.name, tag)
                else:  # dcmread decoded it while reading (Specific Character Set)
                    assert fast[tag].value == ref[tag].value, (path.name, tag)
            assert fast.file_meta.TransferSyntaxUID == ref.file_meta.TransferSyntaxUID
    assert used > 60  # the fast path is the common path


def test_verifier_parser_reads_every_engine_output(tmp_path: Path) -> None:
    engine = Engine(SITE, SECRET, DeidConfig())
    parsed = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in CORPUS:
            try:
                result = engine.deidentify_file(path, tmp_path)
            except NotDicom:
                continue
            except Exception:  # noqa: BLE001 -- refusals are tested in test_corpus
                continue
            if result is None:
                continue
            data = result.path.read_bytes()
            p = parse(data)
            ref = pydicom.dcmread(result.path)
            top = [e.tag for e in p.elements if e.depth == 0]
            assert top == [int(t) for t in ref.keys()], path.name
            sop = p.find(0x00080018)
            assert sop is not None and p.text(sop) == ref.SOPInstanceUID
            if "PixelData" in ref:
                start, end = p.pixel_span
                assert start > 0 and end > start
            parsed += 1
    assert parsed > 40


def test_parser_names_nested_paths() -> None:
    data = data_file("eCT_Supplemental.dcm").read_bytes()
    p = parse(data)
    paths = {e.path for e in p.elements}
    assert "(5200,9229)[0].(0018,9329)[0].(0008,9007)" in paths  # shared functional groups
    with pytest.raises(ParseError):
        parse(data[:1000])
    with pytest.raises(ParseError):
        parse(b"not dicom at all" * 20)


def test_truncated_file_is_not_dicom(tmp_path: Path) -> None:
    src = data_file("MR_small.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(src[: len(src) - 500])
    with pytest.raises(NotDicom, match="truncated"):
        read_dicom(cut)


def test_sequence_items_read_fast_match_pydicom() -> None:
    """The walk's own reading of sequence items (agent.deid.fastread.read_items) gives the
    items pydicom gives, element for element; what it does not handle it leaves alone."""
    from pydicom.dataelem import RawDataElement

    from agent.deid.fastread import read_items

    read = compared = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in CORPUS:
            fast = read_fast(path.read_bytes(), str(path))
            if fast is None:
                continue
            for tag, raw in list(fast._dict.items()):
                if raw.VR not in ("SQ", None) or not isinstance(raw, RawDataElement) or (
                        not isinstance(raw.value, bytes)):
                    continue
                if raw.VR is None and (tag.is_private
                                       or pydicom.datadict.dictionary_VR(tag) != "SQ"):
                    continue
                mine = read_items(raw.value, bool(raw.is_implicit_VR),
                                  bool(raw.is_little_endian), fast._character_set)
                ref = fast[tag].value
                if mine is None:
                    continue
                read += 1
                assert len(mine) == len(ref), (path.name, tag)
                for a, b in zip(mine, ref, strict=True):
                    assert [int(t) for t in a._dict] == [int(t) for t in b._dict]
                    for t in b._dict:
                        ra, rb = a._dict[t], b._dict[t]
                        if isinstance(rb, RawDataElement):
                            # (an empty value is None or b"" in pydicom, by reader)
                            assert (ra.VR, ra.value or b"") == (rb.VR, rb.value or b""), (
                                path.name, tag, t)
                            compared += 1
    assert read > 50 and compared > 200, (read, compared)
