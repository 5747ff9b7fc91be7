"""The dissection report: one self-contained HTML page (inline CSS, JS, SVG and data: images; no network).

    document = json.loads((run / "dissect.json").read_text())
    write_report(document, generator, run)        # -> run / "report.html"

The page shows the run's settings, a bar chart per layer of interpretable units per concept (grouped and
coloured by category, as in the GAN Dissection paper), and a gallery of every unit with its top images,
the region above the unit's threshold highlighted. Galleries sort by IoU, unit number or concept. Clicking
a unit opens its page (`#unit/<layer>/<unit>`), clicking a concept its page (`#concept/<name>`): the best
units for that concept across layers. Layer and concept names in links are percent-encoded.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import torch
from torch import nn

from gandissect.core.features import upsample
from gandissect.core.hooks import Trace
from gandissect.core.images import data_uri, to_uint8
from gandissect.core.sampling import sample_z
from gandissect.engine.storage import write_text_atomic

DIM = 0.35
OUTLINE = (255, 230, 40)
GAP = 255
CONCEPT_PAGE_UNITS = 12
TOP_CONCEPTS_PER_UNIT = 5
CATEGORY_ORDER = ("object", "part", "material", "color", "scene", "texture")
CATEGORY_COLORS = {
    "object": "#4e79a7",
    "part": "#f28e2b",
    "material": "#59a14f",
    "color": "#e15759",
    "scene": "#76b7b2",
    "texture": "#b07aa1",
}
EXTRA_COLORS = ("#9c755f", "#edc948", "#ff9da7", "#bab0ac", "#86bcb6", "#d37295")
BELOW_CUT = '<span class="tag">not interpretable</span>'
ACTIVE = ' class="active"'
KNOWN_KEYS = {"schema", "config", "concepts", "segmentation_size", "threshold_method", "layers"}


# --------------------------------------------------------------------------------------------- images


def highlight(picture: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Dim `picture` (H, W, 3) uint8 to DIM outside `mask` (H, W) bool; draw the mask's inner border in OUTLINE."""
    out = picture.copy()
    outside = ~mask
    out[outside] = np.round(picture[outside].astype(np.float32) * DIM).astype(np.uint8)
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    out[mask & ~interior] = OUTLINE
    return out


def _strip(count: int, height: int, width: int) -> np.ndarray:
    return np.full((height, count * (width + 1), 3), GAP, np.uint8)


def render_unit_images(generator: nn.Module, document: dict[str, Any], layer: str, units: Iterable[int] | None = None,
                       count: int = 8, device: str | torch.device = "cpu",
                       batch_size: int = 32) -> dict[int, np.ndarray]:
    """Per unit of `layer`: its top `count` images side by side, (H, count * (W + 1), 3) uint8, each image
    followed by a 1-px white gap; outside the unit's region above threshold the image is dimmed to 35%, and
    the region gets a 1-px outline. Images come from the IoU sample set (seed `config.iou_seed`); each
    distinct sample is generated once, in batches of `batch_size`. Units with fewer top samples than
    `count` leave the rest of their strip white."""
    records = {int(r["unit"]): r for r in document["layers"][layer]["units"]}
    chosen = sorted(records) if units is None else [int(u) for u in units]
    missing = [u for u in chosen if u not in records]
    if missing:
        raise KeyError(f"layer {layer!r} has no units {missing[:10]} (it has {len(records)})")
    # sample index -> [(unit, rank)], every use of a sample by a unit's strip
    uses: dict[int, list[tuple[int, int]]] = {}
    for unit in chosen:
        for rank, sample in enumerate(records[unit]["top_samples"][:count]):
            uses.setdefault(int(sample), []).append((unit, rank))
    samples = sorted(uses)
    strips: dict[int, np.ndarray] = {}
    device = torch.device(device)
    generator = generator.to(device).eval()
    seed = int(document["config"]["iou_seed"])
    for start in range(0, len(samples), batch_size):
        batch = samples[start:start + batch_size]
        z = sample_z(generator, seed, torch.tensor(batch)).to(device)
        with torch.no_grad(), Trace(generator, [layer]) as trace:
            images = generator(z)
        pictures = to_uint8(images)
        acts = trace[layer].float()
        height, width = pictures.shape[1:3]
        pairs = [(b, unit, rank) for b, sample in enumerate(batch) for unit, rank in uses[sample]]
        rows = torch.tensor([p[0] for p in pairs], device=acts.device)
        cols = torch.tensor([p[1] for p in pairs], device=acts.device)
        thresholds = torch.tensor([records[p[1]]["threshold"] for p in pairs], device=acts.device)
        up = upsample(acts[rows, cols][:, None], (height, width))[:, 0]
        masks = (up > thresholds[:, None, None]).cpu().numpy()
        for (b, unit, rank), mask in zip(pairs, masks, strict=True):
            strip = strips.get(unit)
            if strip is None:
                strip = strips[unit] = _strip(count, height, width)
            x = rank * (width + 1)
            strip[:, x:x + width] = highlight(pictures[b], mask)
    for unit in chosen:
        if unit not in strips:  # no top samples at all
            size = document.get("segmentation_size") or [64, 64]
            strips[unit] = _strip(count, int(size[0]), int(size[1]))
    return {unit: strips[unit] for unit in chosen}


