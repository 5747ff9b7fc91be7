"""Which label is right: the concept each unit causally draws, and how often each labelling rule names it.

For unit u of a layer, on held-out samples (a seed of their own):
- ablation where active: u := 0 in the feature cells where u exceeds its top-quantile threshold (the
  dissection's `thresholds[u]`, compared on the feature grid);
- insertion elsewhere: u := k_u in cells where u is not active (INSERTIONS: by default the active cells moved
  sideways by half the grid, a region no larger than the ablation's; or every inactive cell), k_u a high quantile
  of the unit's activations, by default the median of its active part (1 - quantile / 2 of the run's quantile).
For every concept c, per image, the pixels it loses to the ablation (its pixel count before minus after,
clamped at 0) and the pixels it gains from the insertion (after minus before, clamped at 0) are summed over
samples and divided by c's area: its pixels in the unedited images, summed over samples, floored at
`area_floor` of all pixels so that a rare concept does not win by a few pixels of noise. The unit's causal label
is the concept of largest effect, or none when no effect reaches `min_effect`. Counts are kept per half of the
samples, so that the labels' split-half reliability comes with them.

Each batch computes the layer's features and the unedited images once, then generates, for a group of units
at a time, every (unit, sample) copy with that one unit edited: many units share one generator call. A copy
whose edit region is empty changes nothing and is not generated. Rides the engine's sample pass (shards and
merges under torchrun).

`rule_agreement` compares the causal labels with every labelling rule of the dissection: the fraction of
units with a causal label whose rule label is the same concept, over all such units and over those the rule
calls interpretable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gandissect.causal.ace import HELD_OUT_SEED
from gandissect.causal.cut import Cut
from gandissect.causal.interventions import check_layer, check_units, insertion_values
from gandissect.core.errors import ConfigError
from gandissect.core.segmenters import Segmenter, check_labels
from gandissect.core.stats import Statistic, Tally
from gandissect.dissection.labels import RULES
from gandissect.dissection.results import Dissection
from gandissect.engine.collectives import Collective
from gandissect.engine.samplepass import Batch, SamplePass

NONE = -1
MIN_EFFECT = 0.05
INSERTIONS = {
    "shifted": "the cells where the unit is active, moved sideways by half the grid's width (wrapping round), "
               "less the active cells: no larger than the ablation's region, at the same heights",
    "inactive": "every cell where the unit is not active",
}


@dataclass
class CausalLabels:
    """One layer's causal effects, kept per half of the samples (F = 2 folds: even and odd sample indices):
    pixels removed by the ablation and gained by the insertion (F, U, C), each concept's pixels in the unedited
    images (F, C) and all known pixels (F,); summed over the folds they give effects and labels."""

    layer: str
    concepts: list[str]
    removed: torch.Tensor
    gained: torch.Tensor
    area: torch.Tensor
    pixels: torch.Tensor
    values: torch.Tensor
    samples: int
    seed: int
    area_floor: float
    min_effect: float

    @property
    def units(self) -> int:
        return int(self.removed.shape[1])

    @property
    def effect(self) -> torch.Tensor:
        """(U, C) (removed + gained) / max(area, area_floor * pixels), all summed over samples."""
        area = self.area.sum(0).clamp(min=self.area_floor * float(self.pixels.sum())).clamp(min=1.0)
        return ((self.removed.sum(0) + self.gained.sum(0)) / area[None, :]).float()

    def labels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each unit's largest effect and its concept, concept -1 (none) where the effect is below min_effect
        (ties go to the lower concept index)."""
        best, concept = self.effect.max(1)
        return best, torch.where(best >= self.min_effect, concept, torch.full_like(concept, NONE))

    def names(self) -> list[str]:
        """Each unit's causal label as a concept name, 'none' for none."""
        return [self.concepts[c] if c != NONE else "none" for c in self.labels()[1].tolist()]

    def half(self, fold: int) -> CausalLabels:
        """The labels measured on one half of the samples (fold 0: even sample indices, 1: odd)."""
        if fold not in range(self.removed.shape[0]):
            raise ConfigError(f"fold must be 0 or 1; got {fold}")
        pick = slice(fold, fold + 1)
        return CausalLabels(self.layer, self.concepts, self.removed[pick], self.gained[pick], self.area[pick],
                            self.pixels[pick], self.values, (self.samples + 1 - fold) // 2, self.seed,
                            self.area_floor, self.min_effect)

    def reliability(self) -> Agreement:
        """Split-half agreement: of the units labelled on both halves of the samples, how many get the same
        label from each (a ceiling for any rule's agreement at this number of samples)."""
        first, second = self.half(0).labels()[1], self.half(1).labels()[1]
        both = (first != NONE) & (second != NONE)
        units, same = int(both.sum()), int((both & (first == second)).sum())
        return Agreement("split-half", units, same, units, same)

    def distribution(self) -> dict[str, int]:
        """How many units each causal label has, most first (ties by name)."""
        counts: dict[str, int] = {}
        for name in self.names():
            counts[name] = counts.get(name, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    def to_json(self, agreement: Mapping[str, Agreement] | None = None) -> dict[str, Any]:
        """JSON-able record, as the report reads `causal/<layer>/labels.json`: per unit its label (a concept
        or 'none'), effect, pixels removed and gained, top 3 concepts; with `agreement` (from rule_agreement)
        each rule's agreement record."""
        best, concept = self.labels()
        effect, removed, gained = self.effect, self.removed.sum(0), self.gained.sum(0)
        units = []
        for u, (score, c) in enumerate(zip(best.tolist(), concept.tolist(), strict=True)):
            top = effect[u].argsort(descending=True, stable=True)[:3].tolist()
            units.append({"unit": u, "label": self.concepts[c] if c != NONE else "none", "effect": score,
                          "removed": float(removed[u, c]) if c != NONE else 0.0,
                          "gained": float(gained[u, c]) if c != NONE else 0.0,
                          "top": [{"concept": self.concepts[k], "effect": float(effect[u, k])} for k in top]})
        return {"layer": self.layer, "samples": self.samples, "seed": self.seed, "area_floor": self.area_floor,
                "min_effect": self.min_effect, "pixels": float(self.pixels.sum()),
                "insertion_values": self.values.tolist(),
                "area": dict(zip(self.concepts, self.area.sum(0).tolist(), strict=True)),
                "distribution": self.distribution(), "reliability": self.reliability().to_json(), "units": units,
                **({"agreement": {rule: a.to_json() for rule, a in agreement.items()}} if agreement else {})}


@dataclass
class Agreement:
    """How often one rule's labels equal the causal labels: over units with a causal label (`units`), and over
    those of them whose rule label is interpretable (`interpretable_units`)."""

    rule: str
    units: int
    agree: int
    interpretable_units: int
    interpretable_agree: int

    @property
    def fraction(self) -> float:
        return self.agree / self.units if self.units else float("nan")

    @property
    def interpretable_fraction(self) -> float:
        return self.interpretable_agree / self.interpretable_units if self.interpretable_units else float("nan")

    def to_json(self) -> dict[str, Any]:
        """JSON-able record; a fraction over no units is null."""
        return {"rule": self.rule, "units": self.units, "agree": self.agree,
                "fraction": self.fraction if self.units else None,
                "interpretable_units": self.interpretable_units, "interpretable_agree": self.interpretable_agree,
                "interpretable_fraction": self.interpretable_fraction if self.interpretable_units else None}


def agreement(rule: str, causal: torch.Tensor, rule_labels: torch.Tensor, interpretable: torch.Tensor) -> Agreement:
    """Agreement of `rule_labels` (U,) with `causal` (U,) labels (-1: none, left out), over all units and over
    units whose rule label is `interpretable` (U,) bool."""
    causal, rule_labels, interpretable = causal.cpu().long(), rule_labels.cpu().long(), interpretable.cpu().bool()
    if not causal.shape == rule_labels.shape == interpretable.shape:
        raise ConfigError(f"causal labels {tuple(causal.shape)}, rule labels {tuple(rule_labels.shape)} and "
                          f"interpretable flags {tuple(interpretable.shape)} must have the same shape (U,)")
    known = causal != NONE
    same = known & (causal == rule_labels)
    return Agreement(rule, int(known.sum()), int(same.sum()), int((known & interpretable).sum()),
                     int((same & interpretable).sum()))


def rule_agreement(result: Dissection, causal: CausalLabels,
                   rules: Sequence[str] | None = None) -> dict[str, Agreement]:
    """Agreement of every labelling rule of `result` (or `rules`) at `causal.layer` with the causal labels."""
    width = check_layer(result, causal.layer)
    if causal.units != width:
        raise ConfigError(f"the causal labels cover {causal.units} units; layer {causal.layer!r} has "
                          f"{width}")
    labels = causal.labels()[1]
    out = {}
    for rule in rules or list(result.layers[causal.layer].rules):
        if rule not in RULES:
            raise ConfigError(f"no labelling rule {rule!r}; rules: {', '.join(RULES)}")
        concept = result.layers[causal.layer].rules[rule].labels()[1].cpu()
        flags = result.interpretable(causal.layer, rule).cpu()[torch.arange(width), concept]
        out[rule] = agreement(rule, labels, concept, flags)
    return out


def agreement_table(agreements: Mapping[str, Mapping[str, Agreement]]) -> str:
    """A Markdown table: one row per rule, per layer two columns (all units with a causal label, interpretable
    ones), each 'fraction (agree/units)'; a last column pooling the layers."""
    layers = list(agreements)
    rules = list(dict.fromkeys(rule for layer in layers for rule in agreements[layer]))

    def cell(agree: int, units: int) -> str:
        return f"{agree / units:.2f} ({agree}/{units})" if units else "- (0/0)"

    head = ["rule"] + [f"{layer} {kind}" for layer in layers for kind in ("all", "interp.")] + ["pooled all",
                                                                                                  "pooled interp."]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rule in rules:
        row, totals = [rule], [0, 0, 0, 0]
        for layer in layers:
            a = agreements[layer].get(rule)
            if a is None:
                row += ["", ""]
                continue
            row += [cell(a.agree, a.units), cell(a.interpretable_agree, a.interpretable_units)]
            totals = [totals[0] + a.agree, totals[1] + a.units, totals[2] + a.interpretable_agree,
                      totals[3] + a.interpretable_units]
        row += [cell(totals[0], totals[1]), cell(totals[2], totals[3])]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def distribution_table(labels: Mapping[str, CausalLabels]) -> str:
    """A Markdown table of the causal labels' distribution: one row per layer, 'concept: units' most first."""
    lines = ["| layer | units | causal labels (units) |", "|---|---|---|"]
    for layer, causal in labels.items():
        counts = ", ".join(f"{name}: {count}" for name, count in causal.distribution().items())
        lines.append(f"| {layer} | {causal.units} | {counts} |")
    return "\n".join(lines)


def concept_presence(segmenter: Segmenter, images: torch.Tensor, num_concepts: int) -> tuple[torch.Tensor,
                                                                                             torch.Tensor]:
    """(N, C, H, W) bool: the pixels labelled with each concept (in any label channel); (N, H, W) bool: the
    pixels the segmenter knows (no channel says -2)."""
    with torch.no_grad():
        labels = check_labels(segmenter.segment(images), images, num_concepts, type(segmenter).__name__)
    n, _, height, width = labels.shape
    present = torch.zeros(n, num_concepts + 1, height, width, dtype=torch.bool, device=labels.device)
    for k in range(labels.shape[1]):
        present.scatter_(1, labels[:, k:k + 1].clamp(min=-1) + 1, True)
    known = (labels != -2).all(1)
    return present[:, 1:] & known[:, None], known


def edit_copies(features: torch.Tensor, samples: torch.Tensor, units: torch.Tensor, values: torch.Tensor,
                regions: torch.Tensor) -> torch.Tensor:
    """Copies of features[samples] (n, U, h, w), copy i with unit units[i] set to values[i] where regions[i]
    (n, h, w) bool is true."""
    out = features[samples].clone()
    rows = torch.arange(len(samples), device=features.device)
    current = out[rows, units]
    out[rows, units] = torch.where(regions, values.to(current)[:, None, None], current)
    return out


def causal_labels(generator: nn.Module, segmenter: Segmenter, result: Dissection, layer: str,
                  samples: int = 32, seed: int = HELD_OUT_SEED, batch_size: int = 8, group: int = 16,
                  units: Sequence[int] | None = None, quantile: float | None = None, insert: str = "shifted",
                  area_floor: float = 0.01, min_effect: float = MIN_EFFECT, device: str | torch.device = "cpu",
                  collective: Collective | None = None, progress: bool = True) -> CausalLabels:
    """The concept each unit of `layer` causally draws (see the module's docstring), measured on `samples`
    held-out samples of `seed`; `units` limits the measurement (the others keep zero effects: label none).
    Insertion value: each unit's `quantile` of activations (default 1 - run quantile / 2: the median of its
    active part); insertion region: one of INSERTIONS. Up to group * batch_size images per generator call."""
    width = check_layer(result, layer)
    chosen = list(range(width)) if units is None else check_units(units, width, layer)
    if samples < 1 or batch_size < 1 or group < 1:
        raise ConfigError(f"samples, batch_size and group must be at least 1; got {samples}, {batch_size}, {group}")
    if insert not in INSERTIONS:
        raise ConfigError(f"insert must be one of {', '.join(INSERTIONS)}; got {insert!r}")
    if not 0 <= area_floor < 1:
        raise ConfigError(f"area_floor must lie in [0, 1); got {area_floor}")
    concepts = list(result.concepts)
    if list(getattr(segmenter, "concepts", [])) != concepts:
        raise ConfigError(f"the segmenter's {len(list(getattr(segmenter, 'concepts', [])))} concepts differ from "
                          f"the run's {len(concepts)}: use the segmenter the run was dissected with")
    quantile = 1.0 - result.config.quantile / 2 if quantile is None else quantile
    values = insertion_values(result, layer, quantile=quantile)
    num, folds = len(concepts), 2
    cut = Cut(generator, layer)
    stats: dict[str, Statistic] = {"removed": Tally(folds * width * num), "gained": Tally(folds * width * num),
                                   "area": Tally(folds * num), "pixels": Tally(folds)}

    def count(name: str, stats: dict[str, Statistic], features: torch.Tensor, z: torch.Tensor, fold: torch.Tensor,
              before: torch.Tensor, known: torch.Tensor, pairs: torch.Tensor, regions: torch.Tensor) -> None:
        """Generate the copies `pairs` (n, 2) of (unit, sample) edited in `regions` (n, h, w); add each
        concept's pixels lost (name 'removed') or won ('gained') per copy."""
        for start in range(0, len(pairs), group * batch_size):
            unit, sample = pairs[start:start + group * batch_size].unbind(1)
            target = values.to(features.device)[unit] if name == "gained" else torch.zeros_like(unit, dtype=torch.float)
            edited = edit_copies(features, sample, unit, target, regions[start:start + group * batch_size])
            with torch.no_grad():
                after, known_after = concept_presence(segmenter, cut.tail(edited, z[sample]), num)
            both = (known[sample] & known_after)[:, None]
            difference = (before[sample] & both).flatten(2).sum(2) - (after & both).flatten(2).sum(2)  # (n, C)
            change = difference if name == "removed" else -difference
            keys = ((fold[sample] * width + unit)[:, None] * num + torch.arange(num, device=unit.device)).flatten()
            stats[name].add(change.clamp(min=0).flatten().double(), keys)  # type: ignore[attr-defined]

    def update(batch: Batch, stats: dict[str, Statistic]) -> None:
        with torch.no_grad():
            features = cut.head(batch.z)
            before, known = concept_presence(segmenter, cut.tail(features, batch.z), num)
        device = features.device
        fold = (batch.indices % folds).to(device)
        keys = (fold[:, None] * num + torch.arange(num, device=device)).flatten()
        stats["area"].add(before.flatten(2).sum(2).flatten().double(), keys)  # type: ignore[attr-defined]
        stats["pixels"].add(known.flatten(1).sum(1).double(), fold)  # type: ignore[attr-defined]
        index = torch.tensor(chosen, device=device)
        thresholds = result.layers[layer].thresholds.to(device, features.dtype)[index]
        active = features[:, index] > thresholds[None, :, None, None]  # (B, units, h, w)
        elsewhere = ~active if insert == "inactive" else active.roll(active.shape[-1] // 2, -1) & ~active
        for name, regions in (("removed", active), ("gained", elsewhere)):
            sample, position = regions.flatten(2).any(2).nonzero(as_tuple=True)  # copies whose edit changes r
            count(name, stats, features, batch.z, fold, before, known, torch.stack([index[position], sample], 1),
                  regions[sample, position])

    sample_pass = SamplePass(generator, seed=seed, samples=samples, batch_size=batch_size, generate=False,
                             device=device, collective=collective, description=f"causal labels {layer}",
                             progress=progress)
    merged = sample_pass.run(stats, update)
    totals = {name: stat.total.cpu() for name, stat in merged.items()}  # type: ignore[attr-defined]
    return CausalLabels(layer, concepts, totals["removed"].view(folds, width, num),
                        totals["gained"].view(folds, width, num), totals["area"].view(folds, num), totals["pixels"],
                        values, samples, seed, area_floor, min_effect)
