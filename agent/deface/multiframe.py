"""Enhanced (multi-frame) objects: each frame a slice, described by the functional groups.

A frame's attributes are read from its Per-Frame Functional Group, else the Shared one, else
the top level: position, orientation, pixel spacing and rescale for its plane, and the
frame content (temporal position, stack), diffusion (b-value, direction), echo and frame
type for telling the volumes of a 4-D object apart. XA30/XA60 write one object per volume,
Philips and Canon may put a whole 4-D series into one; both come out as slices alike.

A Concatenation (one enhanced object cut into several files, Concatenation UID and frame
offset) is one object: its parts share one "object" key and number their frames on, so
that a volume cut between two files stays one volume.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from agent.deface.planes import is_projection, plane_of, text, volume_key
from agent.deface.volumes import Slice
from agent.errors import DefaceFailed


def _shared(ds: Dataset) -> Dataset | None:
    seq = ds.get("SharedFunctionalGroupsSequence")
    return seq[0] if seq else None


def _item(group: Dataset | None, sequence: str) -> Dataset | None:
    if group is None or sequence not in group:
        return None
    seq = group[sequence].value
    return seq[0] if seq else None


def _value(ds: Dataset, frame: Dataset | None, sequence: str, keyword: str) -> Any:
    """``keyword`` from the frame's functional group, else the shared one, else top level."""
    for group in (frame, _shared(ds)):
        item = _item(group, sequence)
        if item is not None and keyword in item:
            return item[keyword].value
    return ds.get(keyword)


def _frame_type(ds: Dataset, frame: Dataset | None) -> Any:
    for group in (frame, _shared(ds)):
        if group is None:
            continue
        for elem in group:
            if elem.VR == "SQ" and elem.keyword.endswith("FrameTypeSequence") and elem.value:
                if "FrameType" in elem.value[0]:
                    return elem.value[0].FrameType
    return ds.get("ImageType")


def _direction(ds: Dataset, frame: Dataset | None) -> Any:
    for group in (frame, _shared(ds)):
        diffusion = _item(group, "MRDiffusionSequence")
        inner = _item(diffusion, "DiffusionGradientDirectionSequence")
        if inner is not None and "DiffusionGradientOrientation" in inner:
            return [round(float(v), 3) for v in inner.DiffusionGradientOrientation]
    return None


def is_enhanced(ds: Dataset) -> bool:
    """Frames described by functional groups: several frames, or a single-frame enhanced
    object (a derived map or reformat written one frame per file), whose geometry is only
    in its functional groups."""
    return (int(ds.get("NumberOfFrames", 1) or 1) > 1
            or "PerFrameFunctionalGroupsSequence" in ds
            or "SharedFunctionalGroupsSequence" in ds)


#: Float-valued pixel data (a Parametric Map: T1, ADC, CBF in real units) and its type.
_FLOAT_PIXELS = (("FloatPixelData", "<f4"), ("DoubleFloatPixelData", "<f8"))


def float_pixels(ds: Dataset) -> str | None:
    """The keyword of the object's float-valued pixel data, or None. Such an object is an
    image like any other (a map of a head shows its face): read, judged and defaced."""
    return next((kw for kw, _ in _FLOAT_PIXELS if kw in ds), None)


def put_float_pixels(ds: Dataset, arr: np.ndarray) -> bool:
    """Write defaced values back into the float pixel data they came from (little endian,
    as the standard encodes it); False for an object with integer Pixel Data."""
    for kw, dtype in _FLOAT_PIXELS:
        if kw in ds:
            setattr(ds, kw, np.ascontiguousarray(arr).astype(dtype).tobytes())
            return True
    return False


def _concatenation(ds: Dataset) -> tuple[str | None, int]:
    """(a key shared by the parts of one Concatenation, the frame offset of this part), or
    (None, 0) for an object that stands alone. The key is a digest: no UID is kept."""
    uid = str(ds.get("ConcatenationUID", "") or "").strip()
    if not uid:
        return None, 0
    try:
        offset = int(ds.get("ConcatenationFrameOffsetNumber", 0) or 0)
    except (TypeError, ValueError):
        offset = 0
    return "concatenation " + hashlib.sha256(uid.encode()).hexdigest()[:12], max(offset, 0)


def frame_slices(obj: int, ds: Dataset, frames: np.ndarray) -> list[Slice]:
    """One slice per frame of a multi-frame object (``frames``: its decoded pixels)."""
    n = int(ds.get("NumberOfFrames", 1) or 1)
    if frames.ndim == 2 and n == 1:
        frames = frames[None]
    if frames.ndim != 3 or frames.shape[0] != n:
        raise DefaceFailed("multi-frame colour or irregular pixel data cannot be defaced",
                           code="deface-input")
    per = ds.get("PerFrameFunctionalGroupsSequence") or []
    whole, offset = _concatenation(ds)
    out = []
    for i in range(n):
        group = per[i] if i < len(per) else None
        plane = plane_of(
            ds, frames.shape,
            position=_value(ds, group, "PlanePositionSequence", "ImagePositionPatient"),
            orientation=_value(ds, group, "PlaneOrientationSequence",
                               "ImageOrientationPatient"),
            spacing=_value(ds, group, "PixelMeasuresSequence", "PixelSpacing"),
            thickness=_value(ds, group, "PixelMeasuresSequence", "SliceThickness"))
        if plane is None:
            raise DefaceFailed("a frame of the series has no usable position, orientation or "
                               "pixel spacing; where its face is cannot be told",
                               code="deface-geometry")
        content = _item(group, "FrameContentSequence") or Dataset()
        ftype = _frame_type(ds, group)
        key = volume_key(
            obj, ds,
            temporal=content.get("TemporalPositionIndex"),
            bvalue=_value(ds, group, "MRDiffusionSequence", "DiffusionBValue"),
            direction=_direction(ds, group),
            echo=_value(ds, group, "MREchoSequence", "EffectiveEchoTime"),
            type=ftype,
            acquisition=content.get("FrameAcquisitionNumber"),
            stack=content.get("StackID"),
            **({"object": whole} if whole else {}))
        slope = _value(ds, group, "PixelValueTransformationSequence", "RescaleSlope")
        icpt = _value(ds, group, "PixelValueTransformationSequence", "RescaleIntercept")
        out.append(Slice(obj=obj, frame=i, tile=-1, plane=plane,
                         slope=float(slope if slope not in (None, "") else 1.0),
                         intercept=float(icpt if icpt not in (None, "") else 0.0),
                         key=key, order=float(offset + i), projection=is_projection(ftype)))
    return out


def mark_frames_derived(ds: Dataset) -> None:
    """Value 1 of every Frame Type becomes DERIVED, as Image Type does."""
    groups = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    shared = _shared(ds)
    if shared is not None:
        groups.append(shared)
    for group in groups:
        for elem in group:
            if elem.VR == "SQ" and elem.keyword.endswith("FrameTypeSequence"):
                for item in elem.value:
                    if "FrameType" in item and item.FrameType:
                        values = text(item.FrameType).split("\\")
                        values[0] = "DERIVED"
                        item.FrameType = values
