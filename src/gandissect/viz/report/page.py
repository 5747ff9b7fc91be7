"""The report page: the HTML skeleton (report.html) filled with the run's summary, a chart and a gallery per
layer, the page's JSON data, and report.css and report.js inlined, so that it is one self-contained file.

    with Snapshot(run) as files:
        document = read_json_file(files, "dissect.json")
        write_report(document, generator, staging, files=files)   # -> staging / "report.html"

Galleries sort by IoU, crossfit IoU, unit number or concept. Clicking a unit opens its page
(`#unit/<layer>/<unit>`), clicking a concept its page (`#concept/<name>`); report.js draws both from the
JSON data. Layer and concept names in links are percent-encoded.

When the run folder has causal results (`<run>/causal/`, see `causal`), the page shows them too; without
them it is the same page, byte for byte.
"""

from __future__ import annotations

import functools
import html
import json
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import quote

import torch
from torch import nn
from tqdm import tqdm

from gandissect.core.images import data_uri
from gandissect.engine.runfiles import RunFiles
from gandissect.engine.storage import write_text_atomic
from gandissect.viz.report.causal import Causal, body_html, card_tag, header_html, load_causal
from gandissect.viz.report.charts import category_rank, concept_chart
from gandissect.viz.report.data import (
    ImageKey,
    check_document,
    concept_units,
    fmt,
    image_requests,
    page_data,
    rules,
)
from gandissect.viz.report.images import REPORT_SIDE, picture_size, render_layer, strip_layout, threshold_key

BELOW_CUT = '<span class="tag">not interpretable</span>'
ACTIVE = ' class="active"'
CARD_FRAME = 14  # px: a gallery card's padding and border, both sides (report.css)
SORT_KEYS = (("iou", "IoU"), ("crossfit", "crossfit IoU"), ("unit", "unit"), ("concept", "concept"))
KNOWN_KEYS = {"schema", "config", "model", "segmenter", "concepts", "segmentation_size", "label_method",
              "label_rules", "threshold_method", "layers", "output_range"}
esc = html.escape


@functools.cache
def asset(name: str) -> str:
    """A file of this package (report.css, report.js, report.html), checked to be safe to inline."""
    text = resources.files(__package__).joinpath(name).read_text("utf-8")
    if name != "report.html" and ("</style" in text.lower() or "</script" in text.lower()):
        raise ValueError(f"{name} would end its inline element early")
    return text


def _title(document: dict[str, Any]) -> str:
    model = document.get("model")
    return f"Dissection of {model}" if isinstance(model, str) else "Dissection report"


def _size(values: Any) -> str:
    return "×".join(str(v) for v in values or [])


def layer_title(name: str) -> str:
    """A layer's heading: its name, with "Layer" before a name that does not say it is one ("layer2", "0")."""
    return name if name.lower().startswith("layer") else f"Layer {name}"


def strip_html(picture: str, overlay: str, alt: str, layout: dict[str, Any]) -> str:
    """A strip of top images under its region overlay, in layout["rows"] rows (report.js draws the other
    rows from the first; report.css places them), at least layout["row_px"] wide."""
    return (f'<div class="strip" style="--rows:{layout["rows"]};min-width:{layout["row_px"]}px">'
            f'<div class="strip-row"><img class="picture" src="{picture}" alt="{alt}">'
            f'<img class="overlay" src="{overlay}" alt=""></div></div>')


def _clipped(counts: Any) -> list[tuple[str, str]]:
    """The header row saying how many image values were outside the generator's range and clipped to it."""
    keys = ("clipped_values", "of_values", "clipped_samples", "of_samples")
    if not isinstance(counts, dict) or not all(isinstance(counts.get(k), int) for k in keys):
        return []
    declared = counts.get("declared") or ["?", "?"]
    span = f"[{fmt(declared[0])}, {fmt(declared[-1])}]"
    if not counts["clipped_values"]:
        return [("output range", f"every image value in {span}")]
    share = counts["clipped_values"] / max(counts["of_values"], 1)
    return [("output range", f"{share:.2%} of image values, in {counts['clipped_samples']} of {counts['of_samples']} "
                             f"samples, were outside {span} and clipped to it (largest overshoot "
                             f"{fmt(counts.get('largest_overshoot'))})")]