# ----------------------------------------------------------------------------------------------- data


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def category_colors(categories: Sequence[str]) -> dict[str, str]:
    colors = {}
    extra = 0
    for category in categories:
        if category in colors:
            continue
        if category in CATEGORY_COLORS:
            colors[category] = CATEGORY_COLORS[category]
        else:
            colors[category] = EXTRA_COLORS[extra % len(EXTRA_COLORS)]
            extra += 1
    return colors


def _category_rank(category: str) -> tuple[int, str]:
    return (CATEGORY_ORDER.index(category), "") if category in CATEGORY_ORDER else (len(CATEGORY_ORDER), category)


def unit_concept_iou(layer: dict[str, Any]) -> dict[int, dict[str, float]]:
    """unit -> {concept: IoU at the unit's threshold}, from the layer's per-concept rankings."""
    table: dict[int, dict[str, float]] = {}
    for concept, ranking in layer["concepts"].items():
        for unit, iou in zip(ranking["units"], ranking["iou"], strict=True):
            table.setdefault(int(unit), {})[concept] = iou
    return table


def page_data(document: dict[str, Any], count: int) -> dict[str, Any]:
    """The JSON embedded in the page: per unit its record and top concepts, per concept its best units."""
    layers: dict[str, Any] = {}
    best: dict[str, list[tuple[float, str, int]]] = {c["name"]: [] for c in document["concepts"]}
    for name, layer in document["layers"].items():
        per_unit = unit_concept_iou(layer)
        units = {}
        for record in layer["units"]:
            unit = int(record["unit"])
            scores = per_unit.get(unit, {})
            top = sorted(scores.items(), key=lambda item: -(item[1] if item[1] == item[1] else -1))
            units[str(unit)] = {
                **{k: _finite(v) for k, v in record.items() if k not in ("top_samples", "top_values")},
                "top_samples": record["top_samples"][:count],
                "top_values": [_finite(v) for v in record["top_values"][:count]],
                "top_concepts": [[c, _finite(v)] for c, v in top[:TOP_CONCEPTS_PER_UNIT]],
            }
        layers[name] = {"units": units, "shape": layer["shape"], "interpretable_by_concept": layer.get(
            "interpretable_by_concept", {})}
        for concept, ranking in layer["concepts"].items():
            for unit, iou in list(zip(ranking["units"], ranking["iou"], strict=True))[:CONCEPT_PAGE_UNITS]:
                if iou is not None and iou == iou:
                    best.setdefault(concept, []).append((iou, name, int(unit)))
    concepts = {}
    layer_order = list(document["layers"])
    for entry in document["concepts"]:
        name = entry["name"]
        ranked = sorted(best.get(name, []), key=lambda t: (-t[0], layer_order.index(t[1]), t[2]))
        concepts[name] = {
            "category": entry["category"],
            "best": [[layer, unit, iou] for iou, layer, unit in ranked[:CONCEPT_PAGE_UNITS]],
            "interpretable": {layer: document["layers"][layer].get("interpretable_by_concept", {}).get(name, 0)
                              for layer in layer_order},
        }
    colors = category_colors([c["category"] for c in document["concepts"]])
    return {"layers": layers, "concepts": concepts, "colors": colors,
            "min_iou": document["config"].get("min_iou"), "min_iqr": document["config"].get("min_iqr"),
            "label_method": document.get("label_method", "quantile"),
            "images_per_unit": count}


