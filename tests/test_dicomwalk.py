"""The element walker finds every header where pydicom's own reader does, and damaged
bytes end in its error, never a crash or a hang.

pydicom's ``data_element_generator`` is the oracle for where each top-level element and
its value lie (every VR's length form, in the three plain syntaxes, on pydicom's varied
test files); nested structures are built with pydicom and walked back.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple, cast

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import data_element_generator
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from agent.dicomwalk import (
    ITEM,
    MAX_DEPTH,
    PIXEL_DATA,
    PLAIN_SYNTAXES,
    UNDEFINED,
    VRS,
    Element,
    Walker,
    WalkError,
    file_meta,
)
from agent.errors import NotDicom

PYDICOM_DATA = Path(str(get_testdata_file("MR_small.dcm"))).parent
SYNTAXES = [(True, True), (False, True), (False, False)]  # (implicit, little)

#: One element of every VR: the 2-byte and the 4-byte length forms of explicit VR.
EVERY_VR: list[tuple[int, str, object]] = [
    (0x00080005, "CS", "ISO_IR 100"), (0x00080020, "DA", "20240102"),
    (0x00080030, "TM", "101010"), (0x0008002A, "DT", "20240102101010"),
    (0x00080054, "AE", "STORESCP"), (0x00080090, "PN", "Doe^Jane"),
    (0x00081010, "SH", "STATION"), (0x00081030, "LO", "A study"),
    (0x00081080, "LT", "long text"), (0x00081160, "IS", "3"),
    (0x00080016, "UI", "1.2.840.10008.5.1.4.1.1.4"), (0x00101010, "AS", "040Y"),
    (0x00101020, "DS", "1.75"), (0x00104000, "LT", "comment"),
    (0x00180088, "DS", "1.0"), (0x00189087, "FD", 1000.0), (0x00189089, "FD", [0.0, 0.0, 1.0]),
    (0x00200020, "CS", ["A", "P"]), (0x00280010, "US", 4), (0x00280106, "SS", -3),
    (0x00189219, "SS", 1), (0x00209157, "UL", [1, 2]), (0x00189502, "SL", -7),
    (0x00189504, "FL", 2.5), (0x00282000, "OB", b"\x01\x02"), (0x00660023, "OW", b"\0\1" * 3),
    (0x00660016, "OF", b"\0" * 8), (0x00720075, "SV", [-5]), (0x00720082, "UV", [5]),
    (0x00720066, "OV", b"\0" * 8), (0x00660040, "OL", b"\0" * 4), (0x00700082, "OD", b"\0" * 8),
    (0x0040A078, "UR", "http://example.org/x"), (0x00080119, "UC", "code"),
    (0x00180022, "CS", "SP"), (0x00400260, "SQ", []), (0x00091001, "UN", b"\x05\x06"),
    (0x00189351, "UT", "unlimited"), (0x00201200, "IS", "1"), (0x00209165, "AT", 0x00100010),
    (0x7FE00010, "OW", b"\0\1" * 8),
]


class Header(NamedTuple):
    """An Element with its fields named, for reading the tests."""

    tag: int
    vr: bytes
    start: int
    value: int
    length: int
    depth: int


def _named(walk: Iterable[Element]) -> list[Header]:
    return [Header(*e) for e in walk]


def _encode(ds: Dataset, implicit: bool, little: bool) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = implicit, little
    write_dataset(fp, ds)
    return fp.getvalue()


def _every_vr() -> Dataset:
    ds = Dataset()
    for tag, vr, value in EVERY_VR:
        ds.add_new(tag, vr, value)
    return ds


def _oracle(data: bytes, start: int, implicit: bool, little: bool
            ) -> list[tuple[int, int, int]]:
    """(tag, value offset, length) of each top-level element, as pydicom reads them."""
    fp = DicomBytesIO(data)
    fp.seek(start)
    found = data_element_generator(cast(BinaryIO, fp), implicit, little, defer_size=1)
    return [(int(e.tag), e.value_tell, e.length) for e in cast(Iterator[RawDataElement], found)]


def _ours(data: bytes, start: int, implicit: bool, little: bool
          ) -> list[tuple[int, int, int]]:
    walk = Walker(data, implicit, little).elements(start)
    return [(tag, value, length) for tag, _vr, _start, value, length, _depth in walk]


@pytest.mark.parametrize(("implicit", "little"), SYNTAXES)
def test_every_vr_length_form_lies_where_pydicom_reads_it(implicit: bool, little: bool) -> None:
    data = _encode(_every_vr(), implicit, little)
    found = list(_named(Walker(data, implicit, little).elements(0)))
    assert [(e.tag, e.value, e.length) for e in found] == _oracle(data, 0, implicit, little)
    assert all(e.depth == 0 for e in found)
    if not implicit:
        # The VR as written, and the 12-byte header of the long forms.
        vrs = {tag: vr for tag, vr, _ in EVERY_VR}
        for e in found:
            assert e.vr.decode() == vrs[e.tag]
            assert e.value - e.start == (12 if vrs[e.tag] in ("OB", "OD", "OF", "OL", "OV",
                                                              "OW", "SQ", "SV", "UC", "UN",
                                                              "UR", "UT", "UV") else 8)
    else:
        assert all(e.vr == b"" and e.value - e.start == 8 for e in found)


def _pydicom_files() -> list[Path]:
    return sorted(p for p in PYDICOM_DATA.glob("*.dcm") if p.stat().st_size < 4 << 20)


def test_top_level_of_pydicoms_test_files_as_pydicom_reads_it() -> None:
    walked = 0
    for path in _pydicom_files():
        data = path.read_bytes()
        try:
            meta, start = file_meta(data)
        except WalkError:
            continue  # no Part 10 header: not ours to walk
        ts = next((data[e.value:e.value + e.length].decode().strip("\0 ")
                   for e in _named(meta) if e.tag == 0x00020010), "")
        if ts == "1.2.840.10008.1.2.1.99":
            continue  # deflated: nothing to walk until inflated
        syntax = PLAIN_SYNTAXES.get(ts, (False, True))  # encapsulated: explicit VR LE
        if (data[start + 4:start + 6] in VRS) == syntax[0]:
            continue  # not written in its syntax: pydicom guesses, the walk does not
        try:
            expected = _oracle(data, start, *syntax)
        except Exception:  # noqa: BLE001 - a file pydicom itself cannot walk plainly
            continue
        closed = data[-8:] == struct.pack("<HHL" if syntax[1] else ">HHL", 0xFFFE, 0xE0DD, 0)
        if any(value + length > len(data) if length != UNDEFINED else not closed
               for _, value, length in expected[-1:]):
            with pytest.raises(WalkError):  # cut short: pydicom reads what there is
                _ours(data, start, *syntax)
            continue
        assert _ours(data, start, *syntax) == expected, path.name
        walked += 1
    assert walked > 50


def _nested() -> Dataset:
    """Sequences in sequences, of defined and undefined length, items of both kinds."""
    inner = Dataset()
    inner.CodeValue = "113100"
    inner.CodingSchemeDesignator = "DCM"
    middle = Dataset()
    middle.ReferencedSOPInstanceUID = "1.2.3"
    middle.PurposeOfReferenceCodeSequence = Sequence([inner])
    second = Dataset()
    second.ReferencedSOPInstanceUID = "1.2.4"
    ds = Dataset()
    ds.PatientID = "X"
    ds.ReferencedImageSequence = Sequence([middle, second])
    ds.StudyDescription = "after"
    return ds


@pytest.mark.parametrize("undefined", [False, True])
@pytest.mark.parametrize(("implicit", "little"), SYNTAXES)
def test_walk_goes_into_every_sequence_with_its_depth(implicit: bool, little: bool,
                                                      undefined: bool) -> None:
    ds = _nested()
    if undefined:
        ds["ReferencedImageSequence"].is_undefined_length = True
        for item in ds.ReferencedImageSequence:
            item.is_undefined_length_sequence_item = True
        ds.ReferencedImageSequence[0]["PurposeOfReferenceCodeSequence"].is_undefined_length = True
    data = _encode(ds, implicit, little)
    walker = Walker(data, implicit, little)
    walked = [(e.tag, e.depth) for e in _named(walker.walk(0))]
    inside = [(ITEM, 1), (0x00081155, 1), (0x0040A170, 1), (ITEM, 2), (0x00080100, 2),
              (0x00080102, 2), (ITEM, 1), (0x00081155, 1)]
    if implicit and not undefined:
        inside = []  # a defined length without a VR: nothing says it is a sequence
    assert walked == [(0x00081030, 0), (0x00081140, 0), *inside, (0x00100020, 0)]
    # One level: the sequence's contents skipped, its end found.
    top = list(_named(walker.elements(0)))
    assert [e.tag for e in top] == [0x00081030, 0x00081140, 0x00100020]
    assert walker.value_end(top[1]) == top[2].start
    # A sequence value's items, one level.
    start, end = top[1].value, top[2].start - (8 if undefined else 0)
    assert [(e.tag, e.depth) for e in _named(walker.items(start, end))] == [
        (ITEM, 1), (0x00081155, 1), (0x0040A170, 1), (ITEM, 1), (0x00081155, 1)]


def test_encapsulated_pixel_data_runs_to_its_delimiter() -> None:
    data = Path(str(get_testdata_file("MR_small_RLE.dcm"))).read_bytes()
    _, start = file_meta(data)
    walker = Walker(data, implicit=False)
    pixels = [e for e in _named(walker.elements(start)) if e.tag == PIXEL_DATA]
    assert len(pixels) == 1 and pixels[0].length == UNDEFINED
    end = walker.value_end(pixels[0])
    assert data[end - 8:end] == struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    fragments = pydicom.dcmread(io.BytesIO(data)).PixelData
    assert data[pixels[0].value:end - 8] == fragments  # what pydicom reads as the value
    # The full walk does not take fragments for data sets.
    walked = [e.tag for e in _named(walker.walk(start))]
    assert PIXEL_DATA in walked and ITEM not in walked


def _item(body: bytes, undefined: bool) -> bytes:
    if undefined:
        return struct.pack("<HHL", 0xFFFE, 0xE000, UNDEFINED) + body + struct.pack(
            "<HHL", 0xFFFE, 0xE00D, 0)
    return struct.pack("<HHL", 0xFFFE, 0xE000, len(body)) + body


def test_un_of_undefined_length_holds_implicit_vr() -> None:
    # An explicit VR file whose private UN sequence holds implicit VR little endian items.
    body = struct.pack("<HHL", 0x0009, 0x1010, 4) + b"ABCD"
    value = _item(body, True) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    data = (struct.pack("<HH2sHL", 0x0009, 0x1001, b"UN", 0, UNDEFINED) + value
            + struct.pack("<HH2sH", 0x0010, 0x0020, b"LO", 2) + b"ID")
    walker = Walker(data, implicit=False)
    assert [(e.tag, e.depth) for e in _named(walker.walk(0))] == [
        (0x00091001, 0), (ITEM, 1), (0x00091010, 1), (0x00100020, 0)]
    assert [e.tag for e in _named(walker.elements(0))] == [0x00091001, 0x00100020]


def test_file_meta_and_where_the_data_set_starts() -> None:
    path = Path(str(get_testdata_file("CT_small.dcm")))
    data = path.read_bytes()
    meta, start = file_meta(data)
    assert [e.tag for e in _named(meta)] == [
        int(t) for t in pydicom.dcmread(path).file_meta.keys()]
    assert data[start:start + 2] == b"\x08\x00"
    with pytest.raises(WalkError):
        file_meta(b"\0" * 200)
    with pytest.raises(WalkError):
        file_meta(data[:170])  # the meta group cut short inside a value


def test_an_unknown_vr_is_handed_on_or_refused_when_strict() -> None:
    data = struct.pack("<HH2sH", 0x0009, 0x1001, b"ZZ", 2) + b"ab"
    (element,) = _named(Walker(data, implicit=False).elements(0))
    assert (element.vr, element.value, element.length) == (b"ZZ", 8, 2)
    with pytest.raises(WalkError):
        list(Walker(data, implicit=False, strict=True).elements(0))


def test_stray_items_and_unclosed_items_are_errors_of_our_hierarchy() -> None:
    stray = struct.pack("<HHL", 0xFFFE, 0xE000, 0)
    unclosed = (struct.pack("<HH2sHL", 0x0008, 0x1140, b"SQ", 0, UNDEFINED)
                + struct.pack("<HHL", 0xFFFE, 0xE000, UNDEFINED))
    for data in (stray, unclosed, b"\x08\x00\x20\x00DA\x08\x00123"):
        with pytest.raises(WalkError) as caught:
            for e in _named(Walker(data, implicit=False).walk(0)):
                Walker(data, implicit=False).value_end(e)
        assert isinstance(caught.value, NotDicom)  # a damaged file, as the agent says it


def test_nesting_deeper_than_any_clinical_object_is_refused_not_recursed() -> None:
    level = struct.pack("<HH2sHL", 0x0040, 0xA730, b"SQ", 0, UNDEFINED) + struct.pack(
        "<HHL", 0xFFFE, 0xE000, UNDEFINED)
    data = level * (MAX_DEPTH + 5) + b"\0" * 8  # far less than Python's recursion limit
    walker = Walker(data, implicit=False)
    with pytest.raises(WalkError):
        list(_named(walker.walk(0)))
    with pytest.raises(WalkError):
        for e in _named(walker.elements(0)):
            walker.value_end(e)
    hostile = level * 5000  # deeper than Python's recursion limit
    with pytest.raises(WalkError):
        list(_named(Walker(hostile, implicit=False).walk(0)))


def _exhaust(data: bytes, implicit: bool, little: bool) -> None:
    """Every way of walking ``data``: it completes or raises WalkError, nothing else."""
    for strict in (False, True):
        walker = Walker(data, implicit, little, strict=strict)
        for walk in (walker.walk(0), walker.elements(0), walker.items(0, len(data))):
            try:
                for e in walk:
                    walker.value_end(e)
                    assert walker.header(e[2], None, e[5]) == e
            except WalkError:
                pass


_SAMPLE = {s: _encode(_nested(), *s) + _encode(_every_vr(), *s) for s in SYNTAXES}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(syntax=st.sampled_from(SYNTAXES), cut=st.integers(0, 2000),
       flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=6))
def test_truncated_and_fuzzed_bytes_end_in_a_walk_error(
        syntax: tuple[bool, bool], cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(_SAMPLE[syntax])
    for at, byte in flips:
        if at < len(data):
            data[at] = byte
    _exhaust(bytes(data[:cut]), *syntax)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), syntax=st.sampled_from(SYNTAXES))
def test_random_bytes_end_in_a_walk_error(data: bytes, syntax: tuple[bool, bool]) -> None:
    _exhaust(data, *syntax)
    # As an element stream made of headers with undefined lengths and items.
    _exhaust(data.replace(b"\xff", b"\xff\xff\xff\xff"), *syntax)
