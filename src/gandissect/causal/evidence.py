"""How far to trust a ranking of units by causal effect: significance, separation, and enough samples.

For one concept and one direction (removal, insertion or ace; see `ace`), every unit's mean effect has a
95% interval from per-sample paired differences. A unit is *significant* when its effect is positive and
its p-value, adjusted by Holm's method over every unit of the layer (the family-wise error rate stays at
`ALPHA` whatever the layer's width), is below `ALPHA`. A ranked unit is *separated* from the next when the
paired difference of their effects (same samples) has an interval that excludes 0, Holm-adjusted over the
adjacent pairs shown.

`settle_effects` measures in rounds (32 samples, then doubling) until, for every concept and direction
asked, the top `top` units are settled or a sample budget is spent, and records which:
- `separated`: the top-`top` unit's effect is distinguishable from the next one's (paired test, 5%);
- `stable`: at least `STABLE` of 200 bootstrap resamples of the samples give the same top-`top` set;
- `budget`: neither held when the budget ran out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from gandissect.causal.ace import DIRECTIONS, UnitEffects
from gandissect.core.errors import ConfigError
from gandissect.core.inference import Estimate, adjacent_separation, holm, top_set_stability

ALPHA = 0.05
CORRECTION = "holm"
STABLE = 0.9
SEPARATION_SHOWN = 10
FIRST_ROUND = 32


@dataclass
class Ranking:
    """One concept's units ranked by their effect in one direction, with the evidence for each."""

    direction: str
    order: list[int]
    estimate: Estimate
    adjusted_p: torch.Tensor
    significant: list[int]
    separation: Estimate
    separated: list[bool]

    def row(self, unit: int, units: Sequence[int]) -> dict[str, Any]:
        """A JSON-able record of one unit's effect in this direction."""
        i = list(units).index(unit)
        e = self.estimate
        return {"mean": _num(e.mean[i]), "se": _num(e.se[i]), "low": _num(e.low[i]), "high": _num(e.high[i]),
                "p": _num(e.p[i]), "p_adjusted": _num(self.adjusted_p[i]), "significant": unit in self.significant,
                "rank": self.order.index(unit) + 1}


def _num(value: torch.Tensor | float) -> float | None:
    number = float(value)
    return None if number != number else number


def rank(effects: UnitEffects, direction: str, alpha: float = ALPHA) -> Ranking:
    """The ranking of `effects.units` in `direction` with significance and adjacent separation."""
    if direction not in DIRECTIONS:
        raise ConfigError(f"direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}")
    estimate = effects.estimate(direction)
    adjusted = holm(estimate.p)
    order = effects.ranking(direction)
    position = {u: i for i, u in enumerate(effects.units)}
    significant = [u for u in order
                   if float(adjusted[position[u]]) < alpha and float(estimate.mean[position[u]]) > 0]
    shown = order[:SEPARATION_SHOWN + 1]
    separation = adjacent_separation(effects.per_sample(direction), [position[u] for u in shown])
    separated = (holm(separation.p) < alpha) & (separation.low > 0) if len(shown) > 1 else torch.zeros(0)
    return Ranking(direction, order, estimate, adjusted, significant, separation, [bool(s) for s in separated])


def settled(effects: UnitEffects, direction: str, top: int) -> str | None:
    """'separated' or 'stable' when the top `top` units of the ranking are settled (see the module), else None."""
    per_sample = effects.per_sample(direction)
    if top >= per_sample.shape[1]:
        return "separated"
    order = [effects.units.index(u) for u in effects.ranking(direction)]
    pair = adjacent_separation(per_sample, order[top - 1:top + 1])
    if float(pair.low[0]) > 0:
        return "separated"
    stability, _ = top_set_stability(per_sample, top)
    return "stable" if stability >= STABLE else None


@dataclass
class Stopping:
    """How the sample count was chosen: fixed, or rounds until settled; per concept and direction, the reason
    ('separated', 'stable', 'budget', or 'fixed') and the samples after each round."""

    rule: str
    top: int
    budget: int
    reasons: dict[str, dict[str, str]] = field(default_factory=dict)
    rounds: list[int] = field(default_factory=list)

    def to_json(self, concept: str) -> dict[str, Any]:
        return {"rule": self.rule, "top": self.top, "budget": self.budget, "rounds": self.rounds,
                "reasons": self.reasons.get(concept, {})}

    def summary(self) -> str:
        """One line: how many (concept, direction) rankings settled, and how."""
        counts: dict[str, int] = {}
        for reasons in self.reasons.values():
            for reason in reasons.values():
                counts[reason] = counts.get(reason, 0) + 1
        words = {"separated": "settled (top separated from the next)", "stable": "settled (top stable under "
                 "resampling)", "budget": "not settled when the budget ran out", "fixed": "fixed sample count"}
        parts = "; ".join(f"{words.get(reason, reason)}: {count}" for reason, count in sorted(counts.items()))
        return f"{self.rounds[-1] if self.rounds else 0} samples ({self.rule}); rankings by concept and direction: " \
               f"{parts}"


Measure = Callable[[int, int], dict[str, UnitEffects]]


def settle_effects(measure: Measure, budget: int, top: int = 3, directions: Sequence[str] = ("removal", "insertion"),
                   first_round: int = FIRST_ROUND, adaptive: bool = True,
                   report: Callable[[str], None] | None = None) -> tuple[dict[str, UnitEffects], Stopping]:
    """Call `measure(first, samples)` on rounds of samples (first_round, then doubling the total) until every
    concept's top `top` units are settled in every direction, or `budget` samples are used; with
    adaptive=False, one round of `budget` samples."""
    if budget < 2:
        raise ConfigError(f"the sample budget must be at least 2 (intervals need two samples); got {budget}")
    if top < 1:
        raise ConfigError(f"--top must be at least 1; got {top}")
    stopping = Stopping("auto" if adaptive else "fixed", top, budget)
    total, effects = 0, {}
    size = min(first_round, budget) if adaptive else budget
    while True:
        more = measure(total, size)
        effects = more if not effects else {c: effects[c].extend(more[c]) for c in effects}
        total += size
        stopping.rounds.append(total)
        pending = {}
        for concept, e in effects.items():
            for direction in directions:
                reason = settled(e, direction, top) if adaptive else "fixed"
                stopping.reasons.setdefault(concept, {})[direction] = reason or "budget"
                if reason is None:
                    pending.setdefault(concept, []).append(direction)
        if not pending or total >= budget:
            break
        if report is not None:
            waiting = ", ".join(f"{c} ({'/'.join(d)})" for c, d in list(pending.items())[:6])
            report(f"{total} samples: not settled yet: {waiting}{' ...' if len(pending) > 6 else ''}")
        size = min(total, budget - total)
    return effects, stopping
