"""Which units a painter stroke edits, and the evidence that they do what the stroke asks.

A stroke acts only on real effects. Per dissected layer, concept and direction (Remove, Add) the units come
from `causal/<layer>/<concept>/ace.json` of schema 2 (`gandissect causal`): Remove uses its removal ranking,
Add its insertion ranking; the units offered are the ranking's significant units in order (at most `CAP`), and
inserted values are the per-unit `value` the file measured with. A direction is offered only when it has a
significant unit set: an entry of the file's `sets[direction]` (the top n significant units switched together
on held-out samples) that is significant. A file without `sets` (measured with `--set-samples 0`) needs at
least one significant unit, and is marked as not checked on held-out samples.

Everything else is evidence without a significance test, shown but never painted with (source `untested`,
with the command that measures it): an ace.json of another schema (an older gandissect), an optimised set
(units.json; its alphas are not a significance test, so it is ignored), and units labelled with the concept
by IoU under the run's rule.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gandissect.causal.interventions import check_units
from gandissect.core.errors import GandissectError
from gandissect.dissection.results import Dissection
from gandissect.engine.runfiles import RunFiles, Snapshot

CAP = 64
SCHEMA = 2
ACTIONS = {"remove": "removal", "add": "insertion"}
MEASURE = {"removal": "removed", "insertion": "gained"}
VERB = {"remove": "removes", "add": "adds"}
CAUSAL, OLDER, UNREAD, OPTIMISED, IOU = "causal ranking", "older causal ranking", "unread ace.json", "optimised", "IoU"
ORIGINS = (CAUSAL, OLDER, UNREAD, OPTIMISED, IOU)  # where a direction's units come from, as the painter names it


class UnitFileError(GandissectError):
    """An ace.json in the run folder that cannot be read."""


@dataclass(frozen=True)
class UnitChoice:
    """A significant unit of a ranking: its effect in that direction (mean, 95% interval, Holm-adjusted p),
    and for insertion the value inserted when it was measured."""

    unit: int
    score: float
    low: float | None = None
    high: float | None = None
    p_adjusted: float | None = None
    value: float | None = None


@dataclass(frozen=True)
class SetFigure:
    """What the top `strength` significant units did together on held-out samples (ace.json `sets`): removal,
    the fraction of the concept's pixels removed; insertion, the share of the image gained."""

    strength: int
    mean: float | None
    se: float | None
    low: float | None
    high: float | None
    significant: bool
    samples: int
    description: str
    share_before: float | None = None


@dataclass(frozen=True)
class Direction:
    """Remove or Add a concept at a layer: where its units come from (`evidence`, and in short `origins`, each
    one of ORIGINS), and whether it is offered (`reason` None) or why not; `sets` None where the file
    measured no held-out sets."""

    action: str
    source: str
    evidence: str
    units: tuple[UnitChoice, ...] = ()
    significant: int = 0
    sets: tuple[SetFigure, ...] | None = None
    reason: str | None = None
    hint: str | None = None
    origins: tuple[str, ...] = ()

    @property
    def available(self) -> bool:
        return self.reason is None

    @property
    def max_strength(self) -> int:
        return len(self.units)

    def top(self, strength: int) -> list[int]:
        """The first `strength` significant units."""
        return [choice.unit for choice in self.units[:strength]]

    def figure(self, strength: int) -> SetFigure | None:
        """The set measured at the largest strength up to `strength`; None where none was."""
        measured = [s for s in self.sets or () if s.strength <= strength]
        return max(measured, key=lambda s: s.strength) if measured else None

    def best(self) -> SetFigure | None:
        """The significant set (within reach of the strength) with the largest mean effect."""
        chosen = [s for s in self.sets or () if s.significant and s.strength <= self.max_strength
                  and s.mean is not None]
        return max(chosen, key=lambda s: (s.mean, -s.strength)) if chosen else None

    @property
    def default_strength(self) -> int | None:
        """The strength of the best significant set; all significant units where no set was measured."""
        if not self.available:
            return None
        best = self.best()
        return best.strength if best else self.max_strength

    def rank(self) -> tuple[bool, float]:
        """How strongly it is offered: checked on held-out samples first, then by its best set's effect."""
        best = self.best()
        return (best is not None, best.mean if best and best.mean is not None else -math.inf)


