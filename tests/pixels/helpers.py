"""Shared helpers for the pixel tests: real series, text rendered in with real fonts."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from PIL import Image, ImageDraw, ImageFont

from agent.config import Config, PixelsConfig, SiteConfig, replace
from agent.paths import AgentPaths
from agent.pixels.identity import StudyIdentity
from agent.pixels.ocr import Reader
from agent.work import SeriesWork

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus" / "dicom"
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = ("DejaVuSans.ttf", "DejaVuSansMono.ttf", "DejaVuSerif-Bold.ttf",
         "DejaVuSansCondensed-Oblique.ttf")
SECRET = bytes(range(32))

NAME = "Canarysson^Wilhelmina"
PATIENT_ID = "PID-84213977"
BIRTH = "19610312"
#: How the planted identity is written on images (as viewers and screenshots show it).
SHOWN = ("CANARYSSON, WILHELMINA", "ID: 84213977", "DOB 12/03/1961", "Canarysson W",
         "12-Mar-1961", "Wilhelmina Canarysson")


def corpus_series(name: str) -> list[Path]:
    folder = CORPUS / name
    if not folder.is_dir():
        pytest.skip(f"the shared corpus is absent ({folder}); these tests need it")
    return sorted(p for p in folder.iterdir() if p.is_file())


def font(name: str | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if name is None:
        return ImageFont.load_default(size)
    path = FONT_DIR / name
    if not path.is_file():
        pytest.skip(f"font {path} missing: run scripts/install-test-deps.sh (fonts-dejavu-core)")
    return ImageFont.truetype(str(path), size)


def burn(frame: npt.NDArray[np.generic], text: str, x: int, y: int, *, size: int = 12,
         font_name: str | None = "DejaVuSans.ttf", value: float | None = None
         ) -> tuple[int, int, int, int]:
    """Draw ``text`` into a 2-D (or RGB) frame in place, anti-aliased; returns its box."""
    mask = Image.new("L", (frame.shape[1], frame.shape[0]), 0)
    ImageDraw.Draw(mask).text((x, y), text, fill=255, font=font(font_name, size))
    alpha = np.asarray(mask).astype(np.float32) / 255.0
    if frame.ndim == 3:
        alpha = alpha[..., None]
    top = float(np.iinfo(frame.dtype.str).max if frame.dtype.kind in "ui" else 1.0)
    peak = float(frame.max()) or top
    v = peak if value is None else value
    out = frame.astype(np.float32) * (1 - alpha) + v * alpha
    frame[...] = np.clip(out, 0, top).astype(frame.dtype)
    box = mask.getbbox()
    assert box is not None, "text fell outside the frame"
    return box


def plant_identity(ds: pydicom.Dataset) -> None:
    ds.PatientName = NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH
    ds.InstitutionName = "Saint Ottilien Klinikum"


def copy_series(files: list[Path], dest: Path,
                edit: Callable[[pydicom.Dataset, int], None] | None = None) -> list[Path]:
    """The files of a series copied to ``dest``, identity planted, ``edit`` applied."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i, src in enumerate(files):
        path = dest / f"{i:04d}.dcm"
        if edit is None:
            shutil.copyfile(src, path)
            ds = pydicom.dcmread(path)
            plant_identity(ds)
        else:
            ds = pydicom.dcmread(src)
            plant_identity(ds)
            edit(ds, i)
        ds.save_as(path)
        out.append(path)
    return out


def make_config(tmp_path: Path, **pixels: object) -> Config:
    cfg = Config(site=SiteConfig(name="TESTSITE"), paths=AgentPaths.under(tmp_path / "home"))
    return replace(cfg, pixels=PixelsConfig(**pixels), pipeline_workers=2,  # type: ignore
                   deface_enabled=False)


def make_work(tmp_path: Path, files: list[Path]) -> SeriesWork:
    workdir = tmp_path / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    return SeriesWork(key="k" * 16, version=1, source_files=list(files), workdir=workdir)


def run_stages(cfg: Config, work: SeriesWork, *, verify: bool = True) -> None:
    """The real stages a delivery goes through (defacing off): deid, pixels, verify."""
    from agent.deid import DeidStage, VerifyStage
    from agent.pixels import PixelStage, text_checked

    DeidStage(text_checked(cfg), SECRET)(work)
    PixelStage(cfg)(work)
    if verify:
        VerifyStage(cfg)(work)


def frames(path: Path) -> npt.NDArray[np.generic]:
    """Decoded frames of a file as (frames, rows, cols[, samples])."""
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) == 1:
        arr = arr[None]
    return arr


def planted_identity() -> StudyIdentity:
    """The matcher for the identity these tests plant."""
    ident = StudyIdentity()
    ident.add("name", NAME.replace("^", " "))
    ident.add("id", PATIENT_ID)
    ident.add_date(BIRTH)
    return ident


def reads_identity(reader: Reader, ident: StudyIdentity,
                   frame: npt.NDArray[np.generic]) -> str | None:
    """What an independent OCR pass reads of the identity in one frame (whole frame,
    scaled 3x, both polarities): its kind, or None."""
    f = frame.astype(np.float32)
    if f.ndim == 3:
        f = f.mean(axis=2)
    img = ((f - f.min()) * (255.0 / max(float(f.max() - f.min()), 1.0))).astype(np.uint8)
    big = np.asarray(Image.fromarray(img).resize((img.shape[1] * 3, img.shape[0] * 3),
                                                 Image.Resampling.BICUBIC))
    for page in (255 - big, big):
        kind = ident.match(" ".join(w.text for w in reader.read(page, block=False)))
        if kind:
            return kind
    return None
