"""The painter's HTTP models. Request models are built per run, so that the OpenAPI schema states the run's
exact limits: one stroke model per offered concept, direction and layer (its strength at most its significant
units), the eraser, point coordinates within the image, the radius, seed and counts within the painter's
`Limits`. A request that fits the schema is one the painter carries out; answers have exactly their keys."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, create_model

from gandissect.viz.painter.engine import Painter
from gandissect.viz.painter.units import ORIGINS, Direction


class Error(BaseModel):
    """Every 4xx answer: one clear sentence."""

    detail: str


class Info(BaseModel):
    model: str
    run: str = Field(description="the run folder's name (never a path)")
    image_size: Annotated[list[int], Field(min_length=2, max_length=2, description="[H, W]")]
    layers: list[str]
    max_seed: int
    max_strokes: int
    max_points: int
    max_radius: float
    report: str | None = Field(description="where the run's report is served, or null when it has none")


class Strict(BaseModel):
    """An answer with exactly these keys."""

    model_config = ConfigDict(extra="forbid")


class UnitEntry(Strict):
    unit: Annotated[int, Field(ge=0)]
    score: float = Field(description="the unit's mean effect in this direction (a share of pixels)")
    low: float | None = Field(description="95% interval of the effect")
    high: float | None
    p_adjusted: float | None = Field(description="Holm-adjusted p-value over the layer's units")
    value: float | None = Field(description="Add: the value inserted (as measured); Remove: null")


class SetEntry(Strict):
    strength: Annotated[int, Field(ge=1)] = Field(description="the first `strength` significant units, together")
    mean: float | None = Field(description="Remove: fraction of the concept's pixels removed; Add: share of the "
                                           "image gained")
    se: float | None
    low: float | None
    high: float | None
    significant: bool
    samples: Annotated[int, Field(ge=0)] = Field(description="held-out samples measured")
    description: str
    share_before: float | None = Field(description="the concept's share of the unedited held-out images")


class DirectionEntry(Strict):
    source: Literal["causal", "untested"]
    available: bool = Field(description="offered: it has a significant unit set")
    evidence: str = Field(description="where its units come from")
    significant: Annotated[int, Field(ge=0)] = Field(description="significant units of the ranking")
    max_strength: Annotated[int, Field(ge=0)] = Field(description="units offered (significant, capped)")
    default_strength: Annotated[int, Field(ge=1)] | None
    checked: bool = Field(description="whether unit sets were measured on held-out samples")
    units: list[UnitEntry]
    sets: list[SetEntry]
    reason: str | None = Field(description="why it is not offered")
    hint: str | None = Field(description="the command that measures it, for untested ones")
    origins: list[str] = Field(description="where its units come from, in short: " + ", ".join(ORIGINS))


class LayerEntry(Strict):
    layer: str
    remove: DirectionEntry
    add: DirectionEntry


class DefaultLayers(Strict):
    remove: str | None
    add: str | None


class ConceptEntry(Strict):
    name: str
    category: str
    available: bool = Field(description="some direction is offered at some layer")
    default_layer: str
    default_layers: DefaultLayers = Field(description="per direction, the layer with its largest held-out effect")
    layers: Annotated[list[LayerEntry], Field(min_length=1)]


class DefaultTool(Strict):
    concept: str
    action: Literal["add", "remove"]
    layer: str
    strength: Annotated[int, Field(ge=1)]


class Concepts(Strict):
    default: DefaultTool | None = Field(description="the brush the painter opens with")
    concepts: list[ConceptEntry] = Field(description="by category; offered concepts first within a category")


class ConceptPixels(BaseModel):
    before: dict[str, Annotated[float, Field(ge=0, le=1)]]
    after: dict[str, Annotated[float, Field(ge=0, le=1)]]


@dataclass(frozen=True)
class RequestModels:
    """The run's request models: the strokes (one model per concept, and the eraser), and the body of
    /api/edit and /api/concept-pixels."""

    strokes: list[type[BaseModel]]
    edit: type[BaseModel]


def _json_integer(value: Any) -> Any:
    """A JSON integer (14 or 14.0, as JSON Schema has it); true, false and strings are type errors."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected an integer, not true, false or a string")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(_json_integer)]


def _enum(names: list[str]) -> Any:
    return Literal[tuple(names)] if names else str  # type: ignore[valid-type]


def _shared(painter: Painter) -> dict[str, Any]:
    """The fields every stroke has but strength: alpha, points and radius, bounded by the run's limits."""
    limits, (height, width) = painter.limits, painter.image_size
    point = tuple[Annotated[float, Field(ge=0, le=width, allow_inf_nan=False, strict=True)],
                  Annotated[float, Field(ge=0, le=height, allow_inf_nan=False, strict=True)]]
    return {  # strict numbers: true and "0.5" are type errors, not 1 and 0.5
        "alpha": (float, Field(1.0, gt=0, le=1, allow_inf_nan=False, strict=True,
                               description="strength of the edit (of an eraser: how much it takes back)")),
        "points": (list[point], Field(min_length=1, max_length=limits.max_points,
                                      description="the polyline's points [x, y] in image pixels")),
        "radius": (float, Field(gt=0, le=limits.max_radius, allow_inf_nan=False, strict=True,
                                description="in image pixels")),
    }


