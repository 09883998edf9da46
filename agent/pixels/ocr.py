"""Tesseract, in process, through the ``tesserocr`` bindings.

Why tesserocr and not pytesseract: pytesseract starts the ``tesseract`` program for every
call and passes the image through a temporary file - 30 to 60 ms of overhead per call
before any recognition, and a volume can need dozens of calls. tesserocr keeps one engine
per thread loaded (about 0.2 s once), takes the image from memory and returns word boxes
with confidences from the result iterator. Its wheels bundle libtesseract; only the
language data (``eng.traineddata``) comes from the platform's Tesseract package or a folder
named in ``[pixels] tessdata``.

Missing OCR is never a silent pass: :func:`check_ocr` (start-up and ``doctor``) raises
:class:`OcrUnavailable`, a fatal error saying what to install.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.errors import FatalError

LANGUAGE = "eng"
_CANDIDATES = (
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
    "/usr/local/share/tessdata",
    "/opt/homebrew/share/tessdata",
    "/usr/local/share/tesseract-ocr/tessdata",
    r"C:\Program Files\Tesseract-OCR\tessdata",
)


class OcrUnavailable(FatalError):
    """Text detection cannot run: the agent must not deliver images unchecked."""

    title = "Text detection unavailable"


@dataclass(frozen=True)
class Word:
    """One recognised word: its text, Tesseract's confidence (0-100) and its box in the
    coordinates of the image that was read."""

    text: str
    confidence: float
    left: int
    top: int
    width: int
    height: int


def find_tessdata(configured: str = "") -> Path:
    """The folder holding ``eng.traineddata``. Raises OcrUnavailable."""
    if configured:  # a site that names its folder means that one
        if (Path(configured) / f"{LANGUAGE}.traineddata").is_file():
            return Path(configured)
        raise OcrUnavailable(
            f"[pixels] tessdata = {configured!r} holds no {LANGUAGE}.traineddata; point it at "
            "the tessdata folder of a Tesseract installation")
    places: list[str] = []
    if os.environ.get("TESSDATA_PREFIX"):
        prefix = Path(os.environ["TESSDATA_PREFIX"])
        places += [str(prefix), str(prefix / "tessdata")]
    places += [str(Path(sys.prefix) / "share" / "tessdata"), *_CANDIDATES]
    for place in places:
        if place and (Path(place) / f"{LANGUAGE}.traineddata").is_file():
            return Path(place)
    raise OcrUnavailable(
        "Tesseract's English language data was not found, so burned-in text cannot be "
        "detected and no image is delivered. Install Tesseract (Debian/Ubuntu: apt install "
        "tesseract-ocr tesseract-ocr-eng; macOS: brew install tesseract; Windows: the "
        "Tesseract installer) or set [pixels] tessdata to its tessdata folder")


def check_ocr(configured: str = "") -> None:
    """Fail with a clear message unless an OCR engine can be started and reads text."""
    reader = Reader(find_tessdata(configured))
    page = np.full((40, 120), 255, np.uint8)
    page[12:28, 20:24] = 0  # a stroke: the engine runs end to end
    reader.read(page, block=False)


def ocr_module() -> Any:
    try:
        import tesserocr
    except ImportError as exc:
        raise OcrUnavailable(
            "the tesserocr package (Tesseract bindings) is not installed or cannot load "
            f"({type(exc).__name__}); reinstall Clinic2Cloud with its dependencies") from None
    return tesserocr


class Reader:
    """One Tesseract engine per thread, created on first use."""

    def __init__(self, tessdata: Path) -> None:
        self.tessdata = tessdata
        self._local = threading.local()

    def _api(self, psm: int) -> Any:
        apis: dict[int, Any] | None = getattr(self._local, "apis", None)
        if apis is None:
            apis = self._local.apis = {}
        api = apis.get(psm)
        if api is None:
            tesserocr = ocr_module()
            try:
                api = tesserocr.PyTessBaseAPI(
                    path=str(self.tessdata) + os.sep, lang=LANGUAGE, psm=psm,
                    oem=tesserocr.OEM.LSTM_ONLY)
            except RuntimeError as exc:
                raise OcrUnavailable(
                    f"Tesseract could not start with the language data in {self.tessdata} "
                    f"({exc}); reinstall tesseract-ocr-eng or set [pixels] tessdata") from None
            apis[psm] = api
        return api

    def read(self, image: npt.NDArray[np.uint8], *, block: bool = True) -> list[Word]:
        """Words of a grey image (dark text on light works best). ``block``: the image is
        a block of lines (else: sparse text anywhere, for whole screen captures)."""
        from PIL import Image

        tesserocr = ocr_module()
        psm = tesserocr.PSM.SINGLE_BLOCK if block else tesserocr.PSM.SPARSE_TEXT
        api = self._api(psm)
        api.SetImage(Image.fromarray(np.ascontiguousarray(image)))
        api.Recognize()
        words: list[Word] = []
        it = api.GetIterator()
        level = tesserocr.RIL.WORD
        if it is None:
            return words
        while True:
            try:
                text = it.GetUTF8Text(level)
            except RuntimeError:  # an empty word box: nothing recognised in it
                text = ""
            box = it.BoundingBox(level)
            if text and text.strip() and box is not None:
                x0, y0, x1, y1 = box
                words.append(Word(text.strip(), float(it.Confidence(level)), x0, y0,
                                  x1 - x0, y1 - y0))
            if not it.Next(level):
                break
        return words
