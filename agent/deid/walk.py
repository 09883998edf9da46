"""One pass of the profile over one dataset (recursing into sequences).

The walk applies each element's action (:mod:`agent.deid.profile`,
:meth:`Engine.default_action`) and, on the way, does two things for the text cleaner:

* it **records** every identifier of the study before the profile removes it (PN values
  at any depth and in private elements with an explicit VR, the identifying attributes
  of Table E.1-1, DA/DT values; UN typed by the dictionary), so that the variants are
  built from one pass;
* it **defers** every text value the profile keeps (descriptors, code strings, text
  outside the table, safe private values) to :mod:`agent.deid.screen`, which cleans
  them once the identifiers are known.

Values are decoded only when they change: ASCII text is rewritten straight from its bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from agent.deid import pseudo
from agent.deid.fastread import read_items
from agent.deid.profile import Action

if TYPE_CHECKING:
    from agent.deid.engine import Engine

PIXEL_DATA_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_DUMMY_TEXT = "ANONYMIZED"
_NUMERIC_VRS = frozenset({"IS", "DS", "US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "AT"})
_BYTES_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
#: Value representations the engine may rewrite without decoding (ASCII text).
_FAST_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
_TEXT_DUMMIES = {
    "AE": "ANONYMIZED", "AS": "000Y", "CS": "ANONYMIZED", "LO": "ANONYMIZED", "LT": "ANONYMIZED",
    "PN": "ANONYMIZED", "SH": "ANONYMIZED", "ST": "ANONYMIZED", "TM": "000000",
    "UC": "ANONYMIZED", "UR": "ANONYMIZED", "UT": "ANONYMIZED", "DA": "19000101",
    "DT": "19000101000000",
}
_CLEANABLE_VRS = frozenset({"SH", "LO", "CS", "UC", "ST", "LT", "UT"})
#: Text kept by the profile that the screen searches for identifiers.
SCREENED_VRS = frozenset({"AE", "CS", "LO", "LT", "SH", "ST", "UC", "UR", "UT"})
CODE_MEANING = 0x00080104
#: The device description the profile keeps on purpose: screened without place words
#: (a model name is not truncated by the institution's) nor listed person names.
DEVICE_TAGS = frozenset({
    0x00080070,  # Manufacturer
    0x00081090,  # Manufacturer's Model Name
    0x00181020,  # Software Versions
    0x00181016,  # Secondary Capture Device Manufacturer
    0x00181018,  # Secondary Capture Device Manufacturer's Model Name
    0x00181019,  # Secondary Capture Device Software Versions
    0x00181250,  # Receive Coil Name
    0x00181251,  # Transmit Coil Name
    0x00189041,  # Receive Coil Manufacturer Name
    0x00189050,  # Transmit Coil Manufacturer Name
})


#: How the walk treats an element of a plan (see Engine.plan): untouched and unread, simply
#: removed, handed to the screen, its ASCII value rewritten first (``fast``), or by its
#: action (``apply``).
QUIET, DROP, SCREEN, FAST, GENERAL = "quiet", "drop", "screen", "fast", "general"
#: (VR as read, VR typed by the dictionary, kind of identifier, action, how (QUIET ...),
#: the screen's mode for SCREEN, else "")
Plan = tuple[str, str, "str | None", Action, str, str]


def screen_mode(tag: int, action: Action, vr: str,
                keep_mode: Callable[[int, str], str]) -> str | None:
    """The screen's mode for text the profile keeps (``keep_mode``: the engine's choice
    for kept text), None when the walk does not hand the element to the screen now."""
    if action is Action.KEEP and vr not in ("SQ", "UN") and vr in SCREENED_VRS:
        return keep_mode(tag, vr)
    if action is Action.SCRUB and vr != "UN":
        return "descriptor" if tag == CODE_MEANING else "text"
    if action is Action.CLEAN and vr in _CLEANABLE_VRS:
        return "descriptor"
    return None


def plan_mode(tag: int, action: Action, vr: str, keep_mode: Callable[[int, str], str]
              ) -> tuple[str, str]:
    """How :meth:`Walk.dataset` treats an element, decided as :meth:`Walk.apply` would:
    QUIET what it leaves as it is without looking (kept, not text the screen reads, not
    an age, not a sequence); DROP what it only deletes (removed, not a sequence whose
    identifiers are collected); SCREEN (with the screen's mode) what it defers; FAST
    what it first tries to rewrite from the ASCII bytes; GENERAL the rest. Pixel Data
    (and its float and double float forms) is QUIET: never looked at."""
    if tag in PIXEL_DATA_TAGS:
        return QUIET, ""
    mode = screen_mode(tag, action, vr, keep_mode)
    if mode is not None:
        return SCREEN, mode
    if action is Action.KEEP and vr not in ("SQ", "UN", "AS"):
        return QUIET, ""
    if action is Action.REMOVE and vr != "SQ":
        return DROP, ""
    if action is not Action.KEEP and action is not Action.REMOVE and vr in _FAST_VRS:
        return FAST, ""
    return GENERAL, ""


@dataclass
class Pending:
    """A kept text value the screen must clean: where it is and how to clean it."""

    ds: Dataset
    tag: int
    vr: str
    mode: str  # "descriptor", "text", "cs", "device", "private"
    encodings: Any


@dataclass
class Walk:
    """One pass over one dataset (recursing into sequences)."""

    engine: Engine
    pseudonym: str
    days: int
    shifted: bool = False
    #: (kind, value) of every identifier met: "name", "id", "place", "phone", "date"
    identity: set[tuple[str, str]] = field(default_factory=set)
    pending: list[Pending] = field(default_factory=list)
    encodings: Any = None

    def dataset(self, ds: Dataset) -> None:
        elements: Any = ds._dict  # raw access: no value is decoded unless we change it
        outer = self.encodings
        if 0x00080005 in elements:
            self.encodings = _charset(ds)
        engine = self.engine
        plans = engine.plans
        pending = self.pending
        private: list[int] = []
        for key in list(elements):
            # Table lookups with a plain int (pydicom's BaseTag compares in Python); the
            # dataset's own dict with its own key object (found by identity, no compare).
            tag = int(key)
            if tag >> 16 & 1:
                private.append(key)
                continue
            raw = elements[key]
            read_vr = raw.VR
            vr, typed, kind, action, mode, screen_as = (plans.get((tag, read_vr))
                                                        or engine.plan(tag, read_vr))
            if kind is not None:
                self.record(kind, raw, typed)
            if mode is QUIET:
                continue  # the common case: kept as the raw bytes read
            if mode is DROP:
                del elements[key]
            elif mode is SCREEN:
                pending.append(Pending(ds, key, vr, screen_as, self.encodings))
            elif not (mode is FAST and type(raw) is RawDataElement
                      and self.fast(ds, key, raw, vr, action)):
                self.apply(ds, key, action, vr)
        if private:
            self.private(ds, private)
        self.encodings = outer

    def record(self, kind: str, raw: Any, vr: str) -> None:
        """Remember an identifier's values (decoded with the dataset's character set);
        a raw value's are remembered per engine by its bytes (see Engine.record_memo)."""
        value = raw.value
        if value is None:
            return
        if type(value) is bytes:
            memo = self.engine.record_memo
            key = (kind, vr, value, _encodings_key(self.encodings))
            found = memo.get(key)
            if found is None:
                outer, self.identity = self.identity, set()
                try:
                    self.record_values(kind, value, vr)
                    found = tuple(self.identity)
                finally:
                    self.identity = outer
                if len(memo) >= _MEMO_LIMIT:
                    memo.clear()
                memo[key] = found
            self.identity.update(found)
            return
        self.record_values(kind, value, vr)

    def record_values(self, kind: str, value: Any, vr: str) -> None:
        if isinstance(value, (bytes, bytearray)):
            data = bytes(value)
            if data.isascii() and b"\x1b" not in data:
                text = data.decode("ascii")
            else:
                try:
                    text = decode_bytes(data, self.encodings or ["iso8859"], {0x5C, 0x5E, 0x3D})
                except Exception:  # noqa: BLE001 -- undecodable: every byte as Latin-1
                    text = data.decode("latin-1")
            values = [text] if vr in ("LT", "ST", "UT", "UR") else text.split("\\")
        elif isinstance(value, (list, MultiValue)):
            values = [str(v) for v in value]
        else:
            values = [str(value)]
        for v in values:
            v = v.strip("\x00 ")
            if kind == "date":
                v = v[:8]  # the day only: times differ from file to file, days do not
            if v:
                self.identity.add((kind, v))

    def private(self, ds: Dataset, tags: list[int]) -> None:
        """Keep Table E.3.10-1 elements (with their creators); remove every other one."""
        elements: Any = ds._dict
        safe = self.engine.profile.safe_private
        keep_safe = self.engine.options.retain_safe_private
        creators = _creators(ds, tags) if keep_safe else {}
        kept_blocks: set[int] = set()
        # Dict keys are the dataset's own BaseTag objects; arithmetic and the tables use
        # plain ints (BaseTag compares in Python, a cost per private element).
        for key in tags:
            tag = int(key)
            group, elem = tag >> 16, tag & 0xFFFF
            if elem < 0x1000:
                continue
            raw = elements[key]
            self.record_private(raw)
            block_tag = (group << 16) | (elem >> 8)
            creator = creators.get(block_tag, "")
            vr = _vr_of(raw)
            if keep_safe and creator and (group, elem & 0xFF, creator) in safe:
                kept_blocks.add(block_tag)
                if vr == "SQ":
                    seq = _items(ds, raw) if isinstance(raw, RawDataElement) else None
                    if seq is not None:
                        ds[key] = DataElement(key, "SQ", seq)
                    for item in ds[key].value:
                        self.dataset(item)
                else:
                    self.defer(ds, key, vr, "private")
            else:
                if vr == "SQ":
                    self.collect_removed(ds, key)
                del elements[key]
        for key in tags:
            if (int(key) & 0xFFFF) < 0x1000 and int(key) not in kept_blocks:
                del elements[key]

    def collect_removed(self, ds: Dataset, tag: int) -> None:
        """:meth:`collect` for a sequence the profile removes, remembered per engine by
        its bytes: the slices of a series repeat their (vendor) sequences byte for byte,
        and decoding them with pydicom is most of the cost of a file."""
        elements: Any = ds._dict
        raw = elements[tag]
        value = getattr(raw, "value", None)
        if not isinstance(raw, RawDataElement) or not isinstance(value, bytes):
            self.collect(ds, tag)
            return
        memo = self.engine.collect_memo
        key = (int(tag), value, bool(raw.is_implicit_VR), bool(raw.is_little_endian),
               _encodings_key(self.encodings))
        found = memo.get(key)
        if found is None:
            outer, self.identity = self.identity, set()
            try:
                self.collect(ds, tag)
                found = frozenset(self.identity)
            finally:
                self.identity = outer | self.identity
            if len(memo) >= _MEMO_LIMIT:
                memo.clear()
            memo[key] = found
        else:
            self.identity |= found

    def collect(self, ds: Dataset, tag: int, depth: int = 0) -> None:
        """Record the identifiers inside a sequence that is being removed."""
        try:
            items = ds[tag].value
        except Exception:  # noqa: BLE001 -- an unreadable sequence: nothing to collect
            return
        id_tags = self.engine.identifying_tags
        for item in items or ():
            elements: Any = item._dict
            for key in list(elements):
                raw = elements[key]
                itag = int(key)
                vr = self.engine.vr_of(itag, raw)
                if vr == "UN" and not itag >> 16 & 1:
                    vr = self.engine.dictionary_vr(itag)
                if vr == "SQ" and depth < 8:
                    self.collect(item, key, depth + 1)
                elif vr == "PN":
                    self.record("name", raw, vr)
                elif vr in ("DA", "DT"):
                    self.record("date", raw, vr)
                elif itag in id_tags:
                    self.record(id_tags[itag], raw, vr)

    def record_private(self, raw: Any) -> None:
        """A name or date in a vendor's element (explicit VR) is still an identifier."""
        vr = raw.VR or ""
        if vr == "PN":
            self.record("name", raw, vr)
        elif vr in ("DA", "DT"):
            self.record("date", raw, vr)

    def defer(self, ds: Dataset, tag: int, vr: str, mode: str) -> None:
        self.pending.append(Pending(ds, tag, vr, mode, self.encodings))

    def apply(self, ds: Dataset, tag: int, action: Action, vr: str) -> None:
        elements: Any = ds._dict
        if action is Action.REMOVE:
            if vr == "SQ":  # names in a removed sequence are still identifiers
                self.collect_removed(ds, tag)
            del elements[tag]
            return
        if self.deferred(ds, tag, action, vr):
            return
        raw = elements[tag]
        if isinstance(raw, RawDataElement) and vr in _FAST_VRS and self.fast(ds, tag, raw, vr,
                                                                             action):
            return
        if vr == "SQ" and isinstance(raw, RawDataElement):
            seq = _items(ds, raw)
            if seq is not None:
                elem = DataElement(tag, "SQ", seq)
                ds[tag] = elem
                self.decoded(ds, elem, action)
                return
        try:
            elem = ds[tag]  # decodes the value (and replaces UN by the dictionary's VR)
        except Exception:  # noqa: BLE001 -- a value we cannot read is a value we drop
            del elements[tag]
            return
        self.decoded(ds, elem, action)

    def deferred(self, ds: Dataset, tag: int, action: Action, vr: str) -> bool:
        """Kept text goes to the screen; True when nothing else is to be done now."""
        mode = screen_mode(int(tag), action, vr, self.engine.keep_mode)
        if mode is not None:
            self.defer(ds, tag, vr, mode)
            return True
        if action is Action.KEEP and vr not in ("SQ", "UN"):
            if vr == "AS":
                self.engine.cap_age(ds, tag)
            return True  # the common case: untouched, written back as raw bytes
        return False

    def decoded(self, ds: Dataset, elem: DataElement, action: Action) -> None:
        """The action on a decoded element (sequences recursed into)."""
        vr = elem.VR
        if vr == "UN":
            del ds._dict[elem.tag]  # standard tag the dictionary cannot type: not known safe
            return
        if vr == "SQ":
            if action is Action.EMPTY:
                elem.value = Sequence()
            else:
                for item in elem.value:
                    self.dataset(item)
            return
        if action in (Action.KEEP, Action.RECURSE, Action.SCRUB):
            if vr in SCREENED_VRS:  # a UN element typed by the dictionary: screened too
                mode = self.engine.keep_mode(int(elem.tag), vr)
                if action is Action.SCRUB and mode != "descriptor":
                    mode = "text"
                self.defer(ds, elem.tag, vr, mode)
            return
        self.change(ds, elem, action)

    def change(self, ds: Dataset, elem: DataElement, action: Action) -> None:
        """The actions that give a decoded value a new value."""
        if action is Action.EMPTY:
            elem.value = None if elem.VR not in _BYTES_VRS else b""
        elif action is Action.PSEUDONYM:
            elem.value = self.pseudonym
        elif action is Action.UID:
            self.uid(elem)
        elif action is Action.SHIFT:
            self.shift(elem)
        elif action is Action.CLEAN:
            self.clean(ds, elem)
        elif action is Action.DUMMY:
            self.dummy(elem)

    def fast(self, ds: Dataset, tag: int, raw: RawDataElement, vr: str, action: Action) -> bool:
        """Text actions straight on ASCII raw bytes (no pydicom decode/encode round trip).

        Returns False when the value is not plain ASCII (the decoded path handles
        character sets, ISO 2022 escape sequences included) or the action needs the
        general path.
        """
        value = raw.value or b""
        # The result depends on nothing else than this key (UIDs are mapped by the
        # engine's keyed hash, dates by the patient's offset): remembered per engine.
        memo = self.engine.fast_memo
        key = (int(tag), vr, raw.VR is None, value, action, bool(raw.is_implicit_VR),
               bool(raw.is_little_endian), self.days, self.pseudonym)
        done = memo.get(key)
        if done is None:
            made = self.rewrite(raw, vr, action, value)
            if made is None:
                return False
            done = made
            if len(memo) >= _MEMO_LIMIT:
                memo.clear()
            memo[key] = done
        elem, shifted = done
        if shifted:
            self.shifted = True
        if elem is not None:
            elements: Any = ds._dict
            elements[tag] = elem
        return True

    def rewrite(self, raw: RawDataElement, vr: str, action: Action, value: bytes
                ) -> tuple[RawDataElement | None, bool] | None:
        """:meth:`fast`'s new element (None: the value is kept) and whether a date was
        shifted; None when the general path must do it."""
        if b"\x1b" in value:
            return None
        try:
            text = value.decode("ascii").rstrip("\x00 ")
        except UnicodeDecodeError:
            return None
        values = text.split("\\") if text else []
        shifted = False
        if action is Action.EMPTY:
            new: list[str] = []
        elif action is Action.PSEUDONYM:
            new = [self.pseudonym]
        elif action is Action.UID and vr == "UI":
            mapper = self.engine.uids
            new = [mapper(v) for v in values]
        elif action is Action.SHIFT or (
            action in (Action.DUMMY, Action.CLEAN) and vr in ("DA", "DT")
            and self.engine.options.retain_longitudinal_modified_dates
        ):
            if vr not in ("DA", "DT"):
                return None, False  # TM: kept as is
            fn = pseudo.shift_da if vr == "DA" else pseudo.shift_dt
            shifted = True
            new = [x for x in (fn(v, self.days) for v in values if v.strip()) if x]
            if action is Action.DUMMY and not new:
                new = ["19000101" if vr == "DA" else "19000101000000"]
        elif action is Action.DUMMY and vr in _TEXT_DUMMIES:
            new = [_TEXT_DUMMIES[vr]]
        else:
            return None
        return ascii_element(raw, vr, new), shifted

    def uid(self, elem: DataElement) -> None:
        if elem.VR != "UI":
            elem.value = None
            return
        mapper = self.engine.uids
        if isinstance(elem.value, MultiValue):
            elem.value = [mapper(str(v)) for v in elem.value]
        elif elem.value:
            elem.value = mapper(str(elem.value))

    def shift(self, elem: DataElement) -> None:
        if elem.VR == "DA":
            fn = pseudo.shift_da
        elif elem.VR == "DT":
            fn = pseudo.shift_dt
        else:
            return  # TM and others: a whole-day shift leaves them as they are
        values = elem.value if isinstance(elem.value, MultiValue) else [elem.value]
        shifted = [fn(str(v), self.days) for v in values if v not in (None, "")]
        self.shifted = True
        elem.value = [v for v in shifted if v] or None
        if isinstance(elem.value, list) and len(elem.value) == 1:
            elem.value = elem.value[0]

    def clean(self, ds: Dataset, elem: DataElement) -> None:
        if elem.VR in ("DA", "DT"):
            self.shift(elem)
        elif elem.VR in _CLEANABLE_VRS:
            self.defer(ds, elem.tag, elem.VR, "descriptor")
        else:
            del ds._dict[elem.tag]

    def dummy(self, elem: DataElement) -> None:
        vr = elem.VR
        if vr in ("DA", "DT") and self.engine.options.retain_longitudinal_modified_dates:
            self.shift(elem)
            if elem.value:
                return
        value: Any
        if vr == "DA":
            value = "19000101"
        elif vr == "DT":
            value = "19000101000000"
        elif vr == "TM":
            value = "000000"
        elif vr == "UI":
            self.uid(elem)
            return
        elif vr == "AS":
            value = "000Y"
        elif vr in _NUMERIC_VRS:
            value = 0
        elif vr in _BYTES_VRS or vr.startswith("O"):
            value = b"\x00\x00"
        else:
            value = _DUMMY_TEXT
        elem.value = value


