"""Artifact units: units whose top-activating images look unreal, and what ablating them does to the model.

The paper flagged units whose top images scored worst on a realism metric, ablated 20 of them, and saw the
model's Frechet distance to real images improve, where 20 random units did not. `unit_realism` scores each
unit's top images (`dissection_top` or `top_samples`) by signals, each a "badness" (higher = less real):
"frechet" (Frechet distance of their features to real features, for any `features(images) -> (N, D)`, e.g.
`realism.concept_features`: the paper's signal, which also grows for merely unusual content), "nearest_real"
(distance to the nearest real image in units of that image's k-th neighbour distance: above 1 is off the
real manifold), "realism" (minus any `realism(images) -> (N,)`, e.g. a discriminator's logit),
"patch_realism" (minus a patch realism map averaged where the unit fires, e.g.
`realism.linear_head_patches`), and "ablation_realism" / "ablation_frechet" (how much ablating the unit on
its own top images improves those). `artifact_study` ablates the worst `count` units by each signal and
measures the whole model's Frechet distance on held-out samples, against `count` random units (several
draws), riding the engine's sample pass (shards and merges under torchrun).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gandissect.causal.cut import Cut
from gandissect.causal.interventions import check_layer
from gandissect.causal.realism import Features, PatchRealism, Realism, nearest_real_ratio
from gandissect.core.errors import ConfigError
from gandissect.core.frechet import feature_frechet
from gandissect.core.sampling import sample_z
from gandissect.core.stats import Statistic, TopK
from gandissect.dissection.results import Dissection
from gandissect.engine.collectives import Collective
from gandissect.engine.samplepass import Batch, SamplePass

SIGNALS = ("frechet", "nearest_real", "realism", "patch_realism", "ablation_frechet", "ablation_realism")
# Seeds apart from a dissection's threshold (2) and IoU (1) sets and the ACE samples (3).
HELD_OUT_SEED = 4
TOP_SEED = 5
DEFAULT_COUNT = 20


def layer_width(cut: Cut, generator: nn.Module, seed: int, device: str | torch.device) -> int:
    """The number of units of the cut's layer, from one sample."""
    with torch.no_grad():
        return int(cut.head(sample_z(generator, seed, range(1)).to(device)).shape[1])


# --- top-activating images ------------------------------------------------------------------------------------------

def dissection_top(result: Dissection, layer: str) -> tuple[torch.Tensor, int]:
    """A dissection's top-activating samples of `layer`: indices (U, k) into its IoU set (best first), and the
    seed of that set (regenerate the images with `sample_z(generator, seed, indices)`)."""
    check_layer(result, layer)
    topk = result.statistics[f"topk/{layer}"]
    assert isinstance(topk, TopK)
    return topk.indices.clone(), int(result.config.iou_seed)


def top_samples(generator: nn.Module, layer: str, samples: int = 1000, seed: int = TOP_SEED, k: int = 20,
                batch_size: int = 32, device: str | torch.device = "cpu", collective: Collective | None = None,
                progress: bool = True) -> torch.Tensor:
    """Per unit, the `k` samples of seed `seed` (out of `samples`) with the highest peak activation, (U, k)."""
    if not 0 < k <= samples:
        raise ConfigError(f"k must lie in 1..samples ({samples}); got {k}")
    cut = Cut(generator, layer)

    def update(batch: Batch, stats: dict[str, Statistic]) -> None:
        with torch.no_grad():
            peaks = cut.head(batch.z).flatten(2).amax(2)
        stats["top"].add(peaks.cpu(), batch.indices)  # type: ignore[attr-defined]

    stats: dict[str, Statistic] = {"top": TopK(layer_width(cut, generator, seed, device), k)}
    sample_pass = SamplePass(generator, seed=seed, samples=samples, batch_size=batch_size, generate=False,
                             device=device, collective=collective, description=f"top images {layer}",
                             progress=progress)
    top = sample_pass.run(stats, update)["top"]
    assert isinstance(top, TopK)
    return top.indices.clone()


# --- per-unit realism -----------------------------------------------------------------------------------------------

