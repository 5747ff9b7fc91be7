"""What the report reads from a schema-2 dissect.json: which images each page needs and the page's JSON data.

Images are keyed by (layer, unit, threshold): the gallery draws a unit at its labelling threshold, a unit's
page draws each of its top concepts at that concept's own threshold, and a concept's page draws each of its
units at the unit's threshold for that concept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gandissect.dissection.document import SchemaError, check_document  # noqa: F401  (the report's checks)
from gandissect.viz.report.charts import category_colors
from gandissect.viz.report.images import threshold_key

SCHEMA = 2
CONCEPT_PAGE_UNITS = 8
TOP_CONCEPTS_PER_UNIT = 5
ImageKey = tuple[str, int, float]


def clean(value: Any) -> Any:
    """`value` with NaN and infinities replaced by None, so that it is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def fmt(value: Any, digits: int = 3) -> str:
    """A number for people: `digits` significant digits, an en dash when missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def concept_units(document: Mapping[str, Any], per_layer: int = CONCEPT_PAGE_UNITS) -> dict[str, dict[str, list]]:
    """concept -> layer -> its best units there (ranking order, IoU > 0) with IoU, crossfit IoU and the unit's
    threshold for this concept."""
    result: dict[str, dict[str, list]] = {c["name"]: {} for c in document["concepts"]}
    for name, layer in document["layers"].items():
        for concept, ranking in layer["concepts"].items():
            columns = zip(ranking["units"], ranking["iou"], ranking.get("crossfit_iou", ranking["iou"]),
                          ranking["thresholds"], strict=True)
            entries = [{"unit": int(u), "iou": iou, "crossfit_iou": cv, "threshold": t}
                       for u, iou, cv, t in columns if iou is not None and iou > 0][:per_layer]
            if entries:
                result.setdefault(concept, {})[name] = entries
    return result


def image_requests(document: Mapping[str, Any], best: Mapping[str, Mapping[str, list]],
                   top_concepts: int = TOP_CONCEPTS_PER_UNIT) -> dict[str, set[tuple[int, float]]]:
    """layer -> the (unit, threshold key) pairs some page draws."""
    wanted: dict[str, set[tuple[int, float]]] = {name: set() for name in document["layers"]}
    for name, layer in document["layers"].items():
        for record in layer["units"]:
            unit = int(record["unit"])
            wanted[name].add((unit, threshold_key(record["threshold"])))
            for top in record.get("top_concepts", [])[:top_concepts]:
                wanted[name].add((unit, threshold_key(top["threshold"])))
    for layers in best.values():
        for name, entries in layers.items():
            wanted[name].update((e["unit"], threshold_key(e["threshold"])) for e in entries)
    return wanted


def rules(document: Mapping[str, Any]) -> dict[str, str]:
    """Label rule -> description, the document's order, then any rule only the unit records name."""
    described = dict(document.get("label_rules") or {})
    for layer in document["layers"].values():
        for record in layer["units"]:
            for rule in record.get("labels", {}):
                described.setdefault(rule, "")
    return described


def page_data(document: Mapping[str, Any], best: Mapping[str, Mapping[str, list]],
              overlay: Mapping[ImageKey, int], count: int) -> dict[str, Any]:
    """The JSON embedded in the page. `overlay` maps (layer, unit, threshold key) to an index into the
    page's list of overlays."""

    def index(layer: str, unit: int, threshold: Any) -> int:
        return overlay[layer, unit, threshold_key(threshold)]

    layers: dict[str, Any] = {}
    for name, layer in document["layers"].items():
        units = {}
        for record in layer["units"]:
            unit = int(record["unit"])
            units[str(unit)] = clean({
                **{k: v for k, v in record.items() if k not in ("top_samples", "top_values", "top_concepts")},
                "overlay": index(name, unit, record["threshold"]),
                "top_samples": record["top_samples"][:count],
                "top_values": record["top_values"][:count],
                "top_concepts": [{**top, "overlay": index(name, unit, top["threshold"])}
                                 for top in record.get("top_concepts", [])[:TOP_CONCEPTS_PER_UNIT]],
            })
        layers[name] = {"units": units, "shape": layer["shape"]}
    concepts = {}
    for entry in document["concepts"]:
        concept = entry["name"]
        concepts[concept] = clean({
            "category": entry["category"],
            "baseline_iou": entry.get("baseline_iou"),
            "interpretable": {name: layer.get("interpretable_by_concept", {}).get(concept, 0)
                              for name, layer in document["layers"].items()},
            "layers": {name: [{**e, "overlay": index(name, e["unit"], e["threshold"])} for e in entries]
                       for name, entries in best.get(concept, {}).items()},
        })
    config = document["config"]
    return {"layers": layers, "concepts": concepts,
            "colors": category_colors([c["category"] for c in document["concepts"]]),
            "rules": [[rule, text] for rule, text in rules(document).items()],
            "label_method": document["label_method"],
            "min_iou": clean(config.get("min_iou")), "min_iqr": clean(config.get("min_iqr")),
            "images_per_unit": count}
