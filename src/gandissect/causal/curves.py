"""Ablation curves: remove a concept by ablating a layer's top-ranked units, N at a time (the paper's Figure 4).

For a concept and a ranking of a layer's units (by ACE, by IoU, ...), ablate the first N units over the whole
feature map for each N of a list of counts, on held-out samples (a seed of their own), and count pixels with
the segmenter:

- fraction of the concept's pixels removed: 1 - (its pixels after) / (its pixels before), each summed over the
  samples (negative when the ablation makes the concept grow);
- share of the other concepts' pixels kept: pixels that show the same other concept before and after the
  ablation, over all pixels of the other concepts before (pixels that an ablation uncovers do not count, so
  this is at most 1).

`ablation_pixels` is the pass: each batch's features are computed once, the unedited images segmented once,
and every requested unit set's ablation of the batch is generated in shared generator calls, for any number of
rankings and concepts at once. It rides the engine's sample pass, so it shards and merges under torchrun.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from gandissect.causal.cut import Cut
from gandissect.causal.interventions import check_layer, check_units, concept_index
from gandissect.core.errors import ConfigError
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import Segmenter, check_labels
from gandissect.core.stats import Statistic, Tally
from gandissect.dissection.results import Dissection
from gandissect.engine.collectives import Collective
from gandissect.engine.samplepass import Batch, SamplePass

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


def iou_ranking(result: Dissection, layer: str, concept: str, rule: str = "quantile") -> list[int]:
    """The layer's units by IoU with `concept` under labelling `rule`, highest first (ties by unit number)."""
    check_layer(result, layer)
    if rule not in result.layers[layer].rules:
        raise ConfigError(f"no labelling rule {rule!r}; rules: {', '.join(result.layers[layer].rules)}")
    iou = result.layers[layer].rules[rule].iou[:, concept_index(result, concept)]
    return iou.argsort(descending=True, stable=True).tolist()


def segmenter_concept(segmenter: Segmenter, concept: str) -> int:
    """The index of `concept` among the segmenter's concepts; a one-line error listing them otherwise."""
    concepts = list(segmenter.concepts)
    if concept not in concepts:
        raise ConfigError(f"the segmenter knows no concept {concept!r}; its concepts: {', '.join(concepts)}")
    return concepts.index(concept)


def concept_presence(segmenter: Segmenter, images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) bool: whether each pixel shows each of the segmenter's concepts (in any label channel;
    unlabelled and unknown pixels show none)."""
    num = len(segmenter.concepts)
    with torch.no_grad():
        labels = check_labels(segmenter.segment(images), images, num, type(segmenter).__name__)
    present = torch.zeros(labels.shape[0], num + 1, *labels.shape[-2:], dtype=torch.bool, device=labels.device)
    for k in range(labels.shape[1]):
        present.scatter_(1, labels[:, k:k + 1].clamp(min=-1) + 1, True)
    return present[:, 1:]


def repeat_batch(tensor: torch.Tensor, times: int) -> torch.Tensor:
    """`times` copies of a batch along dimension 0, copy-major."""
    return tensor.repeat(times, *([1] * (tensor.dim() - 1)))


def layer_width(generator: nn.Module, layer: str, seed: int = CURVE_SEED, device: str | torch.device = "cpu") -> int:
    """The number of units (channels) of `layer`, from one sample."""
    with torch.no_grad():
        return int(Cut(generator, layer).head(sample_z(generator, seed, range(1)).to(device)).shape[1])


@dataclass
class AblationCurve:
    """One ranking's curve: for each count N, the concept's pixels removed and the other concepts' kept."""

    layer: str
    concept: str
    ranking: str
    units: list[int]
    counts: list[int]
    removed: list[float]
    others_kept: list[float]
    pixels_before: float
    pixels_after: list[float]
    samples: int
    seed: int

    def at(self, count: int) -> float:
        """The fraction removed by the top `count` units."""
        if count not in self.counts:
            raise ConfigError(f"the {self.ranking} curve has no point at N={count}; its counts: {self.counts}")
        return self.removed[self.counts.index(count)]

    def to_json(self) -> dict:
        """A JSON-able dict (NaN, for a concept with no pixels before, becomes None)."""
        data = asdict(self)
        for key in ("removed", "others_kept"):
            data[key] = [None if math.isnan(v) else v for v in data[key]]
        return data

    @classmethod
    def from_json(cls, data: Mapping) -> AblationCurve:
        data = dict(data)
        for key in ("removed", "others_kept"):
            data[key] = [float("nan") if v is None else v for v in data[key]]
        return cls(**data)


@dataclass
class AblationPixels:
    """Pixel counts of every segmenter concept, summed over the samples: before any ablation (C,), and after
    ablating each unit set (S, C), with the pixels that showed the same concept before and after (S, C)."""

    layer: str
    concepts: list[str]
    unit_sets: list[tuple[int, ...]]
    before: torch.Tensor
    after: torch.Tensor
    kept: torch.Tensor
    samples: int
    seed: int

    def _row(self, units: Sequence[int]) -> int:
        key = tuple(int(u) for u in units)
        if key not in self.unit_sets:
            raise ConfigError(f"units {list(key)} were not ablated in this pass")
        return self.unit_sets.index(key)

    def curve(self, concept: str, ranking: Sequence[int], counts: Sequence[int], name: str = "") -> AblationCurve:
        """The curve of ablating the first N units of `ranking` for each N in `counts`."""
        if concept not in self.concepts:
            raise ConfigError(f"the segmenter knows no concept {concept!r}; its concepts: {', '.join(self.concepts)}")
        c = self.concepts.index(concept)
        others = torch.ones(len(self.concepts), dtype=torch.bool)
        others[c] = False
        before, other_before = float(self.before[c]), float(self.before[others].sum())
        removed, kept, after = [], [], []
        for n in counts:
            row = self._row(ranking[:n])
            pixels = float(self.after[row, c])
            after.append(pixels)
            removed.append(1.0 - pixels / before if before > 0 else float("nan"))
            kept.append(float(self.kept[row, others].sum()) / other_before if other_before > 0 else float("nan"))
        return AblationCurve(self.layer, concept, name, [int(u) for u in ranking[:max(counts, default=0)]],
                             [int(n) for n in counts], removed, kept, before, after, self.samples, self.seed)


