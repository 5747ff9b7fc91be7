"""Which label is right: the concept each unit causally draws, and how often each labelling rule names it.

No labelling rule's mask or threshold enters the definition (an earlier one ablated the quantile rule's own
top-1% mask, favouring that rule). For unit u, on held-out samples (a seed of their own), u := 0 (ablation)
and u := k_u (insertion) at every cell of the layer, k_u the unit's `quantile` (default 0.99) of upsampled
activations on the run's threshold set: a value it reaches on its own, with no concept chosen. These are the
whole-map interventions of the paper's ACE, so the effect below is u's ACE on every concept.

Per sample i and concept c the segmenter gives c's share of the image's known pixels (pixels with -2 in any
channel are left out; an image with no known pixel is a missing sample, NaN): unedited b_i, ablated a_i,
inserted n_i. The per-sample effect d_i = n_i - a_i = (b_i - a_i) + (n_i - b_i) is the share the ablation
removes plus the share the insertion adds. Per unit, a paired t-test of mean d against 0 for every concept
the unit moves in some sample (one it never moves is no test), Holm-adjusted over those concepts
(`core.inference`); a concept is a candidate when its adjusted p is below `alpha` and its mean d is positive
(the unit draws it, not over it). The label is the candidate of largest effect under a definition, else none.
Each definition divides mean d by a positive constant per concept, so all share the test and differ only in
which candidate wins (DEFINITIONS):
- share: mean d itself, the ACE in shares of the image; large concepts have more pixels to move;
- relative: mean d over the concept's mean share in the unedited images, the part of its usual area the unit
  moves; no floor, so a large concept stays reachable, but small ones win more easily;
- lift: mean d over the concept's mean |mean d| across the layer's measured units, how much more this unit
  moves c than the layer's typical unit; no area enters (it needs most of the layer measured).
All come from the same images: the per-sample shares of `ace.measure_effects` (every concept at once, the
same pass as `gandissect causal --value high`), kept per sample so that labels on the even and odd samples
give the split-half reliability.

`rule_agreement`: the fraction of units with a causal label whose rule label is that concept, with its chance
level: the expected agreement when the rule's labels are shuffled across the layer's units, computed exactly
(the mean over all U! permutations, which a mean over random permutations would only estimate).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import torch
from torch import nn

from gandissect.causal.ace import HELD_OUT_SEED, measure_effects
from gandissect.causal.interventions import check_layer, check_units, insertion_values
from gandissect.core.errors import ConfigError
from gandissect.core.inference import Estimate, holm, paired_estimate
from gandissect.core.segmenters import Segmenter
from gandissect.dissection.labels import RULES
from gandissect.dissection.results import Dissection
from gandissect.engine.collectives import Collective

NONE = -1
ALPHA = 0.05
QUANTILE = 0.99
DEFINITIONS = {
    "share": "mean change of the concept's share of the image, inserted minus ablated (its ACE): favours "
             "large concepts",
    "relative": "that change over the concept's mean share in the unedited images: favours small concepts",
    "lift": "that change over the concept's mean absolute change across the layer's units: no area enters",
}
NAN = float("nan")


def check_definition(definition: str) -> str:
    """`definition`, refused in one line unless it is one of DEFINITIONS."""
    if definition not in DEFINITIONS:
        raise ConfigError(f"definition must be one of {', '.join(DEFINITIONS)}; got {definition!r}")
    return definition


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


@dataclass
class CausalLabels:
    """One layer's per-sample concept shares, float64, NaN where missing: `before` (N, C) in the unedited
    images, `ablated` and `inserted` (N, U, C) with one unit edited (NaN for units not `measured`); row i is
    sample i of `seed`. `values` (U,): the inserted values, the units' `quantile` of activations."""

    layer: str
    concepts: list[str]
    measured: list[int]
    before: torch.Tensor
    ablated: torch.Tensor
    inserted: torch.Tensor
    values: torch.Tensor
    seed: int
    alpha: float = ALPHA
    quantile: float = QUANTILE

    @property
    def units(self) -> int:
        return int(self.ablated.shape[1])

    @property
    def samples(self) -> int:
        return int(self.before.shape[0])

    @cached_property
    def estimate(self) -> Estimate:
        """The paired estimate of d = inserted - ablated per (unit, concept), over samples."""
        return paired_estimate(self.inserted - self.ablated)

    @cached_property
    def adjusted(self) -> torch.Tensor:
        """(U, C) Holm-adjusted p-values over each unit's concepts; NaN (no test) where d is 0 in every sample."""
        moved = ((self.inserted - self.ablated).nan_to_num(0.0) != 0).any(0)
        return holm(torch.where(moved, self.estimate.p, torch.full_like(self.estimate.p, NAN)), -1)

    def effect(self, definition: str = "share") -> torch.Tensor:
        """(U, C) mean effect under `definition`; NaN for units not measured, concepts absent from every
        unedited image (relative) and concepts no unit moves (lift)."""
        mean = self.estimate.mean
        if check_definition(definition) == "share":
            return mean
        scale = self.before.nanmean(0) if definition == "relative" else mean[self.measured].abs().nanmean(0)
        return mean / torch.where(scale > 0, scale, torch.full_like(scale, NAN))[None]

    def labels(self, definition: str = "share") -> tuple[torch.Tensor, torch.Tensor]:
        """Each unit's label (U,): the candidate concept of largest effect (ties to the lower index), -1 for
        none; and its effect (U,), for none the unit's largest effect on any concept (NaN if it has none)."""
        effect = self.effect(definition)
        candidate = (self.adjusted < self.alpha) & (self.estimate.mean > 0) & ~torch.isnan(effect)
        ranked = torch.where(candidate, effect, -math.inf).argsort(dim=1, descending=True, stable=True)[:, 0]
        concept = torch.where(candidate.any(1), ranked, NONE)
        anything = effect.nan_to_num(-math.inf).max(1).values
        best = torch.where(concept != NONE, effect.gather(1, ranked[:, None])[:, 0], anything)
        return concept, torch.where(torch.isinf(best), NAN, best)

    def names(self, definition: str = "share") -> list[str]:
        """Each unit's causal label as a concept name, 'none' for none."""
        return [self.concepts[c] if c != NONE else "none" for c in self.labels(definition)[0].tolist()]

    def half(self, fold: int) -> CausalLabels:
        """The measurement on one half of the samples (fold 0: even sample indices, 1: odd)."""
        if fold not in (0, 1):
            raise ConfigError(f"fold must be 0 or 1; got {fold}")
        pick = slice(fold, None, 2)
        return replace(self, before=self.before[pick], ablated=self.ablated[pick], inserted=self.inserted[pick])

    def reliability(self, definition: str = "share") -> Agreement:
        """Split-half agreement: of the units labelled on both halves of the samples, how many get the same label
        from each (a ceiling for any rule's agreement at this number of samples); chance: the expected agreement
        when one half's labels are shuffled across those units."""
        first, second = self.half(0).labels(definition)[0], self.half(1).labels(definition)[0]
        both = (first != NONE) & (second != NONE)
        units, same = int(both.sum()), int((both & (first == second)).sum())
        chance = shuffled_agreement(first[both], second[both]) * units
        return Agreement("split-half", units, same, units, same, chance)

    def distribution(self, definition: str = "share") -> dict[str, int]:
        """How many units each causal label has, most first (ties by name)."""
        return dict(sorted(Counter(self.names(definition)).items(), key=lambda item: (-item[1], item[0])))

    def missing(self) -> dict[str, int]:
        """Unedited images with no known pixel, and (measured unit, sample) effects left out for a missing image."""
        d = (self.inserted - self.ablated)[:, self.measured, 0]
        return {"unedited": int(torch.isnan(self.before[:, 0]).sum()), "effects": int(torch.isnan(d).sum())}

    def to_json(self, agreements: Mapping[str, Mapping[str, Agreement]] | None = None,
                definition: str = "share") -> dict[str, Any]:
        """JSON-able record, as the report reads `causal/<layer>/labels.json`: per unit its label under
        `definition` (a concept or 'none'), effect, adjusted p, mean shares and top 3 concepts, and its label
        under every definition; `agreement` (rule -> record) under `definition`, and `by_definition` the
        distribution, reliability and agreement under each. `agreements`: definition -> rule_agreement."""
        concept, best = self.labels(check_definition(definition))
        effect, mean, p = self.effect(definition), self.estimate.mean, self.adjusted
        ablated, inserted = self.ablated.nanmean(0), self.inserted.nanmean(0)
        names = {name: self.names(name) for name in DEFINITIONS}

        def about(u: int, c: int) -> dict[str, Any]:
            numbers = {"effect": effect, "share_effect": mean, "p": p, "ablated": ablated, "inserted": inserted}
            return {"concept": self.concepts[c], **{k: _number(float(v[u, c])) for k, v in numbers.items()}}

        units = []
        for u, c in enumerate(concept.tolist()):
            top = effect[u].nan_to_num(-math.inf).argsort(descending=True, stable=True)[:3].tolist()
            label = about(u, c) if c != NONE else dict.fromkeys(("share_effect", "p", "ablated", "inserted"))
            units.append({**{k: v for k, v in label.items() if k != "concept"},
                          "unit": u, "measured": u in self.measured, "label": names[definition][u],
                          "effect": _number(float(best[u])), "labels": {n: names[n][u] for n in DEFINITIONS},
                          "top": [about(u, k) for k in top]})
        agreements = agreements or {}
        by_definition = {name: {"distribution": self.distribution(name),
                                "reliability": self.reliability(name).to_json(),
                                **({"agreement": {r: a.to_json() for r, a in agreements[name].items()}}
                                   if name in agreements else {})} for name in DEFINITIONS}
        return {"layer": self.layer, "samples": self.samples, "seed": self.seed, "definition": definition,
                "definitions": DEFINITIONS, "alpha": self.alpha, "insertion_quantile": self.quantile,
                "insertion_values": self.values.tolist(), "measured": self.measured, "missing": self.missing(),
                "before": dict(zip(self.concepts, map(_number, self.before.nanmean(0).tolist()), strict=True)),
                **by_definition[definition], "units": units, "by_definition": by_definition}


