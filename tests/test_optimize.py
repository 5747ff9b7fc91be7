"""Optimised unit sets: the loss against a brute-force definition, its gradient against finite differences,
the [0, 1] box, and the planted model whose answer is known.

The planted Painter thresholds its features (no gradient), so these tests swap in a SoftPainter that blends
each colour by a steep sigmoid of its unit: the same picture up to the blend, but differentiable.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gandissect.causal.optimize as optimize
from gandissect.causal.cut import Cut
from gandissect.causal.optimize import (
    OptimizedUnits,
    ace_loss,
    evaluate_alpha,
    evaluate_alphas,
    optimize_units,
    units_alpha,
)
from gandissect.core.errors import ConfigError
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import COLOR_PROTOTYPES, ColorSegmenter, _opponent
from planted import PLANTED, PlantedGenerator

FAST = {"samples": 32, "epochs": 2, "batch_size": 16, "patch": 1, "eval_samples": 16, "progress": False}


class SoftPainter(nn.Module):
    """Like planted.Painter, with the colour of unit u blended in by sigmoid((feature - 0.5) / sharpness)."""

    def __init__(self, sharpness: float = 0.05) -> None:
        super().__init__()
        self.register_buffer("colours", torch.tensor([COLOR_PROTOTYPES[PLANTED[u]] for u in range(3)]))
        self.register_buffer("ground", torch.tensor(COLOR_PROTOTYPES["grey"]))
        self.sharpness = sharpness

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        masks = F.interpolate(torch.sigmoid((features[:, :3] - 0.5) / self.sharpness), scale_factor=4, mode="nearest")
        image = self.ground[None, :, None, None].expand(features.shape[0], 3, 32, 32)
        for u in range(3):
            image = image * (1 - masks[:, u:u + 1]) + self.colours[u][None, :, None, None] * masks[:, u:u + 1]
        return image * 2 - 1


class Float64ColorSegmenter(ColorSegmenter):
    """ColorSegmenter computed in the images' own dtype (the shipped one works in float32)."""

    def _distances(self, images: torch.Tensor) -> torch.Tensor:
        space = _opponent((images + 1) / 2)
        return ((space[:, None] - self.prototypes.to(images.dtype)[None, :, :, None, None]) ** 2).sum(2)


class LabelsOnly:
    """A segmenter with labels but no differentiable concept_scores."""

    def __init__(self) -> None:
        self.inner = ColorSegmenter()
        self.concepts, self.categories = self.inner.concepts, self.inner.categories

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        return self.inner.segment(images)


def soft_planted(dtype: torch.dtype = torch.float32) -> PlantedGenerator:
    generator = PlantedGenerator()
    generator.output = SoftPainter()
    return generator.to(dtype)



def fixed_batch(dtype: torch.dtype):
    """Four samples, their features, and hand-picked ablation / insertion cells of the 8x8 grid (-1: none)."""
    generator, segmenter = soft_planted(dtype), Float64ColorSegmenter().to(dtype)
    z = sample_z(generator, 0, range(4)).to(dtype)
    features = Cut(generator, "features").head(z)
    ablate_at = torch.tensor([[2, 3], [0, 0], [-1, -1], [7, 5]])
    insert_at = torch.tensor([[6, 1], [-1, -1], [4, 4], [7, 7]])
    return generator, segmenter, z, features, ablate_at, insert_at


def brute_force_loss(generator, segmenter, z, ablate_at, insert_at, alpha, values, patch, weight, concept):
    """The definition, one sample and one cell at a time: edit the patch of cells around the location by
    r <- r * (1 - a) + k * a, generate, and average the concept's score over the location's 4x4 pixels."""
    terms = {"ablate": [], "insert": []}
    for i in range(z.shape[0]):
        for mode, where in (("ablate", ablate_at[i]), ("insert", insert_at[i])):
            row, col = int(where[0]), int(where[1])
            if row < 0:
                continue
            features = Cut(generator, "features").head(z[i:i + 1]).clone()
            k = torch.zeros_like(values) if mode == "ablate" else values
            for y in range(8):
                for x in range(8):
                    if abs(y - row) <= patch // 2 and abs(x - col) <= patch // 2:
                        for u in range(features.shape[1]):
                            features[0, u, y, x] = features[0, u, y, x] * (1 - alpha[u]) + k[u] * alpha[u]
            image = generator.output(features)
            score = segmenter.concept_scores(image)[0, concept]
            terms[mode].append(score[4 * row:4 * row + 4, 4 * col:4 * col + 4].mean())
    ablated = torch.stack(terms["ablate"]).mean()
    inserted = torch.stack(terms["insert"]).mean()
    return ablated - inserted + weight * alpha.pow(2).sum().sqrt()


