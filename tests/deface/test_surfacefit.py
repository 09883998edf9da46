"""The template's skin field (agent.deface.surfacefit.Field): the axis-aligned shortcut
gives the numbers of the general product, to the bit."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from agent.deface.surfacefit import Field


def _general(image: sitk.Image, clip: float) -> np.ndarray:
    arr = np.clip(sitk.GetArrayFromImage(image).astype(np.float32), -clip, clip)
    inv = np.linalg.inv(np.array(image.GetDirection()).reshape(3, 3)
                        * np.array(image.GetSpacing()))
    gz, gy, gx = np.gradient(arr)
    gp = (inv.T @ np.stack([gx.ravel(), gy.ravel(), gz.ravel()])).astype(np.float32)
    return np.concatenate([arr.ravel()[None], gp]).T


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1),
                                       (0.8, -0.6, 0, 0.6, 0.8, 0, 0, 0, 1)])
def test_field_is_the_general_product(direction: tuple[float, ...]) -> None:
    img = sitk.AdditiveGaussianNoise(sitk.Image([20, 30, 25], sitk.sitkFloat32), 5.0, 0.0, 7)
    img.SetSpacing((1.5, 1.0, 2.0))
    img.SetDirection(direction)
    field = Field.from_image(img, clip=6.0)
    assert field.data.flags.c_contiguous and field.data.dtype == np.float32
    assert np.array_equal(field.data, _general(img, 6.0))
