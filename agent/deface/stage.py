"""The pipeline stage ``deface``: every MR and CT series is checked for a face, from its
pixels and geometry, whatever its headers say.

For each series (any shape: :mod:`agent.deface.volumes`):

1. a face fit is found (:mod:`agent.deface.studyfit`): the study's fit when an earlier
   series of the same study and Frame of Reference left one, else a fit on this series'
   best volume; a clearly better structural volume replaces the study's fit for the series
   that come after it;
2. each volume gets a verdict (:mod:`agent.deface.presence`): a face may be in its field of
   view, there is none (positive evidence only: the reason is recorded), or it cannot be
   told; where no head fit tells, a shape no face allows (:mod:`agent.deface.noface`: a
   limb, a phantom) is evidence too, and the series is delivered as it is;
3. volumes with a face are defaced - the template's face on a fine structural volume
   (:func:`~agent.deface.core.deface_image`), a smooth, intensity- and noise-matched
   surrogate from the mapped region on everything else (:mod:`agent.deface.surrogate`),
   each slice in its own native geometry - and the objects are written back in the form
   they came in;
4. anything that cannot be told quarantines the series (after waiting, in the agent, for a
   structural series of the same study that may still arrive).

Header words may add suspicion, never remove it: a Body Part Examined of KNEE does not
spare a head from being checked.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

from agent.config import Config
from agent.deface import dicomio
from agent.deface.phantom import phantom_words
from agent.deface.presence import Verdict
from agent.deface.render import render_before_after
from agent.deface.studyfit import StudyFits
from agent.deface.volumes import Volume, build_volumes
from agent.errors import DefaceFailed
from agent.vocab import AuditEvent
from agent.work import SeriesWork

log = logging.getLogger(__name__)

CODE_CLEAN_VISUAL = dicomio.CLEAN_VISUAL[0]
#: Modalities whose images are checked for a face.
FACE_MODALITIES = ("MR", "CT")


def _seed(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")


class DefaceStage:
    """A :class:`~agent.work.Stage`: replaces the face wherever one may show (module doc)."""

    name = "deface"

    def __init__(self, cfg: Config, fits: StudyFits | None = None) -> None:
        self.cfg = cfg
        self.fits = fits or StudyFits(cfg.paths.state_dir / "studyfits",
                                      partner_wait=cfg.deface.partner_wait_minutes * 60.0)
        phantom_words(patient=True)  # a broken data file stops the agent at start

    def intake_closed(self) -> None:
        """No more series will arrive (one-shot runs): stop waiting for partners."""
        self.fits.partners_expected = False

    def __call__(self, work: SeriesWork) -> None:
        from agent.deface import plan

        started = time.monotonic()
        objs = dicomio.read_series(list(work.files), list(work.source_files))
        modality = (work.modality or plan.modality_of(objs)).upper()
        if modality not in FACE_MODALITIES or not objs.slices:
            return
        volumes = build_volumes(objs.slices, objs.pixels)
        outcome = plan.run(self.fits, work, objs, volumes, modality=modality,
                           seed=_seed(work.key))
        if outcome.verdict is Verdict.NO_FACE:
            log.info("series %s delivered as it is: %s", work.key[:12], outcome.reason)
            work.face = {"decision": "no-face", "code": outcome.code.value,
                         "reason": outcome.reason}
            work.audit.append((AuditEvent.FACE_DECISION, dict(work.face)))
            return
        names = dict(zip(work.files, _unique_names(list(work.files)), strict=True))
        written = objs.write(work.workdir / "deface", names)
        work.files = [written[p] for p in work.files]
        work.defaced = True
        work.face = {"decision": "defaced", "code": outcome.code.value,
                     "reason": outcome.reason}
        work.audit.append((AuditEvent.FACE_DECISION, dict(work.face)))
        if CODE_CLEAN_VISUAL not in work.codes:
            work.codes.append(CODE_CLEAN_VISUAL)
        if self.cfg.deface.renders and outcome.render is not None:
            before, after = outcome.render
            work.render = render_before_after(before, after, work.workdir / "render.png",
                                              modality=modality)
        log.info("series %s defaced (%d of %d volume(s), %s) in %.1f s", work.key[:12],
                 outcome.defaced, len(volumes), outcome.reason, time.monotonic() - started)


def _unique_names(files: list[Path]) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    for i, p in enumerate(files):
        name = p.name if p.name not in seen else f"{i:05d}_{p.name}"
        seen.add(name)
        names.append(name)
    return names


__all__ = ["DefaceFailed", "DefaceStage", "Volume"]
