"""Attributes of one image read as geometry and as the keys that tell volumes apart."""

from __future__ import annotations

from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from agent.deface.volumes import Plane

#: Image Type values that mark a projection (every pixel a maximum along a ray).
PROJECTION_TYPES = {"PROJECTION IMAGE", "MIP", "MINIP", "MNIP", "MAXIP", "PROJECTION"}


def plane_of(ds: Dataset, shape: tuple[int, ...], *, position: Any = None,
             orientation: Any = None, spacing: Any = None,
             thickness: Any = None) -> Plane | None:
    """The plane of a 2-D image from its attributes (or the values given); None if absent
    or not a pair of orthogonal unit vectors."""
    try:
        iop = [float(v) for v in (orientation or ds.ImageOrientationPatient)]
        ipp = [float(v) for v in (position or ds.ImagePositionPatient)]
        ps = [float(v) for v in (spacing or ds.PixelSpacing)]
        th = float(thickness or ds.get("SliceThickness") or 0.0)
    except (AttributeError, TypeError, ValueError):
        return None
    if len(iop) != 6 or len(ipp) != 3 or len(ps) != 2 or min(ps) <= 0:
        return None
    row, col = np.array(iop[:3]), np.array(iop[3:])
    if abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2 \
            or abs(float(row @ col)) > 1e-2 or not np.isfinite([*iop, *ipp, *ps]).all():
        return None
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    return Plane(origin=(ipp[0], ipp[1], ipp[2]), row=(row[0], row[1], row[2]),
                 col=(col[0], col[1], col[2]), spacing=(ps[0], ps[1]),
                 shape=(int(shape[-2]), int(shape[-1])), thickness=max(th, 0.0))


def number(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


def text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return "\\".join(text(v) for v in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).strip()


def is_projection(image_type: object) -> bool:
    values = {v.strip().upper() for v in text(image_type).split("\\")}
    return bool(values & PROJECTION_TYPES)


def volume_key(obj: int, ds: Dataset, **extra: object) -> tuple[tuple[str, str], ...]:
    """The attributes that can tell the volumes of a series apart, in preference order."""
    bvalue = ds.get("DiffusionBValue")
    if bvalue is None and (0x0043, 0x1039) in ds:  # GE: b-value (+ 1e9 offsets) first
        try:
            bvalue = float(str(ds[0x0043, 0x1039].value[0])) % 1e9
        except (TypeError, ValueError, IndexError, KeyError):
            bvalue = None
    direction = ds.get("DiffusionGradientOrientation")
    pairs: list[tuple[str, object]] = [
        ("object", obj),
        ("temporal", ds.get("TemporalPositionIdentifier")),
        ("bvalue", bvalue),
        ("direction", [round(float(v), 3) for v in direction] if direction else None),
        ("echo", ds.get("EchoNumbers") or ds.get("EchoTime")),
        ("type", ds.get("ImageType")),
        ("acquisition", ds.get("AcquisitionNumber")),
        ("trigger", ds.get("TriggerTime")),
        ("inversion", ds.get("InversionTime")),
    ]
    values = dict(pairs)
    for name, value in extra.items():  # a frame's own values override the object's
        if value is not None or name not in values:
            values[name] = value
    return tuple((n, text(v)) for n, v in values.items())
