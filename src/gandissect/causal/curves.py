"""Ablation curves: remove a concept by ablating a layer's top-ranked units, N at a time (the paper's Figure 4).

For each concept and each named ranking of a layer's units (by ACE, by IoU, ...), ablate the first N units
over the whole feature map for each N of a list of counts (`parse_counts`: numbers of units or shares of the
layer), on held-out samples (a seed of their own), and count pixels with the segmenter. Each point is a ratio
pooled over samples with its 95% interval (see `curvestats`):

- fraction of the concept's pixels removed: 1 - (its pixels after) / (its pixels before) (negative when
  the ablation makes the concept grow);
- share of the other concepts' pixels kept: pixels that show the same other concept before and after the
  ablation, over all pixels of the other concepts before (at most 1).

A baseline named "random" ablates N units drawn at random from the layer (`random_draws` random rankings,
seeded): its mean and its 5th-95th percentile band over draws say how much any N units remove.

`ablation_pixels` is the pass: each batch's features are computed once, the unedited images segmented once,
and every unit set's ablation of the batch (all rankings, all random draws) is generated in shared generator
calls, for any number of concepts at once. It rides the engine's sample pass, so it shards and merges under
torchrun.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from gandissect.causal.curvestats import (
    RANDOM,
    AblationCurve,
    AblationPixels,
    CurveSampleCounts,
    concept_presence,
    known_presence,
    pixel_counts,
    segmenter_concept,
)
from gandissect.causal.cut import Cut
from gandissect.causal.interventions import check_layer, check_units, concept_index
from gandissect.core.errors import ConfigError
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import Segmenter
from gandissect.core.stats import Statistic
from gandissect.dissection.results import Dissection
from gandissect.engine.collectives import Collective
from gandissect.engine.samplepass import Batch, SamplePass

__all__ = ["CURVE_SEED", "RANDOM", "AblationCurve", "AblationPixels", "ablation_curves", "ablation_curves_multi",
           "ablation_images", "ablation_pixels", "concept_presence", "iou_ranking", "layer_width", "parse_counts",
           "random_rankings", "repeat_batch", "segmenter_concept", "unit_counts"]

# Held-out sample sets: the dissection uses seeds 1 (IoU) and 2 (thresholds), single-unit ACE 3.
CURVE_SEED = 4


def unit_counts(width: int, up_to: int | None = None) -> list[int]:
    """0, 1, 2, 4, 8, ... below `up_to` (default: the layer's width `width`), then `up_to` itself."""
    top = width if up_to is None else min(int(up_to), width)
    counts, n = [0], 1
    while n < top:
        counts.append(n)
        n *= 2
    if top > 0:
        counts.append(top)
    return counts


def parse_counts(text: str, width: int) -> list[int]:
    """Counts of units from text such as "1,2,4,5%,20" for a layer of `width` units: whole numbers 0..width or
    percentages p% of the layer (round(p / 100 * width), halves up, at least 1). Sorted, without repeats, 0 first."""
    usage = f"give whole numbers 0..{width} or shares 0-100% of the layer's {width} units, e.g. 1,2,4,5%"
    tokens = [token.strip() for token in str(text).split(",")]
    if not any(tokens):
        raise ConfigError(f"no counts given: {usage}")
    counts = {0}
    for token in tokens:
        if token.endswith("%"):
            try:
                share = float(token[:-1])
            except ValueError:
                share = float("nan")
            if not 0 <= share <= 100:
                raise ConfigError(f"count {token!r} is not a share 0-100% of the layer: {usage}")
            counts.add(max(1, math.floor(share / 100 * width + 0.5)))
            continue
        try:
            n = int(token)
        except ValueError:
            raise ConfigError(f"count {token!r} is not a whole number of units: {usage}") from None
        if not 0 <= n <= width:
            raise ConfigError(f"count {n} is out of range: {usage}")
        counts.add(n)
    return sorted(counts)


def iou_ranking(result: Dissection, layer: str, concept: str, rule: str = "quantile") -> list[int]:
    """The layer's units by IoU with `concept` under labelling `rule`, highest first (ties by unit number)."""
    check_layer(result, layer)
    if rule not in result.layers[layer].rules:
        raise ConfigError(f"no labelling rule {rule!r}; rules: {', '.join(result.layers[layer].rules)}")
    iou = result.layers[layer].rules[rule].iou[:, concept_index(result, concept)]
    return iou.argsort(descending=True, stable=True).tolist()


def random_rankings(width: int, draws: int, seed: int = 0) -> list[list[int]]:
    """`draws` random orders of a layer's `width` units (seeded): the top N of each is N units drawn at random."""
    generator = torch.Generator().manual_seed(int(seed))
    return [torch.randperm(width, generator=generator).tolist() for _ in range(draws)]


def repeat_batch(tensor: torch.Tensor, times: int) -> torch.Tensor:
    """`times` copies of a batch along dimension 0, copy-major."""
    return tensor.repeat(times, *([1] * (tensor.dim() - 1)))


def layer_width(generator: nn.Module, layer: str, seed: int = CURVE_SEED, device: str | torch.device = "cpu") -> int:
    """The number of units (channels) of `layer`, from one sample."""
    with torch.no_grad():
        return int(Cut(generator, layer).head(sample_z(generator, seed, range(1)).to(device)).shape[1])


def ablation_pixels(generator: nn.Module, segmenter: Segmenter, layer: str, unit_sets: Sequence[Sequence[int]],
                    samples: int = 100, seed: int = CURVE_SEED, batch_size: int = 8, chunk: int = 64,
                    device: str | torch.device = "cpu", collective: Collective | None = None,
                    progress: bool = True, concepts: Sequence[str] | None = None) -> AblationPixels:
    """Per sample, count the pixels of `concepts` (default: all the segmenter's) before and after ablating each
    unit set (at every position of `layer`, plus the empty set) on `samples` samples of sample set `seed`; at
    most `chunk` images per generator call."""
    if samples < 1:
        raise ConfigError(f"samples must be at least 1; got {samples}")
    names = list(segmenter.concepts)
    chosen = names if concepts is None else list(dict.fromkeys(concepts))
    columns = torch.tensor([segmenter_concept(segmenter, name) for name in chosen], dtype=torch.long)
    width = layer_width(generator, layer, seed, device)
    sets = list(dict.fromkeys([(), *(tuple(sorted(check_units(s, width, layer, "unit set"))) for s in unit_sets)]))
    edited = [i for i, s in enumerate(sets) if s]
    cut = Cut(generator, layer)

    def update(batch: Batch, stats: dict[str, Statistic]) -> None:
        with torch.no_grad():
            features = cut.head(batch.z)
            b = features.shape[0]
            base, known = known_presence(segmenter, cut.tail(features, batch.z))
            table = torch.full((3, b, len(sets), len(columns) + 1), float("nan"), dtype=torch.float64)
            table[:, :, 0] = pixel_counts(base, base, known, columns.to(base.device)).cpu()
            per_call = max(1, chunk // b)
            for start in range(0, len(edited), per_call):
                block = edited[start:start + per_call]
                r = repeat_batch(features, len(block))
                for g, i in enumerate(block):
                    r[g * b:(g + 1) * b, list(sets[i])] = 0
                after, after_known = known_presence(segmenter, cut.tail(r, repeat_batch(batch.z, len(block))))
                after = after.view(len(block), b, *after.shape[1:])
                both = known[None] & after_known.view(len(block), b, *after_known.shape[1:])
                counts = pixel_counts(base[None], after, both, columns.to(base.device)).cpu()
                table[:, :, block] = counts.transpose(1, 2)
            stats["counts"].add(batch.start, table)  # type: ignore[attr-defined]

    sample_pass = SamplePass(generator, seed=seed, samples=samples, batch_size=batch_size, generate=False,
                             device=device, collective=collective, description=f"ablation curves {layer}",
                             progress=progress)
    merged = sample_pass.run({"counts": CurveSampleCounts(samples, len(sets), len(columns) + 1)}, update)
    table = merged["counts"]
    assert isinstance(table, CurveSampleCounts)
    return AblationPixels(layer, chosen, sets, table.before.cpu(), table.after.cpu(), table.kept.cpu(), samples,
                          seed)


def _checked_counts(counts: Sequence[int] | str, width: int, layer: str) -> list[int]:
    """Counts as text (`parse_counts`) or numbers, each 0..width, sorted without repeats and with 0 first."""
    if isinstance(counts, str):
        return parse_counts(counts, width)
    wanted = sorted({0, *(int(n) for n in counts)})
    bad = [n for n in wanted if not 0 <= n <= width]
    if bad:
        raise ConfigError(f"counts {bad} do not fit layer {layer!r} of {width} units: use 0..{width}")
    return wanted


def ablation_curves_multi(generator: nn.Module, segmenter: Segmenter, layer: str,
                          rankings: Mapping[str, Mapping[str, Sequence[int]]],
                          counts: Sequence[int] | str | None = None, samples: int = 100, seed: int = CURVE_SEED,
                          batch_size: int = 8, chunk: int = 64, device: str | torch.device = "cpu",
                          collective: Collective | None = None, progress: bool = True, random_draws: int = 10,
                          random_seed: int = 0) -> dict[str, dict[str, AblationCurve]]:
    """Per concept and named ranking ({concept: {name: ranking}}), the curve of ablating its top N units for N in
    `counts` (default 0, 1, 2, 4, ... up to the ranking's length), plus the random baseline "random" over the
    union of the counts (`random_draws` = 0: none); one pass for all, sharing every batch's work."""
    if not rankings:
        raise ConfigError("give at least one concept with rankings of units to ablate")
    if random_draws < 0:
        raise ConfigError(f"random_draws must be 0 (no baseline) or more; got {random_draws}")
    for concept in rankings:
        segmenter_concept(segmenter, concept)
    width = layer_width(generator, layer, seed, device)
    given = None if counts is None else _checked_counts(counts, width, layer)
    plan: dict[str, dict[str, tuple[list[int], list[int]]]] = {}
    for concept, named in rankings.items():
        if not named:
            raise ConfigError(f"give at least one ranking of units to ablate for {concept!r}")
        if RANDOM in named:
            raise ConfigError(f"the ranking name {RANDOM!r} is reserved for the random-units baseline: rename it")
        plan[concept] = {}
        for name, ranking in named.items():
            units = check_units(ranking, width, layer, f"{name} ranking")
            wanted = unit_counts(len(units)) if given is None else given
            bad = [n for n in wanted if n > len(units)]
            if bad:
                raise ConfigError(f"counts {bad} do not fit the {name} ranking of {len(units)} units: "
                                  f"use 0..{len(units)}")
            plan[concept][name] = (units, wanted)
    every = sorted({n for named in plan.values() for _, wanted in named.values() for n in wanted})
    draws = random_rankings(width, random_draws, random_seed)
    sets = [units[:n] for named in plan.values() for units, wanted in named.values() for n in wanted]
    sets += [draw[:n] for draw in draws for n in every]
    pixels = ablation_pixels(generator, segmenter, layer, sets, samples, seed, batch_size, chunk, device, collective,
                             progress, concepts=list(plan))
    curves: dict[str, dict[str, AblationCurve]] = {}
    for concept, named in plan.items():
        curves[concept] = {name: pixels.curve(concept, units, wanted, name) for name, (units, wanted) in named.items()}
        if draws:
            curves[concept][RANDOM] = pixels.random_curve(concept, draws, every)
    return curves


def ablation_curves(generator: nn.Module, segmenter: Segmenter, layer: str, concept: str,
                    rankings: Mapping[str, Sequence[int]], counts: Sequence[int] | str | None = None,
                    samples: int = 100, seed: int = CURVE_SEED, batch_size: int = 8, chunk: int = 64,
                    device: str | torch.device = "cpu", collective: Collective | None = None,
                    progress: bool = True, random_draws: int = 10, random_seed: int = 0) -> dict[str, AblationCurve]:
    """Per named ranking (e.g. {"ace": effects.ranking(), "IoU": iou_ranking(...)}), the curve of ablating its
    top N units for N in `counts`, and the random baseline "random"; see `ablation_curves_multi`."""
    if not rankings:
        raise ConfigError("give at least one ranking of units to ablate")
    return ablation_curves_multi(generator, segmenter, layer, {concept: rankings}, counts, samples, seed, batch_size,
                                 chunk, device, collective, progress, random_draws, random_seed)[concept]


def ablation_images(generator: nn.Module, layer: str, ranking: Sequence[int], counts: Sequence[int],
                    samples: int | Sequence[int] = 4, seed: int = CURVE_SEED,
                    device: str | torch.device = "cpu") -> torch.Tensor:
    """(len(counts), S, 3, H, W) images of the same held-out samples as the top N units of `ranking` are ablated,
    one row per N: the pictures of an ablation curve."""
    indices = list(range(samples)) if isinstance(samples, int) else [int(i) for i in samples]
    if not indices:
        raise ConfigError("give at least one sample to picture")
    width = layer_width(generator, layer, seed, device)
    units = check_units(ranking, width, layer, "ranking")
    bad = [n for n in counts if not 0 <= int(n) <= len(units)]
    if bad:
        raise ConfigError(f"counts {bad} do not fit a ranking of {len(units)} units: use 0..{len(units)}")
    cut = Cut(generator, layer)
    z = sample_z(generator, seed, torch.tensor(indices)).to(device)
    rows = []
    with torch.no_grad():
        features = cut.head(z)
        for n in counts:
            r = features.clone()
            r[:, units[:int(n)]] = 0
            rows.append(cut.tail(r, z).cpu())
    return torch.stack(rows)
