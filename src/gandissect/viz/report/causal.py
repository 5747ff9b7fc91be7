"""Causal results in the report, read from a run's `causal/` folder (written by the causal tools):

- `causal/<layer>/<concept>/ace.json`: every measured unit's ACE for the concept, ranked highest first;
- `causal/<layer>/<concept>/*.svg, *.png`: figures for that concept at that layer, inlined as data: URIs;
- `causal/<layer>/labels.json`: each unit's causal label (the concept it draws, or null) and how often each
  labelling rule agrees with those labels.

`load_causal` returns None when the folder is missing or holds nothing the report can show: the page is then
exactly the one without causal results. Otherwise the header gets a summary and an agreement table, the
gallery cards a "causal: <concept>" tag, and causal.js (with its JSON, `#causal-data`) adds the causal rows to
the unit pages and the top units by ACE and the figures to the concept pages. A file the report cannot read is
skipped with a warning.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import math
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from gandissect.viz.report.data import fmt, rules

TOP_UNITS = 10
FIGURE_TYPES = {".svg": "image/svg+xml", ".png": "image/png"}
FIGURE_LIMIT = 8 * 2**20  # bytes; a larger figure is skipped
esc = html.escape


@dataclass
class Causal:
    """What the report shows of a run's causal folder, for the layers and concepts of its dissection."""

    ace: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)  # layer -> concept -> units
    settings: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # samples, seed, definition
    figures: dict[str, dict[str, list[tuple[str, str]]]] = field(default_factory=dict)  # (file name, data URI)
    labels: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)  # layer -> unit -> label
    agreement: dict[str, dict[str, Any]] = field(default_factory=dict)  # layer -> rule -> fraction (or record)
    ignored: list[str] = field(default_factory=list)  # folders of layers or concepts the dissection lacks

    def empty(self) -> bool:
        return not (self.ace or self.figures or self.labels)


@functools.cache
def asset(name: str) -> str:
    text = resources.files(__package__).joinpath(name).read_text("utf-8")
    if "</style" in text.lower() or "</script" in text.lower():
        raise ValueError(f"{name} would end its inline element early")
    return text


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        warnings.warn(f"report: skipping {path}: {error}", stacklevel=3)
        return None


def _ace(path: Path, document: dict[str, Any], layer: str) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    """The units of an ace.json ranked by ACE (each with its rank), and its settings."""
    record = _read(path)
    units = record.get("units") if isinstance(record, dict) else None
    width = len(document["layers"][layer]["units"])
    if not isinstance(units, list) or not all(
            isinstance(u, dict) and isinstance(u.get("unit"), int) and 0 <= u["unit"] < width
            and _number(u.get("ace")) is not None for u in units):
        if record is not None:
            warnings.warn(f"report: skipping {path}: needs units [{{unit (< {width}), ace, ...}}]", stacklevel=2)
        return None
    keys = ("ace", "inserted", "ablated", "value", "iou")
    ranked = sorted(units, key=lambda u: -float(u["ace"]))  # stable: ties keep the file's order
    settings = {k: record[k] for k in ("samples", "seed", "definition") if k in record}
    return [{"unit": u["unit"], "rank": i + 1, **{k: _number(u.get(k)) for k in keys}}
            for i, u in enumerate(ranked)], settings


def _unit_label(unit: Any, concepts: set[str]) -> tuple[bool, str | None]:
    """(valid, concept) of a labels.json unit: `concept` (a name or null), or as CausalLabels.to_json writes it,
    `label` (a name or "none")."""
    if not isinstance(unit, dict) or ("concept" not in unit and "label" not in unit):
        return False, None
    value = unit["concept"] if "concept" in unit else unit["label"]
    if "concept" not in unit and value == "none" and "none" not in concepts:
        value = None
    return value is None or isinstance(value, str), value


def _labels(path: Path, document: dict[str, Any], layer: str) -> tuple[dict[int, dict], dict[str, Any]] | None:
    record = _read(path)
    units = record.get("units") if isinstance(record, dict) else None
    width = len(document["layers"][layer]["units"])
    concepts = {c["name"] for c in document["concepts"]}
    if not isinstance(units, list) or not all(
            isinstance(u, dict) and isinstance(u.get("unit"), int) and 0 <= u["unit"] < width
            and _unit_label(u, concepts)[0] for u in units):
        if record is not None:
            warnings.warn(f"report: skipping {path}: needs units [{{unit (< {width}), concept, effect}}]",
                          stacklevel=2)
        return None
    agreement = record.get("agreement")
    labels = {u["unit"]: {"concept": _unit_label(u, concepts)[1], "effect": _number(u.get("effect"))} for u in units}
    return labels, agreement if isinstance(agreement, dict) else {}