def _extras(document: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, value in document.items():
        if key not in KNOWN_KEYS:
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            rows.append((key, text if len(text) <= 300 else text[:297] + "…"))
    return rows


def _header(document: dict[str, Any], colors: dict[str, str], causal: str = "") -> str:
    config = document["config"]
    method = document["label_method"]
    rows = [
        ("model", document.get("model", "")),
        ("segmenter", document.get("segmenter", "")),
        ("layers", ", ".join(document["layers"])),
        ("samples", f"{config.get('samples')} per set"),
        ("seeds", f"thresholds, IoU and images {config.get('iou_seed')} (one pass)" if config.get("passes") == "one"
         else f"thresholds {config.get('threshold_seed')}, IoU and images {config.get('iou_seed')}"),
        ("quantile", f"top {config.get('quantile')} of each unit's upsampled activations"),
        ("label method", f"{method}: {rules(document).get(method, '')}"),
        ("interpretable", f"IoU > {config.get('min_iou')}"
                          + (f", IQR > {config['min_iqr']}" if "min_iqr" in config else "")
                          + " and IoU above the concept's whole-image IoU"),
        ("segmentation", _size(document.get("segmentation_size"))),
        *_clipped(document.get("output_range")),
        ("concepts", f"{len(document['concepts'])} in {len({c['category'] for c in document['concepts']})} "
                     "categories"),
        ("threshold method", document.get("threshold_method", "")),
        *_extras(document),
    ]
    table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in rows)
    layer_rows = "".join(
        f'<li><a href="#layer/{quote(name, safe="")}">{esc(name)}</a> <span class="muted">{_size(layer["shape"])}: '
        f'{layer["interpretable_units"]} of {len(layer["units"])} units interpretable</span></li>'
        for name, layer in document["layers"].items())
    totals: dict[str, int] = {}
    for layer in document["layers"].values():
        for concept, n in layer.get("interpretable_by_concept", {}).items():
            totals[concept] = totals.get(concept, 0) + n
    chips = []
    for entry in sorted(document["concepts"],
                        key=lambda c: (category_rank(c["category"]), -totals.get(c["name"], 0), c["name"])):
        name, n = entry["name"], totals.get(entry["name"], 0)
        chips.append(f'<a class="chip{"" if n else " zero"}" href="#concept/{quote(name, safe="")}" '
                     f'style="border-color:{colors.get(entry["category"], "#888")}" data-concept="{esc(name)}" '
                     f'title="{esc(entry["category"])}, whole-image IoU {fmt(entry.get("baseline_iou"))}">'
                     f'{esc(name)} <b>{n}</b></a>')
    legend = "".join(f'<span class="legend-item"><i style="background:{c}"></i>{esc(cat)}</span>'
                     for cat, c in sorted(colors.items(), key=lambda t: category_rank(t[0])))
    return (f'<header id="top"><h1>{esc(_title(document))}</h1><div class="header-grid">'
            f'<div><table class="summary">{table}</table></div>'
            f'<div><h2>Layers</h2><ul class="layers">{layer_rows}</ul>'
            f'<h2>Concepts <span class="legend">{legend}</span></h2>'
            f'<p class="muted">Interpretable units per concept over all layers; click one for its best units.</p>'
            f'<div class="chips">{"".join(chips)}</div></div></div>{causal}</header>')


