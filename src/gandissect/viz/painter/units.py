"""Which units a painter stroke edits: each concept's units per dissected layer, from the best source there.

Sources, best first (per layer and concept):
- `alpha`: an optimised unit set, `causal/<layer>/<concept>/units.json` (`gandissect causal --optimize`): the
  set's units (alpha above its cutoff) in its ranking order; score and alpha are the unit's fitted alpha.
- `ace`: `causal/<layer>/<concept>/ace.json` (`gandissect causal`): units with a positive average causal
  effect, highest first; the score is the ACE.
- `iou`: the dissection itself, when at least one unit of the layer is labelled with the concept under the
  run's labelling rule: the units whose IoU with the concept (under that rule) is above zero, highest first;
  the score is the IoU. (Not only the labelled units, so that a stroke's strength has a useful range.)

Lists are capped at `CAP` units. A concept is offered only where it has units; its default layer is the one
with the best source, ties broken by the highest top score.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gandissect.causal.interventions import check_units
from gandissect.causal.optimize import CUTOFF
from gandissect.causal.outputs import causal_folder
from gandissect.core.errors import GandissectError
from gandissect.dissection.results import Dissection

CAP = 64
SOURCES = ("alpha", "ace", "iou")


class UnitFileError(GandissectError):
    """A units.json or ace.json in the run folder that cannot be read."""


@dataclass(frozen=True)
class UnitChoice:
    """One unit of a concept's list: its score under the source, and its optimised alpha (alpha source)."""

    unit: int
    score: float
    alpha: float | None = None


@dataclass(frozen=True)
class LayerUnits:
    """A concept's units at one layer, best first, and where the ranking came from."""

    layer: str
    source: str
    units: tuple[UnitChoice, ...]

    @property
    def max_strength(self) -> int:
        return len(self.units)

    def top(self, strength: int) -> list[int]:
        """The best `strength` units (all of them when `strength` exceeds the list)."""
        return [choice.unit for choice in self.units[:strength]]


@dataclass(frozen=True)
class ConceptUnits:
    """A concept that has units in at least one layer."""

    name: str
    category: str
    layers: dict[str, LayerUnits]
    default_layer: str


def _read(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UnitFileError(f"{path}: cannot read it ({error})") from None
    if not isinstance(document, dict):
        raise UnitFileError(f"{path}: expected a JSON object")
    return document


def alpha_units(path: Path, width: int, layer: str) -> tuple[UnitChoice, ...]:
    """The optimised set in units.json: units with alpha above the cutoff, in the file's ranking order."""
    document = _read(path)
    try:
        alpha = [float(a) for a in document["alpha"]]
        ranking = check_units(document["ranking"], width, layer, f"ranking of {path}")
        cutoff = float(document.get("cutoff", CUTOFF))
    except (KeyError, TypeError, ValueError, GandissectError) as error:
        raise UnitFileError(f"{path}: not a units.json of gandissect ({error})") from None
    if len(alpha) != width:
        raise UnitFileError(f"{path}: holds {len(alpha)} alphas, but layer {layer!r} has {width} units")
    chosen = [u for u in ranking if math.isfinite(alpha[u]) and alpha[u] > cutoff][:CAP]
    return tuple(UnitChoice(u, alpha[u], alpha[u]) for u in chosen)


def ace_units(path: Path, width: int, layer: str) -> tuple[UnitChoice, ...]:
    """Units of ace.json with a positive ACE, highest first (ties by unit number)."""
    document = _read(path)
    try:
        rows = [(int(row["unit"]), float(row["ace"])) for row in document["units"]]
        check_units([unit for unit, _ in rows], width, layer, f"units of {path}")
    except (KeyError, TypeError, ValueError, GandissectError) as error:
        raise UnitFileError(f"{path}: not an ace.json of gandissect ({error})") from None
    rows = sorted(((u, a) for u, a in rows if math.isfinite(a) and a > 0), key=lambda row: (-row[1], row[0]))
    return tuple(UnitChoice(u, a) for u, a in rows[:CAP])


def iou_units(result: Dissection, layer: str, concept: int) -> tuple[UnitChoice, ...]:
    """When some unit is labelled with `concept` under the run's rule: units with IoU above zero, highest first."""
    outcome = result.layers[layer].rules[result.label_rule()]
    if not bool((outcome.labels()[1] == concept).any()):
        return ()
    iou = outcome.iou[:, concept].double()
    order = iou.argsort(descending=True, stable=True).tolist()
    return tuple(UnitChoice(u, float(iou[u])) for u in order if float(iou[u]) > 0)[:CAP]


def layer_units(run: Path, result: Dissection, layer: str, concept: str) -> LayerUnits | None:
    """The concept's units at `layer` from its best source; None when no source gives any."""
    width = int(result.layers[layer].shape[0])
    folder = causal_folder(run, layer, concept)
    for source, path in (("alpha", folder / "units.json"), ("ace", folder / "ace.json")):
        if path.is_file():
            units = alpha_units(path, width, layer) if source == "alpha" else ace_units(path, width, layer)
            if units:
                return LayerUnits(layer, source, units)
    units = iou_units(result, layer, result.concepts.index(concept))
    return LayerUnits(layer, "iou", units) if units else None


def _rank(entry: LayerUnits) -> tuple[int, float]:
    return SOURCES.index(entry.source), -entry.units[0].score


def concept_units(run: str | Path, result: Dissection) -> dict[str, ConceptUnits]:
    """Every concept of the run that has units somewhere, in the segmenter's order."""
    concepts = {}
    for index, name in enumerate(result.concepts):
        layers = {}
        for layer in result.layers:
            entry = layer_units(Path(run), result, layer, name)
            if entry is not None:
                layers[layer] = entry
        if layers:
            best = min(layers.values(), key=_rank).layer
            concepts[name] = ConceptUnits(name, result.categories[index], layers, best)
    return concepts
