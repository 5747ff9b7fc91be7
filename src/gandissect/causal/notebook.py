"""`effects`: what `gandissect causal` measures, for a notebook: every unit of a layer switched off and on
alone, per concept, with intervals, significance and the sample count chosen as the command chooses it.

    import gandissect
    found = gandissect.causal.effects(generator, segmenter, dissection, "layer4", ["tree"])
    found.table("removal")      # a DataFrame (pandas) or a Table: rank, unit, effect, interval, p, marks
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gandissect.causal.ace import DIRECTIONS, HELD_OUT_SEED, UnitEffects, measure_effects
from gandissect.causal.evidence import Ranking, Stopping, rank, settle_effects
from gandissect.causal.interventions import check_layer, insertion_values
from gandissect.core.errors import ConfigError
from gandissect.core.segmenters import Segmenter
from gandissect.core.tables import table
from gandissect.dissection.results import Dissection


def seen_concepts(result: Dissection) -> list[str]:
    """The concepts that appeared in the dissection's IoU samples (what 'all' measures)."""
    seen = result.statistics[f"condmean/{result.config.layers[0]}"].coverage > 0
    return [c for c, present in zip(result.concepts, seen.tolist(), strict=True) if present]


@dataclass
class CausalEffects:
    """Per concept, every unit's effects at one layer, and how the sample count was chosen."""

    layer: str
    effects: dict[str, UnitEffects]
    stopping: Stopping

    def ranking(self, concept: str, direction: str = "removal") -> Ranking:
        if concept not in self.effects:
            raise ConfigError(f"no effects measured for {concept!r}; measured: {', '.join(self.effects)}")
        if direction not in DIRECTIONS:
            raise ConfigError(f"direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}")
        return rank(self.effects[concept], direction)

    def rows(self, direction: str = "removal", top: int | None = None) -> list[dict[str, Any]]:
        """Per concept its units in ranking order (the first `top`): effect, 95% interval, Holm-adjusted p,
        whether significant and whether separated from the next unit."""
        rows = []
        for concept, found in self.effects.items():
            ranking = self.ranking(concept, direction)
            for k, unit in enumerate(ranking.order[:top]):
                record = ranking.row(unit, found.units)
                rows.append({"concept": concept, "rank": k + 1, "unit": unit, "effect": record["mean"],
                             "low": record["low"], "high": record["high"], "p_adjusted": record["p_adjusted"],
                             "significant": record["significant"],
                             "separated": k < len(ranking.separated) and ranking.separated[k]})
        return rows

    def table(self, direction: str = "removal", top: int | None = None) -> Any:
        """`rows` as a DataFrame (pandas installed) or a `core.tables.Table`."""
        return table(self.rows(direction, top))

    def _repr_html_(self) -> str:
        summary = f"<p>{self.layer}: {self.stopping.summary()}; top 5 units by removal</p>"
        return summary + table(self.rows("removal", 5), pandas=False)._repr_html_()


def effects(generator: nn.Module, segmenter: Segmenter, dissection: Dissection, layer: str,
            concepts: str | Sequence[str] = "all", samples: int | str = "auto", max_samples: int = 200, top: int = 3,
            quantile: float = 0.99, seed: int = HELD_OUT_SEED, batch_size: int = 8,
            device: str | torch.device = "cpu", progress: bool = True) -> CausalEffects:
    """Measure every unit of `layer` on `concepts` (names, or "all" seen in the dissection), inserting each
    unit's `quantile` of activations; `samples="auto"` doubles the samples from 32 until the top `top` of
    every ranking are separated or stable, or `max_samples` are used (as `gandissect causal` does)."""
    check_layer(dissection, layer)
    names = seen_concepts(dissection) if concepts == "all" else [concepts] if isinstance(concepts, str) \
        else list(concepts)
    unknown = [c for c in names if c not in dissection.concepts]
    if unknown or not names:
        raise ConfigError(f"unknown concepts {unknown or 'none given'}; the run's: {', '.join(dissection.concepts)}")
    values = insertion_values(dissection, layer, quantile=quantile)

    def measure(first: int, count: int) -> dict[str, UnitEffects]:
        return measure_effects(generator, segmenter, layer, names, values, samples=count, seed=seed, first=first,
                               batch_size=batch_size, device=device, progress=progress)

    adaptive = samples == "auto"
    if not adaptive and (isinstance(samples, str) or samples < 2):
        raise ConfigError(f"samples must be 'auto' or at least 2; got {samples!r}")
    budget = max_samples if adaptive else int(samples)
    found, stopping = settle_effects(measure, budget, top, adaptive=adaptive)
    return CausalEffects(layer, found, stopping)
