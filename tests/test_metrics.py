"""Metrics against independent computations: brute-force IoU, closed-form Fréchet distances, oracle segmenters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gandissect.core.frechet import frechet_distance, gaussian_fit
from gandissect.core.images import from_uint8, to_uint8
from gandissect.core.segmenters import COLOR_PROTOTYPES, ColorSegmenter
from gandissect.scenes import world
from gandissect.scenes.metrics import (
    REAL_SEED_OFFSET,
    concept_area_histograms,
    confusion_iou,
    frechet_segmentation_distance,
    segmenter_iou,
)
from gandissect.scenes.training import HELD_OUT_SEEDS


def test_confusion_iou_matches_a_brute_force_loop():
    generator = torch.Generator().manual_seed(0)
    num = 6
    pred = torch.randint(-1, num + 1, (3, 2, 17, 19), generator=generator)  # -1 and `num` belong to no class
    target = torch.randint(-1, num, (3, 2, 17, 19), generator=generator)
    target[target == 4] = 2  # class 4 occurs only in predictions
    pred[pred == 5] = 0
    target[target == 5] = 0  # class 5 occurs nowhere: its IoU is NaN
    iou = confusion_iou(pred, target, num)
    assert iou.shape == (num,)
    for c in range(num):
        p, t = pred == c, target == c
        union = int((p | t).sum())
        if union == 0:
            assert math.isnan(iou[c])
        else:
            assert float(iou[c]) == pytest.approx(int((p & t).sum()) / union)
    assert float(iou[4]) == 0.0 and math.isnan(iou[5])
    assert torch.equal(confusion_iou(target, target, num)[:4], torch.ones(4, dtype=iou.dtype))
    with pytest.raises(ValueError, match="shape"):
        confusion_iou(pred, target[0], num)


def _random_covariance(dim: int, seed: int) -> torch.Tensor:
    a = torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T + 0.1 * torch.eye(dim, dtype=torch.float64)


def test_frechet_distance_of_identical_gaussians_is_zero():
    mu, cov = torch.randn(5, dtype=torch.float64), _random_covariance(5, 1)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-8)
    singular = torch.zeros(3, 3)
    singular[0, 0] = 2.0
    assert frechet_distance(torch.zeros(3), singular, torch.zeros(3), singular) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_diagonal_gaussians_has_a_closed_form():
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 1.0, 0.5])
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.0])
    expected = float(((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum())
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(torch.tensor([0.0]), torch.tensor([[4.0]]), torch.tensor([3.0]), torch.tensor([[1.0]])) \
        == pytest.approx(9.0 + 1.0)


def test_frechet_distance_of_full_gaussians_matches_the_product_eigenvalues():
    """tr sqrt(c1^1/2 c2 c1^1/2) is the sum of square roots of the (real, non-negative) eigenvalues of c1 c2."""
    c1, c2 = _random_covariance(6, 2), _random_covariance(6, 3)
    mu1, mu2 = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    cross = torch.linalg.eigvals(c1 @ c2).real.clamp(min=0).sqrt().sum()
    expected = float(((mu1 - mu2) ** 2).sum() + c1.trace() + c2.trace() - 2 * cross)
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-7)
    assert frechet_distance(mu2, c2, mu1, c1) == pytest.approx(expected, rel=1e-7)
    assert frechet_distance(mu1.float(), c1.float(), mu2.float(), c2.float()) == pytest.approx(expected, rel=1e-4)


def test_gaussian_fit_matches_numpy():
    samples = torch.randn(50, 4, generator=torch.Generator().manual_seed(4))
    mu, cov = gaussian_fit(samples)
    assert np.allclose(mu.numpy(), samples.double().numpy().mean(0))
    assert np.allclose(cov.numpy(), np.cov(samples.double().numpy(), rowvar=False))


def test_concept_area_histograms_count_each_concept_once_per_pixel():
    labels = torch.tensor([
        [[[0, 0], [1, -1]], [[0, 2], [2, 2]]],  # image 0: channel 0 and channel 1
        [[[3, 3], [3, 3]], [[-1, -1], [-1, 9]]],  # image 1: 9 is out of range and counts for nothing
    ])
    hist = concept_area_histograms(labels, 4)
    assert hist.shape == (2, 4) and hist.dtype.is_floating_point
    # image 0: concept 0 on 2 pixels (the pixel labelled 0 in both channels counts once), 1 on 1, 2 on 3
    assert hist[0].tolist() == [0.5, 0.25, 0.75, 0.0]
    assert hist[1].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert concept_area_histograms(labels[:, 0], 4)[0].tolist() == [0.5, 0.25, 0.0, 0.0]


class Oracle:
    """Knows the ground truth of the held-out scenes it is shown: looks each image up by its bytes."""

    def __init__(self, count: int, concepts: list[str]) -> None:
        self.concepts = concepts
        self.categories = ["object"] * len(concepts)
        images, labels = world.render_batch(range(HELD_OUT_SEEDS, HELD_OUT_SEEDS + count))
        remap = np.array([concepts.index(name) for name in world.CONCEPTS])
        self.truth = {image.tobytes(): remap[label] for image, label in zip(images, labels, strict=True)}

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        found = [self.truth[picture.tobytes()] for picture in to_uint8(images)]
        return torch.from_numpy(np.stack(found))[:, None].long()


def test_segmenter_iou_of_an_oracle_is_one():
    result = segmenter_iou(Oracle(8, list(world.CONCEPTS)), count=8, batch_size=3)
    assert result["mean_iou"] == 1.0 and result["count"] == 8
    assert set(result["per_concept"]) == set(world.CONCEPTS)
    assert all(v in (1.0, None) for v in result["per_concept"].values())


def test_segmenter_iou_matches_concepts_by_name():
    shuffled = [*reversed(world.CONCEPTS), "extra"]
    assert segmenter_iou(Oracle(5, shuffled), count=5, batch_size=5)["mean_iou"] == 1.0


class AllSky:
    concepts = ("grass", "sky")
    categories = ("object", "object")

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        return torch.ones(images.shape[0], 1, *images.shape[-2:], dtype=torch.long)


def test_segmenter_iou_of_a_constant_guess():
    labels = world.render_batch(range(HELD_OUT_SEEDS, HELD_OUT_SEEDS + 6))[1]
    result = segmenter_iou(AllSky(), count=6, batch_size=4)
    sky_share = float((labels == world.CONCEPT_INDEX["sky"]).mean())
    assert result["per_concept"]["sky"] == pytest.approx(sky_share)
    assert result["per_concept"]["grass"] == 0.0
    present = {world.CONCEPTS[i] for i in np.unique(labels)}
    for name in world.CONCEPTS:
        if name not in present:
            assert result["per_concept"][name] is None
    assert result["mean_iou"] == pytest.approx(sky_share / len(present))


class Renderer(nn.Module):
    """A 'generator' whose sample i is the held-out real scene i, or a flat colour when `colour` is given."""

    z_dim = 1

    def __init__(self, colour: tuple[float, float, float] | None = None, shift: int = 0) -> None:
        super().__init__()
        self.colour = colour
        self.shift = shift

    def sample_z(self, seed: int, indices: torch.Tensor) -> torch.Tensor:
        return indices.float()[:, None]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.colour is not None:
            return (torch.tensor(self.colour)[None, :, None, None] * 2 - 1).expand(len(z), 3, 64, 64)
        first = HELD_OUT_SEEDS + REAL_SEED_OFFSET
        return from_uint8(world.render_batch([first + self.shift + int(i) for i in z[:, 0]])[0])


def test_fsd_of_the_real_distribution_is_zero():
    result = frechet_segmentation_distance(Renderer(), ColorSegmenter(), count=10, batch_size=4)
    assert result["fsd"] == pytest.approx(0.0, abs=1e-6)
    assert result["count"] == 10
    assert set(result["per_concept"]) == set(COLOR_PROTOTYPES)
    shares = result["per_concept"]
    assert sum(v["real_percent"] for v in shares.values()) == pytest.approx(100.0)
    for v in shares.values():
        assert v["generated_percent"] == pytest.approx(v["real_percent"])
        assert v["relative_difference"] is None or v["relative_difference"] == pytest.approx(0.0, abs=1e-9)


def test_real_reference_is_the_distance_between_two_real_sets():
    shifted = frechet_segmentation_distance(Renderer(shift=10), ColorSegmenter(), count=10, batch_size=4)
    assert shifted["fsd_real_reference"] > 0
    assert shifted["fsd"] == pytest.approx(shifted["fsd_real_reference"], rel=1e-9)


def test_fsd_of_flat_red_images_against_an_independent_computation():
    segmenter = ColorSegmenter()
    result = frechet_segmentation_distance(Renderer(COLOR_PROTOTYPES["red"]), segmenter, count=10, batch_size=4)
    # Real side, computed here with numpy: percent of each scene's pixels nearest to each prototype colour.
    first = HELD_OUT_SEEDS + REAL_SEED_OFFSET
    pictures = world.render_batch(range(first, first + 10))[0]
    labels = segmenter.segment(from_uint8(pictures))[:, 0].numpy()
    real = np.stack([np.bincount(x.ravel(), minlength=len(COLOR_PROTOTYPES)) for x in labels]) / (64 * 64) * 100
    mu_real, cov_real = real.mean(0), np.cov(real, rowvar=False)
    red = np.zeros(len(COLOR_PROTOTYPES))
    red[list(COLOR_PROTOTYPES).index("red")] = 100.0
    # The generated histograms never vary (covariance 0), so the distance is |mu_g - mu_r|^2 + tr(cov_r).
    expected = float(((red - mu_real) ** 2).sum() + np.trace(cov_real))
    assert result["fsd"] == pytest.approx(expected, rel=1e-6)
    assert result["per_concept"]["red"]["generated_percent"] == pytest.approx(100.0)
    assert result["per_concept"]["blue"]["generated_percent"] == 0.0
    assert result["per_concept"]["blue"]["real_percent"] == pytest.approx(mu_real[list(COLOR_PROTOTYPES).index("blue")])
    assert result["per_concept"]["blue"]["relative_difference"] == pytest.approx(-1.0)
