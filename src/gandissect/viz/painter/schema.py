"""The painter's HTTP models. Request models are built per run, so that the OpenAPI schema states the run's
exact limits: one stroke model per concept (its name, and the layers where it has units), the eraser, point
coordinates within the image, the radius, seed and counts within the painter's `Limits`. A request that fits
the schema is one the painter carries out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, create_model

from gandissect.viz.painter.engine import Painter

DEFAULT_STRENGTH = 10
MAX_STRENGTH = 1_000_000
"""A stroke's strength is capped at its concept's list; this bound only keeps the schema finite."""


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


class UnitEntry(BaseModel):
    unit: Annotated[int, Field(ge=0)]
    score: float
    alpha: float | None


class LayerEntry(BaseModel):
    layer: str
    source: Literal["alpha", "ace", "iou"]
    units: list[UnitEntry]
    max_strength: Annotated[int, Field(ge=1)]


class ConceptEntry(BaseModel):
    name: str
    category: str
    default_layer: str
    layers: Annotated[list[LayerEntry], Field(min_length=1)]


class Concepts(BaseModel):
    concepts: list[ConceptEntry]


class ConceptPixels(BaseModel):
    before: dict[str, Annotated[float, Field(ge=0, le=1)]]
    after: dict[str, Annotated[float, Field(ge=0, le=1)]]


@dataclass(frozen=True)
class RequestModels:
    """The run's request models: the strokes (one model per concept, and the eraser), and the body of
    /api/edit and /api/concept-pixels."""

    strokes: list[type[BaseModel]]
    edit: type[BaseModel]


def _enum(names: list[str]) -> Any:
    return Literal[tuple(names)] if names else str  # type: ignore[valid-type]


def _shared(painter: Painter) -> dict[str, Any]:
    """The fields every stroke has: strength, alpha, points and radius, bounded by the run's limits."""
    limits, (height, width) = painter.limits, painter.image_size
    point = tuple[Annotated[float, Field(ge=0, le=width, allow_inf_nan=False)],
                  Annotated[float, Field(ge=0, le=height, allow_inf_nan=False)]]
    return {
        "strength": (int, Field(DEFAULT_STRENGTH, ge=1, le=MAX_STRENGTH,
                                description="how many of the concept's best units (capped at its max_strength)")),
        "alpha": (float, Field(1.0, gt=0, le=1, allow_inf_nan=False,
                               description="strength of the edit (of an eraser: how much it takes back)")),
        "points": (list[point], Field(min_length=1, max_length=limits.max_points,
                                      description="the polyline's points [x, y] in image pixels")),
        "radius": (float, Field(gt=0, le=limits.max_radius, allow_inf_nan=False, description="in image pixels")),
    }


def _model_name(index: int, concept: str) -> str:
    return f"Stroke_{index}_{re.sub(r'[^A-Za-z0-9]+', '_', concept)}"


def stroke_models(painter: Painter) -> list[tuple[str, type[BaseModel]]]:
    """(tag, model) per stroke kind: the eraser, then an add / remove stroke per concept with units, whose
    layer may only be one where the concept has units. So a request that fits the schema fits the run."""
    strict = ConfigDict(extra="forbid")
    shared = _shared(painter)
    eraser = create_model(
        "EraseStroke", __config__=strict, __doc__="Take back earlier strokes' edits inside the region.",
        action=(Literal["erase"], ...),
        concept=(_enum(list(painter.concepts)) | None, Field(None, description="ignored")),
        layer=(_enum(list(painter.layers)) | None, Field(None, description="ignored")), **shared)
    models: list[tuple[str, type[BaseModel]]] = [("erase", eraser)]
    for index, (name, concept) in enumerate(painter.concepts.items()):
        models.append((name, create_model(
            _model_name(index, name), __config__=strict, __doc__=f"Add or remove {name} inside the region.",
            action=(Literal["add", "remove"], Field(description="add (insert) or remove (ablate) the units")),
            concept=(Literal[name], ...),  # type: ignore[valid-type]
            layer=(_enum(list(concept.layers)) | None,
                   Field(None, description=f"default: {concept.default_layer}, the layer of its best ranking")),
            **shared)))
    return models


def _tag(value: Any) -> str | None:
    """Which stroke model a JSON stroke is checked against: the eraser, or its concept's."""
    if not isinstance(value, dict):
        return None
    if value.get("action") == "erase":
        return "erase"
    concept = value.get("concept")
    return concept if isinstance(concept, str) else None


def request_models(painter: Painter) -> RequestModels:
    """The run's stroke models and the EditRequest model: seed and strokes within the painter's limits."""
    models = stroke_models(painter)
    names = ", ".join(painter.concepts) or "none"
    stroke: Any = models[0][1]  # a run whose concepts have no units: only the eraser
    if len(models) > 1:
        stroke = Annotated[
            Union[tuple(Annotated[model, Tag(tag)] for tag, model in models)],  # type: ignore[valid-type]  # noqa: UP007
            Discriminator(_tag, custom_error_type="stroke",
                          custom_error_message=f"a stroke is an object with an action add, remove or erase; add "
                                               f"and remove need a concept with units, one of: {names}")]
    edit = create_model(
        "EditRequest", __config__=ConfigDict(extra="forbid"),
        seed=(int, Field(ge=0, le=painter.limits.max_seed, description="the image: sample 0 of this sample set")),
        strokes=(list[stroke], Field(max_length=painter.limits.max_strokes, description="applied in order")),
    )
    return RequestModels([model for _, model in models], edit)


def concepts_document(painter: Painter) -> dict[str, Any]:
    """The /api/concepts answer: concepts with units, each layer's source, units and largest strength."""
    return {"concepts": [
        {"name": concept.name, "category": concept.category, "default_layer": concept.default_layer,
         "layers": [{"layer": entry.layer, "source": entry.source, "max_strength": entry.max_strength,
                     "units": [{"unit": c.unit, "score": c.score, "alpha": c.alpha} for c in entry.units]}
                    for entry in concept.layers.values()]}
        for concept in painter.concepts.values()]}
