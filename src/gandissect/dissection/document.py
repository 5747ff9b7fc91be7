"""Checks a dissect.json before anything reads it: a run folder is untrusted input.

`check_document` walks the whole document and refuses, in one line naming the field, anything the report,
the painter or the causal tools would trip over or render wrongly: a schema number it does not know, a
missing or mistyped field, a unit record out of place, a concept the run does not have, a top sample index
outside the run's samples, a threshold or IoU that is not a finite number, a ranking that is not a
permutation of the layer's units. What it passes is what `results.to_json` writes (docs/dissect-schema.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gandissect.core.errors import GandissectError
from gandissect.dissection.labels import RULES
from gandissect.dissection.results import SCHEMA_VERSION

ENTRY_NUMBERS = ("iou", "crossfit_iou", "iqr", "threshold")


class SchemaError(GandissectError, ValueError):
    """A dissect.json that does not hold what gandissect writes; the message names the field."""


def _fail(field: str, problem: str) -> SchemaError:
    return SchemaError(f"dissect.json: {field} {problem} (see docs/dissect-schema.md; `gandissect dissect --force` "
                       "rewrites it)")


def _get(mapping: Any, key: str, field: str) -> Any:
    if not isinstance(mapping, Mapping):
        raise _fail(field, "is not an object")
    if key not in mapping:
        raise _fail(f"{field}.{key}" if field else key, "is missing")
    return mapping[key]


def _integer(value: Any, field: str, low: int = 0, high: int | None = None, what: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(field, f"is {value!r}, not an integer")
    if value < low or (high is not None and value >= high):
        bound = f"{low}..{high - 1}" if high is not None else f"at least {low}"
        raise _fail(field, f"is {value}, outside {bound}{what}")
    return value


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(field, f"is {value!r}, not a finite number")
    return float(value)


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(field, f"is {value!r}, not a name")
    return value


def _list(value: Any, field: str, length: int | None = None) -> list:
    if not isinstance(value, list):
        raise _fail(field, "is not a list")
    if length is not None and len(value) != length:
        raise _fail(field, f"has {len(value)} entries, not {length}")
    return value


def _entry(entry: Any, field: str, concepts: Mapping[str, str]) -> None:
    """A (concept, category, iou, crossfit_iou, iqr, threshold) record."""
    name = _string(_get(entry, "concept", field), f"{field}.concept")
    if name not in concepts:
        raise _fail(f"{field}.concept", f"is {name!r}, not one of the run's concepts")
    for key in ENTRY_NUMBERS:
        _number(_get(entry, key, field), f"{field}.{key}")


def _unit(record: Any, field: str, index: int, concepts: Mapping[str, str], rules: list[str], samples: int,
          topk: int | None) -> None:
    _integer(_get(record, "unit", field), f"{field}.unit", index, index + 1)
    _entry(record, field, concepts)
    for key in ("baseline_iou", "quantile_threshold"):
        _number(_get(record, key, field), f"{field}.{key}")
    if not isinstance(_get(record, "interpretable", field), bool):
        raise _fail(f"{field}.interpretable", "is not true or false")
    labels = _get(record, "labels", field)
    for rule in rules:
        _entry(_get(labels, rule, f"{field}.labels"), f"{field}.labels.{rule}", concepts)
    for k, entry in enumerate(_list(_get(record, "top_concepts", field), f"{field}.top_concepts")):
        _entry(entry, f"{field}.top_concepts[{k}]", concepts)
    top = _list(_get(record, "top_samples", field), f"{field}.top_samples")
    if topk is not None and len(top) > topk:
        raise _fail(f"{field}.top_samples", f"has {len(top)} entries, more than config.topk ({topk})")
    for k, sample in enumerate(top):
        _integer(sample, f"{field}.top_samples[{k}]", 0, samples, f" (the run has {samples} samples)")
    values = _list(_get(record, "top_values", field), f"{field}.top_values", len(top))
    for k, value in enumerate(values):
        _number(value, f"{field}.top_values[{k}]")


def _ranking(ranking: Any, field: str, width: int) -> None:
    units = _list(_get(ranking, "units", field), f"{field}.units", width)
    if sorted(u if isinstance(u, int) and not isinstance(u, bool) else -1 for u in units) != list(range(width)):
        raise _fail(f"{field}.units", f"is not an ordering of the layer's {width} units")
    for key in ("iou", "crossfit_iou", "thresholds"):
        for k, value in enumerate(_list(_get(ranking, key, field), f"{field}.{key}", width)):
            _number(value, f"{field}.{key}[{k}]")
    _number(_get(ranking, "baseline_iou", field), f"{field}.baseline_iou")


def check_document(document: Any) -> None:
    """Refuse a dissect.json that is not what gandissect writes (see the module), in one line."""
    if not isinstance(document, Mapping):
        raise SchemaError("dissect.json is not a JSON object")
    schema = document.get("schema")
    if schema != SCHEMA_VERSION or isinstance(schema, bool):
        raise SchemaError(f"dissect.json has schema {schema!r}; this gandissect reads schema {SCHEMA_VERSION}: "
                          "rerun `gandissect dissect --force` to rewrite it (see docs/dissect-schema.md)")
    config = _get(document, "config", "")
    samples = _integer(_get(config, "samples", "config"), "config.samples", 1)
    topk = _integer(config["topk"], "config.topk", 1) if "topk" in config else None
    layers_run = [_string(name, f"config.layers[{i}]")
                  for i, name in enumerate(_list(_get(config, "layers", "config"), "config.layers"))]
    concepts: dict[str, str] = {}
    for i, concept in enumerate(_list(_get(document, "concepts", ""), "concepts")):
        name = _string(_get(concept, "name", f"concepts[{i}]"), f"concepts[{i}].name")
        if name in concepts:
            raise _fail(f"concepts[{i}].name", f"repeats {name!r}")
        concepts[name] = _string(_get(concept, "category", f"concepts[{i}]"), f"concepts[{i}].category")
        _number(_get(concept, "baseline_iou", f"concepts[{i}]"), f"concepts[{i}].baseline_iou")
    if not concepts:
        raise _fail("concepts", "is empty")
    method = _string(_get(document, "label_method", ""), "label_method")
    rules = list(document.get("label_rules") or RULES)
    if method not in rules:
        raise _fail("label_method", f"is {method!r}, not one of the rules ({', '.join(rules)})")
    layers = _get(document, "layers", "")
    if not isinstance(layers, Mapping) or not layers:
        raise _fail("layers", "is not an object naming the dissected layers")
    for name, layer in layers.items():
        field = f"layers.{name}"
        if name not in layers_run:
            raise _fail(field, f"is not among config.layers ({', '.join(layers_run)})")
        shape = _list(_get(layer, "shape", field), f"{field}.shape")
        if not shape:
            raise _fail(f"{field}.shape", "is empty")
        width = _integer(shape[0], f"{field}.shape[0]", 1)
        for k, size in enumerate(shape[1:], 1):
            _integer(size, f"{field}.shape[{k}]", 1)
        units = _list(_get(layer, "units", field), f"{field}.units", width)
        for index, record in enumerate(units):
            _unit(record, f"{field}.units[{index}]", index, concepts, rules, samples, topk)
        rankings = _get(layer, "concepts", field)
        if not isinstance(rankings, Mapping):
            raise _fail(f"{field}.concepts", "is not an object")
        for concept, ranking in rankings.items():
            if concept not in concepts:
                raise _fail(f"{field}.concepts", f"names {concept!r}, not one of the run's concepts")
            _ranking(ranking, f"{field}.concepts.{concept}", width)
        by_concept = layer.get("interpretable_by_concept", {})
        if not isinstance(by_concept, Mapping) or any(c not in concepts for c in by_concept):
            raise _fail(f"{field}.interpretable_by_concept", "names a concept the run does not have")
