"""Causal results in the report, read from a run's `causal/` folder (written by the causal tools):

- `causal/<layer>/<concept>/ace.json`: every measured unit's ACE for the concept, ranked highest first; a
  schema-2 file (`gandissect causal`) also has each unit's removal, insertion and ACE effects with 95% intervals,
  significance and ranks, and the concept's evidence (see `evidence`);
- `causal/<layer>/<concept>/*.svg, *.png`: figures for that concept at that layer, inlined as data: URIs, with
  titles and captions for those the causal tools write (see `figures`);
- `causal/<layer>/labels.json`: each unit's causal label (the concept it draws, or null; units it did not
  measure are left out), how often each labelling rule agrees with those labels (with the chance level where
  given) and how the labels are defined.

The files are read through the run's manifest (`engine.runfiles`): only the files run.json lists, each
checked. `load_causal` returns None when the folder is missing or holds nothing the report can show: the page is then
exactly the one without causal results. Otherwise the header gets a summary and an agreement table, the
gallery cards a "causal: <concept>" tag, and causal.js (with its JSON, `#causal-data`) adds the causal rows to
the unit pages and, to the concept pages, the top units (by ACE; schema 2: by removal, insertion and ACE, with
intervals) and the figures. A file the report cannot read is skipped with a warning; an older ace.json (no
"schema") is shown as it always was.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import warnings
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import quote

from gandissect.engine.runfiles import RunFiles
from gandissect.viz.report.data import fmt, rules
from gandissect.viz.report.evidence import TOP_UNITS, compact, concept_evidence, definitions, integer, unit_effects
from gandissect.viz.report.evidence import number as _number
from gandissect.viz.report.figures import figure_notes, order

__all__ = ["TOP_UNITS", "Causal", "body_html", "card_tag", "header_html", "load_causal", "page_json"]

FIGURE_TYPES = {".svg": "image/svg+xml", ".png": "image/png"}
FIGURE_LIMIT = 8 * 2**20  # bytes; a larger figure is skipped
esc = html.escape


@dataclass
class Causal:
    """What the report shows of a run's causal folder, for the layers and concepts of its dissection."""

    ace: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)  # layer -> concept -> units
    settings: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # samples, seed, definition, evidence
    figures: dict[str, dict[str, list[tuple[str, ...]]]] = field(default_factory=dict)  # (name, URI, title, caption)
    labels: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)  # layer -> unit -> label
    agreement: dict[str, dict[str, Any]] = field(default_factory=dict)  # layer -> rule -> fraction (or record)
    label_definition: dict[str, str] = field(default_factory=dict)  # layer -> how its causal labels are defined
    definitions: dict[str, str] = field(default_factory=dict)  # the terms of the ace.json files (schema 2)
    ignored: list[str] = field(default_factory=list)  # folders of layers or concepts the dissection lacks

    def empty(self) -> bool:
        return not (self.ace or self.figures or self.labels)


@functools.cache
def asset(name: str) -> str:
    text = resources.files(__package__).joinpath(name).read_text("utf-8")
    if "</style" in text.lower() or "</script" in text.lower():
        raise ValueError(f"{name} would end its inline element early")
    return text


def _read(files: RunFiles, name: str) -> Any:
    """A JSON file of the run (checked against its manifest: a changed file is an error); None, with a
    warning, when it is not JSON."""
    try:
        return json.loads(files.read(name))
    except (UnicodeDecodeError, ValueError) as error:
        warnings.warn(f"report: skipping {files.root / name}: {error}", stacklevel=3)
        return None