def ablation_pixels(generator: nn.Module, segmenter: Segmenter, layer: str, unit_sets: Sequence[Sequence[int]],
                    samples: int = 100, seed: int = CURVE_SEED, batch_size: int = 8, chunk: int = 64,
                    device: str | torch.device = "cpu", collective: Collective | None = None,
                    progress: bool = True) -> AblationPixels:
    """Count every concept's pixels before and after ablating each unit set (at every position of `layer`) on
    `samples` samples of sample set `seed`; at most `chunk` images per generator call."""
    if samples < 1:
        raise ConfigError(f"samples must be at least 1; got {samples}")
    width = layer_width(generator, layer, seed, device)
    sets = list(dict.fromkeys(tuple(check_units(s, width, layer, "unit set")) for s in unit_sets))
    edited = [i for i, s in enumerate(sets) if s]
    cut, num = Cut(generator, layer), len(segmenter.concepts)
    concepts = torch.arange(num)
    stats: dict[str, Statistic] = {"before": Tally(num), "after": Tally(len(sets) * num),
                                   "kept": Tally(len(sets) * num)}

    def update(batch: Batch, stats: dict[str, Statistic]) -> None:
        with torch.no_grad():
            features = cut.head(batch.z)
            b = features.shape[0]
            base = concept_presence(segmenter, cut.tail(features, batch.z))
            counts = base.flatten(2).sum(2).sum(0).double().cpu()
            stats["before"].add(counts, concepts)  # type: ignore[attr-defined]
            for i, s in enumerate(sets):
                if not s:  # nothing ablated: the images are the unedited ones
                    stats["after"].add(counts, i * num + concepts)  # type: ignore[attr-defined]
                    stats["kept"].add(counts, i * num + concepts)  # type: ignore[attr-defined]
            per_call = max(1, chunk // b)
            for start in range(0, len(edited), per_call):
                block = edited[start:start + per_call]
                r = repeat_batch(features, len(block))
                for g, i in enumerate(block):
                    r[g * b:(g + 1) * b, list(sets[i])] = 0
                after = concept_presence(segmenter, cut.tail(r, repeat_batch(batch.z, len(block))))
                after = after.view(len(block), b, *after.shape[1:])
                keys = (torch.tensor(block)[:, None] * num + concepts[None]).flatten()
                stats["after"].add(after.flatten(3).sum(3).sum(1).double().cpu().flatten(), keys)  # type: ignore
                kept = (after & base[None]).flatten(3).sum(3).sum(1).double().cpu().flatten()
                stats["kept"].add(kept, keys)  # type: ignore[attr-defined]

    sample_pass = SamplePass(generator, seed=seed, samples=samples, batch_size=batch_size, generate=False,
                             device=device, collective=collective, description=f"ablation curves {layer}",
                             progress=progress)
    merged = sample_pass.run(stats, update)
    totals = {name: stat.total.cpu() for name, stat in merged.items()}  # type: ignore[attr-defined]
    return AblationPixels(layer, list(segmenter.concepts), sets, totals["before"],
                          totals["after"].view(len(sets), num), totals["kept"].view(len(sets), num), samples, seed)


def ablation_curves(generator: nn.Module, segmenter: Segmenter, layer: str, concept: str,
                    rankings: Mapping[str, Sequence[int]], counts: Sequence[int] | None = None, samples: int = 100,
                    seed: int = CURVE_SEED, batch_size: int = 8, chunk: int = 64,
                    device: str | torch.device = "cpu", collective: Collective | None = None,
                    progress: bool = True) -> dict[str, AblationCurve]:
    """Per named ranking (e.g. {"ACE": effects.ranking(), "IoU": iou_ranking(...)}), the curve of ablating its
    top N units for N in `counts` (default 0, 1, 2, 4, ... up to the ranking's length), one pass for all."""
    segmenter_concept(segmenter, concept)
    if not rankings:
        raise ConfigError("give at least one ranking of units to ablate")
    chosen: dict[str, list[int]] = {}
    for name, ranking in rankings.items():
        units = [int(u) for u in ranking]
        wanted = unit_counts(len(units)) if counts is None else [int(n) for n in counts]
        bad = [n for n in wanted if not 0 <= n <= len(units)]
        if bad:
            raise ConfigError(f"counts {bad} do not fit the {name} ranking of {len(units)} units: use 0..{len(units)}")
        chosen[name] = wanted
    sets = [list(rankings[name])[:n] for name, wanted in chosen.items() for n in wanted]
    pixels = ablation_pixels(generator, segmenter, layer, sets, samples, seed, batch_size, chunk, device, collective,
                             progress)
    return {name: pixels.curve(concept, list(rankings[name]), wanted, name) for name, wanted in chosen.items()}


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
