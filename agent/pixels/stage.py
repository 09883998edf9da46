"""Pipeline stage ``pixels``: identity in the pixels, after de-identification and defacing.

Every delivered image series goes through it, defaced or not (see :mod:`agent.pixels.clean`
for what is done to each file). What follows from what was found:

* text showing an identifier: the line is redacted (``[pixels] on_identifier = "redact"``)
  or the series quarantined (``"quarantine"``); every redaction is recorded in the audit
  log by file, frame and box, never by what it said;
* a text-like line on air near the frame's edge that OCR cannot read with confidence
  (kind ``unread``: small text, another script) is treated the same way - it may show what
  we cannot read (fail closed), and there redaction hides no anatomy;
* a file that declares Burned In Annotation = YES but shows no identifier OCR can read is
  quarantined: the header says identity is there, and we could not find it;
* secondary captures, screen saves and derived images are searched on every frame with the
  sensitive settings, and withheld by policy when ``deliver_captures = false``.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pydicom

from agent.config import Config, PixelsConfig, replace
from agent.deid.pool import make_pool
from agent.deid.risk import TEXT_CHECKED_TOKEN, text_risks
from agent.errors import IdentityRisk, Withheld
from agent.pixels import clean
from agent.pixels.identity import StudyIdentity, identity_sources, study_identity
from agent.pixels.ocr import Reader, find_tessdata, ocr_module
from agent.pixels.text import TextScanner
from agent.procpool import WORTH_POOLING
from agent.vocab import AuditEvent, WithheldCode
from agent.work import SeriesWork

log = logging.getLogger(__name__)

#: Files per task: frames of one task are searched as one stack (and held in memory).
CHUNK = 32
#: Below this many files a process pool costs more than it saves.
POOL_THRESHOLD = WORTH_POOLING

_readers: dict[str, Reader] = {}


@dataclass(frozen=True)
class Settings:
    tessdata: str
    redact_all: bool
    sensitive: bool
    #: The series was defaced here: Image Type DERIVED on the outputs is the defacing's own
    #: mark (PS3.3 C.7.6.1.1.2), not a viewer's derived image with annotations; the
    #: source's Image Type decides (``sensitive``), every other risk is judged as usual.
    defaced_here: bool = False


def text_checked(cfg: Config) -> Config:
    """The configuration the de-identifier runs with when this stage follows it: screen
    captures and declared burned-in annotations are not refused, their text is read here
    (unless ``deliver_captures`` is false, when this stage withholds them)."""
    allowed = cfg.deid.allow_pixel_identity
    if TEXT_CHECKED_TOKEN in allowed:
        return cfg
    return replace(cfg, deid_allow_pixel_identity=(*allowed, TEXT_CHECKED_TOKEN))


def _reader(tessdata: str) -> Reader:
    reader = _readers.get(tessdata)
    if reader is None:
        reader = _readers[tessdata] = Reader(Path(tessdata))
    return reader


def _is_sensitive(path: Path) -> bool:
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 - the engine reads it again and refuses it properly
        return True
    return bool(text_risks(ds))


#: The identity of the last series a process read (a series' tasks share it).
_identities: dict[tuple[Path, ...], StudyIdentity] = {}


def _identity_of(sources: tuple[Path, ...]) -> StudyIdentity:
    """The identity of the originals ``sources``, read once per process and series."""
    identity = _identities.get(sources)
    if identity is None:
        _identities.clear()
        identity = _identities[sources] = study_identity(list(sources))
    return identity


def run_chunk(args: tuple[list[tuple[int, Path]], tuple[Path, ...], Settings]
              ) -> list[clean.FileReport]:
    """One task: load, search and (where changed) re-write a few files of one series.
    The originals' identity is read only when OCR reads something."""
    files, sources, settings = args
    scanner = TextScanner(_reader(settings.tessdata), lambda: _identity_of(sources),
                          redact_all=settings.redact_all)
    items = [clean.load(path, index) for index, path in files]
    for item in items:
        risks = text_risks(item.ds)
        if settings.defaced_here:
            risks = [r for r in risks if r.rule != "derived"]
        item.report.sensitive = settings.sensitive or bool(risks)
    clean.scan_text(items, scanner, settings.sensitive)
    for k, item in enumerate(items):
        if item.report.lines:
            item = items[k] = clean.full(item)
        clean.apply_redactions(item)
        report = item.report
        if report.declared_burned_in and not report.lines:
            continue  # the stage quarantines the series: writing it would be wasted
        if report.changed or report.lines:
            clean.write(item)
    return [item.report for item in items]


