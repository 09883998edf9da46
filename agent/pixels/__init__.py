"""Identity in the pixels: burned-in text found and removed, hidden bits and embedded bytes
cleaned (the ``pixels`` pipeline stage, between defacing and verification)."""

from agent.pixels.ocr import OcrUnavailable, check_ocr, find_tessdata
from agent.pixels.stage import PixelStage, text_checked

__all__ = ["OcrUnavailable", "PixelStage", "check_ocr", "find_tessdata", "text_checked"]