def test_loss_is_the_score_after_ablating_minus_after_inserting_each_at_its_own_cell():
    generator, segmenter, z, features, ablate_at, insert_at = fixed_batch(torch.float64)
    blue = segmenter.concepts.index("blue")
    alpha = torch.tensor([0.3, 0.45, 0.55, 0.6, 0.4], dtype=torch.float64)
    values = torch.tensor([1.0, 0.9, 1.1, 0.7, 0.5], dtype=torch.float64)
    for patch in (1, 3):
        loss = ace_loss(Cut(generator, "features"), segmenter, blue, values, alpha, features, z, ablate_at,
                        insert_at, patch=patch, weight=0.02)
        expected = brute_force_loss(generator, segmenter, z, ablate_at, insert_at, alpha, values, patch, 0.02, blue)
        assert float(loss.total) == pytest.approx(float(expected), abs=1e-12)
        assert loss.ablated - loss.inserted + loss.penalty == pytest.approx(float(loss.total), abs=1e-12)


def test_gradient_in_alpha_matches_central_finite_differences():
    generator, segmenter, z, features, ablate_at, insert_at = fixed_batch(torch.float64)
    blue = segmenter.concepts.index("blue")
    cut = Cut(generator, "features")
    values = torch.tensor([1.0, 0.9, 1.1, 0.7, 0.5], dtype=torch.float64)
    point = torch.tensor([0.3, 0.45, 0.52, 0.6, 0.4], dtype=torch.float64)

    def loss(alpha: torch.Tensor) -> torch.Tensor:
        return ace_loss(cut, segmenter, blue, values, alpha, features, z, ablate_at, insert_at, patch=3,
                        weight=0.05).total

    alpha = point.clone().requires_grad_(True)
    loss(alpha).backward()
    eps = 1e-6
    numeric = torch.stack([(loss(point + eps * e) - loss(point - eps * e)) / (2 * eps)
                           for e in torch.eye(5, dtype=torch.float64)])
    assert alpha.grad.abs().max() > 0.1  # a real signal, not a vanishing one
    assert torch.allclose(alpha.grad, numeric, rtol=1e-5, atol=1e-8), (alpha.grad, numeric)


def test_alpha_stays_in_the_unit_box_after_every_step_even_with_a_huge_learning_rate(monkeypatch):
    seen = []
    original = optimize.ace_loss

    def recording(*args, **kwargs):
        seen.append(args[4].detach().clone())  # alpha as the step finds it: after the previous step's clamp
        return original(*args, **kwargs)

    monkeypatch.setattr(optimize, "ace_loss", recording)
    result = optimize_units(soft_planted(), ColorSegmenter(), "features", "blue", torch.ones(5),
                            **{**FAST, "lr": 1e4, "weight": 0.5})
    seen.append(result.alpha)
    assert len(seen) == 2 * 2 + 1  # 2 epochs of 2 steps, and the result
    stacked = torch.stack(seen[1:])
    assert bool(((stacked >= 0) & (stacked <= 1)).all()), stacked
    assert bool(((stacked == 0) | (stacked == 1)).any())  # the steps overshot: the clamp did the work


def test_optimising_blue_puts_the_most_weight_on_unit_2_and_beats_random_alphas_of_the_same_norm():
    generator, segmenter = soft_planted(), ColorSegmenter()
    result = optimize_units(generator, segmenter, "features", "blue", torch.ones(5),
                            **{**FAST, "samples": 64, "epochs": 4, "lr": 0.05, "eval_samples": 32})
    assert int(result.alpha.argmax()) == 2, result.alpha
    assert result.units[0] == 2 and result.ranking()[0] == 2
    assert result.losses[-1] < result.losses[0]
    assert result.settings["ablation_pairs"] > 0 and result.settings["insertion_pairs"] > 0
    assert result.heldout.ace_hard > 0.5 and result.heldout.ace_soft > 0.5
    norm = float(result.alpha.norm())
    draws, random_aces = torch.Generator().manual_seed(0), []
    while len(random_aces) < 6:
        candidate = torch.rand(5, generator=draws)
        candidate = candidate * norm / candidate.norm()
        if float(candidate.max()) <= 1:
            random_aces.append(evaluate_alpha(generator, segmenter, "features", "blue", torch.ones(5), candidate,
                                              samples=32).ace_hard)
    assert result.heldout.ace_hard > max(random_aces) - 1e-9 and result.heldout.ace_hard > sum(random_aces) / 6