@dataclass(frozen=True)
class LayerUnits:
    """A concept at one layer: its Remove and Add directions."""

    layer: str
    remove: Direction
    add: Direction

    def direction(self, action: str) -> Direction:
        return self.remove if action == "remove" else self.add


@dataclass(frozen=True)
class ConceptUnits:
    """A concept with evidence at some layer; `default_layers[action]` is the layer where that direction is
    offered with the largest held-out effect (None where it is offered nowhere)."""

    name: str
    category: str
    layers: dict[str, LayerUnits]
    default_layers: dict[str, str | None]

    @property
    def available(self) -> bool:
        return any(layer is not None for layer in self.default_layers.values())

    @property
    def default_action(self) -> str | None:
        return next((action for action in ACTIONS if self.default_layers[action]), None)

    @property
    def default_layer(self) -> str:
        """The layer of its default direction (Remove first); else the first layer with evidence."""
        action = self.default_action
        chosen = self.default_layers[action] if action else None
        return chosen or next(iter(self.layers))


def _read(files: RunFiles, name: str) -> dict[str, Any]:
    """A JSON object among the run's files (checked against its manifest)."""
    try:
        document = json.loads(files.read(name))
    except ValueError as error:
        raise UnitFileError(f"{files.root / name}: cannot read it ({error})") from None
    if not isinstance(document, dict):
        raise UnitFileError(f"{files.root / name}: expected a JSON object")
    return document


def _number(value: Any) -> float | None:
    """A finite float, or None (JSON has no NaN)."""
    if value is None or isinstance(value, bool):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _figure(entry: dict[str, Any], key: str, significant: list[int]) -> SetFigure:
    strength = int(entry["strength"])
    if [int(u) for u in entry["units"]] != significant[:strength]:
        raise ValueError(f"the {key} set of strength {strength} is not the first {strength} significant units")
    measured = entry[MEASURE[key]]
    return SetFigure(strength, _number(measured["mean"]), _number(measured.get("se")), _number(measured["low"]),
                     _number(measured["high"]), bool(entry["significant"]), int(entry["samples"]),
                     str(entry["description"]), _number(entry.get("share_before")))


def causal_direction(document: dict[str, Any], action: str, width: int, layer: str, concept: str,
                     path: Path) -> Direction:
    """One direction of a schema-2 ace.json: its significant units in ranking order, their held-out sets,
    and whether it is offered."""
    key = ACTIONS[action]
    try:
        rows = {int(row["unit"]): row for row in document["units"]}
        significant = check_units(document["rankings"][key]["significant"], width, layer,
                                  f"significant {key} units of {path}")
        units = []
        for unit in significant[:CAP]:
            effect = rows[unit]["effects"][key]
            value = _number(rows[unit]["value"]) if action == "add" else None
            if action == "add" and value is None:
                raise ValueError(f"unit {unit} has no finite value to insert")
            units.append(UnitChoice(unit, float(effect["mean"]), _number(effect["low"]), _number(effect["high"]),
                                    _number(effect["p_adjusted"]), value))
        sets = document.get("sets")
        figures = None if sets is None else tuple(_figure(e, key, significant) for e in sets.get(key, []))
        samples = int(document["samples"])
    except (KeyError, TypeError, ValueError, AttributeError, GandissectError) as error:
        raise UnitFileError(f"{path}: not an ace.json of gandissect schema {SCHEMA} ({error})") from None
    evidence = f"causal {key} ranking on {samples} held-out samples"
    direction = Direction(action, "causal", evidence, tuple(units), len(significant), figures, origins=(CAUSAL,))
    if not units:
        reason = f"no unit of {layer} {VERB[action]} {concept} significantly ({samples} held-out samples)"
    elif figures is not None and direction.best() is None:
        reason = (f"the significant units of {layer} do not {action} {concept} significantly together on "
                  f"held-out samples (no significant set)")
    else:
        return direction
    return Direction(action, "causal", evidence, tuple(units), len(significant), figures, reason, origins=(CAUSAL,))


def labelled(result: Dissection, layer: str, concept: str) -> bool:
    """Whether some unit of `layer` is labelled with `concept` under the run's labelling rule."""
    outcome = result.layers[layer].rules[result.label_rule()]
    return bool((outcome.labels()[1] == result.concepts.index(concept)).any())


