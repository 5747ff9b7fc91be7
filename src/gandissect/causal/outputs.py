"""Causal results in a run folder: `causal/<layer>/<concept>/` holds ace.json and ace.csv, written atomically.

ace.json (schema 2) keeps, per unit, the mean shares with the unit inserted and ablated and, per direction
(removal, insertion, ace), the mean effect with its standard error, 95% interval, p-value, Holm-adjusted
p-value and significance; per direction the ranking, its significant units and which top units are separated
from the next; how the sample count was chosen; and, when measured, what the significant set does as a whole
on samples the ranking never saw (what the painter shows). docs/dissect-schema.md describes every key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gandissect.causal.ace import DIRECTIONS, UnitEffects
from gandissect.causal.evidence import ALPHA, CORRECTION, Ranking, Stopping, rank
from gandissect.causal.sets import SetEffect
from gandissect.core.inference import paired_estimate
from gandissect.dissection.results import Dissection
from gandissect.engine.storage import write_json_atomic, write_text_atomic

SCHEMA = 2
DEFINITIONS = {
    "removal": "share of the concept's pixels in the unedited image minus with the unit set to 0 everywhere",
    "insertion": "share with the unit set to its value everywhere minus in the unedited image",
    "ace": "share with the unit set to its value everywhere minus with it set to 0 everywhere",
    "share": "the concept's pixels over the image's known pixels (unknown pixels, -2, left out); per sample, "
             "paired over the same z",
    "significant": f"effect > 0 with a Holm-adjusted p-value below {ALPHA} over every unit measured",
    "separated": "the paired difference to the next-ranked unit has a Holm-adjusted p-value below 0.05 "
                 "(over the top pairs shown) and is positive",
}


def causal_folder(run: str | Path, layer: str, concept: str) -> Path:
    return Path(run) / "causal" / layer / concept


def effects_record(effects: UnitEffects, result: Dissection | None, value_rule: str, rank_by: str = "ace",
                   stopping: Stopping | None = None,
                   sets: Mapping[str, Sequence[SetEffect]] | None = None) -> dict[str, Any]:
    """The ace.json document of one concept's effects (see the module)."""
    rankings: dict[str, Ranking] = {d: rank(effects, d) for d in DIRECTIONS}
    iou = None
    if result is not None and effects.concept in result.concepts:
        iou = result.layers[effects.layer].rules["quantile"].iou[:, result.concepts.index(effects.concept)]
    inserted, ablated = effects.inserted, effects.ablated
    rows = []
    for unit in rankings[rank_by].order:
        i = effects.units.index(unit)
        rows.append({"unit": unit, "value": float(effects.values[i]),
                     "iou": None if iou is None else float(iou[unit]),
                     "inserted": float(inserted[i]), "ablated": float(ablated[i]),
                     "ace": float(rankings["ace"].estimate.mean[i]),
                     "effects": {d: rankings[d].row(unit, effects.units) for d in DIRECTIONS}})
    baseline = paired_estimate(effects.baseline[:, None])
    document: dict[str, Any] = {
        "schema": SCHEMA, "layer": effects.layer, "concept": effects.concept, "samples": effects.samples,
        "seed": effects.seed, "first_sample": effects.first, "insertion_value": value_rule,
        "level": 0.95, "alpha": ALPHA, "correction": f"{CORRECTION}, over the {len(effects.units)} units measured",
        "rank_by": rank_by, "definitions": DEFINITIONS,
        "baseline": {"mean": float(baseline.mean[0]), "low": float(baseline.low[0]),
                     "high": float(baseline.high[0])},
        "missing": effects.missing(),
        "rankings": {d: {"order": r.order, "significant": r.significant, "separated": r.separated}
                     for d, r in rankings.items()},
        "units": rows,
    }
    if stopping is not None:
        document["stopping"] = stopping.to_json(effects.concept)
    if sets is not None:  # measured: a direction without significant units has no sets
        document["sets"] = {direction: [effect.to_json() for effect in sets.get(direction, [])]
                            for direction in ("removal", "insertion")}
    return document


CSV_HEADER = ["unit", "value", "iou", "inserted", "ablated"] + [
    f"{d}_{k}" for d in DIRECTIONS for k in ("mean", "low", "high", "p_adjusted", "significant")]


def write_effects(run: str | Path, effects: UnitEffects, result: Dissection | None, value_rule: str,
                  rank_by: str = "ace", stopping: Stopping | None = None,
                  sets: Mapping[str, Sequence[SetEffect]] | None = None) -> Path:
    """ace.json and ace.csv (one row per unit, ranked by `rank_by`) in the concept's causal folder; returns
    the folder."""
    folder = causal_folder(run, effects.layer, effects.concept)
    document = effects_record(effects, result, value_rule, rank_by, stopping, sets)
    write_json_atomic(folder / "ace.json", document)
    lines = [",".join(CSV_HEADER)]
    for row in document["units"]:
        flat = {k: row[k] for k in CSV_HEADER[:5]}
        flat.update({f"{d}_{k}": row["effects"][d][k] for d in DIRECTIONS
                     for k in ("mean", "low", "high", "p_adjusted", "significant")})
        lines.append(",".join(_cell(flat[k]) for k in CSV_HEADER))
    write_text_atomic(folder / "ace.csv", "\n".join(lines) + "\n")
    return folder


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:.6g}" if isinstance(value, float) else str(value)