@dataclass
class UnitRealism:
    """Per unit of `units`, a badness score (higher = less real) for each signal computed (`scores[signal]`
    is aligned with `units`), from its top images `top[unit]` (top is (U, k): sample indices of seed `seed`)."""

    layer: str
    units: list[int]
    top: torch.Tensor
    seed: int
    scores: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def signals(self) -> list[str]:
        return list(self.scores)

    def check_signal(self, signal: str) -> None:
        if signal not in self.scores:
            raise ConfigError(f"no signal {signal!r} was computed; signals: {', '.join(self.scores) or 'none'}")

    def ranking(self, signal: str) -> list[int]:
        """Units by the signal, worst (least real) first; ties by unit number; units without a score (NaN: no
        top images) last."""
        self.check_signal(signal)
        values = self.scores[signal].double()
        values = torch.where(values.isnan(), torch.full_like(values, -math.inf), values)
        order = values.argsort(descending=True, stable=True).tolist()
        return [self.units[i] for i in order]

    def worst(self, signal: str, count: int = DEFAULT_COUNT) -> list[int]:
        """The `count` least real units by the signal, worst first."""
        return self.ranking(signal)[:count]

    def to_json(self) -> dict[str, Any]:
        return {"layer": self.layer, "units": self.units, "seed": self.seed, "top": self.top.tolist(),
                "scores": {name: [float(v) for v in s] for name, s in self.scores.items()},
                "rankings": {name: self.ranking(name) for name in self.scores}}


def check_rows(what: str, out: object, n: int, dims: int) -> torch.Tensor:
    """A user callable's output for `n` images, checked to be a tensor with `dims` dimensions, as float64."""
    shapes = {1: "(N,)", 2: "(N, D)", 3: "(N, h, w)"}
    if not isinstance(out, torch.Tensor) or out.dim() != dims or out.shape[0] != n:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"{what} returned {got} for {n} images; expected a tensor {shapes[dims]}")
    return out.detach().double().cpu()


def check_real(features: Features | None, real: torch.Tensor | None, what: str) -> torch.Tensor | None:
    """Real feature rows (M, D), M >= 2, as float64, given together with their extractor (or neither)."""
    if (features is None) != (real is None):
        raise ConfigError(f"give both a feature extractor and real features for {what}, or neither")
    if real is None:
        return None
    real = torch.as_tensor(real)
    if real.dim() != 2 or len(real) < 2:
        raise ConfigError(f"real features must be a (M, D) tensor with M >= 2 rows; got shape {tuple(real.shape)}")
    return real.double().cpu()