# ---------------------------------------------------------------------------------------------- chart


def concept_chart(layer_name: str, layer: dict[str, Any], concepts: list[dict[str, str]],
                  colors: dict[str, str]) -> str:
    """Inline SVG bar chart: interpretable units per concept, grouped and coloured by category."""
    counts = layer.get("interpretable_by_concept", {})
    category_of = {c["name"]: c["category"] for c in concepts}
    groups: dict[str, list[tuple[str, int]]] = {}
    for concept, n in counts.items():
        if n > 0:
            groups.setdefault(category_of.get(concept, "other"), []).append((concept, int(n)))
    ordered = sorted(groups, key=_category_rank)
    bars = [(cat, c, n) for cat in ordered for c, n in sorted(groups[cat], key=lambda t: (-t[1], t[0]))]
    longest = max((min(len(c), 16) for _, c, _ in bars), default=4)
    bar, gap, group_gap, left, top, plot_h = 16, 4, 18, 36, 18, 150
    label_h = 30 + round(longest * 5.6)  # labels at 60 degrees, about 6.5 px per character
    width = left + 10 + sum(len(groups[c]) * (bar + gap) for c in ordered) + group_gap * max(len(ordered) - 1, 0)
    width = max(width, 320)
    height = top + plot_h + label_h + 22
    highest = max((n for _, _, n in bars), default=1)
    step = max(1, math.ceil(highest / 5))
    ymax = step * math.ceil(highest / step)
    scale = plot_h / ymax
    base = top + plot_h
    esc = html.escape
    parts = [f'<svg class="concept-chart" data-layer="{esc(layer_name)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="interpretable units per concept, {esc(layer_name)}">']
    for tick in range(0, ymax + 1, step):
        y = base - tick * scale
        parts.append(f'<line class="grid" x1="{left}" x2="{width - 4}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="tick" x="{left - 5}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>')
    if not bars:
        parts.append(f'<text class="empty" x="{left + 10}" y="{top + plot_h / 2:.0f}">no interpretable units</text>')
    x = left + 8
    for index, category in enumerate(ordered):
        if index:
            x += group_gap
        start = x
        color = colors.get(category, "#888")
        for concept, n in sorted(groups[category], key=lambda t: (-t[1], t[0])):
            h = n * scale
            cx = x + bar / 2
            label = concept if len(concept) <= 16 else concept[:15] + "…"
            parts.append(
                f'<a href="#concept/{quote(concept, safe="")}" class="bar-link">'
                f'<rect class="bar" x="{x}" y="{base - h:.1f}" width="{bar}" height="{h:.1f}" fill="{color}" '
                f'data-concept="{esc(concept)}" data-category="{esc(category)}" data-count="{n}">'
                f'<title>{esc(concept)} ({esc(category)}): {n} unit{"s" if n != 1 else ""}</title></rect>'
                f'<text class="count" x="{cx}" y="{base - h - 3:.1f}" text-anchor="middle">{n}</text>'
                f'<text class="label" transform="translate({cx + 4},{base + 6}) rotate(-60)" '
                f'text-anchor="end">{esc(label)}</text></a>')
            x += bar + gap
        end = x - gap
        y = base + label_h - 8
        parts.append(f'<line class="bracket" x1="{start}" x2="{end}" y1="{y}" y2="{y}" stroke="{color}"/>'
                     f'<text class="category" x="{(start + end) / 2:.1f}" y="{y + 15}" text-anchor="middle" '
                     f'fill="{color}">{esc(category)}</text>')
    parts.append(f'<line class="axis" x1="{left}" x2="{width - 4}" y1="{base}" y2="{base}"/></svg>')
    return "".join(parts)


# ----------------------------------------------------------------------------------------------- page