def _model_name(index: int, action: str, concept: str, layer: str) -> str:
    return "_".join(["Stroke", str(index), action, *(re.sub(r"[^A-Za-z0-9]+", "_", s) for s in (concept, layer))])


def stroke_tag(action: str, concept: str, layer: str) -> str:
    return f"{action} {concept} at {layer}"


def stroke_models(painter: Painter) -> list[tuple[str, type[BaseModel]]]:
    """(tag, model) per stroke kind: the eraser, then one per offered concept, direction and layer, whose
    strength may only be 1..its significant units (and whose layer may be left out at its default layer). So
    a request that fits the schema is one the painter carries out."""
    strict = ConfigDict(extra="forbid")
    shared = _shared(painter)
    eraser = create_model(
        "EraseStroke", __config__=strict, __doc__="Take back earlier strokes' edits inside the region.",
        action=(Literal["erase"], ...),
        concept=(_enum(list(painter.concepts)) | None, Field(None, description="ignored")),
        layer=(_enum(list(painter.layers)) | None, Field(None, description="ignored")),
        strength=(JsonInt | None, Field(None, description="ignored")), **shared)
    models: list[tuple[str, type[BaseModel]]] = [("erase", eraser)]
    for name, concept in painter.concepts.items():
        for action in ("remove", "add"):
            for layer, entry in concept.layers.items():
                direction = entry.direction(action)
                if not direction.available:
                    continue
                default = concept.default_layers[action] == layer
                layer_type: Any = Literal[layer] | None if default else Literal[layer]  # type: ignore[valid-type]
                verb = "remove (ablate)" if action == "remove" else "add (insert)"
                models.append((stroke_tag(action, name, layer), create_model(
                    _model_name(len(models), action, name, layer), __config__=strict,
                    __doc__=f"{verb} {name} at {layer} inside the region ({direction.evidence}).",
                    action=(Literal[action], ...),  # type: ignore[valid-type]
                    concept=(Literal[name], ...),  # type: ignore[valid-type]
                    layer=(layer_type, Field(None, description=f"{layer}, its default layer") if default else ...),
                    strength=(JsonInt, Field(direction.default_strength, ge=1, le=direction.max_strength,
                                         description="how many of its significant units, in ranking order")),
                    **shared)))
    return models


def _tagger(painter: Painter) -> Any:
    """Which stroke model a JSON stroke is checked against: the eraser, or its concept, direction and layer's
    (its direction's default layer when it names none)."""

    def tag(value: Any) -> str | None:
        if not isinstance(value, dict):
            return None
        action, concept, layer = value.get("action"), value.get("concept"), value.get("layer")
        if action == "erase":
            return "erase"
        if not isinstance(concept, str) or concept not in painter.concepts or action not in ("add", "remove"):
            return None
        layer = layer if layer is not None else painter.concepts[concept].default_layers[action]
        return stroke_tag(action, concept, layer) if isinstance(layer, str) else None

    return tag


def request_models(painter: Painter) -> RequestModels:
    """The run's stroke models and the EditRequest model: seed and strokes within the painter's limits."""
    models = stroke_models(painter)
    offered = ", ".join(tag for tag, _ in models[1:]) or "none"
    stroke: Any = models[0][1]  # a run with nothing offered: only the eraser
    if len(models) > 1:
        stroke = Annotated[
            Union[tuple(Annotated[model, Tag(tag)] for tag, model in models)],  # type: ignore[valid-type]  # noqa: UP007
            Discriminator(_tagger(painter), custom_error_type="stroke",
                          custom_error_message=f"a stroke is an object with an action add, remove or erase; add "
                                               f"and remove need a concept and layer with a significant unit set: "
                                               f"{offered}")]
    edit = create_model(
        "EditRequest", __config__=ConfigDict(extra="forbid"),
        seed=(JsonInt, Field(ge=0, le=painter.limits.max_seed,
                         description="the image: sample 0 of this sample set")),
        strokes=(list[stroke], Field(max_length=painter.limits.max_strokes, description="applied in order")),
    )
    return RequestModels([model for _, model in models], edit)


def _direction(direction: Direction) -> dict[str, Any]:
    return {"source": direction.source, "available": direction.available, "evidence": direction.evidence,
            "significant": direction.significant, "max_strength": direction.max_strength,
            "default_strength": direction.default_strength, "checked": direction.sets is not None,
            "units": [asdict(choice) for choice in direction.units],
            "sets": [asdict(figure) for figure in direction.sets or ()],
            "reason": direction.reason, "hint": direction.hint, "origins": list(direction.origins)}


def concepts_document(painter: Painter) -> dict[str, Any]:
    """The /api/concepts answer: the opening brush, and per concept, layer and direction its units, their
    source and held-out figures, or why it is not offered."""
    tool = painter.default
    return {"default": asdict(tool) if tool else None, "concepts": [
        {"name": concept.name, "category": concept.category, "available": concept.available,
         "default_layer": concept.default_layer, "default_layers": dict(concept.default_layers),
         "layers": [{"layer": entry.layer, "remove": _direction(entry.remove), "add": _direction(entry.add)}
                    for entry in concept.layers.values()]}
        for concept in painter.concepts.values()]}
