"""One face fit per study: kept between series, across restarts, without PHI.

Series of one study that share a Frame of Reference are in one patient coordinate system:
the template fitted once, on the study's best structural volume, places the face and ears
in every other series through the DICOM geometry alone. A :class:`Fit` is the transform
and the numbers that say how good it is; :class:`StudyFits` keeps one per study and Frame
of Reference in the agent's state folder (``studyfits/<keyed hash>.json``: the key is a
hash of the *pseudonymised* study and Frame of Reference UIDs, the file holds a transform,
quality numbers and the pseudonym of the series it came from - nothing identifying).

Series arrive minutes apart and may be processed in parallel: :meth:`StudyFits.claim`
lets one series of a study fit at a time; the others wait for its result. A series that
cannot place its face by itself (a 2-slice DWI, an ASL slab) and finds no fit may wait for
a partner (:meth:`StudyFits.may_wait`) up to ``[deface] partner_wait_minutes``.

A better structural series arriving after a worse one was used replaces the study's fit
for the series that come after it (:meth:`StudyFits.offer` keeps the best score). Series
already delivered are not sent again: each passed its own checks with the fit it had.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from agent.deface.register import Registration
from agent.errors import TransientFault

log = logging.getLogger(__name__)

#: Version of the file layout; files of another version are ignored (fitted again).
FORMAT = 1
#: How long a series waits for the study's fit that another worker is computing.
CLAIM_WAIT_SECONDS = 600.0
#: Fits and waiting marks older than this are removed (a study's series arrive within
#: hours; re-exports weeks later are fitted again).
MAX_AGE_SECONDS = 30 * 24 * 3600.0


class PartnerPending(TransientFault):
    """This series cannot place its face alone; it waits for another series of its study."""

    title = "Waiting for the rest of the study"
    shown = True  # the message names the fit's numbers or the stack's size, nothing else


@dataclass(frozen=True)
class Fit:
    """A template fit in patient coordinates: subject physical -> template physical."""

    matrix: tuple[float, ...]
    translation: tuple[float, float, float]
    center: tuple[float, float, float]
    dice: float
    scales: tuple[float, float, float]
    rotation_deg: float
    #: How good a source the fitted volume is (resolution and coverage); higher is better.
    score: float
    #: Pseudonym of the series it was fitted on (no PHI).
    source: str = ""
    #: Fraction of the template's face that lay inside the fitted volume: the face's place
    #: was seen in real pixels, not extrapolated.
    face_seen: float = 0.0
    #: Which fitting method found it (for the record).
    method: str = "head"
    #: Identity of the template it was fitted with (a new template means a new fit).
    template: str = ""
    created: float = field(default_factory=time.time)

    @property
    def transform(self) -> sitk.AffineTransform:
        tx = sitk.AffineTransform(3)
        tx.SetCenter(self.center)
        tx.SetMatrix(self.matrix)
        tx.SetTranslation(self.translation)
        return tx

    def registration(self, work: sitk.Image) -> Registration:
        """As the defacing core takes it; ``work`` stands for the subject on a work grid."""
        return Registration(transform=self.transform, dice=self.dice, scales=self.scales,
                            rotation_deg=self.rotation_deg, work=work, seconds=0.0)

    @classmethod
    def from_transform(cls, tx: sitk.AffineTransform, **fields: object) -> Fit:
        return cls(matrix=tuple(float(v) for v in tx.GetMatrix()),
                   translation=_vec(tx.GetTranslation()), center=_vec(tx.GetCenter()),
                   **fields)  # type: ignore[arg-type]


def _vec(v: object) -> tuple[float, float, float]:
    a = [float(x) for x in v]  # type: ignore[attr-defined]
    return (a[0], a[1], a[2])


def study_key(study: str, frame_of_reference: str) -> str | None:
    """The store's key for one study and Frame of Reference (both already pseudonymised);
    None when either is unknown (such a series shares no fit)."""
    if not study or not frame_of_reference:
        return None
    return hashlib.sha256(f"{study}\x00{frame_of_reference}".encode()).hexdigest()[:40]


class StudyFits:
    """The fits of recent studies, one file each; thread-safe."""

    def __init__(self, folder: Path, *, partner_wait: float = 1800.0) -> None:
        self.folder = folder
        self.partner_wait = partner_wait
        #: False once no more series can arrive (the end of a one-shot run).
        self.partners_expected = True
        self._lock = threading.Lock()
        self._claims: dict[str, threading.Lock] = {}
        self.prune()

    def prune(self, max_age: float = MAX_AGE_SECONDS) -> int:
        """Remove fits and waiting marks older than ``max_age`` seconds; how many."""
        removed = 0
        cutoff = time.time() - max_age
        for path in [*self.folder.glob("*.json"), *self.folder.glob("waiting/*")]:
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError:
                continue
        return removed

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str | None, template: str = "") -> Fit | None:
        if key is None:
            return None
        try:
            raw = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        try:
            if raw.get("format") != FORMAT:
                return None
            values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                      for k, v in raw["fit"].items()}
            fit = Fit(**values)
        except (KeyError, TypeError, ValueError):
            log.warning("a stored study fit is unreadable; the study is fitted again")
            return None
        if template and fit.template and fit.template != template:
            return None
        if not np.isfinite([*fit.matrix, *fit.translation, *fit.center]).all():
            return None
        return fit

    def offer(self, key: str | None, fit: Fit) -> bool:
        """Keep ``fit`` as the study's fit unless the stored one is at least as good."""
        if key is None:
            return False
        with self._lock:
            current = self.get(key, fit.template)
            if current is not None and current.score >= fit.score:
                return False
            self.folder.mkdir(parents=True, exist_ok=True)
            data = json.dumps({"format": FORMAT, "fit": asdict(fit)}).encode()
            tmp = self._path(key).with_suffix(".tmp")
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._path(key))
            return True

    @contextmanager
    def claim(self, key: str | None) -> Iterator[None]:
        """Fit one series of a study at a time (the others then reuse its fit)."""
        if key is None:
            yield
            return
        with self._lock:
            lock = self._claims.setdefault(key, threading.Lock())
        if not lock.acquire(timeout=CLAIM_WAIT_SECONDS):
            raise PartnerPending("another series of the study is still being fitted",
                                 retry_after=30.0)
        try:
            yield
        finally:
            lock.release()

    def may_wait(self, series_key: str) -> bool:
        """Whether a series that needs a partner may still wait for one (first call starts
        its clock; the clock survives restarts)."""
        if not self.partners_expected or self.partner_wait <= 0:
            return False
        marker = self.folder / "waiting" / f"{series_key[:40]}"
        try:
            since = float(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            since = time.time()
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(repr(since), encoding="utf-8")
        return time.time() - since < self.partner_wait

    def done_waiting(self, series_key: str) -> None:
        (self.folder / "waiting" / f"{series_key[:40]}").unlink(missing_ok=True)
