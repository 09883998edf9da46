"""A defaced JPEG Lossless image written back as JPEG Lossless (Process 14, Selection
Value 1: 1.2.840.10008.1.2.4.70, the syntax GE and Canon archives commonly send; an image
in Process 14 with another predictor, 1.2.840.10008.1.2.4.57, keeps that syntax, coded
with predictor 1, which it allows).

pydicom has no encoder for it. libjpeg-turbo 3 encodes it (2-16 bits), and the
``imagecodecs`` package (PyPI, BSD) ships it; where that package is installed, the frames
are encoded there, then decoded again by pydicom's own decoder and kept only if every
stored value comes back exactly - otherwise, or without the package, the caller writes the
image uncompressed (Explicit VR Little Endian), as before.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLossless, JPEGLosslessSV1


def _codec() -> Any:
    try:
        import imagecodecs  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return imagecodecs if getattr(imagecodecs, "JPEG8", None) and \
        imagecodecs.JPEG8.available else None


def available() -> bool:
    return _codec() is not None


def encode(ds: Dataset, arr: np.ndarray) -> bool:
    """Put ``arr`` (one frame, or frames first) into ``ds`` as JPEG Lossless; False,
    leaving ``ds`` as it was, where no encoder is installed or the encoding does not give
    back exactly ``arr``."""
    codec = _codec()
    if codec is None or str(ds.file_meta.TransferSyntaxUID) not in (JPEGLosslessSV1,
                                                                   JPEGLossless):
        return False
    bits = int(ds.get("BitsStored", 16) or 16)
    if not 2 <= bits <= 16 or int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return False
    frames = arr if arr.ndim == 3 else arr[None]
    # Signed values are coded as their two's complement in Bits Stored bits (PS3.5 8.2.1);
    # the decoder gives them back sign-extended.
    mask = (1 << bits) - 1
    try:
        fragments = [codec.jpeg8_encode(
            (f.astype(np.int64) & mask).astype(np.uint16 if bits > 8 else np.uint8),
            lossless=True, predictor=1, bitspersample=bits) for f in frames]
    except Exception:  # noqa: BLE001 - the codec refuses what it cannot code: write plain
        return False
    trial = copy.deepcopy(ds)
    trial.PixelData = encapsulate([bytes(f) for f in fragments])
    trial["PixelData"].VR = "OB"
    trial["PixelData"].is_undefined_length = True
    try:
        back = np.asarray(trial.pixel_array)
    except Exception:  # noqa: BLE001 - not decodable as written: write plain
        return False
    if back.shape != arr.shape or not np.array_equal(back, arr):
        return False
    ds["PixelData"] = trial["PixelData"]
    return True