def test_held_out_effects_of_a_unit_set_match_ablating_and_inserting_it_by_hand():
    generator, segmenter = PlantedGenerator(), ColorSegmenter()
    blue = segmenter.concepts.index("blue")
    held = evaluate_alpha(generator, segmenter, "features", "blue", torch.full((5,), 1.0), units_alpha([2], 5),
                          samples=8, seed=7, batch_size=3)
    z = sample_z(generator, 7, range(8))
    features = Cut(generator, "features").head(z)
    inserted, ablated = features.clone(), features.clone()
    inserted[:, 2], ablated[:, 2] = 1.0, 0.0
    for edited, share in ((features, held.baseline_hard), (inserted, held.inserted_hard),
                          (ablated, held.ablated_hard)):
        images = generator.output(edited)
        assert share == pytest.approx(float((segmenter.segment(images)[:, 0] == blue).double().mean()), abs=1e-12)
    assert held.ablated_hard == 0 and held.inserted_hard == 1 and held.removed == 1
    assert held.ace_hard == pytest.approx(1.0)
    together = evaluate_alphas(generator, segmenter, "features", "blue", torch.ones(5),
                               [units_alpha([2], 5), units_alpha([0, 1], 5)], samples=8, seed=7, batch_size=3)
    alone = evaluate_alpha(generator, segmenter, "features", "blue", torch.ones(5), units_alpha([0, 1], 5),
                           samples=8, seed=7, batch_size=8)
    assert together[0] == held and together[1].to_json() == pytest.approx(alone.to_json())


def test_init_from_a_dissection_is_iou_over_max_iou_and_the_result_round_trips_through_json(planted_run, tmp_path):
    iou = planted_run.layers["features"].iou[:, planted_run.concepts.index("blue")]
    result = optimize_units(soft_planted(), ColorSegmenter(), "features", "blue", torch.ones(5),
                            **{**FAST, "epochs": 1, "lr": 1e-9, "weight": 0.0}, init=planted_run)
    assert torch.allclose(result.alpha, (iou / iou.max()).float(), atol=1e-6)
    assert result.settings["init"] == "IoU / max IoU"
    document = json.loads(json.dumps(result.to_json()))
    assert document["units"] == result.units and len(document["alpha"]) == 5
    back = OptimizedUnits.load(result.save(tmp_path / "blue.json"))
    assert torch.equal(back.alpha, result.alpha) and back.units == result.units
    assert back.heldout.ace_hard == result.heldout.ace_hard and back.losses == result.losses


def test_bad_input_is_refused_in_one_line():
    generator, values = soft_planted(), torch.ones(5)
    cases = [
        (dict(segmenter=LabelsOnly()), r"LabelsOnly offers no differentiable concept_scores"),
        (dict(concept="dragon"), r"no concept 'dragon'.*blue"),
        (dict(layer="layer9"), r"no layer 'layer9'.*features"),
        (dict(values=torch.ones(4)), r"values must hold one insertion value per unit.*\(5,\).*\(4,\)"),
        (dict(values=torch.ones(5, 1)), r"values must hold one insertion value per unit"),
        (dict(weight=-0.1), r"weight \(lambda\) must be >= 0; got -0.1"),
        (dict(lr=0.0), r"lr must be > 0; got 0.0"),
        (dict(lr=-1.0), r"lr must be > 0"),
        (dict(init=torch.full((5,), 2.0)), r"alpha must lie in \[0, 1\]"),
        (dict(concept="purple"), r"'purple' never covers most of a feature cell"),
    ]
    for change, message in cases:
        arguments = {"segmenter": ColorSegmenter(), "layer": "features", "concept": "blue", "values": values, **change}
        with pytest.raises(ConfigError, match=message) as caught:
            optimize_units(generator, arguments.pop("segmenter"), arguments.pop("layer"), arguments.pop("concept"),
                           arguments.pop("values"), **{**FAST, **arguments})
        assert "\n" not in str(caught.value)
