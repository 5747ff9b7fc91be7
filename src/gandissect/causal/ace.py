"""Single-unit causal effects on concepts, per sample, batched over units, samples and concepts.

For each unit u of a layer and each sample z (held-out: a seed of its own), three images: the unedited one,
u ablated (u := 0) and u inserted (u := k_u), at every position of the layer (or inside a region). For
each concept c the segmenter's labels give c's share of the image's known pixels in each. Per sample:

- removal   = share(unedited) - share(ablated): how much of c goes when u is switched off;
- insertion = share(inserted) - share(unedited): how much c grows when u is switched on;
- ace       = share(inserted) - share(ablated): both (the paper's average causal effect).

All three are paired (the same z in every arm), so their means come with standard errors from the per-sample
differences (`core.inference`); the per-sample shares are kept (`EffectSamples`) for that. Pixels a
segmenter marks unknown (-2) are left out of the share; an image with no known pixel is a missing sample
(NaN) in every direction that uses it.

Concepts share the images: each batch computes the layer's features and the unedited images once, every
unit's ablation once (measured for every concept), and every unit's insertion once per distinct insertion
value (one for all concepts when the value is the same for all, e.g. a high quantile of each unit). A unit
that is zero wherever it would be ablated leaves the image as it was, so those ablations reuse the unedited
image's shares. Rides the engine's sample pass, so it shards and merges under torchrun.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from gandissect.causal.curvestats import known_presence, segmenter_concept
from gandissect.causal.cut import Cut
from gandissect.core.errors import ConfigError
from gandissect.core.features import resize_region
from gandissect.core.inference import Estimate, paired_estimate
from gandissect.core.segmenters import MergedSegmenter, Segmenter
from gandissect.core.stats import SampleTable, Statistic
from gandissect.engine.collectives import Collective
from gandissect.engine.samplepass import Batch, SamplePass

HELD_OUT_SEED = 3
DIRECTIONS = ("removal", "insertion", "ace")


def _own_shares(segmenter: Segmenter, images: torch.Tensor, concepts: Sequence[int]) -> torch.Tensor:
    present, known = known_presence(segmenter, images)
    pixels = known.flatten(1).sum(1).double()[:, None]
    counts = present[:, list(concepts)].flatten(2).sum(2).double()
    return torch.where(pixels > 0, counts / pixels.clamp(min=1), torch.full_like(counts, float("nan"))).cpu()


def concept_shares(segmenter: Segmenter, images: torch.Tensor, concepts: Sequence[int]) -> torch.Tensor:
    """(N, C) float64: each concept's share of each image's known pixels (in any label channel); a row of NaN
    for an image with no known pixel (a missing sample). Of merged segmenters only the parts that know the
    concepts run."""
    if not isinstance(segmenter, MergedSegmenter):
        return _own_shares(segmenter, images, concepts)
    out = torch.full((images.shape[0], len(concepts)), float("nan"), dtype=torch.float64)
    for part, offset in zip(segmenter.parts, segmenter.offsets, strict=True):
        columns = [i for i, c in enumerate(concepts) if offset <= c < offset + len(part.concepts)]
        if columns:
            out[:, columns] = concept_shares(part, images, [concepts[i] - offset for i in columns])
    return out


def concept_share(segmenter: Segmenter, images: torch.Tensor, concept: int) -> torch.Tensor:
    """(N,) one concept's share of each image's known pixels (NaN for an image with no known pixel)."""
    return concept_shares(segmenter, images, [concept])[:, 0]


@dataclass
class UnitEffects:
    """One concept's per-sample shares: unedited (N,), each unit ablated and inserted (N, U); NaN for missing
    samples. Estimates of removal, insertion and ace come with intervals."""

    layer: str
    concept: str
    units: list[int]
    values: torch.Tensor
    baseline: torch.Tensor
    ablated_samples: torch.Tensor
    inserted_samples: torch.Tensor
    seed: int
    first: int = 0

    @property
    def samples(self) -> int:
        return int(self.baseline.shape[0])

    @property
    def inserted(self) -> torch.Tensor:
        """(U,) mean share with each unit inserted (over samples where the image could be read)."""
        return self.inserted_samples.nanmean(0).float()

    @property
    def ablated(self) -> torch.Tensor:
        return self.ablated_samples.nanmean(0).float()

    @property
    def ace(self) -> torch.Tensor:
        return self.estimate("ace").mean.float()

    def per_sample(self, direction: str) -> torch.Tensor:
        """(N, U) per-sample effect in `direction` (one of DIRECTIONS)."""
        base = self.baseline[:, None]
        if direction == "removal":
            return base - self.ablated_samples
        if direction == "insertion":
            return self.inserted_samples - base
        if direction == "ace":
            return self.inserted_samples - self.ablated_samples
        raise ConfigError(f"direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}")

    def estimate(self, direction: str) -> Estimate:
        """(U,) mean effect in `direction` with standard error, 95% interval and p-value against 0."""
        return paired_estimate(self.per_sample(direction))

    def ranking(self, direction: str = "ace") -> list[int]:
        """Units by mean effect in `direction`, highest first (ties, and units never measured, by unit number)."""
        mean = torch.nan_to_num(self.estimate(direction).mean, nan=-float("inf"))
        order = mean.argsort(descending=True, stable=True).tolist()
        return [self.units[i] for i in order]

    def missing(self) -> dict[str, int]:
        """What was left out because the segmenter could not read an image at all: unedited images, and the
        (sample, unit) pairs of each direction."""
        return {"unedited_images": int(torch.isnan(self.baseline).sum()),
                **{f"{d}_pairs": int(torch.isnan(self.per_sample(d)).sum()) for d in DIRECTIONS}}

    def extend(self, more: UnitEffects) -> UnitEffects:
        """These samples followed by `more` (the next round of the same sample set)."""
        if (more.layer, more.concept, more.units, more.seed) != (self.layer, self.concept, self.units, self.seed) \
                or more.first != self.first + self.samples:
            raise ConfigError("can only extend effects by the next samples of the same measurement")
        return UnitEffects(self.layer, self.concept, self.units, self.values,
                           torch.cat([self.baseline, more.baseline]),
                           torch.cat([self.ablated_samples, more.ablated_samples]),
                           torch.cat([self.inserted_samples, more.inserted_samples]), self.seed, self.first)


def edit_pairs(features: torch.Tensor, samples: torch.Tensor, units: torch.Tensor, targets: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:
    """One copy of features[samples[j]] (B, U, h, w) per pair j, with unit units[j] set to targets[j] inside
    mask (1, 1, h, w) or everywhere: (P, U, h, w)."""
    out = features[samples].clone()
    rows = torch.arange(len(samples), device=features.device)
    target = targets.to(features.device, features.dtype)[:, None, None]
    current = out[rows, units]
    out[rows, units] = target.expand_as(current) if mask is None else current + mask[0, 0] * (target - current)
    return out


def measure_effects(generator: nn.Module, segmenter: Segmenter, layer: str, concepts: Sequence[str],
                    values: torch.Tensor, units: Sequence[int] | None = None, samples: int = 200,
                    seed: int = HELD_OUT_SEED, first: int = 0, batch_size: int = 8, group: int = 32,
                    region: torch.Tensor | None = None, device: str | torch.device = "cpu",
                    collective: Collective | None = None, progress: bool = True) -> dict[str, UnitEffects]:
    """Per concept (names of the segmenter's concepts), single-unit effects of `units` (default: every unit
    of the layer) on samples first..first + samples - 1 of set `seed`, inserting `values`: (U,) for every
    concept, or (C, U) one row per concept (e.g. its mean activation where the concept is)."""
    if not concepts:
        raise ConfigError("give at least one concept to measure")
    indices = [segmenter_concept(segmenter, c) for c in concepts]
    if values.dim() == 2 and values.shape[0] != len(concepts):
        raise ConfigError(f"values hold {values.shape[0]} rows for {len(concepts)} concepts")
    table = values.float().cpu().reshape(-1, values.shape[-1]).expand(len(concepts), -1)
    width = table.shape[1]
    chosen = list(range(width)) if units is None else [int(u) for u in units]
    if samples < 1 or batch_size < 1 or group < 1:
        raise ConfigError(f"samples, batch_size and group must be at least 1; got {samples}, {batch_size}, {group}")
    distinct, groups = torch.unique(table, dim=0, return_inverse=True)
    cut, chunk, count = Cut(generator, layer), max(1, group * batch_size), len(chosen) * len(concepts)
    stats: dict[str, Statistic] = {"baseline": SampleTable(samples, len(concepts), first),
                                   "ablated": SampleTable(samples, count, first),
                                   "inserted": SampleTable(samples, count, first)}

    def shares_of(features: torch.Tensor, z: torch.Tensor, samples: torch.Tensor, units: torch.Tensor,
                  targets: torch.Tensor, mask: torch.Tensor | None, columns: list[int]) -> torch.Tensor:
        out = []
        for start in range(0, len(samples), chunk):
            pick = slice(start, start + chunk)
            edited = edit_pairs(features, samples[pick], units[pick], targets[pick], mask)
            out.append(concept_shares(segmenter, cut.tail(edited, z[samples[pick]]), [indices[c] for c in columns]))
        return torch.cat(out) if out else torch.zeros(0, len(columns), dtype=torch.float64)

    def update(batch: Batch, stats: dict[str, Statistic]) -> None:
        with torch.no_grad():
            features = cut.head(batch.z)
            b = features.shape[0]
            mask = None if region is None else resize_region(region, tuple(features.shape[-2:])).to(features)
            base = concept_shares(segmenter, cut.tail(features, batch.z), indices)  # (B, C)
            sample = torch.arange(b).repeat(len(chosen))
            unit = torch.tensor(chosen).repeat_interleave(b)
            inside = features if mask is None else features * (mask > 0)
            active = inside[sample, unit].flatten(1).ne(0).any(1).cpu()
            ablated = base[sample].clone()  # a unit that is zero where it is ablated leaves the image as it was
            todo = active.nonzero().flatten()
            ablated[todo] = shares_of(features, batch.z, sample[todo], unit[todo], torch.zeros(len(todo)), mask,
                                      list(range(len(concepts))))
            inserted = torch.empty_like(ablated)
            for g in range(len(distinct)):
                columns = (groups == g).nonzero().flatten().tolist()
                inserted[:, columns] = shares_of(features, batch.z, sample, unit, distinct[g][unit], mask, columns)
        # pairs are unit-major (U, B, C): store per sample as (B, U * C)
        stats["baseline"].add(batch.indices, base)  # type: ignore[attr-defined]
        for name, tensor in (("ablated", ablated), ("inserted", inserted)):
            stats[name].add(batch.indices, tensor.view(len(chosen), b, -1).transpose(0, 1))  # type: ignore

    label = concepts[0] if len(concepts) == 1 else f"{len(concepts)} concepts"
    sample_pass = SamplePass(generator, seed=seed, samples=samples, first=first, batch_size=batch_size,
                             generate=False, device=device, collective=collective,
                             description=f"effects {layer} -> {label}", progress=progress)
    merged = sample_pass.run(stats, update)
    base = merged["baseline"].values  # type: ignore[attr-defined]
    ablated = merged["ablated"].values.view(samples, len(chosen), len(concepts))  # type: ignore[attr-defined]
    inserted = merged["inserted"].values.view(samples, len(chosen), len(concepts))  # type: ignore[attr-defined]
    index = torch.tensor(chosen)
    return {name: UnitEffects(layer, name, chosen, table[c][index].clone(), base[:, c].clone(),
                              ablated[:, :, c].clone(), inserted[:, :, c].clone(), seed, first)
            for c, name in enumerate(concepts)}


def unit_effects(generator: nn.Module, segmenter: Segmenter, layer: str, concept: int, concept_name: str,
                 values: torch.Tensor, units: Sequence[int] | None = None, samples: int = 200,
                 seed: int = HELD_OUT_SEED, batch_size: int = 8, group: int = 32,
                 region: torch.Tensor | None = None, device: str | torch.device = "cpu",
                 collective: Collective | None = None, progress: bool = True) -> UnitEffects:
    """Single-unit effects of `units` on one concept, inserting `values[u]` (U,) (see `measure_effects`)."""
    if list(segmenter.concepts)[concept] != concept_name:
        raise ConfigError(f"concept {concept} of the segmenter is {segmenter.concepts[concept]!r}, not "
                          f"{concept_name!r}")
    return measure_effects(generator, segmenter, layer, [concept_name], values, units, samples, seed, 0,
                           batch_size, group, region, device, collective, progress)[concept_name]