def _figure(path: Path) -> str | None:
    try:
        if path.stat().st_size > FIGURE_LIMIT:
            warnings.warn(f"report: skipping {path}: larger than {FIGURE_LIMIT >> 20} MiB", stacklevel=3)
            return None
        content = path.read_bytes()
    except OSError as error:
        warnings.warn(f"report: skipping {path}: {error}", stacklevel=3)
        return None
    return f"data:{FIGURE_TYPES[path.suffix.lower()]};base64,{base64.b64encode(content).decode('ascii')}"


def load_causal(folder: str | Path, document: dict[str, Any]) -> Causal | None:
    """The causal results in `folder` (a run's `causal/`) for `document`'s layers and concepts; None when the
    folder does not exist or holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    concepts = {c["name"] for c in document["concepts"]}
    causal = Causal()
    for layer_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        layer = layer_dir.name
        if layer not in document["layers"]:
            causal.ignored.append(layer)
            continue
        if (layer_dir / "labels.json").is_file():
            found = _labels(layer_dir / "labels.json", document, layer)
            if found is not None:
                causal.labels[layer], causal.agreement[layer] = found
        for concept_dir in sorted(p for p in layer_dir.iterdir() if p.is_dir()):
            concept = concept_dir.name
            if concept not in concepts:
                causal.ignored.append(f"{layer}/{concept}")
                continue
            ace_path = concept_dir / "ace.json"
            found = _ace(ace_path, document, layer) if ace_path.is_file() else None
            if found is not None:
                causal.ace.setdefault(layer, {})[concept], causal.settings.setdefault(layer, {})[concept] = found
            figures = [(p.name, _figure(p)) for p in sorted(concept_dir.iterdir())
                       if p.is_file() and p.suffix.lower() in FIGURE_TYPES]
            if any(uri for _, uri in figures):
                causal.figures.setdefault(layer, {})[concept] = [(n, uri) for n, uri in figures if uri]
    return None if causal.empty() else causal


# ------------------------------------------------------------------------------------------------ the page


def _agrees(causal: Causal, layer: str, record: dict[str, Any]) -> bool | None:
    """Whether the unit's causal label is its correlational one; None without a causal label."""
    label = causal.labels.get(layer, {}).get(int(record["unit"]))
    return None if label is None else label["concept"] == record["concept"]


def card_tag(causal: Causal | None, layer: str, record: dict[str, Any]) -> str:
    """The gallery card's "causal: <concept>" tag, empty without labels.json for the layer."""
    if causal is None or layer not in causal.labels:
        return ""
    label = causal.labels[layer].get(int(record["unit"]))
    if label is None:
        return '<span class="causal-tag" title="no causal label measured">causal: –</span>'
    agrees = _agrees(causal, layer, record)
    concept = label["concept"]
    title = (f"the concept this unit draws when intervened on (effect {fmt(label['effect'])}); "
             + ("agrees with" if agrees else "differs from") + " its correlational label")
    return (f'<span class="causal-tag{" agree" if agrees else ""}" data-causal="{esc(concept or "")}" '
            f'title="{esc(title)}">causal: {esc(concept or "none")}{" ✓" if agrees else ""}</span>')


def _agreement_cell(value: Any) -> str:
    if isinstance(value, dict):
        agree, units = value.get("agree"), value.get("units")
        counts = f" ({agree}/{units})" if isinstance(agree, int) and isinstance(units, int) else ""
        return fmt(_number(value.get("fraction"))) + counts
    return fmt(_number(value))