def untested_evidence(files: RunFiles, folder: str, result: Dissection, layer: str,
                      concept: str) -> list[tuple[str, str]]:
    """What suggests units for `concept` at `layer` (the run's causal `folder` for them) without a
    significance test: (origin, what it is)."""
    found = []
    present = files.names(folder)
    if f"{folder}/ace.json" in present:
        schema = _read(files, f"{folder}/ace.json").get("schema")
        found.append((OLDER, "an ace.json of an older gandissect, without significance tests") if schema is None
                     else (UNREAD, f"an ace.json of schema {schema}, which this painter does not read"))
    if f"{folder}/units.json" in present:
        found.append((OPTIMISED, "an optimised unit set (units.json), not tested for significance"))
    if labelled(result, layer, concept):
        found.append((IOU, f"units labelled {concept} by IoU"))
    return found


def layer_units(files: RunFiles, result: Dissection, layer: str, concept: str) -> LayerUnits | None:
    """The concept's two directions at `layer`; None where there is no evidence there at all."""
    folder = f"causal/{layer}/{concept}"
    ace = f"{folder}/ace.json"
    if ace in files.names(folder):
        document = _read(files, ace)
        if document.get("schema") == SCHEMA:
            width = int(result.layers[layer].shape[0])
            return LayerUnits(layer, *(causal_direction(document, action, width, layer, concept,
                                                        files.root / ace) for action in ACTIONS))
    evidence = untested_evidence(files, folder, result, layer, concept)
    if not evidence:
        return None
    hint = f"gandissect causal {files.root.resolve().name} --layer {layer} --concept {concept}"
    reason = f"no causal ranking measured at {layer}"
    origins = tuple(origin for origin, _ in evidence)
    return LayerUnits(layer, *(Direction(action, "untested", "; ".join(text for _, text in evidence), reason=reason,
                                         hint=hint, origins=origins) for action in ACTIONS))


def _default_layer(layers: dict[str, LayerUnits], action: str) -> str | None:
    offered = [entry for entry in layers.values() if entry.direction(action).available]
    return max(offered, key=lambda entry: entry.direction(action).rank()).layer if offered else None


def concept_units(run: str | Path | RunFiles, result: Dissection) -> dict[str, ConceptUnits]:
    """Every concept with evidence at some layer, grouped by category (in the segmenter's order of categories),
    offered concepts first within a category, else in the segmenter's order. Read from the run's checked
    files (`run` a run folder, or its files already open)."""
    if isinstance(run, (str, Path)):
        with Snapshot(run) as files:
            return concept_units(files, result)
    concepts = []
    for index, name in enumerate(result.concepts):
        layers = {}
        for layer in result.layers:
            entry = layer_units(run, result, layer, name)
            if entry is not None:
                layers[layer] = entry
        if layers:
            defaults = {action: _default_layer(layers, action) for action in ACTIONS}
            concepts.append((index, ConceptUnits(name, result.categories[index], layers, defaults)))
    categories = list(dict.fromkeys(result.categories))
    concepts.sort(key=lambda item: (categories.index(item[1].category), not item[1].available, item[0]))
    return {concept.name: concept for _, concept in concepts}


@dataclass(frozen=True)
class Tool:
    """The painter's opening brush: a concept, direction, layer and strength."""

    concept: str
    action: str
    layer: str
    strength: int


VISIBLE = 0.02


def _visible(direction: Direction) -> bool:
    """Whether the concept covers at least VISIBLE of the image on the held-out samples (unknown: yes)."""
    best = direction.best()
    return best is None or best.share_before is None or best.share_before >= VISIBLE


def default_tool(concepts: dict[str, ConceptUnits], preferred: str = "object") -> Tool | None:
    """The offered direction with the largest held-out effect: Remove before Add, sets checked on held-out
    samples before unchecked ones, concepts of the `preferred` category first, then concepts that cover at
    least VISIBLE of the image (a sun of a few pixels removed shows little); None where nothing is offered."""
    best: tuple[tuple[Any, ...], Tool] | None = None
    for concept in concepts.values():
        for action in ACTIONS:
            layer = concept.default_layers[action]
            if layer is None:
                continue
            direction = concept.layers[layer].direction(action)
            checked, effect = direction.rank()
            key = (action == "remove", checked, concept.category == preferred, _visible(direction), effect)
            if best is None or key > best[0]:
                best = (key, Tool(concept.name, action, layer, direction.default_strength or 1))
    return best[1] if best else None