def _ace(files: RunFiles, path: str, document: dict[str, Any], layer: str
         ) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    """The units of an ace.json ranked by ACE (each with its rank; a unit without an ACE last) and its settings
    (with its schema-2 "evidence", see `evidence`)."""
    record = _read(files, path)
    units = record.get("units") if isinstance(record, dict) else None
    width = len(document["layers"][layer]["units"])
    if not isinstance(units, list) or not all(
            isinstance(u, dict) and isinstance(u.get("unit"), int) and 0 <= u["unit"] < width
            and "ace" in u and (u["ace"] is None or isinstance(u["ace"], float) or integer(u["ace"]) is not None)
            for u in units):
        if record is not None:
            warnings.warn(f"report: skipping {path}: needs units [{{unit (< {width}), ace, ...}}]", stacklevel=2)
        return None
    keys = ("ace", "inserted", "ablated", "value", "iou")
    ranked = sorted(units, key=lambda u: (_number(u["ace"]) is None, -(_number(u["ace"]) or 0.0)))
    settings = {k: record[k] for k in ("samples", "seed", "definition") if k in record}
    rows = []
    for i, u in enumerate(ranked):  # stable: ties keep the file's order
        row = {"unit": u["unit"], "rank": i + 1, **{k: _number(u.get(k)) for k in keys}}
        effects = unit_effects(u)
        if effects is not None:
            row["effects"] = effects
        rows.append(row)
    evidence = concept_evidence(record, rows)
    if evidence is not None:
        settings["evidence"] = evidence
        settings["definitions"] = definitions(record)
    return rows, settings


def _unit_label(unit: Any, concepts: set[str]) -> tuple[bool, str | None]:
    """(valid, concept) of a labels.json unit: `concept` (a name or null), or as CausalLabels.to_json writes it,
    `label` (a name or "none")."""
    if not isinstance(unit, dict) or ("concept" not in unit and "label" not in unit):
        return False, None
    value = unit["concept"] if "concept" in unit else unit["label"]
    if "concept" not in unit and value == "none" and "none" not in concepts:
        value = None
    return value is None or isinstance(value, str), value


def _labels(files: RunFiles, path: str, document: dict[str, Any], layer: str
            ) -> tuple[dict[int, dict], dict[str, Any], str] | None:
    """A labels.json's labels of the units it measured, its agreement records, and how its labels are defined
    ("" when it does not say)."""
    record = _read(files, path)
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
    labels = {u["unit"]: {"concept": _unit_label(u, concepts)[1], "effect": _number(u.get("effect"))} for u in units
              if u.get("measured") is not False}
    name, known = record.get("definition"), record.get("definitions")
    meaning = known.get(name) if isinstance(name, str) and isinstance(known, dict) else None
    definition = f"{name}: {meaning}" if isinstance(meaning, str) else name if isinstance(name, str) else ""
    return labels, agreement if isinstance(agreement, dict) else {}, definition


def _figure(files: RunFiles, name: str) -> str | None:
    content = files.read(name)
    if len(content) > FIGURE_LIMIT:
        warnings.warn(f"report: skipping {files.root / name}: larger than {FIGURE_LIMIT >> 20} MiB", stacklevel=3)
        return None
    suffix = name[name.rfind("."):].lower()
    return f"data:{FIGURE_TYPES[suffix]};base64,{base64.b64encode(content).decode('ascii')}"


def _causal_tree(files: RunFiles) -> dict[str, dict[str, list[str]]]:
    """The run's causal files by layer, then by concept ("" for the layer's own files), by file name."""
    tree: dict[str, dict[str, list[str]]] = {}
    for name in files.names("causal"):
        parts = name.split("/")
        if len(parts) in (3, 4):
            tree.setdefault(parts[1], {}).setdefault(parts[2] if len(parts) == 4 else "", []).append(parts[-1])
    return tree