@dataclass
class Agreement:
    """How often one rule's labels equal the causal labels: over units with a causal label (`units`), and over
    those of them whose rule label is interpretable (`interpretable_units`); `chance`: the expected number of
    agreeing units when the rule's labels are shuffled across units."""

    rule: str
    units: int
    agree: int
    interpretable_units: int
    interpretable_agree: int
    chance: float = NAN

    @property
    def fraction(self) -> float:
        return self.agree / self.units if self.units else NAN

    @property
    def interpretable_fraction(self) -> float:
        return self.interpretable_agree / self.interpretable_units if self.interpretable_units else NAN

    @property
    def chance_fraction(self) -> float:
        return self.chance / self.units if self.units else NAN

    def to_json(self) -> dict[str, Any]:
        """JSON-able record; a fraction over no units is null."""
        return {"rule": self.rule, "units": self.units, "agree": self.agree, "fraction": _number(self.fraction),
                "chance": _number(self.chance_fraction), "chance_agree": _number(self.chance),
                "interpretable_units": self.interpretable_units, "interpretable_agree": self.interpretable_agree,
                "interpretable_fraction": _number(self.interpretable_fraction)}


def shuffled_agreement(fixed: torch.Tensor, shuffled: torch.Tensor) -> float:
    """The mean, over every permutation of `shuffled` (U,), of the fraction of the units u with fixed[u] != -1
    whose shuffled label equals fixed[u]: sum over those u of (units shuffled labels fixed[u]) / U, over their
    number. NaN when no unit has a fixed label."""
    fixed, shuffled = fixed.long().cpu(), shuffled.long().cpu()
    known = fixed[fixed != NONE]
    if not len(known):
        return NAN
    counts = torch.bincount(shuffled[shuffled >= 0], minlength=int(known.max()) + 1)
    return float(counts[known].sum()) / (len(shuffled) * len(known))


