"""The subject's tissue as a mask, for measuring fits and views (not for fitting).

Otsu's threshold on a T1 head often keeps only scalp fat and bone marrow: the brain is
darker, and a 3-D hole fill cannot close it when the head opens at the neck or at the edge
of the field of view. Here the threshold is a fraction of Otsu's (as the skin level of the
renders), the largest component is kept, and holes are filled slice by slice across the
patient's head-foot axis: an axial cross-section of a head is closed even where the volume
is not.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from agent.deface import synth

#: The tissue threshold, as a fraction of Otsu's.
FRACTION = 0.5


def tissue_mask(image: sitk.Image) -> sitk.Image:
    """uint8 mask of the subject's tissue on ``image``'s grid (empty when none)."""
    arr = sitk.GetArrayFromImage(image).astype(np.float32)
    finite = np.isfinite(arr)
    out = np.zeros(arr.shape, np.uint8)
    if not finite.any() or float(arr[finite].max()) <= float(arr[finite].min()):
        return _like(out, image)
    arr[~finite] = float(arr[finite].min())
    level = FRACTION * synth.otsu(arr[finite].ravel()[:: max(1, arr.size // 200000)])
    mask = sitk.GetImageFromArray((arr > level).astype(np.uint8))
    mask.CopyInformation(image)
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    largest = sitk.GetArrayFromImage(cc == 1).astype(bool)
    if not largest.any():
        return _like(out, image)
    axis = _head_foot_axis(image)
    filled = fill_slices(np.moveaxis(largest, axis, 0))
    return _like(np.moveaxis(filled, 0, axis).astype(np.uint8), image)


def fill_slices(stack: np.ndarray) -> np.ndarray:
    """The holes of each slice ``stack[k]`` (bool) filled, in one filter run: the slices
    are stacked with a plane of foreground before, between and after them, so that a
    slice's background reaches the volume's border only through that slice's own edges
    (face connectivity): exactly each slice's own 2-D fill (a filter run per slice cost
    ITK's start-up a hundred times, half a CPU-second per series)."""
    n = stack.shape[0]
    if n == 0:
        return stack.astype(bool)
    spaced = np.ones((2 * n + 1, *stack.shape[1:]), np.uint8)
    spaced[1::2] = stack
    out = sitk.GetArrayFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray(spaced),
                                                     fullyConnected=False))
    return out[1::2] > 0


def _head_foot_axis(image: sitk.Image) -> int:
    """The numpy axis (z, y, x order) most aligned with the patient's head-foot axis."""
    d = np.array(image.GetDirection()).reshape(3, 3)
    itk_axis = int(np.argmax(np.abs(d[2, :])))  # LPS z component of each image axis
    return 2 - itk_axis


def _like(arr: np.ndarray, image: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(image)
    return out


def work_grid(image: sitk.Image, spacing: float = 4.0) -> sitk.Image:
    """``image`` on the isotropic work grid of the registration; thin images are padded
    with their lowest value first (the work grid's smoothing needs four voxels along
    every axis)."""
    from agent.deface.register import to_work_grid

    size = np.array(image.GetSize())
    short = np.maximum(0, np.ceil(4 * spacing / np.array(image.GetSpacing())) - size)
    if short.any():
        lo = [int(v // 2) for v in short]
        hi = [int(v - v // 2) for v in short]
        arr = sitk.GetArrayViewFromImage(image)
        image = sitk.ConstantPad(image, lo, hi, float(np.min(arr)))
    return to_work_grid(image, spacing)