def load_causal(files: RunFiles | None, document: dict[str, Any]) -> Causal | None:
    """The causal results among the run's `files` (its `causal/` folder) for `document`'s layers and
    concepts; None when there are none."""
    if files is None:
        return None
    concepts = {c["name"] for c in document["concepts"]}
    causal = Causal()
    for layer, folders in sorted(_causal_tree(files).items()):
        if layer not in document["layers"]:
            causal.ignored.append(layer)
            continue
        if "labels.json" in folders.get("", []):
            found = _labels(files, f"causal/{layer}/labels.json", document, layer)
            if found is not None:
                causal.labels[layer], causal.agreement[layer], definition = found
                if definition:
                    causal.label_definition[layer] = definition
        for concept, names in sorted(folders.items()):
            if not concept:
                continue
            if concept not in concepts:
                causal.ignored.append(f"{layer}/{concept}")
                continue
            folder = f"causal/{layer}/{concept}"
            found = _ace(files, f"{folder}/ace.json", document, layer) if "ace.json" in names else None
            schema = None
            if found is not None:
                causal.ace.setdefault(layer, {})[concept], settings = found
                causal.settings.setdefault(layer, {})[concept] = settings
                causal.definitions = {**settings.pop("definitions", {}), **causal.definitions}
                schema = 2 if "evidence" in settings else 0
            shown = order([n for n in names if n[n.rfind("."):].lower() in FIGURE_TYPES])
            figures = [(n, uri, *figure_notes(files, folder, n, concept, layer, schema)) for n in shown
                       if (uri := _figure(files, f"{folder}/{n}"))]
            if figures:
                causal.figures.setdefault(layer, {})[concept] = figures
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
        chance = _number(value.get("chance"))
        return fmt(_number(value.get("fraction"))) + counts + (f"; chance {fmt(chance)}" if chance is not None else "")
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
            defined = causal.label_definition.get(name)
            what.append(f"causal labels of {len(causal.labels[name])} units"
                        + (f' <span class="muted">(definition {esc(defined)})</span>' if defined else ""))
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
        chance = "; chance: the share expected were the rule's labels shuffled across the units" if any(
            isinstance(r, dict) and "chance" in r for n in agreeing for r in causal.agreement[n].values()) else ""
        table = (f'<p class="muted">Agreement: the share of units with a causal label whose label under each rule '
                 f'is that concept{chance}.</p><table class="agreement"><thead><tr><th>rule</th>{head}</tr></thead>'
                 f"<tbody>{body}</tbody></table>")
    ignored = (f'<p class="muted">Not in this dissection, left out: {esc(", ".join(causal.ignored))}</p>'
               if causal.ignored else "")
    return (f'<section class="causal-summary" id="causal"><h2>Causal results</h2>'
            f'<p class="muted">Measured by intervening on units (run folder <code>causal/</code>): ACE and figures '
            f'per concept, causal labels per layer.</p><ul class="causal-layers">{"".join(parts)}</ul>'
            f"{table}{ignored}</section>")


def _measured(concept: str, ranked: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per unit what its page shows of its effect on `concept`: ACE and rank, and with a schema-2 file, the
    effects of every direction (see `evidence.unit_effects`) instead of the shares inserted and ablated."""
    out = {}
    for u in ranked:
        shown = {"concept": concept, "ace": u["ace"], "rank": u["rank"], "of": len(ranked)}
        if "effects" in u:
            shown["effects"] = u["effects"]
        else:
            shown.update(inserted=u["inserted"], ablated=u["ablated"])
        out[u["unit"]] = shown
    return out


def page_json(causal: Causal, document: dict[str, Any]) -> dict[str, Any]:
    """The JSON causal.js reads (floats to 4 significant digits, NaN as null): per unit its causal label and
    effects on every measured concept (its labelled concept first), per concept and layer the top units (by
    ACE, or with a schema-2 file by every direction, with the evidence) and the figures with their captions."""
    units: dict[str, dict[str, Any]] = {}
    for name, layer in document["layers"].items():
        if name not in causal.ace and name not in causal.labels:
            continue
        measured = [_measured(c, ranked) for c, ranked in causal.ace.get(name, {}).items()]
        entries = {}
        for record in layer["units"]:
            unit, concept = int(record["unit"]), record["concept"]
            ace = [found[unit] for found in measured if unit in found]
            ace.sort(key=lambda a: (a["concept"] != concept, a["ace"] is None, -(a["ace"] or 0.0)))
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
            settings = causal.settings.get(name, {}).get(concept, {})
            top = [] if "evidence" in settings else ranked[:TOP_UNITS]  # schema 2: the evidence's rankings
            concepts.setdefault(concept, {})[name] = {
                "top": top, "of": len(ranked), **settings,
                "figures": [list(f) for f in causal.figures.get(name, {}).get(concept, [])]}
    return compact({"units": units, "concepts": concepts, "definitions": causal.definitions,
                    "ace_layers": [name for name in document["layers"] if name in causal.ace],
                    "label_layers": [name for name in document["layers"] if name in causal.labels]})


def body_html(causal: Causal | None, document: dict[str, Any]) -> tuple[str, str]:
    """What the page adds to its head (causal.css) and to the end of its body (the JSON and causal.js)."""
    if causal is None:
        return "", ""
    payload = json.dumps(page_json(causal, document), separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return (f"<style>{asset('causal.css')}</style>",
            f'<script type="application/json" id="causal-data">{payload}</script><script>{asset("causal.js")}</script>')