def agreement(rule: str, causal: torch.Tensor, rule_labels: torch.Tensor, interpretable: torch.Tensor) -> Agreement:
    """Agreement of `rule_labels` (U,) with `causal` (U,) labels (-1: none, left out), over all units and over
    units whose rule label is `interpretable` (U,) bool; with the chance level of shuffling `rule_labels`."""
    causal, rule_labels, interpretable = causal.cpu().long(), rule_labels.cpu().long(), interpretable.cpu().bool()
    if not causal.shape == rule_labels.shape == interpretable.shape:
        raise ConfigError(f"causal labels {tuple(causal.shape)}, rule labels {tuple(rule_labels.shape)} and "
                          f"interpretable flags {tuple(interpretable.shape)} must have the same shape (U,)")
    known = causal != NONE
    same = known & (causal == rule_labels)
    chance = shuffled_agreement(causal, rule_labels) * int(known.sum()) if known.any() else 0.0
    return Agreement(rule, int(known.sum()), int(same.sum()), int((known & interpretable).sum()),
                     int((same & interpretable).sum()), chance)


def rule_agreement(result: Dissection, causal: CausalLabels, rules: Sequence[str] | None = None,
                   definition: str = "share") -> dict[str, Agreement]:
    """Agreement of every labelling rule of `result` (or `rules`) at `causal.layer` with the causal labels
    under `definition`."""
    width = check_layer(result, causal.layer)
    if causal.units != width:
        raise ConfigError(f"the causal labels cover {causal.units} units; layer {causal.layer!r} has {width}")
    labels = causal.labels(definition)[0]
    out = {}
    for rule in rules or list(result.layers[causal.layer].rules):
        if rule not in RULES:
            raise ConfigError(f"no labelling rule {rule!r}; rules: {', '.join(RULES)}")
        concept = result.layers[causal.layer].rules[rule].labels()[1].cpu()
        flags = result.interpretable(causal.layer, rule).cpu()[torch.arange(width), concept]
        out[rule] = agreement(rule, labels, concept, flags)
    return out