def _extras(document: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, value in document.items():
        if key in KNOWN_KEYS:
            continue
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        rows.append((key, text if len(text) <= 300 else text[:297] + "…"))
    return rows


def _header(document: dict[str, Any], data: dict[str, Any]) -> str:
    esc = html.escape
    config = document["config"]
    title = "GAN dissection"
    for key in ("model", "generator", "name"):
        if isinstance(document.get(key), str):
            title += f" — {document[key]}"
            break
    rows = [
        ("layers", ", ".join(document["layers"])),
        ("samples", f"{config.get('samples')} per set"),
        ("seeds", f"thresholds {config.get('threshold_seed')}, IoU and images {config.get('iou_seed')}"),
        ("quantile", f"top {config.get('quantile')} of each unit's upsampled activations"),
        ("interpretable", f"IoU > {config.get('min_iou')}"
                          + (f" and IQR > {config['min_iqr']}" if "min_iqr" in config else "")),
        ("segmentation", "×".join(str(s) for s in document.get("segmentation_size", []))),
        ("concepts", f"{len(document['concepts'])} in {len({c['category'] for c in document['concepts']})} "
                     "categories"),
        ("threshold method", document.get("threshold_method", "")),
        *_extras(document),
    ]
    table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in rows)
    layer_rows = "".join(
        f'<li><a href="#layer/{quote(name, safe="")}">{esc(name)}</a> '
        f'<span class="muted">{esc("×".join(str(s) for s in layer["shape"]))}: '
        f'{layer["interpretable_units"]} of {len(layer["units"])} units interpretable</span></li>'
        for name, layer in document["layers"].items())
    totals: dict[str, int] = {}
    for layer in document["layers"].values():
        for concept, n in layer.get("interpretable_by_concept", {}).items():
            totals[concept] = totals.get(concept, 0) + n
    chips = []
    for entry in sorted(document["concepts"], key=lambda c: (_category_rank(c["category"]), -totals.get(c["name"], 0),
                                                              c["name"])):
        name, n = entry["name"], totals.get(entry["name"], 0)
        color = data["colors"].get(entry["category"], "#888")
        chips.append(f'<a class="chip{"" if n else " zero"}" href="#concept/{quote(name, safe="")}" '
                     f'style="border-color:{color}" data-concept="{esc(name)}" title="{esc(entry["category"])}">'
                     f'{esc(name)} <b>{n}</b></a>')
    legend = "".join(f'<span class="legend-item"><i style="background:{c}"></i>{esc(cat)}</span>'
                     for cat, c in sorted(data["colors"].items(), key=lambda t: _category_rank(t[0])))
    return (f'<header id="top"><h1>{esc(title)}</h1><div class="header-grid">'
            f'<div><table class="summary">{table}</table></div>'
            f'<div><h2>Layers</h2><ul class="layers">{layer_rows}</ul>'
            f'<h2>Concepts <span class="legend">{legend}</span></h2>'
            f'<p class="muted">Interpretable units per concept over all layers; click one for its best units.</p>'
            f'<div class="chips">{"".join(chips)}</div></div></div></header>')


def _card(layer_name: str, record: dict[str, Any], uri: str, color: str) -> str:
    esc = html.escape
    unit = int(record["unit"])
    iou = record["iou"] if isinstance(record["iou"], float) and math.isfinite(record["iou"]) else 0.0
    interpretable = bool(record.get("interpretable"))
    href = f"#unit/{quote(layer_name, safe='')}/{unit}"
    return (
        f'<a class="unit-card{" interpretable" if interpretable else ""}" href="{href}" '
        f'data-layer="{esc(layer_name)}" data-unit="{unit}" data-iou="{iou:.6g}" '
        f'data-concept="{esc(record["concept"])}" data-category="{esc(record["category"])}" '
        f'data-interpretable="{int(interpretable)}">'
        f'<div class="card-head"><span class="unit-no">unit {unit}</span>'
        f'<span class="concept" style="background:{color}">{esc(record["concept"])}</span>'
        f'<span class="iou">IoU {_num(record["iou"])}</span></div>'
        f'<img class="strip" src="{uri}" alt="top images of {esc(layer_name)} unit {unit}">'
        f'<div class="card-foot"><span>{esc(record["category"])}</span>'
        f'<span>IQR {_num(record.get("iqr"))}</span>'
        f'{"" if interpretable else BELOW_CUT}</div></a>')