def _score(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and value == value else -1.0


def _card(layer_name: str, record: dict[str, Any], picture: str, overlay: tuple[int, str], color: str,
          layout: dict[str, Any], tag: str = "") -> str:
    unit = int(record["unit"])
    interpretable = bool(record.get("interpretable"))
    alt = f"top images of {esc(layer_name)} unit {unit}"
    return (
        f'<a class="unit-card{" interpretable" if interpretable else ""}" '
        f'href="#unit/{quote(layer_name, safe="")}/{unit}" data-layer="{esc(layer_name)}" data-unit="{unit}" '
        f'data-iou="{_score(record["iou"]):.6g}" data-crossfit="{_score(record.get("crossfit_iou")):.6g}" '
        f'data-concept="{esc(record["concept"])}" data-category="{esc(record["category"])}" '
        f'data-threshold="{_score(record["threshold"]):.6g}" data-interpretable="{int(interpretable)}" '
        f'data-overlay="{overlay[0]}">'
        f'<div class="card-head"><span class="unit-no">unit {unit}</span>'
        f'<span class="concept" style="background:{color}">{esc(record["concept"])}</span>'
        f'<span class="iou">IoU {fmt(record["iou"])} · crossfit {fmt(record.get("crossfit_iou"))}</span></div>'
        f'{strip_html(picture, overlay[1], alt, layout)}'
        f'<div class="card-foot"><span>{esc(record["category"])}</span>'
        f'<span>IQR {fmt(record.get("iqr"))}</span><span>threshold {fmt(record["threshold"])}</span>'
        f'{tag}{"" if interpretable else BELOW_CUT}</div></a>')


def _layer_section(name: str, document: dict[str, Any], pictures: dict[int, str], overlays: list[str],
                   index: dict[ImageKey, int], colors: dict[str, str], layout: dict[str, Any],
                   causal: Causal | None = None) -> str:
    layer = document["layers"][name]
    records = sorted(layer["units"], key=lambda r: (-_score(r["iou"]), r["unit"]))
    cards = []
    for record in records:
        unit = int(record["unit"])
        overlay = index[name, unit, threshold_key(record["threshold"])]
        cards.append(_card(name, record, pictures[unit], (overlay, overlays[overlay]),
                           colors.get(record["category"], "#888"), layout, card_tag(causal, name, record)))
    buttons = "".join(f'<button type="button" data-sort="{key}"{ACTIVE if key == "iou" else ""}>'
                      f'{label}</button>' for key, label in SORT_KEYS)
    return (
        f'<section class="layer-section" data-layer="{esc(name)}">'
        f'<h2>{esc(layer_title(name))} <span class="muted">{_size(layer["shape"])}, '
        f'{layer["interpretable_units"]} of {len(layer["units"])} units interpretable</span></h2>'
        f'<div class="chart-box">{concept_chart(name, layer, document["concepts"], colors)}</div>'
        f'<div class="controls"><span>sort by</span>{buttons}'
        f'<label><input type="checkbox" class="filter-interpretable"> interpretable only</label>'
        f'<span class="muted shown"></span></div>'
        f'<div class="gallery">{"".join(cards)}</div></section>')


def render_html(document: dict[str, Any], pictures: dict[str, dict[int, str]], overlays: list[str],
                index: dict[ImageKey, int], count: int = 8, causal: Causal | None = None) -> str:
    """The page from a schema-2 document, per layer and unit the URI of its plain strip of top images, and the
    URIs of the region overlays, `index` naming which (layer, unit, threshold key) each one draws; with
    `causal` (`load_causal`), its causal results too."""
    check_document(document)
    data = page_data(document, concept_units(document), index, count)
    in_cards = {index[name, int(r["unit"]), threshold_key(r["threshold"])]
                for name, layer in document["layers"].items() for r in layer["units"]}
    data["overlays"] = ["" if i in in_cards else uri for i, uri in enumerate(overlays)]  # report.js takes these
    first = next((uri for layer in pictures.values() for uri in layer.values()), None)
    width = picture_size(first)[1] // count - 1 if first else int((document.get("segmentation_size") or [64])[-1])
    data["strip"] = layout = strip_layout(count, width)
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    sections = "".join(_layer_section(name, document, pictures[name], overlays, index, data["colors"], layout,
                                      causal) for name in document["layers"])
    head, tail = body_html(causal, document)
    return Template(asset("report.html")).substitute(
        title=esc(_title(document)), css=asset("report.css"), causal_css=head,
        body_style=f"--card-min: {layout['row_px'] + CARD_FRAME}px",
        header=_header(document, data["colors"], header_html(causal, document)),
        sections=sections, data=payload, js=asset("report.js"), causal_js=tail)


def write_report(document: dict[str, Any], generator: nn.Module, out_dir: str | Path,
                 device: str | torch.device = "cpu", images_per_unit: int = 8, batch_size: int = 32,
                 quality: int = 75, files: RunFiles | None = None, progress: bool = True) -> Path:
    """Render every image the report's pages show and write `out_dir/report.html` atomically; returns its path.
    Each layer's top samples are generated once; a unit's pictures are stored once, at most REPORT_SIDE
    pixels on a side, and each threshold it is drawn at adds only a small overlay (progress bars count the
    samples drawn and the pictures made). Causal results are read from the run's `files` (a checked
    snapshot, or a command's staged update over it), when given."""
    check_document(document)
    causal = load_causal(files, document)
    pictures: dict[str, dict[int, str]] = {}
    overlays: list[str] = []
    index: dict[ImageKey, int] = {}
    requests = image_requests(document, concept_units(document))
    for name, wanted in requests.items():
        images = render_layer(generator, document, name, sorted(wanted), images_per_unit, device, batch_size,
                              side=REPORT_SIDE, progress=progress)
        with tqdm(total=len(wanted), desc=f"report: {name} pictures", unit="picture", disable=not progress,
                  dynamic_ncols=True) as bar:
            pictures[name] = {unit: data_uri(picture, quality) for unit, picture in images.pictures.items()}
            for unit, key in sorted(wanted):
                index[name, unit, key] = len(overlays)
                overlays.append(images.overlay(unit, key))
                bar.update(1)
    path = Path(out_dir) / "report.html"
    write_text_atomic(path, render_html(document, pictures, overlays, index, images_per_unit, causal))
    return path
