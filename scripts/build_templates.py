#!/usr/bin/env python
"""Rebuild the defacing template in ``templates/`` from permissively licensed sources.

Sources (installed into a development virtualenv only; none is a runtime dependency):

* pydeface (MIT): ``pydeface/data/mean_reg2mean.nii.gz``, a mean head with a face, and
  ``facemask.nii.gz``, the region pydeface removes (0 = face).
* nilearn (BSD): ``nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``,
  the skull-stripped ICBM 2009a MNI152 T1; its non-zero voxels are the brain.

Outputs, on a 2 mm grid in MNI space (LPS physical coordinates, as SimpleITK uses):

* ``templates/head.nii.gz`` (int16): the pydeface mean head, affinely registered to MNI.
* ``templates/labels.nii.gz`` (uint8 bit field, see :mod:`agent.deface.template`):
  face, ears, wrap-around air behind the head, brain, brain protection region.
* ``templates/weight.nii.gz`` (uint8, 0-255): the replacement weight, a smooth field that
  is 255 over the face and the ears and falls to 0 over ~14 mm towards the forehead, the
  back of the head, the brain protection region and far from the head's surface. Smooth
  shapes (rounded boxes, ellipsoids), so the region's edge never draws a line on the skin.
* ``templates/surface.nii.gz`` (int8, 0.25 mm, clipped at +-31.75 mm): signed distance to
  the template's skin (positive outside), smoothed: the surface the new face takes, and
  what CT is fitted to.

Usage: ``python scripts/build_templates.py [--out templates]``. Needs SimpleITK, numpy,
pydeface and nilearn importable (``pip install pydeface nilearn``).
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import SimpleITK as sitk

# Label bits; must match agent/deface/template.py.
FACE, EARS, WRAP, BRAIN, PROTECT = 1, 2, 4, 8, 16

SPACING = 2.0
#: Template grid bounds in MNI RAS millimetres (x: left-right, y: posterior-anterior,
#: z: inferior-superior). Generous in front of the face and below the chin.
BOUNDS_RAS = ((-100.0, 100.0), (-190.0, 126.0), (-136.0, 106.0))
#: Brain protection margin in mm (the issue asks for 5-11 mm).
PROTECT_MM = 8.0
#: Radius (mm) of the closing that turns the brain into the intracranial space.
CLOSING_MM = 20.0
#: Width (mm) over which the replacement weight falls from 1 to 0 at the region's edges.
FALLOFF_MM = 14.0
#: Ears: centre (RAS mm, left side; the right is mirrored) and semi-axes of the ellipsoid
#: covering the pinna, the tragus and the air around them.
EAR_CENTRE = (80.0, -20.0, -16.0)
EAR_AXES = (30.0, 40.0, 48.0)
#: Beyond this distance (mm) outside the template's skin nothing is replaced (air).
OUTSIDE_MM = 28.0


def smoothstep(t: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, C1-smooth in between."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def replacement_weight(x: np.ndarray, y: np.ndarray, z: np.ndarray, pyd_face: np.ndarray,
                       protect_dist: np.ndarray, head_dist: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weight, face part, ear part) on the template grid, all in 0..1.

    Face: in front of y = 14 mm, below z = 30 mm (the brow ridge; the weight is 0 again at
    z = 44, well up the forehead, so the new face meets the forehead on a smooth slope),
    cheek to cheek; united with pydeface's face mask (chin, jaw, front of the neck).
    Ears: an ellipsoid per side. Both are limited to the head's surroundings and fall to 0
    towards the brain protection region (FALLOFF_MM / 2 from it).
    """
    f = FALLOFF_MM
    face = (smoothstep((y - 14.0) / f + 1.0) * smoothstep((30.0 - z) / f + 1.0)
            * smoothstep((80.0 - np.abs(x)) / f + 1.0))
    face = np.maximum(face, smoothstep(1.5 - 2.0 * pyd_face))
    ears = np.zeros_like(face)
    for side in (1.0, -1.0):
        cx, cy, cz = EAR_CENTRE
        r = np.sqrt(((x - side * cx) / EAR_AXES[0]) ** 2 + ((y - cy) / EAR_AXES[1]) ** 2
                    + ((z - cz) / EAR_AXES[2]) ** 2)
        ears = np.maximum(ears, smoothstep((1.0 - r) / 0.3))
    near_head = smoothstep((OUTSIDE_MM - head_dist) / 8.0)
    away_from_brain = smoothstep(protect_dist / (f / 2.0))
    weight = np.maximum(face, ears) * near_head * away_from_brain
    return weight, face * near_head * away_from_brain, ears * near_head * away_from_brain


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{name} is not installed: pip install {name}")
    return Path(spec.origin).parent