class PixelStage:
    """Burned-in text, hidden bits and embedded bytes of one series (see module doc)."""

    name = "pixels"

    def __init__(self, cfg: Config) -> None:
        self.options: PixelsConfig = cfg.pixels
        # Fail at start-up, not on the first series: no image goes out unread. (Cheap
        # checks only - the language data is there, the bindings load; ``doctor`` runs the
        # engine end to end with check_ocr.)
        self.tessdata = str(find_tessdata(cfg.pixels.tessdata))
        ocr_module()
        self.processes = max(1, min(cfg.worker_count, os.cpu_count() or 1))

    def __call__(self, work: SeriesWork) -> None:
        files = list(work.files)
        if not files:
            return
        sensitive = bool(work.source_files) and _is_sensitive(work.source_files[0])
        if work.defaced and not sensitive:
            # The outputs' own Image Type says DERIVED (the defacing): every source decides.
            sensitive = any(_is_sensitive(f) for f in work.source_files[1:])
        if sensitive and not self.options.deliver_captures:
            raise Withheld("secondary captures, screen saves and derived images are not sent "
                           "at this site ([pixels] deliver_captures = false)",
                           code=WithheldCode.SCREEN_CAPTURE)
        # The originals the identity is read from, when OCR reads something.
        sources = tuple(identity_sources(work.source_files))
        settings = Settings(self.tessdata, self.options.redact_all_text, sensitive,
                            defaced_here=work.defaced)
        indexed = list(enumerate(files))
        chunks = [indexed[i:i + CHUNK] for i in range(0, len(indexed), CHUNK)]
        reports: list[clean.FileReport] = []
        if self.processes > 1 and len(files) >= POOL_THRESHOLD:
            with make_pool(self.processes) as pool:
                for part in pool.map(run_chunk, [(c, sources, settings) for c in chunks]):
                    reports += part
        else:
            for chunk in chunks:
                reports += run_chunk((chunk, sources, settings))
        self._decide(work, reports)

    def _decide(self, work: SeriesWork, reports: list[clean.FileReport]) -> None:
        lines = [(r.index, line) for r in reports for line in r.lines]
        unfound = [r for r in reports if r.declared_burned_in and not r.lines]
        identifying = [line for _, line in lines if line.kind != "text"]
        if unfound:
            raise IdentityRisk(
                f"{len(unfound)} image(s) of the series declare burned-in annotation (Burned "
                "In Annotation = YES) but text detection could not find the identifying text, "
                "so it cannot be removed; review the images, or re-export them without "
                "annotations", code="identity-risk")
        if identifying and self.options.on_identifier == "quarantine":
            what = ("burned-in text that could not be read with confidence (it may show "
                    "the patient's identity) was found in "
                    if all(ln.kind == "unread" for ln in identifying)
                    else "burned-in text showing the patient's identity was found in ")
            raise IdentityRisk(
                f"{what}"
                f"{len({i for i, ln in lines if ln.kind != 'text'})} image(s); the series is "
                "kept back ([pixels] on_identifier = \"quarantine\"). Re-export it without "
                "annotations, or set on_identifier = \"redact\"", code="identity-risk")
        for report in reports:
            if report.lines:
                work.audit.append((AuditEvent.PIXELS_REDACTED, {
                    "file": report.index,
                    "kinds": sorted({ln.kind for ln in report.lines}),
                    "boxes": [[ln.frame, ln.left, ln.top, ln.width, ln.height]
                              for ln in report.lines],
                }))
        removed = Counter(k for r in reports for k in r.removed)
        hidden = sum(r.hidden_samples for r in reports)
        if removed or hidden:
            work.audit.append((AuditEvent.PIXELS_CLEANED, {
                "files": sum(1 for r in reports if r.changed),
                "hidden_bit_samples": hidden,
                "removed": dict(sorted(removed.items())),
                "removed_bytes": sum(r.removed_bytes for r in reports),
                "decompressed": sum(1 for r in reports if r.transcoded),
            }))
        if lines:
            log.info("series %s: %d line(s) of burned-in text redacted in %d file(s)",
                     work.key[:12], len(lines), len({i for i, _ in lines}))
