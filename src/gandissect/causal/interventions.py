"""Interventions on the units of a dissected layer: which values to insert, and the edits that do it.

Insertion values come from a finished dissection (`Dissection.load`): by default each unit's mean activation
where the concept is, weighted by how much of each feature cell the concept covers (the value the paper's
ACE uses); or a chosen quantile of the unit's upsampled activations (the painting demos used the 99th).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gandissect.core.edits import UnitEdit
from gandissect.core.errors import ConfigError
from gandissect.core.stats import ConditionalMean, UnitQuantiles
from gandissect.dissection.results import Dissection

MODES = ("ablate", "insert")


def check_layer(result: Dissection, layer: str) -> int:
    """The layer's number of units; a one-line error listing the dissected layers otherwise."""
    if layer not in result.layers:
        raise ConfigError(f"layer {layer!r} was not dissected in this run; its layers: {', '.join(result.layers)}")
    return int(result.layers[layer].shape[0])


def concept_index(result: Dissection, concept: str) -> int:
    """The index of `concept`; a one-line error listing the segmenter's concepts otherwise."""
    if concept not in result.concepts:
        raise ConfigError(f"the segmenter knows no concept {concept!r}; its concepts: {', '.join(result.concepts)}")
    return result.concepts.index(concept)


def check_units(units: Sequence[int], width: int, layer: str, what: str = "units") -> list[int]:
    """Unit indices (of a unit set, a ranking: `what`), refused in one line if out of range or repeated."""
    units = [int(u) for u in units]
    bad = [u for u in units if not 0 <= u < width]
    if bad:
        raise ConfigError(f"the {what} {bad[:10]} are out of range: layer {layer!r} has units 0..{width - 1}")
    if len(set(units)) != len(units):
        raise ConfigError(f"the {what} {units} name a unit more than once")
    return units


def insertion_values(result: Dissection, layer: str, concept: str | None = None,
                     quantile: float | None = None) -> torch.Tensor:
    """(U,) float32 values to insert: the unit's mean activation where `concept` is (coverage-weighted), or
    its `quantile` (e.g. 0.99) of upsampled activations on the threshold set."""
    check_layer(result, layer)
    if quantile is not None:
        if not 0 < quantile < 1:
            raise ConfigError(f"--quantile must lie in (0, 1); got {quantile}")
        histogram = result.statistics[f"quantiles/{layer}"]
        assert isinstance(histogram, UnitQuantiles)
        return histogram.quantiles([quantile])[:, 0].float()
    if concept is None:
        raise ConfigError("give a concept (its mean activation where the concept is) or a quantile to insert")
    means = result.statistics[f"condmean/{layer}"]
    assert isinstance(means, ConditionalMean)
    values = means.mean()[:, concept_index(result, concept)]
    if torch.isnan(values).any():
        raise ConfigError(f"{concept!r} never appeared in the run's IoU samples: insert a --quantile instead")
    return values.float()


def unit_edit(mode: str, units: Sequence[int], values: torch.Tensor | None = None,
              alpha: float | torch.Tensor = 1.0, region: torch.Tensor | None = None) -> UnitEdit:
    """An ablation (write 0) or insertion (write each unit's value) of `units`, with strength alpha, in a
    region (any resolution; None for everywhere)."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if mode == "ablate":
        return UnitEdit.ablate(list(units), region=region, alpha=alpha)
    if values is None:
        raise ConfigError("insertion needs a value per unit")
    return UnitEdit.insert(list(units), values[list(units)], region=region, alpha=alpha)