def template_grid() -> sitk.Image:
    """An empty image defining the template grid (LPS, axis-aligned, 2 mm)."""
    (x0, x1), (y0, y1), (z0, z1) = BOUNDS_RAS
    size = [int(round((b - a) / SPACING)) + 1 for a, b in ((x0, x1), (y0, y1), (z0, z1))]
    grid = sitk.Image(size, sitk.sitkUInt8)
    grid.SetSpacing([SPACING] * 3)
    # Direction diag(-1,-1,1) in LPS = RAS-ordered axes: index x grows to the right etc.
    grid.SetDirection((-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))
    grid.SetOrigin((-x0, -y0, z0))  # RAS (x0, y0, z0) -> LPS (-x0, -y0, z0)
    return grid


def ras_coordinates(grid: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RAS millimetre coordinates of every voxel, as (z, y, x)-ordered numpy arrays."""
    nx, ny, nz = grid.GetSize()
    ox, oy, oz = grid.GetOrigin()
    s = grid.GetSpacing()[0]
    x = -(ox - s * np.arange(nx))
    y = -(oy - s * np.arange(ny))
    z = oz + s * np.arange(nz)
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    return xx, yy, zz


def register_mean_to_mni(mean: sitk.Image, mni: sitk.Image) -> sitk.Transform:
    """Affine transform mapping MNI points to the mean head (brain-weighted MI)."""
    fixed = sitk.Cast(mni, sitk.sitkFloat32)
    moving = sitk.Cast(mean, sitk.sitkFloat32)
    brain = sitk.Cast(fixed > 0, sitk.sitkUInt8)
    dist = sitk.SignedMaurerDistanceMap(brain, insideIsPositive=False, useImageSpacing=True,
                                        squaredDistance=False)
    mask = sitk.Cast(dist < 6.0, sitk.sitkUInt8)
    # The brain centre sits above and behind the centre of a head with a face and neck:
    # try a few offsets and keep the best-converging start.
    fixed_centre = np.array(sitk.CenteredTransformInitializer(
        brain, brain, sitk.Euler3DTransform(),
        sitk.CenteredTransformInitializerFilter.MOMENTS).GetCenter())
    head = sitk.Cast(moving > 80, sitk.sitkUInt8)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(head)
    head_centre = np.array(stats.GetCentroid(1))
    best: tuple[float, sitk.Transform] | None = None
    for dz in (10.0, 25.0, 40.0):
        for dy in (0.0, 15.0):
            init = sitk.AffineTransform(3)
            init.SetCenter(fixed_centre.tolist())
            # LPS: +y posterior, +z superior.
            init.SetTranslation((head_centre + np.array([0.0, dy, dz]) - fixed_centre).tolist())
            reg = sitk.ImageRegistrationMethod()
            reg.SetMetricAsMattesMutualInformation(32)
            reg.SetMetricFixedMask(mask)
            reg.SetMetricSamplingStrategy(reg.RANDOM)
            reg.SetMetricSamplingPercentage(0.2, seed=1)
            reg.SetInterpolator(sitk.sitkLinear)
            reg.SetOptimizerAsRegularStepGradientDescent(2.0, 1e-4, 300)
            reg.SetOptimizerScalesFromPhysicalShift()
            reg.SetShrinkFactorsPerLevel([4, 2, 1])
            reg.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
            reg.SetInitialTransform(init, inPlace=True)
            reg.Execute(fixed, moving)
            value = reg.GetMetricValue()
            print(f"start dz={dz} dy={dy}: MI {value:.4f}")
            if best is None or value < best[0]:
                best = (value, init)
    assert best is not None
    return best[1]


def _clean_mask(mask: sitk.Image) -> sitk.Image:
    """Largest connected component, closed and with holes filled."""
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    largest = sitk.Cast(cc == 1, sitk.sitkUInt8)
    closed = sitk.BinaryMorphologicalClosing(largest, [2, 2, 2])
    return sitk.Cast(sitk.BinaryFillhole(closed), sitk.sitkUInt8)


def build(out: Path, transform: Path | None = None) -> None:
    pyd = _package_dir("pydeface") / "data"
    nil = _package_dir("nilearn") / "datasets" / "data"
    mean = sitk.ReadImage(str(pyd / "mean_reg2mean.nii.gz"), sitk.sitkFloat32)
    facemask = sitk.ReadImage(str(pyd / "facemask.nii.gz"), sitk.sitkFloat32)
    mni = sitk.ReadImage(str(nil / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"),
                         sitk.sitkFloat32)

    if transform is not None and transform.is_file():
        tx = sitk.ReadTransform(str(transform))
        print(f"mean head -> MNI: {transform.name} (delete it to register again)")
    else:
        tx = register_mean_to_mni(mean, mni)
        if transform is not None:
            sitk.WriteTransform(tx, str(transform))
    grid = template_grid()
    head = sitk.Resample(mean, grid, tx, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    # pydeface's mask is 0 on the face; outside its grid there is no face (default 1).
    pyd_face = sitk.Resample(facemask, grid, tx, sitk.sitkLinear, 1.0, sitk.sitkFloat32)

    # Brain and its protection region: distances on the 1 mm MNI grid, then carried to the
    # 2 mm grid conservatively (any overlap counts as brain).
    brain1 = sitk.Cast(mni > 0, sitk.sitkUInt8)
    brain1 = sitk.BinaryFillhole(brain1)
    # The protection region covers what lies inside the skull, not only the brain: the
    # brain closed by a ball of CLOSING_MM fills the sella and pituitary, the cisterns and
    # the gaps between the temporal lobes and the brainstem, then the margin is added.
    out1 = sitk.SignedMaurerDistanceMap(brain1, insideIsPositive=False, useImageSpacing=True,
                                        squaredDistance=False)
    dilated = sitk.Cast(out1 <= CLOSING_MM, sitk.sitkUInt8)
    back = sitk.SignedMaurerDistanceMap(dilated, insideIsPositive=True, useImageSpacing=True,
                                        squaredDistance=False)
    closed1 = sitk.Cast(back >= CLOSING_MM, sitk.sitkUInt8)
    closed1 = sitk.Or(closed1, brain1)
    dist1 = sitk.SignedMaurerDistanceMap(closed1, insideIsPositive=False,
                                         useImageSpacing=True, squaredDistance=False)
    ident = sitk.Transform()
    brain = sitk.GetArrayFromImage(
        sitk.Resample(sitk.Cast(brain1, sitk.sitkFloat32), grid, ident, sitk.sitkLinear, 0.0)
    ) > 0.05
    protect = sitk.GetArrayFromImage(
        sitk.Resample(dist1, grid, ident, sitk.sitkLinear, 1e6)
    ) <= PROTECT_MM + SPACING / 2

    h = sitk.GetArrayFromImage(head)
    head_mask = h > 0.15 * np.percentile(h[h > 0], 95)
    head_img = sitk.GetImageFromArray(head_mask.astype(np.uint8))
    head_img.CopyInformation(grid)
    head_img = _clean_mask(head_img)
    head_mask = sitk.GetArrayFromImage(head_img) > 0

    x, y, z = ras_coordinates(grid)
    # The opening below applies to the front of the face (the ears are thin too).
    face = (y >= 18.0) & (z <= 28.0) & (np.abs(x) <= 78.0)
    face |= sitk.GetArrayFromImage(pyd_face) < 0.5
    ears = (np.abs(x) >= 58.0) & (y >= -62.0) & (y <= 12.0) & (z >= -72.0) & (z <= 18.0)

    # The mean head has a thin averaging artefact in front of the eyes (a visor-like flap):
    # an opening of the mask, in the face only (ears are thin too), removes it.
    opened = sitk.GetArrayFromImage(sitk.BinaryMorphologicalOpening(head_img, [2, 2, 2])) > 0
    head_mask = np.where(face & ~ears, opened, head_mask)
    head_img = sitk.GetImageFromArray(head_mask.astype(np.uint8))
    head_img.CopyInformation(grid)
    head_img = _clean_mask(head_img)
    near_head = sitk.GetArrayFromImage(sitk.BinaryDilate(head_img, [1, 1, 1])) > 0
    air = float(np.median(h[~near_head]))
    h = np.where(near_head, h, air)
    head_dist = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        head_img, insideIsPositive=False, useImageSpacing=True, squaredDistance=False))

    # Air behind the head, where a face wrapped around in the phase-encoding direction shows.
    wrap = (head_dist > 10.0) & (y <= -40.0) & (z <= 40.0)
    # The surface the new face takes: the skin's signed distance, smoothed (the mean head's
    # skin is blurred and slightly lumpy around the eyes).
    dist_img = sitk.GetImageFromArray(head_dist.astype(np.float32))
    dist_img.CopyInformation(grid)
    surface = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(dist_img, 2.0))
    protect_img = sitk.GetImageFromArray(protect.astype(np.uint8))
    protect_img.CopyInformation(grid)
    protect_dist = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        protect_img, insideIsPositive=False, useImageSpacing=True, squaredDistance=False))
    weight, face_w, ears_w = replacement_weight(
        x, y, z, sitk.GetArrayFromImage(pyd_face), np.maximum(protect_dist, 0.0), surface)
    weight[protect] = 0.0
    weight[weight < 1.5 / 255.0] = 0.0
    face = face_w > 0.0
    ears = ears_w > 0.0

    labels = np.zeros(h.shape, np.uint8)
    labels |= np.where(face, FACE, 0).astype(np.uint8)
    labels |= np.where(ears, EARS, 0).astype(np.uint8)
    labels |= np.where(wrap, WRAP, 0).astype(np.uint8)
    labels |= np.where(brain, BRAIN, 0).astype(np.uint8)
    labels |= np.where(protect, PROTECT, 0).astype(np.uint8)

    out.mkdir(parents=True, exist_ok=True)
    head_i16 = sitk.GetImageFromArray(np.clip(np.rint(h), 0, 32767).astype(np.int16))
    head_i16.CopyInformation(grid)
    lab = sitk.GetImageFromArray(labels)
    lab.CopyInformation(grid)
    sitk.WriteImage(head_i16, str(out / "head.nii.gz"), useCompression=True)
    sitk.WriteImage(lab, str(out / "labels.nii.gz"), useCompression=True)
    w8 = sitk.GetImageFromArray(np.rint(255.0 * weight).astype(np.uint8))
    w8.CopyInformation(grid)
    sitk.WriteImage(w8, str(out / "weight.nii.gz"), useCompression=True)
    surf = sitk.GetImageFromArray(np.clip(np.rint(surface * 4.0), -127, 127).astype(np.int8))
    surf.CopyInformation(grid)
    sitk.WriteImage(surf, str(out / "surface.nii.gz"), useCompression=True)
    for name, bit in (("face", FACE), ("ears", EARS), ("wrap", WRAP), ("brain", BRAIN),
                      ("protect", PROTECT)):
        print(f"{name}: {int(((labels & bit) > 0).sum())} voxels")
    print(f"wrote head, labels, weight and surface in {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = Path(__file__).resolve().parent
    ap.add_argument("--out", type=Path, default=here.parent / "templates")
    ap.add_argument("--transform", type=Path, default=here / "data" / "mean_to_mni.tfm",
                    help="the mean head -> MNI registration: read when present (so a rebuild "
                         "is fast and reproducible), written when not")
    args = ap.parse_args()
    args.transform.parent.mkdir(parents=True, exist_ok=True)
    build(args.out, args.transform)


if __name__ == "__main__":
    main()
