"""The painter's HTTP models. Request models are built per run, so that the OpenAPI schema states the run's
exact limits: concept and layer names as enums, point coordinates within the image, the radius, seed and
counts within the painter's `Limits`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

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
    """The run's request models: a stroke, and the body of /api/edit and /api/concept-pixels."""

    stroke: type[BaseModel]
    edit: type[BaseModel]


def _enum(names: list[str]) -> Any:
    return Literal[tuple(names)] if names else str  # type: ignore[valid-type]


def request_models(painter: Painter) -> RequestModels:
    """Stroke and EditRequest models with the run's concepts, layers, image size and limits."""
    limits, (height, width) = painter.limits, painter.image_size
    point = tuple[Annotated[float, Field(ge=0, le=width, allow_inf_nan=False)],
                  Annotated[float, Field(ge=0, le=height, allow_inf_nan=False)]]
    strict = ConfigDict(extra="forbid")
    stroke = create_model(
        "Stroke", __config__=strict,
        action=(Literal["add", "remove", "erase"], Field(description="add (insert) or remove (ablate) the concept's "
                                                                     "units, or erase earlier strokes")),
        concept=(_enum(list(painter.concepts)) | None, Field(None, description="required for add and remove")),
        layer=(_enum(list(painter.layers)) | None, Field(None, description="default: the concept's default layer")),
        strength=(int, Field(DEFAULT_STRENGTH, ge=1, le=MAX_STRENGTH,
                             description="how many of the concept's best units (capped at its max_strength)")),
        alpha=(float, Field(1.0, gt=0, le=1, allow_inf_nan=False, description="strength of the edit")),
        points=(list[point], Field(min_length=1, max_length=limits.max_points,
                                   description="the polyline's points [x, y] in image pixels")),
        radius=(float, Field(gt=0, le=limits.max_radius, allow_inf_nan=False, description="in image pixels")),
    )
    edit = create_model(
        "EditRequest", __config__=strict,
        seed=(int, Field(ge=0, le=limits.max_seed, description="the image: sample 0 of this sample set")),
        strokes=(list[stroke], Field(max_length=limits.max_strokes, description="applied in order")),
    )
    return RequestModels(stroke, edit)


def concepts_document(painter: Painter) -> dict[str, Any]:
    """The /api/concepts answer: concepts with units, each layer's source, units and largest strength."""
    return {"concepts": [
        {"name": concept.name, "category": concept.category, "default_layer": concept.default_layer,
         "layers": [{"layer": entry.layer, "source": entry.source, "max_strength": entry.max_strength,
                     "units": [{"unit": c.unit, "score": c.score, "alpha": c.alpha} for c in entry.units]}
                    for entry in concept.layers.values()]}
        for concept in painter.concepts.values()]}