def unit_realism(generator: nn.Module, layer: str, top: torch.Tensor, seed: int, *, features: Features | None = None,
                 real_features: torch.Tensor | None = None, realism: Realism | None = None,
                 patch_realism: PatchRealism | None = None, ablation: bool = True, units: Sequence[int] | None = None,
                 batch_size: int = 32, device: str | torch.device = "cpu", progress: bool = True) -> UnitRealism:
    """Score each unit's top images `top` (U, k) (samples of seed `seed`, e.g. from `dissection_top`): with
    `features` and `real_features`, "frechet" and "nearest_real" (and, with `ablation`, "ablation_frechet");
    with `realism`, "realism" (and "ablation_realism"); with `patch_realism`, "patch_realism". `units`
    restricts the scored units (default all); entries of `top` of -1 (fewer samples than k) are skipped."""
    real = check_real(features, real_features, "the frechet signal")
    if features is None and realism is None and patch_realism is None:
        raise ConfigError("give at least one of features (with real_features), realism or patch_realism")
    cut = Cut(generator, layer)
    top = torch.as_tensor(top).long().cpu()
    if top.dim() != 2:
        raise ConfigError(f"top must be a (U, k) tensor of sample indices; got shape {tuple(top.shape)}")
    chosen = list(range(top.shape[0])) if units is None else [int(u) for u in units]
    bad = [u for u in chosen if not 0 <= u < top.shape[0]]
    if bad:
        raise ConfigError(f"units {bad} are out of range: top has rows for units 0..{top.shape[0] - 1}")
    rows = top[chosen]
    unique = rows[rows >= 0].unique()
    if len(unique) == 0:
        raise ConfigError("top holds no sample indices (every entry is -1)")
    position = {int(s): i for i, s in enumerate(unique.tolist())}
    z_all = sample_z(generator, seed, unique)

    # every unique top image once: its features, realism, patch map and the units' activations pooled to it
    feats, scores, patches, pooled = [], [], [], []
    steps = range(0, len(unique), batch_size)
    for start in _progress(steps, progress, f"top images {layer}"):
        z = z_all[start:start + batch_size].to(device)
        with torch.no_grad():
            acts = cut.head(z)
            images = cut.tail(acts, z)
        n = len(z)
        if features is not None:
            feats.append(check_rows("features", features(images), n, 2))
            if feats[-1].shape[1] != real.shape[1]:  # type: ignore[union-attr]
                raise ConfigError(f"features give {feats[-1].shape[1]} dimensions but real features have "
                                  f"{real.shape[1]}: compute both with the same extractor")  # type: ignore[union-attr]
        if realism is not None:
            scores.append(check_rows("realism", realism(images), n, 1))
        if patch_realism is not None:
            grid = check_rows("patch_realism", patch_realism(images), n, 3)
            patches.append(grid)
            pooled.append(F.adaptive_avg_pool2d(acts.detach().float().clamp(min=0), grid.shape[-2:]).double().cpu())

    def members(u: int) -> torch.Tensor:
        return torch.tensor([position[int(s)] for s in top[u].tolist() if s >= 0], dtype=torch.long)

    result = UnitRealism(layer, chosen, top.clone(), seed)
    if feats:
        all_feats = torch.cat(feats)
        result.scores["frechet"] = torch.tensor([feature_frechet(all_feats[members(u)], real) for u in chosen])
        ratios = nearest_real_ratio(all_feats, real, k=min(3, len(real) - 1))  # type: ignore[arg-type]
        result.scores["nearest_real"] = torch.stack([ratios[members(u)].mean() for u in chosen])
    if scores:
        all_scores = torch.cat(scores)
        result.scores["realism"] = torch.stack([-all_scores[members(u)].mean() for u in chosen])
    if patches:
        maps, acts = torch.cat(patches), torch.cat(pooled)
        anomaly = maps - maps.mean(0)  # against the average map of these images: position-independent
        values = []
        for u in chosen:
            idx = members(u)
            weight = acts[idx, u]
            mass = weight.flatten(1).sum(1)
            per_image = (weight * anomaly[idx]).flatten(1).sum(1) / mass.clamp(min=1e-12)
            per_image = torch.where(mass > 0, per_image, torch.zeros_like(per_image))
            values.append(-per_image.mean())
        result.scores["patch_realism"] = torch.stack(values)
    if ablation and (feats or scores):
        _ablation_signals(result, cut, z_all, members, features, real, realism, feats, scores, batch_size, device,
                          progress)
    result.scores = {name: s.double() for name, s in result.scores.items()}
    return result


def _ablation_signals(result: UnitRealism, cut: Cut, z_all: torch.Tensor, members: Callable[[int], torch.Tensor],
                      features: Features | None, real: torch.Tensor | None, realism: Realism | None,
                      feats: list[torch.Tensor], scores: list[torch.Tensor], batch_size: int,
                      device: str | torch.device, progress: bool) -> None:
    """"ablation_frechet" and "ablation_realism": each unit ablated (everywhere) on its own top images."""
    pairs = [(u, int(i)) for u in result.units for i in members(u).tolist()]
    new_feats, new_scores = [], []
    for start in _progress(range(0, len(pairs), batch_size), progress, f"ablated top images {result.layer}"):
        chunk = pairs[start:start + batch_size]
        z = z_all[torch.tensor([i for _, i in chunk])].to(device)
        with torch.no_grad():
            acts = cut.head(z).clone()
            acts[torch.arange(len(chunk)), torch.tensor([u for u, _ in chunk])] = 0
            images = cut.tail(acts, z)
        if feats:
            new_feats.append(check_rows("features", features(images), len(chunk), 2))  # type: ignore[misc]
        if scores:
            new_scores.append(check_rows("realism", realism(images), len(chunk), 1))  # type: ignore[misc]
    owner = torch.tensor([u for u, _ in pairs])
    source = torch.tensor([i for _, i in pairs])
    if feats:
        before, after = torch.cat(feats), torch.cat(new_feats)
        result.scores["ablation_frechet"] = torch.tensor([
            feature_frechet(before[source[owner == u]], real) - feature_frechet(after[owner == u], real)  # type: ignore[arg-type]
            for u in result.units])
    if scores:
        before, after = torch.cat(scores), torch.cat(new_scores)
        result.scores["ablation_realism"] = torch.stack([
            (after[owner == u] - before[source[owner == u]]).mean() for u in result.units])


def _progress(steps: range, progress: bool, description: str) -> Any:
    if not progress:
        return steps
    from tqdm import tqdm

    return tqdm(steps, desc=description, unit="batch", dynamic_ncols=True)
