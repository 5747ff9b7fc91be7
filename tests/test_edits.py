"""Unit edits (ablate, insert, regions at any resolution, gradients) and region resizing, each against
a truth computed independently: by hand, by nearest/area resampling, or by finite differences."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gandissect.core.edits import UnitEdit
from gandissect.core.errors import ConfigError, GandissectError, ShapeError
from gandissect.core.features import resize_region
from gandissect.core.hooks import Trace


def _features(n: int = 2, c: int = 6, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def _image_box(low: int, high: int, size: int = 64) -> torch.Tensor:
    """A (size, size) mask that is 1 on rows and columns low..high-1."""
    box = torch.zeros(size, size)
    box[low:high, low:high] = 1
    return box


def test_ablation_zeroes_exactly_the_chosen_units_inside_the_region():
    r = _features()
    before = r.clone()
    region = torch.zeros(8, 8)
    region[2:6, 3:7] = 1
    edited = UnitEdit.ablate([4, 1], region=region)(r)
    expected = r.clone()
    for unit in (1, 4):
        for i in range(2, 6):
            for j in range(3, 7):
                expected[:, unit, i, j] = 0
    assert torch.equal(edited, expected)  # every other element bit-exact
    assert torch.equal(r, before)  # out of place
    everywhere = UnitEdit.ablate(torch.tensor([0, 5]))(r)
    assert torch.equal(everywhere[:, [0, 5]], torch.zeros(2, 2, 8, 8))
    assert torch.equal(everywhere[:, 1:5], r[:, 1:5])


@pytest.mark.parametrize("soft", [True, False])
def test_an_image_size_region_lands_on_the_right_cells(soft):
    box = _image_box(16, 32)  # pixels 16..31: cells 2..3 of an 8x8 grid (8 px each), 4..7 of a 16x16 (4 px)
    coarse, fine = torch.zeros(8, 8), torch.zeros(16, 16)
    coarse[2:4, 2:4] = 1
    fine[4:8, 4:8] = 1
    assert torch.equal(resize_region(box, (8, 8), soft=soft), coarse[None, None])
    assert torch.equal(resize_region(box, (16, 16), soft=soft), fine[None, None])
    r = _features(size=16)
    edited = UnitEdit.ablate([3], region=box, soft=soft)(r)
    expected = r.clone()
    expected[:, 3, 4:8, 4:8] = 0
    assert torch.equal(edited, expected)


def test_a_partly_covered_cell_gets_its_coverage_when_soft():
    box = _image_box(16, 36)  # pixels 16..35: cells 2, 3 whole, and half (32..35) of cell 4 of 8x8
    soft = torch.zeros(8, 8)
    soft[2:4, 2:4] = 1
    soft[2:4, 4] = soft[4, 2:4] = 0.5
    soft[4, 4] = 0.25
    assert torch.equal(resize_region(box, (8, 8)), soft[None, None])
    hard = torch.zeros(8, 8)
    hard[2:5, 2:5] = 1
    hard[4, 4] = 0  # a quarter covered
    assert torch.equal(resize_region(box, (8, 8), soft=False), hard[None, None])
    r = _features()
    edited = UnitEdit.insert([2], 1.0, region=box)(r)
    assert torch.allclose(edited[:, 2, 4, 4], 0.75 * r[:, 2, 4, 4] + 0.25)


def test_soft_resizing_is_area_coverage_and_nearest_when_enlarging():
    region = (torch.rand(3, 10, 10, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    # 10 -> 4 is no whole factor: refine both to 20 (nearest), then average 5x5 blocks
    refined = region.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)
    expected = F.avg_pool2d(refined[:, None], 5)
    assert torch.allclose(resize_region(region, (4, 4)), expected, atol=1e-6)
    small = region[:1, :4, :4]
    assert torch.equal(resize_region(small, (8, 8)), F.interpolate(small[:, None], size=(8, 8), mode="nearest"))
    assert resize_region(region[:, None], (5, 5)).shape == (3, 1, 5, 5)
    assert resize_region(region[0].bool(), (5, 5)).dtype == torch.float32


def test_insertion_with_per_unit_values_and_half_alpha_is_the_formula():
    r = _features()
    values = torch.tensor([3.0, -2.0])
    edited = UnitEdit.insert([5, 0], values, alpha=0.5)(r)
    assert torch.allclose(edited[:, 5], (r[:, 5] + 3.0) / 2, atol=1e-6)
    assert torch.allclose(edited[:, 0], (r[:, 0] - 2.0) / 2, atol=1e-6)
    assert torch.equal(edited[:, 1:5], r[:, 1:5])
    per_unit_alpha = UnitEdit.insert([5, 0], values, alpha=torch.tensor([1.0, 0.25]))(r)
    assert torch.equal(per_unit_alpha[:, 5], torch.full_like(r[:, 5], 3.0))
    assert torch.allclose(per_unit_alpha[:, 0], 0.75 * r[:, 0] + 0.25 * -2.0, atol=1e-6)
    pattern = torch.arange(8.0)  # broadcast over (N, U, h, w): a ramp along the columns
    ramp = UnitEdit.insert([1], pattern)(r)
    assert torch.equal(ramp[:, 1], pattern.expand(2, 8, 8))


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv(x)))


def test_alpha_and_value_gradients_match_finite_differences():
    model = _Tiny().double()
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    region = _image_box(8, 20, size=24).double()  # partial cells on the 6x6 grid

    def loss(alpha: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        edit = UnitEdit.insert([3, 1], value, region=region, alpha=alpha)
        with Trace(model, edit={"conv": edit}, detach=False):
            return (model(x) ** 2).sum()

    alpha = torch.tensor([0.3, 0.6], dtype=torch.float64, requires_grad=True)
    value = torch.tensor([1.5, -0.5], dtype=torch.float64, requires_grad=True)
    loss(alpha, value).backward()
    eps = 1e-6
    for param, grad in ((alpha, alpha.grad), (value, value.grad)):
        for i in range(2):
            step = torch.zeros(2, dtype=torch.float64)
            step[i] = eps
            with torch.no_grad():
                if param is alpha:
                    numeric = (loss(alpha + step, value) - loss(alpha - step, value)) / (2 * eps)
                else:
                    numeric = (loss(alpha, value + step) - loss(alpha, value - step)) / (2 * eps)
            assert grad is not None and abs(float(grad[i]) - float(numeric)) < 1e-6 * max(1.0, abs(float(numeric)))
    assert float(alpha.grad.abs().min()) > 0 and float(value.grad.abs().min()) > 0


def test_unit_out_of_range_names_the_layer_and_its_width():
    model = _Tiny()
    with pytest.raises(ShapeError) as info, Trace(model, edit={"conv": UnitEdit.ablate([1, 4])}):
        model(torch.randn(1, 2, 5, 5))
    assert "'conv'" in str(info.value) and "4 channels" in str(info.value) and "unit 4" in str(info.value)
    assert isinstance(info.value, GandissectError)
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_bad_settings_are_refused_with_the_bad_value():
    with pytest.raises(ConfigError, match=re.escape("1.5")):
        UnitEdit.ablate([0], alpha=1.5)
    with pytest.raises(ConfigError, match=re.escape("-0.25")):
        UnitEdit.ablate([0, 1], alpha=torch.tensor([0.5, -0.25]))
    with pytest.raises(ShapeError, match=re.escape("(2,)")):
        UnitEdit.ablate([0, 1, 2], alpha=torch.tensor([0.5, 0.5]))
    with pytest.raises(ConfigError, match="non-negative"):
        UnitEdit.ablate([-1])
    with pytest.raises(ConfigError, match="unique"):
        UnitEdit.ablate([2, 2])
    with pytest.raises(ConfigError, match="integer"):
        UnitEdit.ablate(torch.tensor([1.0]))


def test_bad_regions_and_values_are_refused_naming_shapes():
    with pytest.raises(ShapeError, match=re.escape("(2, 3, 8, 8)")):
        UnitEdit.ablate([0], region=torch.ones(2, 3, 8, 8))
    with pytest.raises(ShapeError, match=re.escape("(8,)")):
        UnitEdit.ablate([0], region=torch.ones(8))
    with pytest.raises(ShapeError, match=re.escape("[0, 1]")):
        UnitEdit.ablate([0], region=torch.full((8, 8), 2.0))
    r = _features(n=2)
    with pytest.raises(ShapeError, match="batch of 2"):
        UnitEdit.ablate([0], region=torch.ones(3, 8, 8))(r, "layer3")
    with pytest.raises(ShapeError, match=re.escape("(3,)")) as info:
        UnitEdit.insert([0, 1], torch.ones(3))(r, "layer3")
    assert "'layer3'" in str(info.value)
    with pytest.raises(ShapeError, match="feature map"):
        UnitEdit.ablate([0], region=torch.ones(4, 4))(torch.randn(2, 6), "fc")


# --- edit.png: named rows and the edited region outlined ------------------------------------------------------------

def test_edit_figure_names_its_rows_and_outlines_the_box():
    from gandissect.viz.edits import REGION_COLOUR, edit_figure

    before = torch.full((3, 3, 32, 32), -1.0)  # black images, so that only the outline is coloured
    after = torch.full((3, 3, 32, 32), 1.0)  # white
    box = torch.zeros(32, 32)
    box[8:20, 4:28] = 1  # rows 8..19, columns 4..27
    present = torch.zeros(3, 32, 32, dtype=torch.bool)
    figure = edit_figure(before, after, present, present, region=box, concept="tree")
    grid_width = 3 * 33 + 1
    label_width = figure.shape[1] - grid_width
    assert figure.shape[0] == 4 * 33 + 1 and label_width > 20
    expected = torch.zeros(32, 32, dtype=torch.bool)  # the box's boundary, drawn by hand
    expected[8, 4:28] = expected[19, 4:28] = expected[8:20, 4] = expected[8:20, 27] = True
    for row in range(4):
        band = figure[1 + row * 33:1 + row * 33 + 32]
        assert (band[:, :label_width].max(-1) < 100).any(), row  # a name is written level with every row
        for column in range(3):
            left = label_width + 1 + column * 33
            cell = torch.from_numpy(band[:, left:left + 32].copy())
            outlined = (cell == torch.tensor(REGION_COLOUR, dtype=torch.uint8)).all(-1)
            assert torch.equal(outlined, expected), (row, column)


def test_edit_figure_outlines_a_feature_grid_mask_at_image_size():
    from gandissect.viz.edits import region_outline

    mask = torch.zeros(8, 8)
    mask[2:4, 5] = 0.5  # a soft mask: any weight is edited
    outline = torch.from_numpy(region_outline(mask, (32, 32)))
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[8:16, 20:24] = True
    assert outline[8, 20] and outline[15, 23] and not outline[12, 22]  # the boundary, not the inside
    assert torch.equal(outline & ~inside, torch.zeros_like(outline))
    assert torch.equal(torch.from_numpy(region_outline(torch.ones(4, 4), (8, 8)))[1:-1, 1:-1],
                       torch.zeros(6, 6, dtype=torch.bool))  # the whole image: its edge is the boundary