def agreement_table(agreements: Mapping[str, Mapping[str, Mapping[str, Agreement]]]) -> str:
    """Markdown: per definition (definition -> layer -> rule -> Agreement) a table, one row per rule; per
    layer, and pooled over layers when there are several, the agreement 'fraction (agree/units)', its chance
    level and the agreement over units whose rule label is interpretable."""

    def cell(agree: float, units: int, counts: bool = True) -> str:
        return (f"{agree / units:.2f}" + (f" ({agree}/{units})" if counts else "")) if units else "-"

    blocks = []
    for definition, layers in agreements.items():
        names = list(layers) + (["pooled"] if len(layers) > 1 else [])
        head = ["rule"] + [f"{name} {kind}" for name in names for kind in ("agree", "chance", "interp.")]
        lines = [f"{definition}: {DEFINITIONS.get(definition, '')}", "", "| " + " | ".join(head) + " |",
                 "|" + "---|" * len(head)]
        for rule in dict.fromkeys(r for layer in layers.values() for r in layer):
            found = [layers[layer].get(rule) for layer in layers]
            pool = Agreement(rule, *(sum(getattr(a, key) for a in found if a is not None) for key in
                                     ("units", "agree", "interpretable_units", "interpretable_agree", "chance")))
            row = [rule]
            for a in found + ([pool] if len(layers) > 1 else []):
                row += ["", "", ""] if a is None else [cell(a.agree, a.units), cell(a.chance, a.units, False),
                                                       cell(a.interpretable_agree, a.interpretable_units)]
            lines.append("| " + " | ".join(row) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def summary_table(labels: Mapping[str, CausalLabels]) -> str:
    """Markdown: per layer and definition the split-half reliability with its chance level, and the
    distribution of causal labels ('concept: units', most first)."""
    lines = ["| layer | definition | split-half same (units) | chance | causal labels (units) |",
             "|---|---|---|---|---|"]
    for layer, causal in labels.items():
        for definition in DEFINITIONS:
            r = causal.reliability(definition)
            counts = ", ".join(f"{name}: {count}" for name, count in causal.distribution(definition).items())
            same = f"{r.fraction:.2f} ({r.agree}/{r.units})" if r.units else "- (0/0)"
            chance = f"{r.chance_fraction:.2f}" if r.units else "-"
            lines.append(f"| {layer} | {definition} | {same} | {chance} | {counts} |")
    return "\n".join(lines)


def causal_labels(generator: nn.Module, segmenter: Segmenter, result: Dissection, layer: str,
                  samples: int = 32, seed: int = HELD_OUT_SEED, batch_size: int = 8, group: int = 16,
                  units: Sequence[int] | None = None, quantile: float = QUANTILE, alpha: float = ALPHA,
                  device: str | torch.device = "cpu", collective: Collective | None = None,
                  progress: bool = True) -> CausalLabels:
    """The concept each unit of `layer` causally draws (see the module's docstring), measured on `samples`
    held-out samples of `seed`; `units` limits the measurement (the others get no label). Up to
    group * batch_size images per generator call."""
    width = check_layer(result, layer)
    chosen = list(range(width)) if units is None else check_units(units, width, layer)
    if samples < 2 or batch_size < 1 or group < 1:
        raise ConfigError(f"samples must be at least 2 (a paired test needs two), batch_size and group at least 1; "
                          f"got {samples}, {batch_size}, {group}")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must lie in (0, 1); got {alpha}")
    concepts = list(result.concepts)
    if list(getattr(segmenter, "concepts", [])) != concepts:
        raise ConfigError(f"the segmenter's {len(list(getattr(segmenter, 'concepts', [])))} concepts differ from "
                          f"the run's {len(concepts)}: use the segmenter the run was dissected with")
    values = insertion_values(result, layer, quantile=quantile)
    effects = measure_effects(generator, segmenter, layer, concepts, values, chosen, samples, seed, 0, batch_size,
                              group, None, device, collective, progress)
    before = torch.stack([effects[c].baseline for c in concepts], 1)
    tables = {name: torch.full((samples, width, len(concepts)), NAN, dtype=torch.float64)
              for name in ("ablated", "inserted")}
    for k, concept in enumerate(concepts):
        tables["ablated"][:, chosen, k] = effects[concept].ablated_samples
        tables["inserted"][:, chosen, k] = effects[concept].inserted_samples
    return CausalLabels(layer, concepts, chosen, before, tables["ablated"], tables["inserted"], values, seed,
                        alpha, quantile)