def _layer_section(name: str, layer: dict[str, Any], document: dict[str, Any], strips: dict[int, str],
                   colors: dict[str, str]) -> str:
    esc = html.escape
    records = sorted(layer["units"], key=lambda r: (-(r["iou"] if r["iou"] == r["iou"] else -1), r["unit"]))
    cards = "".join(_card(name, r, strips[int(r["unit"])], colors.get(r["category"], "#888")) for r in records)
    sort_buttons = "".join(
        f'<button type="button" data-sort="{key}"{ACTIVE if key == "iou" else ""}>{label}</button>'
        for key, label in (("iou", "IoU"), ("unit", "unit"), ("concept", "concept")))
    return (
        f'<section class="layer-section" data-layer="{esc(name)}">'
        f'<h2>Layer {esc(name)} <span class="muted">{esc("×".join(str(s) for s in layer["shape"]))}, '
        f'{layer["interpretable_units"]} of {len(layer["units"])} units interpretable</span></h2>'
        f'<div class="chart-box">{concept_chart(name, layer, document["concepts"], colors)}</div>'
        f'<div class="controls"><span>sort by</span>{sort_buttons}'
        f'<label><input type="checkbox" class="filter-interpretable"> interpretable only</label>'
        f'<span class="muted shown"></span></div>'
        f'<div class="gallery">{cards}</div></section>')


def render_html(document: dict[str, Any], strips: dict[str, dict[int, str]], images_per_unit: int = 8) -> str:
    """The report page from a dissect.json document and per layer, per unit, an image URI."""
    data = page_data(document, images_per_unit)
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    sections = "".join(_layer_section(name, layer, document, strips[name], data["colors"])
                       for name, layer in document["layers"].items())
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(_title(document))}</title><style>{CSS}</style></head><body>"
        f"{_header(document, data)}<main>{sections}</main>"
        '<section id="unit-view" class="view" hidden><div class="panel"></div></section>'
        '<section id="concept-view" class="view" hidden><div class="panel"></div></section>'
        f'<script type="application/json" id="report-data">{payload}</script>'
        f"<script>{JS}</script></body></html>\n")


def _title(document: dict[str, Any]) -> str:
    for key in ("model", "generator", "name"):
        if isinstance(document.get(key), str):
            return f"Dissection of {document[key]}"
    return "Dissection report"


def write_report(document: dict[str, Any], generator: nn.Module, out_dir: str | Path,
                 device: str | torch.device = "cpu", images_per_unit: int = 8, batch_size: int = 32,
                 quality: int = 75) -> Path:
    """Render every unit's top images and write `out_dir/report.html` atomically; returns its path."""
    strips = {}
    for name in document["layers"]:
        pictures = render_unit_images(generator, document, name, count=images_per_unit, device=device,
                                      batch_size=batch_size)
        strips[name] = {unit: data_uri(picture, quality) for unit, picture in pictures.items()}
    path = Path(out_dir) / "report.html"
    write_text_atomic(path, render_html(document, strips, images_per_unit))
    return path


