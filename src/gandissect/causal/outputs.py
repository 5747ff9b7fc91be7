"""Causal results in a run folder: `causal/<layer>/<concept>/` holds ace.json and ace.csv, written atomically."""

from __future__ import annotations

from pathlib import Path

import torch

from gandissect.causal.ace import UnitEffects
from gandissect.dissection.results import Dissection
from gandissect.engine.storage import write_json_atomic, write_text_atomic


def causal_folder(run: str | Path, layer: str, concept: str) -> Path:
    return Path(run) / "causal" / layer / concept


def write_effects(run: str | Path, effects: UnitEffects, result: Dissection, values: torch.Tensor) -> Path:
    """ace.json (settings and units ranked by ACE, with their IoU for the concept) and ace.csv (one row per
    unit) in the concept's causal folder; returns the folder."""
    folder = causal_folder(run, effects.layer, effects.concept)
    concept = result.concepts.index(effects.concept)
    iou = result.layers[effects.layer].rules["quantile"].iou[:, concept]
    rows = []
    for unit in effects.ranking():
        i = effects.units.index(unit)
        rows.append({"unit": unit, "ace": float(effects.ace[i]), "inserted": float(effects.inserted[i]),
                     "ablated": float(effects.ablated[i]), "value": float(values[unit]), "iou": float(iou[unit])})
    write_json_atomic(folder / "ace.json", {
        "layer": effects.layer, "concept": effects.concept, "samples": effects.samples, "seed": effects.seed,
        "definition": "ACE = mean share of the concept's pixels with the unit set to its value everywhere, minus "
                      "with it set to 0 everywhere, on held-out samples",
        "units": rows,
    })
    header = ["unit", "ace", "inserted", "ablated", "value", "iou"]
    lines = [",".join(header)] + [",".join(f"{row[k]:.6g}" if isinstance(row[k], float) else str(row[k])
                                           for k in header) for row in rows]
    write_text_atomic(folder / "ace.csv", "\n".join(lines) + "\n")
    return folder