def header_html(causal: Causal | None, document: dict[str, Any]) -> str:
    """The header's summary of the causal results: which layers and concepts have them, and per layer each
    rule's agreement with the causal labels."""
    if causal is None:
        return ""

    def link(concept: str) -> str:
        return f'<a href="#concept/{quote(concept, safe="")}">{esc(concept)}</a>'

    layers = [name for name in document["layers"] if name in causal.ace or name in causal.figures
              or name in causal.labels]
    parts = []
    for name in layers:
        concepts = sorted(set(causal.ace.get(name, {})) | set(causal.figures.get(name, {})))
        what = [", ".join(map(link, concepts))] if concepts else []
        if name in causal.labels:
            what.append(f"causal labels of {len(causal.labels[name])} units")
        parts.append(f'<li data-layer="{esc(name)}"><b>{esc(name)}</b>: {"; ".join(what)}</li>')
    table = ""
    if causal.agreement:
        agreeing = [name for name in document["layers"] if causal.agreement.get(name)]
        names = list(dict.fromkeys([*rules(document), *(r for n in agreeing for r in causal.agreement[n])]))
        names = [r for r in names if any(r in causal.agreement[n] for n in agreeing)]
        current = {document["label_method"]: ' class="current"'}
        head = "".join(f"<th>{esc(n)}</th>" for n in agreeing)
        body = "".join(
            f'<tr data-rule="{esc(r)}"{current.get(r, "")}><td>{esc(r)}</td>'
            + "".join(f'<td data-layer="{esc(n)}">{_agreement_cell(causal.agreement[n].get(r))}</td>'
                      for n in agreeing) + "</tr>" for r in names)
        table = (f'<p class="muted">Agreement: the share of units with a causal label whose label under each rule '
                 f'is that concept.</p><table class="agreement"><thead><tr><th>rule</th>{head}</tr></thead>'
                 f"<tbody>{body}</tbody></table>")
    ignored = (f'<p class="muted">Not in this dissection, left out: {esc(", ".join(causal.ignored))}</p>'
               if causal.ignored else "")
    return (f'<section class="causal-summary" id="causal"><h2>Causal results</h2>'
            f'<p class="muted">Measured by intervening on units (run folder <code>causal/</code>): ACE and figures '
            f'per concept, causal labels per layer.</p><ul class="causal-layers">{"".join(parts)}</ul>'
            f"{table}{ignored}</section>")


def page_json(causal: Causal, document: dict[str, Any]) -> dict[str, Any]:
    """The JSON causal.js reads: per unit its causal label and ACE on every measured concept (its labelled
    concept first), per concept and layer the top units by ACE and the figures."""
    units: dict[str, dict[str, Any]] = {}
    for name, layer in document["layers"].items():
        if name not in causal.ace and name not in causal.labels:
            continue
        entries = {}
        for record in layer["units"]:
            unit, concept = int(record["unit"]), record["concept"]
            ace = []
            for other, ranked in causal.ace.get(name, {}).items():
                hit = next((u for u in ranked if u["unit"] == unit), None)
                if hit is not None:
                    ace.append({"concept": other, "ace": hit["ace"], "rank": hit["rank"], "of": len(ranked),
                                "inserted": hit["inserted"], "ablated": hit["ablated"]})
            ace.sort(key=lambda a: (a["concept"] != concept, -a["ace"]))
            entry: dict[str, Any] = {"ace": ace, "measured": bool(ace) and ace[0]["concept"] == concept}
            label = causal.labels.get(name, {}).get(unit)
            if label is not None:
                entry["label"] = {**label, "agrees": label["concept"] == concept,
                                  "rules": [rule for rule, own in record.get("labels", {}).items()
                                            if label["concept"] is not None and own.get("concept") == label["concept"]]}
            entries[str(unit)] = entry
        units[name] = entries
    concepts: dict[str, dict[str, Any]] = {}
    for name in document["layers"]:
        for concept in sorted(set(causal.ace.get(name, {})) | set(causal.figures.get(name, {}))):
            ranked = causal.ace.get(name, {}).get(concept, [])
            concepts.setdefault(concept, {})[name] = {
                "top": ranked[:TOP_UNITS], "of": len(ranked), **causal.settings.get(name, {}).get(concept, {}),
                "figures": [list(f) for f in causal.figures.get(name, {}).get(concept, [])]}
    return {"units": units, "concepts": concepts,
            "ace_layers": [name for name in document["layers"] if name in causal.ace],
            "label_layers": [name for name in document["layers"] if name in causal.labels]}


def body_html(causal: Causal | None, document: dict[str, Any]) -> tuple[str, str]:
    """What the page adds to its head (causal.css) and to the end of its body (the JSON and causal.js)."""
    if causal is None:
        return "", ""
    payload = json.dumps(page_json(causal, document), separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return (f"<style>{asset('causal.css')}</style>",
            f'<script type="application/json" id="causal-data">{payload}</script><script>{asset("causal.js")}</script>')