CSS = """
:root{--fg:#1d2330;--muted:#6b7385;--bg:#f6f7f9;--card:#fff;--line:#dde1e8;--accent:#2f6fde}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header,main{max-width:1400px;margin:0 auto;padding:12px 20px}
h1{font-size:22px;margin:8px 0 10px}
.header-grid{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:28px}
.header-grid h2:first-child{margin-top:0}
@media (max-width:900px){.header-grid{grid-template-columns:1fr}}h2{font-size:17px;margin:18px 0 8px}
a{color:var(--accent);text-decoration:none}
.muted{color:var(--muted);font-weight:normal;font-size:13px}
table.summary{border-collapse:collapse;font-size:13px}
table.summary th{text-align:left;padding:2px 14px 2px 0;color:var(--muted);font-weight:600;vertical-align:top;
white-space:nowrap}
table.summary td{padding:2px 0}
ul.layers{margin:0;padding-left:18px}
.legend{font-size:12px;font-weight:normal;margin-left:12px}
.legend-item{margin-right:10px;white-space:nowrap}
.legend-item i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
.chips{display:flex;flex-wrap:wrap;gap:5px}
.chip{border:1px solid;border-left-width:5px;border-radius:4px;padding:1px 6px;background:#fff;color:var(--fg);
font-size:12px}
.chip.zero{opacity:.5}
.layer-section{border-top:1px solid var(--line);margin-top:12px}
.chart-box{display:inline-block;max-width:100%;overflow-x:auto;background:#fff;border:1px solid var(--line);
border-radius:6px;padding:6px}
svg.concept-chart{display:block;font-size:11px}
svg.concept-chart .grid{stroke:#e7e9ee}svg.concept-chart .axis{stroke:#9aa1ad}
svg.concept-chart .tick,svg.concept-chart .count{fill:#6b7385;font-size:10px}
svg.concept-chart .label{fill:var(--fg)}
svg.concept-chart .category{font-weight:600;font-size:12px}
svg.concept-chart .bracket{stroke-width:2}
svg.concept-chart a:hover rect{opacity:.75}
.controls{display:flex;gap:6px;align-items:center;margin:10px 0;flex-wrap:wrap}
.controls button{border:1px solid var(--line);background:#fff;border-radius:4px;padding:3px 10px;cursor:pointer;
font:inherit}
.controls button.active{background:var(--accent);color:#fff;border-color:var(--accent)}
.controls label{margin-left:10px;cursor:pointer}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:10px}
.unit-card{display:block;background:var(--card);border:1px solid var(--line);border-radius:6px;padding:6px;
color:var(--fg)}
.unit-card:hover{border-color:var(--accent);box-shadow:0 1px 4px rgba(0,0,0,.12)}
.unit-card:not(.interpretable){opacity:.72}
.unit-card.hidden{display:none}
.card-head,.card-foot{display:flex;gap:8px;align-items:center;font-size:12px}
.card-foot{color:var(--muted);margin-top:3px}
.unit-no{font-weight:600}
.concept{color:#fff;border-radius:3px;padding:0 5px}
.iou{margin-left:auto;font-variant-numeric:tabular-nums}
.tag{margin-left:auto;font-style:italic}
img.strip{display:block;width:100%;image-rendering:pixelated;margin-top:4px}
.view{position:fixed;inset:0;background:rgba(20,24,32,.55);overflow-y:auto;z-index:10;padding:30px 16px}
.view[hidden]{display:none}
.panel{max-width:1150px;margin:0 auto;background:#fff;border-radius:8px;padding:16px 22px;position:relative}
.panel h2{margin-top:0}
.close{position:absolute;right:14px;top:10px;font-size:22px;color:var(--muted)}
.panel img.strip{max-width:100%}
.panel table{border-collapse:collapse;margin:8px 0}
.panel td,.panel th{padding:2px 12px 2px 0;text-align:left;font-variant-numeric:tabular-nums}
.panel th{color:var(--muted);font-weight:600}
.iou-bar{display:inline-block;height:9px;background:var(--accent);border-radius:2px;vertical-align:middle}
.nav-links{display:flex;gap:14px;margin:6px 0 10px}
.concept-units{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:10px}
.concept-unit{border:1px solid var(--line);border-radius:6px;padding:6px;display:block;color:var(--fg)}
.concept-unit:hover{border-color:var(--accent)}
"""

