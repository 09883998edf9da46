"""Writing a defacing result into the stored values of a volume's slices, and checking it.

A :class:`~agent.deface.core.DefaceResult` holds new real-world values inside a box of one
block's grid (the block is an exact 3-D image of native slices). They are quantised with
each slice's own rescale, clipped to what the object can represent, written only where the
blend weight is positive, checked (:func:`~agent.deface.core.check_output`: the brain and
everything outside the region bit-identical, the region really replaced) and only then put
back into the series' objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from agent.deface.core import MIN_CHANGED, DefaceResult, check_output
from agent.deface.dicomio import SeriesObjects, stored_range
from agent.deface.volumes import Volume
from agent.errors import DefaceFailed


def quantise(volume: Volume, start: int, stop: int, result: DefaceResult,
             lo: float, hi: float) -> np.ndarray:
    """New stored values of slices [start, stop): originals, blended voxels replaced."""
    out = volume.stored[start:stop].copy()
    box = result.box
    z0 = box[0].start
    sub = out[box]
    region = result.weight > 0
    slopes = np.array([s.slope for s in volume.slices[start:stop]], np.float64)
    icpts = np.array([s.intercept for s in volume.slices[start:stop]], np.float64)
    slope = slopes[z0:z0 + sub.shape[0]][:, None, None]
    icpt = icpts[z0:z0 + sub.shape[0]][:, None, None]
    slope = np.where(slope == 0, 1.0, slope)
    raw = (result.values.astype(np.float64) - icpt) / slope
    if np.issubdtype(out.dtype, np.integer):
        raw = np.rint(raw)
    sub[region] = np.clip(raw, lo, hi)[region].astype(out.dtype)
    return out


@dataclass
class Tally:
    """What a volume's blocks changed, for the check over the whole volume."""

    changed: int = 0
    strong: int = 0
    strong_changed: int = 0

    @property
    def fraction(self) -> float:
        return self.strong_changed / self.strong if self.strong else 0.0


def apply_block(objs: SeriesObjects, volume: Volume, block: int, result: DefaceResult,
                tally: Tally | None = None) -> int:
    """Quantise, check and store the result of one block; returns voxels changed.

    With ``tally``, the "region really replaced" part of the check is left to
    :func:`check_volume` (a block of a few slices may hold only air of the region); the
    brain and the voxels outside the region are checked here, block by block, always.
    """
    start, stop = volume.blocks[block]
    ds = objs.datasets[volume.slices[start].obj]
    lo, hi = stored_range(ds, volume.stored.dtype)
    before = volume.stored[start:stop]
    after = quantise(volume, start, stop, result, lo, hi)
    if tally is None:
        check_output(before, after, result)
    else:
        _check_untouched(before, after, result)
        diff = before[result.box] != after[result.box]
        strong = (result.weight >= 0.25) & result.tissue
        tally.strong += int(strong.sum())
        tally.strong_changed += int(np.count_nonzero(diff & strong))
    changed = int(np.count_nonzero(before != after))
    if tally is not None:
        tally.changed += changed
    volume.stored[start:stop] = after
    for i in range(start, stop):
        objs.put(volume.slices[i], after[i - start])
    return changed


def _check_untouched(before: np.ndarray, after: np.ndarray, result: DefaceResult) -> None:
    outside = np.ones(before.shape, bool)
    outside[result.box] = result.weight <= 0
    moved = int(np.count_nonzero(before[outside] != after[outside]))
    moved += int(np.count_nonzero(before[result.box][result.protect]
                                  != after[result.box][result.protect]))
    if moved:
        raise DefaceFailed(f"internal error: {moved} voxels outside the replacement region "
                           "changed; the series is held back", code="deface-qc")


def check_volume(tally: Tally, minimum: float = MIN_CHANGED) -> None:
    """The region was really replaced, over the whole volume (when it holds tissue)."""
    if tally.strong and tally.fraction < minimum:
        raise DefaceFailed(
            f"only {100 * tally.fraction:.0f}% of the face region changed after defacing "
            f"(at least {100 * minimum:.0f}% required)", code="deface-qc")


def stored_image(volume: Volume, block: int = 0) -> sitk.Image:
    """Block ``block`` of the volume as it is now (real values), for renders."""
    return volume.block_image(block)
