"""Bilinear upsampling: equal to PyTorch's align_corners=False interpolation, exact at copies and edges."""

from __future__ import annotations

import pytest
import torch

from gandissect.core.features import upsample


@pytest.mark.parametrize("size_in, size_out", [((8, 8), (64, 64)), ((16, 16), (64, 64)), ((4, 6), (64, 48)),
                                               ((7, 7), (64, 64)), ((16, 16), (48, 48)), ((8, 8), (8, 8))])
def test_upsample_equals_bilinear_interpolation_without_corner_alignment(size_in, size_out):
    x = torch.randn(2, 3, *size_in, generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.interpolate(x, size=size_out, mode="bilinear", align_corners=False)
    assert torch.allclose(upsample(x, size_out), expected, atol=1e-5, rtol=0)


def test_upsample_keeps_constant_maps_and_zeros_exact():
    x = torch.full((1, 2, 5, 7), 0.3)
    x[:, 1] = 0.0
    out = upsample(x, (40, 56))
    assert torch.equal(out[:, 0], torch.full((1, 40, 56), 0.3)) and torch.equal(out[:, 1], torch.zeros(1, 40, 56))