JS = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var enc = encodeURIComponent;

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "class") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }
  function fmt(v, d) {
    if (v === null || v === undefined) return "\u2013";
    if (typeof v !== "number") return String(v);
    if (v !== 0 && Math.abs(v) < 1e-3) return v.toExponential(2);
    return String(Number(v.toPrecision(d || 3)));
  }
  function card(layer, unit) {
    var cards = document.querySelectorAll(".unit-card");
    for (var i = 0; i < cards.length; i++) {
      if (cards[i].dataset.layer === layer && cards[i].dataset.unit === String(unit)) return cards[i];
    }
    return null;
  }
  function stripOf(layer, unit) {
    var c = card(layer, unit);
    var img = el("img", {"class": "strip", alt: "top images of " + layer + " unit " + unit});
    if (c) img.src = c.querySelector("img").src;
    return img;
  }
  function unitHref(layer, unit) { return "#unit/" + enc(layer) + "/" + unit; }
  function conceptHref(name) { return "#concept/" + enc(name); }

  // ---- gallery sorting and filtering
  function sortGallery(section, key) {
    var gallery = section.querySelector(".gallery");
    var cards = Array.prototype.slice.call(gallery.children);
    var byUnit = function (a, b) { return Number(a.dataset.unit) - Number(b.dataset.unit); };
    var byIou = function (a, b) { return Number(b.dataset.iou) - Number(a.dataset.iou) || byUnit(a, b); };
    var cmp = key === "unit" ? byUnit : key === "concept" ? function (a, b) {
      return a.dataset.concept.localeCompare(b.dataset.concept) || byIou(a, b);
    } : byIou;
    cards.sort(cmp).forEach(function (c) { gallery.appendChild(c); });
    section.querySelectorAll("button[data-sort]").forEach(function (b) {
      b.classList.toggle("active", b.dataset.sort === key);
    });
  }
  function filterGallery(section) {
    var only = section.querySelector(".filter-interpretable").checked;
    var cards = section.querySelectorAll(".unit-card"), shown = 0;
    cards.forEach(function (c) {
      var hide = only && c.dataset.interpretable !== "1";
      c.classList.toggle("hidden", hide);
      if (!hide) shown++;
    });
    section.querySelector(".shown").textContent = shown + " of " + cards.length + " units shown";
  }
  document.querySelectorAll(".layer-section").forEach(function (section) {
    section.querySelectorAll("button[data-sort]").forEach(function (b) {
      b.addEventListener("click", function () { sortGallery(section, b.dataset.sort); });
    });
    section.querySelector(".filter-interpretable").addEventListener("change", function () {
      filterGallery(section);
    });
    filterGallery(section);
  });

  // ---- views
  var unitView = document.getElementById("unit-view");
  var conceptView = document.getElementById("concept-view");
  function closeViews() {
    unitView.hidden = true;
    conceptView.hidden = true;
    document.body.style.overflow = "";
  }
  function open(view, children) {
    var panel = view.querySelector(".panel");
    panel.textContent = "";
    panel.appendChild(el("a", {href: "#", "class": "close", title: "close (Esc)", text: "\u00d7"}));
    children.forEach(function (c) { if (c) panel.appendChild(c); });
    (view === unitView ? conceptView : unitView).hidden = true;
    view.hidden = false;
    view.scrollTop = 0;
    document.body.style.overflow = "hidden";
  }
  function row(label, value) {
    return el("tr", {}, [el("th", {text: label}), el("td", {text: value})]);
  }
  function showUnit(layer, unit) {
    var layerData = data.layers[layer];
    var u = layerData && layerData.units[String(unit)];
    if (!u) { open(unitView, [el("h2", {text: "No unit " + unit + " in layer " + layer})]); return; }
    var ids = Object.keys(layerData.units).map(Number).sort(function (a, b) { return a - b; });
    var at = ids.indexOf(unit);
    var nav = el("div", {"class": "nav-links"}, [
      at > 0 ? el("a", {href: unitHref(layer, ids[at - 1]), text: "\u2190 unit " + ids[at - 1]}) : null,
      at < ids.length - 1 ?
        el("a", {href: unitHref(layer, ids[at + 1]), text: "unit " + ids[at + 1] + " \u2192"}) : null,
      el("a", {href: conceptHref(u.concept), text: "best units for " + u.concept})
    ]);
    var maxIou = Math.max.apply(null, u.top_concepts.map(function (t) { return t[1] || 0; }).concat([1e-9]));
    var conceptRows = u.top_concepts.map(function (t) {
      var bar = el("span", {"class": "iou-bar"});
      bar.style.width = Math.round(120 * (t[1] || 0) / maxIou) + "px";
      return el("tr", {}, [
        el("td", {}, [el("a", {href: conceptHref(t[0]), text: t[0]})]),
        el("td", {text: (data.concepts[t[0]] || {}).category || ""}),
        el("td", {text: fmt(t[1])}), el("td", {}, [bar])]);
    });
    var big = stripOf(layer, unit);
    big.classList.add("large");
    var samples = u.top_samples.map(function (s, i) { return s + " (" + fmt(u.top_values[i]) + ")"; }).join(", ");
    open(unitView, [
      el("h2", {text: "Layer " + layer + ", unit " + unit}),
      nav,
      big,
      el("p", {"class": "muted", text: "Top " + u.top_samples.length +
        " images of the IoU sample set by peak activation; outside the region above the threshold" +
        " the image is dimmed, the region is outlined."}),
      el("table", {}, [
        row("concept", u.concept + " (" + u.category + "), labelled by the " + data.label_method + " method"),
        row("IoU", fmt(u.iou, 4) + (u.interpretable ? "  \u2014 interpretable" :
          "  \u2014 not interpretable (needs IoU > " + fmt(data.min_iou) +
          (data.min_iqr !== null ? " and IQR > " + fmt(data.min_iqr) : "") + ")")),
        row("IQR of " + u.concept, fmt(u.iqr, 4)),
        row("threshold (outlined)", fmt(u.threshold, 4)),
        row("by the unit's quantile threshold", u.quantile_concept + ", IoU " + fmt(u.quantile_iou, 4) +
          " at " + fmt(u.quantile_threshold, 4)),
        row("by IQR thresholds (paper)", u.iqr_concept + ", IoU " + fmt(u.iqr_iou, 4) +
          " at " + fmt(u.iqr_threshold, 4)),
        row("top samples (peak activation)", samples)
      ]),
      el("h3", {text: "IoU per concept, top " + u.top_concepts.length}),
      el("table", {"class": "top-concepts"}, conceptRows)
    ]);
  }
  function showConcept(name) {
    var c = data.concepts[name];
    if (!c) { open(conceptView, [el("h2", {text: "No concept " + name})]); return; }
    var counts = Object.keys(c.interpretable).map(function (l) { return l + ": " + c.interpretable[l]; }).join(", ");
    var list = el("div", {"class": "concept-units"}, c.best.map(function (b, i) {
      var layer = b[0], unit = b[1];
      var u = data.layers[layer].units[String(unit)];
      return el("a", {"class": "concept-unit", href: unitHref(layer, unit), "data-layer": layer, "data-unit": unit,
                      "data-iou": b[2]}, [
        el("div", {"class": "card-head"}, [
          el("span", {"class": "unit-no", text: "#" + (i + 1) + "  " + layer + " unit " + unit}),
          el("span", {text: "best concept: " + u.concept}),
          el("span", {"class": "iou", text: "IoU " + fmt(b[2])})]),
        stripOf(layer, unit)]);
    }));
    open(conceptView, [
      el("h2", {text: "Concept " + name + " (" + c.category + ")"}),
      el("p", {"class": "muted", text: "Interpretable units whose best concept this is: " + counts +
        ". Below: the units with the highest IoU for " + name + " in any layer."}),
      c.best.length ? list : el("p", {text: "No unit overlaps this concept."})
    ]);
  }
  function route() {
    var parts = location.hash.replace(/^#/, "").split("/");
    try {
      if (parts[0] === "unit" && parts.length === 3) {
        showUnit(decodeURIComponent(parts[1]), Number(parts[2]));
      } else if (parts[0] === "concept" && parts.length >= 2) {
        showConcept(decodeURIComponent(parts.slice(1).join("/")));
      } else {
        closeViews();
        if (parts[0] === "layer" && parts.length === 2) {
          var name = decodeURIComponent(parts[1]);
          document.querySelectorAll(".layer-section").forEach(function (s) {
            if (s.dataset.layer === name) s.scrollIntoView();
          });
        }
      }
    } catch (e) {
      closeViews();
    }
  }
  [unitView, conceptView].forEach(function (view) {
    view.addEventListener("click", function (event) {
      if (event.target === view) location.hash = "";
    });
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && (!unitView.hidden || !conceptView.hidden)) location.hash = "";
  });
  window.addEventListener("hashchange", route);
  route();
})();
"""
