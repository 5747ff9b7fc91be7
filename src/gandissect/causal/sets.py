"""What a unit set does as a whole, on samples its ranking never saw: the figure a painter stroke relies on.

A set of units for a concept is switched off (removal: u := 0) or on (insertion: u := k_u) together at every
position of the layer, on held-out samples (a seed of their own). Per sample, the concept's share of the known
pixels before and after gives:
- removal: the fraction of the concept's pixels removed, 1 - sum(after) / sum(before) over samples, with a
  delta-method interval (`core.inference.ratio_estimate`);
- insertion: the share gained, mean(after - before), with a paired interval, and the share before.
Every set shares each batch's features and unedited images. Rides the engine's sample pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gandissect.causal.ace import concept_shares
from gandissect.causal.curves import repeat_batch
from gandissect.causal.curvestats import segmenter_concept
from gandissect.causal.cut import Cut
from gandissect.core.errors import ConfigError
from gandissect.core.inference import Estimate, paired_estimate, ratio_estimate
from gandissect.core.segmenters import Segmenter
from gandissect.core.stats import SampleTable, Statistic
from gandissect.engine.collectives import Collective
from gandissect.engine.samplepass import Batch, SamplePass

SET_SEED = 4


def strengths(count: int) -> list[int]:
    """The set sizes measured for a ranking of `count` significant units: 1, 2, 4, ... below it, and it."""
    sizes, n = [], 1
    while n < count:
        sizes.append(n)
        n *= 2
    return [*sizes, count] if count > 0 else []


@dataclass(frozen=True)
class UnitSet:
    """Units switched together for a concept: off (removal) or on at `values` (insertion)."""

    concept: str
    direction: str
    units: tuple[int, ...]
    values: tuple[float, ...] = ()


@dataclass
class SetEffect:
    """A set's per-sample shares of its concept before and after, and the estimate that matters for it."""

    unit_set: UnitSet
    before: torch.Tensor
    after: torch.Tensor
    seed: int

    def estimate(self) -> Estimate:
        """Removal: fraction of the concept's pixels removed; insertion: share of the image gained."""
        if self.unit_set.direction == "removal":
            return ratio_estimate(self.after, self.before).shifted(1.0, -1.0)
        return paired_estimate(self.after - self.before)

    @property
    def significant(self) -> bool:
        """Whether the set moves its concept the asked way on the held-out samples (95% interval above 0)."""
        return bool(self.estimate().low > 0)

    def to_json(self) -> dict[str, Any]:
        e = self.estimate()
        key = "removed" if self.unit_set.direction == "removal" else "gained"
        known = ~(torch.isnan(self.before) | torch.isnan(self.after))
        return {"strength": len(self.unit_set.units), "units": list(self.unit_set.units),
                "samples": int(known.sum()), "seed": self.seed,
                "share_before": float(self.before[known].mean()) if bool(known.any()) else None,
                key: {"mean": float(e.mean), "se": float(e.se), "low": float(e.low), "high": float(e.high)},
                "significant": self.significant, "description": self.describe()}

    def describe(self) -> str:
        """e.g. 'removes 45% +- 6% of tree pixels' (the interval's half-width)."""
        e = self.estimate()
        half = (float(e.high) - float(e.low)) / 2
        if self.unit_set.direction == "removal":
            return f"removes {float(e.mean):.0%} ± {half:.0%} of {self.unit_set.concept} pixels"
        return f"adds {float(e.mean):.1%} ± {half:.1%} of the image as {self.unit_set.concept}"


def set_effects(generator: nn.Module, segmenter: Segmenter, layer: str, sets: Sequence[UnitSet], samples: int = 32,
                seed: int = SET_SEED, batch_size: int = 8, chunk: int = 128, device: str | torch.device = "cpu",
                collective: Collective | None = None, progress: bool = True) -> list[SetEffect]:
    """Each set's effect on its concept on `samples` samples of set `seed` (see the module)."""
    for s in sets:
        segmenter_concept(segmenter, s.concept)
        if s.direction not in ("removal", "insertion") or not s.units:
            raise ConfigError(f"a unit set needs units and a direction removal or insertion; got {s}")
        if s.direction == "insertion" and len(s.values) != len(s.units):
            raise ConfigError(f"an insertion set needs one value per unit; got {s}")
    concepts = list(dict.fromkeys(s.concept for s in sets))
    indices = [segmenter_concept(segmenter, c) for c in concepts]
    column = [concepts.index(s.concept) for s in sets]
    cut = Cut(generator, layer)
    stats: dict[str, Statistic] = {"before": SampleTable(samples, len(concepts)),
                                   "after": SampleTable(samples, len(sets))}

    def update(batch: Batch, stats: dict[str, Statistic]) -> None:
        with torch.no_grad():
            features = cut.head(batch.z)
            b = features.shape[0]
            before = concept_shares(segmenter, cut.tail(features, batch.z), indices)
            stats["before"].add(batch.indices, before)  # type: ignore[attr-defined]
            after = torch.empty(b, len(sets), dtype=torch.float64)
            per_call = max(1, chunk // b)
            for start in range(0, len(sets), per_call):
                block = list(range(start, min(start + per_call, len(sets))))
                r = repeat_batch(features, len(block))
                for g, i in enumerate(block):
                    units = list(sets[i].units)
                    target = torch.tensor(sets[i].values or [0.0] * len(units), dtype=r.dtype, device=r.device)
                    r[g * b:(g + 1) * b, units] = target[None, :, None, None].expand(b, -1, *r.shape[-2:])
                images = cut.tail(r, repeat_batch(batch.z, len(block)))
                needed = sorted({column[i] for i in block})
                shares = concept_shares(segmenter, images, [indices[c] for c in needed])
                for g, i in enumerate(block):
                    after[:, i] = shares[g * b:(g + 1) * b, needed.index(column[i])]
            stats["after"].add(batch.indices, after)  # type: ignore[attr-defined]

    sample_pass = SamplePass(generator, seed=seed, samples=samples, batch_size=batch_size, generate=False,
                             device=device, collective=collective, description=f"unit sets {layer}",
                             progress=progress)
    merged = sample_pass.run(stats, update)
    before, after = merged["before"].values, merged["after"].values  # type: ignore[attr-defined]
    return [SetEffect(s, before[:, column[i]].clone(), after[:, i].clone(), seed) for i, s in enumerate(sets)]
