"""Projections (MIPs, Philips "Projected from" series): each pixel a maximum along a ray.

A projection image is a plane (Image Orientation/Position) whose pixels summarise the whole
patient along the plane's normal. The face shows in it wherever a pixel's ray crosses the
face or the ears, whatever else the ray crosses: such pixels are replaced by the study
fit's template head, projected the same way, smoothed and mapped to the image's
intensities; pixels whose rays miss the face and ears keep their bits (the air behind the
head, where a volume's phase-wrapped face can show, is left to the volume itself). A
projection carries no fit of its own: it is placed by the study's fit (it is derived from a
volume of the same study and Frame of Reference), or it cannot be told.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from agent.deface.core import similarity_part
from agent.deface.surrogate import (
    Calibration,
    RegionMaps,
    calibration,
    region_weight,
    smoothed_head,
)
from agent.deface.template import BRAIN, EARS, FACE, Template

#: Rays are sampled this far (mm) to either side of the plane, this often (mm).
REACH_MM = 160.0
STEP_MM = 4.0


def ray_grid(block: sitk.Image) -> sitk.Image:
    """The volume the rays of a one-slice projection image sweep (same in-plane grid)."""
    n = int(2 * REACH_MM / STEP_MM) + 1
    ref = sitk.Image([block.GetSize()[0], block.GetSize()[1], n], sitk.sitkFloat32)
    spacing = block.GetSpacing()
    ref.SetSpacing((spacing[0], spacing[1], STEP_MM))
    ref.SetDirection(block.GetDirection())
    d = np.array(block.GetDirection()).reshape(3, 3)
    ref.SetOrigin(tuple(np.array(block.GetOrigin()) - d[:, 2] * REACH_MM))
    return ref


def _project(image: sitk.Image, rays: sitk.Image, tx: sitk.Transform, how: str
             ) -> np.ndarray:
    values = sitk.GetArrayFromImage(sitk.Resample(image, rays, tx, sitk.sitkLinear, 0.0,
                                                  sitk.sitkFloat32))
    return (values.max(axis=0) if how == "max" else values.mean(axis=0))[None]


def maps(block: sitk.Image, template: Template, tx: sitk.AffineTransform
         ) -> RegionMaps | None:
    """The face-and-ears rays of a one-slice projection; None when no ray meets them."""
    rays = ray_grid(block)
    weight = _project(region_weight(template, FACE | EARS), rays, tx, "max")
    weight = weight.astype(np.float32)
    if not (weight > 0).any():
        return None
    idx = np.argwhere(weight > 0)
    lo, hi = idx.min(0), idx.max(0) + 1
    box = (slice(0, 1), slice(int(lo[1]), int(hi[1])), slice(int(lo[2]), int(hi[2])))
    sigma = float(max(block.GetSpacing()[:2]))
    head = smoothed_head(template, round(sigma, 1))
    tvals = _project(head, rays, similarity_part(tx), "max")
    return RegionMaps(box=box, weight=weight[box], protect=np.zeros(weight[box].shape, bool),
                      template=tvals[box])


def calibrate(block: sitk.Image, template: Template, tx: sitk.AffineTransform
              ) -> Calibration:
    """Template projection -> this image's intensities, over the rays that miss the brain
    (the brain's own brightness says nothing about the face), with the image's noise."""
    rays = ray_grid(block)
    t_vals = _project(template.head, rays, tx, "max")[0]
    brain = _project(sitk.Cast(template.labels & BRAIN, sitk.sitkFloat32), rays, tx,
                     "max")[0]
    subject = sitk.GetArrayFromImage(block)[0]
    air = subject[(t_vals < 1.0) & np.isfinite(subject)]
    noise = 0.0
    if air.size >= 200:
        noise = 1.4826 * float(np.median(np.abs(air - np.median(air)))) / 0.65
    return calibration(t_vals, subject, brain <= 0, noise)
