"""The evidence in a schema-2 ace.json (`gandissect causal`), as the report shows it.

Per unit: its removal, insertion and ACE effects, each as [mean, low, high, significant, rank, p_adjusted]
(95% interval; significant after the file's correction, Holm over the units measured). Per concept: the top
units of each ranking with their intervals and whether each is separated from the next, how the number of
samples was chosen, the concept's baseline share, the images the segmenter could not read, and what the
significant units do together on held-out samples ("sets"). A file without "schema" (an older run) has none
of these: `unit_effects` and `concept_evidence` return None and the report shows it as before. Every value is
read defensively: a key that is missing or of the wrong type is left out.
"""

from __future__ import annotations

import math
from typing import Any

TOP_UNITS = 10
DIRECTIONS = ("removal", "insertion", "ace")
SET_DIRECTIONS = {"removal": "removed", "insertion": "gained"}


def number(value: Any) -> float | None:
    """A finite number as a float; None for anything else (NaN, a bool, a string)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def compact(value: Any, digits: int = 4) -> Any:
    """`value` as strict, short JSON: floats to `digits` significant digits, NaN and infinities None."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: compact(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [compact(v, digits) for v in value]
    return value


def unit_effects(unit: dict[str, Any]) -> dict[str, list[Any]] | None:
    """An ace.json unit's {direction: [mean, low, high, significant, rank, p_adjusted]}; None without any."""
    effects = unit.get("effects")
    if not isinstance(effects, dict):
        return None
    out = {}
    for direction in DIRECTIONS:
        e = effects.get(direction)
        if isinstance(e, dict):
            out[direction] = [number(e.get("mean")), number(e.get("low")), number(e.get("high")),
                              e.get("significant") is True, integer(e.get("rank")), number(e.get("p_adjusted"))]
    return out or None


def _order(record: dict[str, Any], direction: str, units: dict[int, dict[str, Any]]) -> list[int]:
    """The ranking of `direction`: the file's order, else the units by their rank in that direction."""
    ranking = record.get("rankings", {}).get(direction) if isinstance(record.get("rankings"), dict) else None
    order = ranking.get("order") if isinstance(ranking, dict) else None
    if isinstance(order, list) and order and all(integer(u) in units for u in order):
        return list(dict.fromkeys(order))
    ranks = {u: row["effects"][direction][4] for u, row in units.items() if direction in row["effects"]}
    return sorted((u for u, r in ranks.items() if r is not None), key=lambda u: ranks[u])


def _ranking(record: dict[str, Any], direction: str, units: dict[int, dict[str, Any]]) -> dict[str, Any] | None:
    """The top TOP_UNITS units of one direction: unit, mean, low, high, significant, separated from the next
    (None where the file does not say), IoU; with how many units are significant and ranked."""
    order = [u for u in _order(record, direction, units) if direction in units[u].get("effects", {})]
    if not order:
        return None
    ranking = record["rankings"].get(direction) if isinstance(record.get("rankings"), dict) else None
    ranking = ranking if isinstance(ranking, dict) else {}
    separated = ranking.get("separated") if isinstance(ranking.get("separated"), list) else []
    significant = ranking.get("significant")
    count = (len(significant) if isinstance(significant, list)
             else sum(units[u]["effects"][direction][3] for u in order))
    top = []
    for k, unit in enumerate(order[:TOP_UNITS]):
        mean, low, high, sig, _, p = units[unit]["effects"][direction]
        sep = separated[k] if k < len(separated) and isinstance(separated[k], bool) else None
        top.append({"unit": unit, "mean": mean, "low": low, "high": high, "significant": sig, "p": p,
                    "separated": sep, "iou": units[unit].get("iou")})
    return {"top": top, "significant": count, "of": len(order)}


def _stopping(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    rounds = value.get("rounds")
    reasons = value.get("reasons")
    return {"rule": text(value.get("rule")), "top": integer(value.get("top")), "budget": integer(value.get("budget")),
            "rounds": [r for r in rounds if integer(r) is not None] if isinstance(rounds, list) else [],
            "reasons": {k: v for k, v in reasons.items() if isinstance(v, str)} if isinstance(reasons, dict) else {}}


def _sets(value: Any) -> dict[str, list[dict[str, Any]]]:
    """Per direction the held-out unit sets, smallest first."""
    out: dict[str, list[dict[str, Any]]] = {}
    if not isinstance(value, dict):
        return out
    for direction, key in SET_DIRECTIONS.items():
        entries = value.get(direction)
        for entry in entries if isinstance(entries, list) else []:
            units = entry.get("units") if isinstance(entry, dict) else None
            if not isinstance(units, list) or not all(integer(u) is not None for u in units):
                continue
            effect = entry.get(key) if isinstance(entry.get(key), dict) else {}
            out.setdefault(direction, []).append({
                "units": units, "samples": integer(entry.get("samples")), "seed": integer(entry.get("seed")),
                **{k: number(effect.get(k)) for k in ("mean", "low", "high")},
                "significant": entry.get("significant") is True, "description": text(entry.get("description"))})
        out.get(direction, []).sort(key=lambda s: len(s["units"]))
    return out


def concept_evidence(record: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What a concept's page shows of a schema-2 ace.json `record`, whose units are `rows` (the report's rows,
    with "effects" from `unit_effects`); None for an older file."""
    schema = integer(record.get("schema"))
    if schema is None or schema < 2:
        return None
    units = {row["unit"]: row for row in rows if "effects" in row}
    rankings = {d: r for d in DIRECTIONS if (r := _ranking(record, d, units)) is not None}
    baseline = record.get("baseline") if isinstance(record.get("baseline"), dict) else {}
    missing = record.get("missing") if isinstance(record.get("missing"), dict) else {}
    return {"rankings": rankings, "insertion_value": text(record.get("insertion_value")),
            "correction": text(record.get("correction")), "alpha": number(record.get("alpha")),
            "level": number(record.get("level")), "first_sample": integer(record.get("first_sample")),
            "baseline": [number(baseline.get(k)) for k in ("mean", "low", "high")],
            "missing": {k: v for k, v in missing.items() if integer(v) is not None},
            "stopping": _stopping(record.get("stopping")), "sets": _sets(record.get("sets"))}


def definitions(record: dict[str, Any]) -> dict[str, str]:
    """The file's definitions of its terms (removal, insertion, significant, ...)."""
    found = record.get("definitions")
    return {k: v for k, v in found.items() if isinstance(v, str)} if isinstance(found, dict) else {}