def write_ascii(ds: Dataset, tag: int, raw: Any, vr: str, values: list[str]) -> None:
    """Replace an element by ready-encoded ASCII values (the fast writer's raw form)."""
    elements: Any = ds._dict
    elements[tag] = ascii_element(raw, vr, values)


def ascii_element(raw: Any, vr: str, values: list[str]) -> RawDataElement:
    """``raw`` with ready-encoded ASCII values (the fast writer's raw form)."""
    data = "\\".join(values).encode("ascii", "replace")
    if len(data) % 2:
        data += b"\0" if vr == "UI" else b" "
    # The writer puts its own header in front (the flags only guide pydicom's decoding).
    implicit = bool(getattr(raw, "is_implicit_VR", False))
    little = bool(getattr(raw, "is_little_endian", True))
    return RawDataElement(
        raw.tag, vr if raw.VR is not None else None, len(data), data, 0, implicit, little
    )


def _charset(ds: Dataset) -> Any:
    """The dataset's character sets as pydicom's codecs (None: unknown, pydicom's default)."""
    try:
        return convert_encodings(ds[0x00080005].value or "ISO_IR 6")
    except Exception:  # noqa: BLE001 -- unknown character set: pydicom's default
        return None


def _creators(ds: Dataset, tags: list[int]) -> dict[int, str]:
    """Private creator element tag -> creator name (raw bytes read as Latin-1, as the
    verifier reads them: not decoded by pydicom, which costs more than the rest)."""
    elements: Any = ds._dict
    return {int(tag): _text(elements[tag].value) for tag in tags
            if 0x10 <= (tag & 0xFFFF) <= 0xFF}


def _items(ds: Dataset, raw: RawDataElement) -> Sequence | None:
    """A sequence's items read by :func:`agent.deid.fastread.read_items` (None: leave it
    to pydicom), with the character set pydicom would give them."""
    if not isinstance(raw.value, bytes):
        return None
    encoding: Any = ds.original_character_set or ds._character_set
    return read_items(raw.value, bool(raw.is_implicit_VR), bool(raw.is_little_endian),
                      encoding)


#: Entries of a per-engine memo before it is emptied (a series needs a few hundred).
_MEMO_LIMIT = 4096


def _encodings_key(encodings: Any) -> tuple[str, ...] | None:
    return None if encodings is None else tuple(encodings)


def _vr_of(raw: RawDataElement | DataElement) -> str:
    vr = raw.VR
    if vr is None:  # implicit VR: the dictionary's
        try:
            return str(dictionary_VR(raw.tag))
        except KeyError:
            return "UN"
    return str(vr)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, DataElement):
        value = value.value
    if isinstance(value, bytes):
        value = value.decode("latin-1", "replace")
    return str(value).strip("\x00 ")
