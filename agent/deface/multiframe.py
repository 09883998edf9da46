"""Enhanced (multi-frame) images: one object holding every slice as a frame.

Each frame becomes a :class:`FrameHeader` - a light dataset with the classic attributes
(position, orientation, spacing, rescale) read from the functional groups and the frame's
pixels - so the classic volume builder and defacer apply unchanged; the new frames are
then written back into the one object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from agent.errors import DefaceFailed


class FrameHeader(Dataset):
    """One frame of a multi-frame object, dressed as a classic single-frame image."""

    def __init__(self, pixels: np.ndarray, frame: int) -> None:
        super().__init__()
        self.frame_pixels = pixels
        self.frame_index = frame

    @property
    def pixel_array(self) -> np.ndarray:
        return self.frame_pixels


def _group_value(ds: Dataset, frame_group: Dataset | None, sequence: str, keyword: str
                 ) -> Any:
    """``keyword`` from the frame's functional group, else the shared one, else top level."""
    for group in (frame_group, _shared(ds)):
        if group is not None and sequence in group and len(group[sequence].value):
            item = group[sequence].value[0]
            if keyword in item:
                return item[keyword].value
    return ds.get(keyword)


def _shared(ds: Dataset) -> Dataset | None:
    seq = ds.get("SharedFunctionalGroupsSequence")
    return seq[0] if seq else None


def frame_headers(ds: Dataset) -> list[FrameHeader]:
    """Per-frame classic headers of a multi-frame object (pixels decoded once)."""
    try:
        frames = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 -- pixel decoders raise many types; converted
        raise DefaceFailed(f"the pixel data cannot be decoded ({type(exc).__name__})",
                           code="deface-input") from None
    n = int(ds.NumberOfFrames)
    if frames.ndim != 3 or frames.shape[0] != n:
        raise DefaceFailed("multi-frame colour or irregular pixel data cannot be defaced",
                           code="deface-input")
    per = ds.get("PerFrameFunctionalGroupsSequence") or []
    headers = []
    for i in range(n):
        group = per[i] if i < len(per) else None
        h = FrameHeader(frames[i], i)
        h.SeriesInstanceUID = ds.get("SeriesInstanceUID", "")
        h.InstanceNumber = i + 1
        h.Rows, h.Columns = ds.Rows, ds.Columns
        h.BitsStored = ds.get("BitsStored", 16)
        h.PixelRepresentation = ds.get("PixelRepresentation", 0)
        for seq, kw in (("PlanePositionSequence", "ImagePositionPatient"),
                        ("PlaneOrientationSequence", "ImageOrientationPatient"),
                        ("PixelMeasuresSequence", "PixelSpacing"),
                        ("PixelValueTransformationSequence", "RescaleSlope"),
                        ("PixelValueTransformationSequence", "RescaleIntercept")):
            value = _group_value(ds, group, seq, kw)
            if value is not None:
                setattr(h, kw, value)
        headers.append(h)
    return headers


def write_frames(ds: Dataset, updates: list[tuple[list[Dataset], np.ndarray]],
                 path: Path) -> Path:
    """Write ``ds`` with the frames of each (headers, stored slices) pair replaced."""
    from agent.deface.dicomio import mark_derived, save_defaced

    frames = np.array(ds.pixel_array, copy=True)
    for headers, stored in updates:
        for header, slice_values in zip(headers, stored, strict=True):
            if not isinstance(header, FrameHeader):
                raise TypeError("not a frame header")
            frames[header.frame_index] = slice_values
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    data = np.ascontiguousarray(frames).tobytes()
    if len(data) % 2:
        data += b"\x00"
    ds.PixelData = data
    ds["PixelData"].VR = "OB" if int(ds.get("BitsAllocated", 16)) <= 8 else "OW"
    mark_derived(ds)
    # Enhanced objects also type each frame: value 1 of Frame Type becomes DERIVED too.
    groups = [g for g in (ds.get("PerFrameFunctionalGroupsSequence") or [])]
    shared = _shared(ds)
    if shared is not None:
        groups.append(shared)
    for group in groups:
        for elem in group:
            if elem.VR == "SQ" and elem.keyword.endswith("FrameTypeSequence"):
                for item in elem.value:
                    if "FrameType" in item and item.FrameType:
                        values = list(item.FrameType) if item["FrameType"].VM > 1 \
                            else [str(item.FrameType)]
                        values[0] = "DERIVED"
                        item.FrameType = values
    return save_defaced(ds, path)
