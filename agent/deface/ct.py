"""Head CT: the head found by its Hounsfield units, the face replaced in HU.

* The head is what lies above :data:`SKIN_HU` (skin/air boundary), opened a little to cut
  thin table pads and head holders off, largest component, cavities filled.
* The template is fitted to that skin surface (signed distance maps, mean squares): CT and
  the template's MR contrast do not compare, surfaces do.
* The new face is soft tissue in HU: the template's MR intensities are mapped to fat
  (-90 HU) where the template is bright, skin and muscle (+20..+45 HU) elsewhere inside
  the head, air outside; near the new skin the patient's own skin profile is used, capped
  at :data:`SOFT_MAX_HU`.
* Facial bone: inside the fully replaced region (face and ears, away from the brain
  protection region) bone is replaced by soft tissue too - nasal bones, orbital rims,
  maxilla, zygoma and mandible do not survive, because a bone-window render of them
  identifies a person nearly as well as the skin does. The cranial vault and the skull base
  near the brain lie in the protection region and keep their bits; at the region's rim the
  patient's bone fades into the new tissue.
* The inside of the skull is found in the CT itself too (:func:`cranial_cavity`: what the
  skull encloses, plane by plane, its largest connected part) and protected with the
  template's brain: a head CT's protection does not depend on the fit alone (a dry skull
  or a head cut above the orbits constrains a surface fit poorly), with the skull and what
  it encloses up to 16 mm below it (:func:`cranium`: thin orbital roofs fall below the
  bone threshold, and air above them is inside the skull, not face).
* Voxels outside the reconstruction circle (at or below :data:`PADDING_HU`, or equal to the
  series' Pixel Padding Value) are never written and count as the edge of the field of view.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

#: The skin/air boundary (HU).
SKIN_HU = -500.0
#: Bone (HU).
BONE_HU = 300.0
#: Soft tissue of the new face stays within this range (HU).
SOFT_MIN_HU, SOFT_MAX_HU = -100.0, 60.0
#: Fat and muscle of the new face (HU).
FAT_HU, MUSCLE_HU, SKIN_TISSUE_HU = -90.0, 45.0, 25.0
#: At or below this, a voxel lies outside the reconstructed field of view (padding).
PADDING_HU = -1100.0
#: The skull for :func:`cranial_cavity`: above this (HU; thin bone of the orbital roofs
#: and temporal squama falls below BONE_HU by partial volume, brain stays below 100).
CAVITY_BONE_HU = 150.0
#: Grid (mm) of :func:`cranial_cavity`, and the radius (voxels) that seals sutures and
#: foramina before filling.
CAVITY_MM, CAVITY_CLOSE = 2.0, 3
#: Steps (grid voxels) the cavity is grown back towards the skull after its opening.
CAVITY_GROW = 7
#: A cavity smaller than this (mL) is not a cranium (no skull in the field of view).
MIN_CAVITY_ML = 100.0
#: How far (mm) below the cavity found the skull and what it encloses are kept too (see
#: :func:`cranium`).
FLOOR_MARGIN_MM = 16.0


def skin_level(image_values: np.ndarray) -> float:
    """The skin threshold in this image's units: -500 HU, or half way between the lowest
    value and water when an export was windowed so that air never reaches -500 HU."""
    lo = float(np.percentile(image_values, 1))
    return max(SKIN_HU, lo + 0.4 * (0.0 - lo))


def head_mask(image: sitk.Image, grid: sitk.Image | None = None) -> sitk.Image:
    """The head on ``grid`` (default: the image's own): above the skin level in the image
    at its own resolution (a thin skull without skin survives), any such voxel marks its
    grid cell, largest component, closed, cavities filled (see :func:`fill_in_planes`)."""
    arr = sitk.GetArrayViewFromImage(image)
    target = grid if grid is not None else image
    cover = _cover(image, skin_level(arr), target)
    mask = sitk.Cast(cover > 0.05, sitk.sitkUInt8)
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    largest = sitk.Cast(cc == 1, sitk.sitkUInt8)
    closed = sitk.BinaryMorphologicalClosing(largest, [2, 2, 2])
    return fill_in_planes(sitk.Cast(sitk.BinaryFillhole(closed), sitk.sitkUInt8))


def _cover(image: sitk.Image, lowest: float, target: sitk.Image) -> sitk.Image:
    """The fraction of ``image``'s voxels at or above ``lowest`` on ``target``'s grid
    (float32): block means towards ``target``'s voxel size, so that thin bone counts, then
    interpolated. In numpy on a boolean view of the volume: no full-size float copy."""
    from agent.deface.coarse import block_mean

    sp = image.GetSpacing()
    f = [max(1, int(t // s)) for t, s in zip(target.GetSpacing(), sp, strict=True)]
    means = sitk.GetImageFromArray(block_mean(
        sitk.GetArrayViewFromImage(image) >= lowest, (f[2], f[1], f[0])))
    means.SetSpacing(tuple(float(s) * k for s, k in zip(sp, f, strict=True)))
    means.SetDirection(image.GetDirection())
    means.SetOrigin(image.TransformContinuousIndexToPhysicalPoint(
        [(k - 1) / 2.0 for k in f]))
    return sitk.Resample(means, target, sitk.Transform(), sitk.sitkLinear, 0.0,
                         sitk.sitkFloat32)


def fill_in_planes(mask: sitk.Image) -> sitk.Image:
    """Holes filled in every plane along each axis too: a skull whose inside reaches the
    outside through the foramen magnum, the orbits or the edge of the field of view is
    still a closed ring in most planes (a dry skull or a phantom has no skin to close it)."""
    arr = sitk.GetArrayFromImage(mask).astype(bool)
    out = arr.copy()
    for axis in range(3):
        for k in range(arr.shape[axis]):
            plane = np.take(arr, k, axis=axis)
            if not plane.any():
                continue
            filled = sitk.GetArrayFromImage(sitk.BinaryFillhole(
                sitk.GetImageFromArray(plane.astype(np.uint8)))).astype(bool)
            sl: list[slice | int] = [slice(None)] * 3
            sl[axis] = k
            out[tuple(sl)] |= filled
    img = sitk.GetImageFromArray(out.astype(np.uint8))
    img.CopyInformation(mask)
    return img


def template_to_hu(values: np.ndarray, d_template: np.ndarray, template_skin: float,
                   template_tissue: float, template_bright: float, air_hu: float
                   ) -> np.ndarray:
    """Template MR intensities -> HU: air outside the template's head; inside it skin and
    muscle where the template is mid-grey or dark (dark MR inside a head is bone, sinus or
    vitreous: all become soft tissue here) and fat where it is bright."""
    inside = d_template < 0.0
    t = np.clip((values - template_tissue) / max(template_bright - template_tissue, 1e-3),
                0.0, 1.0)
    soft = MUSCLE_HU + t * (FAT_HU - MUSCLE_HU)
    edge = np.clip((values - 0.5 * template_skin) / max(0.5 * template_skin, 1e-3), 0.0, 1.0)
    outside = air_hu + edge * (SKIN_TISSUE_HU - air_hu)
    return np.where(inside, soft, np.where(d_template < 2.0, outside, air_hu)).astype(
        np.float32)


def cap_profile(profile: np.ndarray, air_hu: float) -> np.ndarray:
    """The patient's skin profile with bone removed: capped at SOFT_MAX_HU, and inside the
    head (where it would be bone or fat) at least SOFT_MIN_HU."""
    out = np.minimum(profile, SOFT_MAX_HU)
    return np.maximum(out, air_hu).astype(np.float32)


def padding_mask(values: np.ndarray, padding_value: float | None) -> np.ndarray:
    """Voxels outside the reconstructed field of view."""
    mask = values <= PADDING_HU
    if padding_value is not None:
        mask |= values == padding_value
    return mask


def _cavity_parts(image: sitk.Image) -> tuple[sitk.Image, sitk.Image, sitk.Image]:
    """(cavity, skull, enclosed) on the 2 mm grid: see :func:`cranial_cavity`."""
    from agent.deface.register import to_work_grid

    grid = to_work_grid(image, CAVITY_MM)
    cover = _cover(image, CAVITY_BONE_HU, grid)
    bone_cells = sitk.Cast(cover > 0.05, sitk.sitkUInt8)
    skull = sitk.BinaryMorphologicalClosing(bone_cells, [CAVITY_CLOSE] * 3)
    enclosed = sitk.And(fill_in_planes(skull), sitk.Not(skull))
    core = sitk.BinaryErode(enclosed, [3, 3, 3])
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(core), sortByObjectSize=True)
    cavity = sitk.Cast(cc == 1, sitk.sitkUInt8)
    # Grown back up to the skull's inner table, through anything that is not bone (where
    # the skull is open - foramen magnum, the cut of the field of view - at most 14 mm).
    free = sitk.Not(bone_cells)
    for _ in range(CAVITY_GROW):
        cavity = sitk.And(sitk.BinaryDilate(cavity, [1, 1, 1]), free)
    # A grid cell with any bone in it counts as bone above: two cells more (into the inner
    # table) reach the brain's last millimetres beside it.
    cavity = sitk.BinaryDilate(cavity, [2, 2, 2])
    return cavity, skull, enclosed


def cranial_cavity(image: sitk.Image) -> sitk.Image | None:
    """The inside of the skull on a 2 mm grid in the image's orientation (uint8), or None
    when none is seen: bone above :data:`CAVITY_BONE_HU` (any in a grid cell), closed,
    holes filled in every plane (:func:`fill_in_planes`), less the bone; of that, the
    largest part after a 6 mm erosion (the orbits, sinuses and nasal cavity hang on by
    thin channels or not at all), grown back through anything but bone."""
    cavity, _, _ = _cavity_parts(image)
    return cavity if _millilitres(cavity) >= MIN_CAVITY_ML else None


def _millilitres(mask: sitk.Image) -> float:
    return float(sitk.GetArrayViewFromImage(mask).sum()) * float(
        np.prod(mask.GetSpacing())) / 1000.0


def cranium(image: sitk.Image) -> sitk.Image | None:
    """What a head CT's defacing never writes, on the 2 mm grid (uint8), or None when no
    cranium is seen: :func:`cranial_cavity`, and up to :data:`FLOOR_MARGIN_MM` below it
    (towards the feet) the skull and whatever the skull encloses in some plane.

    The margin is for the floor of the skull: the orbital roofs and the cribriform plate
    are so thin that partial volume takes them below the bone threshold, and the cavity
    found stops short of the floor (on a dry skull, by up to 15 mm of air that is inside
    the skull, not face). Only downwards: a margin in every direction would keep the
    brow and the upper orbital rims too, and leave a jagged edge in the new face.
    """
    cavity, skull, enclosed = _cavity_parts(image)
    if _millilitres(cavity) < MIN_CAVITY_ML:
        return None
    cav = sitk.GetArrayFromImage(cavity) > 0
    below = _below(cav, cavity, int(round(FLOOR_MARGIN_MM / CAVITY_MM)))
    walls = (sitk.GetArrayViewFromImage(skull) > 0) | (sitk.GetArrayViewFromImage(enclosed) > 0)
    out = sitk.GetImageFromArray((cav | (below & walls)).astype(np.uint8))
    out.CopyInformation(cavity)
    return out


def _below(mask: np.ndarray, grid: sitk.Image, steps: int) -> np.ndarray:
    """Cells up to ``steps`` cells below ``mask`` (z, y, x bool on ``grid``) along the grid
    axis nearest to the patient's head-foot axis."""
    d = np.array(grid.GetDirection()).reshape(3, 3)
    axis_xyz = int(np.argmax(np.abs(d[2])))  # the index axis nearest to patient superior
    up = d[2, axis_xyz] > 0  # superior is towards higher indices
    ax = 2 - axis_xyz
    n = mask.shape[ax]
    out = np.zeros_like(mask)
    for k in range(1, min(steps, n - 1) + 1):
        src: list[slice] = [slice(None)] * 3
        dst: list[slice] = [slice(None)] * 3
        if up:  # cell i lies below the mask's cell i + k
            dst[ax], src[ax] = slice(0, n - k), slice(k, n)
        else:
            dst[ax], src[ax] = slice(k, n), slice(0, n - k)
        out[tuple(dst)] |= mask[tuple(src)]
    return out


def cavity_in_box(image: sitk.Image, ref: sitk.Image) -> np.ndarray | None:
    """:func:`cranium` on the replacement box ``ref`` (z, y, x bool): any trace of it,
    and one voxel more (None when no cranium is seen)."""
    cavity = cranium(image)
    if cavity is None:
        return None
    from agent.deface.coarse import dilate_ball

    inside = sitk.GetArrayFromImage(sitk.Resample(
        sitk.Cast(cavity, sitk.sitkFloat32), ref, sitk.Transform(), sitk.sitkLinear, 0.0,
        sitk.sitkFloat32)) > 0
    return dilate_ball(inside)
