"""The HTML report: unit images against a brute-force mask, a self-contained page, and (in Chromium) a page
that renders, sorts, routes and never touches the network.

The report is tested on a synthetic schema-2 dissect.json built from a tiny random generator's real
activations (`synthetic_document`), so these tests do not depend on the dissection; one test runs the real
pipeline end to end. Causal results (`<run>/causal/`) are synthetic files with known values (`write_causal`).

Browser tests need Debian's /usr/bin/chromium and the `playwright` package; without them they are skipped,
unless GANDISSECT_REQUIRE_BROWSER=1 (CI), where they fail. GANDISSECT_SCREENSHOT=1 (or a .png path) also
writes a 1280x900 screenshot of the report's top to docs/report-screenshot.png (or that path).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import warnings
from importlib import resources
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gandissect.core.features import upsample
from gandissect.core.hooks import Trace
from gandissect.core.images import to_uint8
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import ColorSegmenter
from gandissect.models.scenegan import GeneratorConfig, SceneGenerator
from gandissect.viz.report import DIM, OUTLINE, render_unit_images, write_report
from gandissect.viz.report.causal import TOP_UNITS, Causal, load_causal, page_json
from gandissect.viz.report.data import fmt
from gandissect.viz.report.images import HALO, OVERLAY_ALPHA, highlight, render_layer
from tamper import FolderFiles, rehash

IMAGES_PER_UNIT = 6
TILE = 65  # a 64-px image and its 1-px gap
REPO = Path(__file__).resolve().parents[1]
RULES = {
    "quantile": "IoU at the unit's top-quantile threshold, one threshold per unit",
    "iqr": "highest information-quality ratio over concepts, each at its IQR-optimal threshold",
    "iqr-iou": "highest IoU at per-(unit, concept) IQR-optimal thresholds",
    "iqr-top-half": "as iqr, with thresholds keeping at most half of the unit's pixels",
    "iqr-iou-top-half": "as iqr-iou, with thresholds keeping at most half of the unit's pixels",
    "iqr-precise": "as iqr, with thresholds whose masks lie mostly in the concept",
    "iqr-iou-precise": "as iqr-iou, with thresholds whose masks lie mostly in the concept",
}
TOP_FRACTIONS = (0.7, 0.5, 0.3, 0.15, 0.05, 0.02)  # candidate levels: these top fractions of a unit's pixels


class ContrastSegmenter:
    """ColorSegmenter on contrast-stretched images, plus bright/dark (object) and edge (part) labels: a random
    generator's nearly flat pictures then still give several concepts in several categories."""

    def __init__(self) -> None:
        self.color = ColorSegmenter()
        self.concepts = [*self.color.concepts, "bright", "dark", "edge"]
        self.categories = [*self.color.categories, "object", "object", "part"]

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.flatten(2)
        low, high = flat.amin(2)[..., None, None], flat.amax(2)[..., None, None]
        stretched = (images - low) / (high - low).clamp(min=1e-6) * 2 - 1
        colours = self.color.segment(stretched)[:, 0]
        light = stretched.mean(1)
        quartiles = torch.quantile(light.flatten(1), torch.tensor([0.25, 0.75]), dim=1)
        n = len(self.color.concepts)
        shade = torch.full_like(colours, -1)
        shade[light > quartiles[1][:, None, None]] = n
        shade[light < quartiles[0][:, None, None]] = n + 1
        corner = light[:, :-1, :-1]
        gradient = F.pad((light[:, 1:, :-1] - corner).abs() + (light[:, :-1, 1:] - corner).abs(), (0, 1, 0, 1))
        edge = torch.full_like(colours, -1)
        edge[gradient > torch.quantile(gradient.flatten(1), 0.8, dim=1)[:, None, None]] = n + 2
        return torch.stack([colours, shade, edge], 1)


def _entropy(*probabilities: torch.Tensor) -> torch.Tensor:
    return -sum(torch.where(p > 0, p * p.clamp(min=1e-12).log(), 0) for p in probabilities)


def synthetic_document(generator: torch.nn.Module, segmenter: ContrastSegmenter, layers: list[str],
                       samples: int = 32, quantile: float = 0.05, min_iou: float = 0.02, min_iqr: float = 0.0,
                       label_method: str = "iqr-iou", iou_seed: int = 1) -> dict:
    """A schema-2 dissect.json consistent with `generator`'s real activations on the IoU set: thresholds are
    levels of each unit's upsampled activations there (TOP_FRACTIONS and the quantile), IoU and IQR are
    counted there against `segmenter`. Crossfit IoU is a stand-in: the IoU on the odd samples."""
    with torch.no_grad(), Trace(generator, layers) as trace:
        images = generator(sample_z(generator, iou_seed, range(samples)))
    labels = segmenter.segment(images)
    names, categories = segmenter.concepts, segmenter.categories
    truth = torch.stack([(labels == c).any(1) for c in range(len(names))]).flatten(2).float()  # (C, N, P)
    size = tuple(labels.shape[-2:])
    baseline = truth.mean((1, 2))
    document_layers = {}
    for name in layers:
        acts = trace[name].float()
        up = upsample(acts, size).transpose(0, 1).flatten(2)  # (U, N, P)
        fractions = torch.tensor([*TOP_FRACTIONS, quantile])
        levels = torch.quantile(up.flatten(1), 1 - fractions, dim=1).T  # (U, L), the last the quantile's
        above = (up[:, None] > levels[..., None, None]).float()  # (U, L, N, P)
        inter_n, area_n, truth_n = torch.einsum("ulnp,cnp->ulcn", above, truth), above.sum(-1), truth.sum(-1)

        def iou_on(chosen: slice, inter_n=inter_n, area_n=area_n, truth_n=truth_n) -> torch.Tensor:
            inter = inter_n[..., chosen].sum(-1)
            return inter / (area_n[..., chosen].sum(-1)[..., None] + truth_n[:, chosen].sum(-1) - inter).clamp(min=1)

        iou, odd = iou_on(slice(None)), iou_on(slice(1, None, 2))
        pixels = truth.shape[1] * truth.shape[2]
        inter, area, total = inter_n.sum(-1), area_n.sum(-1)[..., None], truth_n.sum(-1)
        p11, p10, p01 = inter / pixels, (area - inter) / pixels, (total - inter) / pixels
        joint = _entropy(p11, p10, p01, 1 - p11 - p10 - p01)
        iqr = (_entropy(area / pixels, 1 - area / pixels) + _entropy(total / pixels, 1 - total / pixels)
               - joint) / joint.clamp(min=1e-12)
        everything = torch.ones_like(iou, dtype=torch.bool)
        only_quantile = torch.zeros_like(everything)
        only_quantile[:, -1] = True
        half = (area <= pixels / 2).expand_as(iou)
        precise = inter > area / 2
        allowed = {"quantile": only_quantile, "iqr": everything, "iqr-iou": everything, "iqr-top-half": half,
                   "iqr-iou-top-half": half, "iqr-precise": precise, "iqr-iou-precise": precise}
        picked = {}
        for rule, ok in allowed.items():
            level = torch.where(ok, iqr, -1.0).argmax(1, keepdim=True)  # (U, 1, C)
            thr = levels[..., None].expand_as(iou).gather(1, level)[:, 0]
            values = {key: t.gather(1, level)[:, 0] for key, t in (("iou", iou), ("iqr", iqr), ("cv", odd))}
            if rule == "quantile":
                values["cv"] = values["iou"]
            score = values["iqr" if rule in ("iqr", "iqr-top-half", "iqr-precise") else "iou"]
            picked[rule] = (thr, values, torch.where(ok.any(1), score, -1.0))

        def entry(rule: str, unit: int, c: int, picked=picked) -> dict:
            thr, values, _ = picked[rule]
            return {"concept": names[c], "category": categories[c], "iou": float(values["iou"][unit, c]),
                    "crossfit_iou": float(values["cv"][unit, c]), "iqr": float(values["iqr"][unit, c]),
                    "threshold": float(thr[unit, c])}

        peaks, order = acts.amax((2, 3)).T.sort(1, descending=True)
        units, counts = [], {}
        score = picked[label_method][2]
        for unit in range(acts.shape[1]):
            rule_labels = {}
            for rule in RULES:
                label = entry(rule, unit, int(picked[rule][2][unit].argmax()))
                rule_labels[rule] = {**label, "interpretable": label["iou"] > min_iou and label["iqr"] > min_iqr}
            main = rule_labels[label_method]
            if main["interpretable"]:
                counts[main["concept"]] = counts.get(main["concept"], 0) + 1
            top = score[unit].argsort(descending=True)[:5].tolist()
            units.append({"unit": unit, **main, "baseline_iou": float(baseline[names.index(main["concept"])]),
                          "quantile_threshold": float(levels[unit, -1]), "labels": rule_labels,
                          "top_concepts": [entry(label_method, unit, c) for c in top],
                          "top_samples": order[unit, :12].tolist(), "top_values": peaks[unit, :12].tolist()})
        rankings = {}
        for c, concept in enumerate(names):
            ranked = sorted(range(acts.shape[1]), key=lambda u, c=c: (-float(score[u, c]), u))
            entries = [entry(label_method, u, c) for u in ranked]
            rankings[concept] = {"category": categories[c], "baseline_iou": float(baseline[c]), "units": ranked,
                                 **{key: [e[key] for e in entries] for key in ("iou", "crossfit_iou")},
                                 "thresholds": [e["threshold"] for e in entries]}
        document_layers[name] = {"shape": list(acts.shape[1:]), "interpretable_units": sum(counts.values()),
                                 "interpretable_by_concept": counts, "units": units, "concepts": rankings}
    return {
        "schema": 2,
        "config": {"layers": layers, "samples": samples, "quantile": quantile, "threshold_seed": 2,
                   "iou_seed": iou_seed, "label_method": label_method, "min_iou": min_iou, "min_iqr": min_iqr},
        "model": "random scene GAN", "segmenter": "contrast",
        "concepts": [{"name": n, "category": c, "baseline_iou": float(b)}
                     for n, c, b in zip(names, categories, baseline, strict=True)],
        "segmentation_size": list(size), "label_method": label_method, "label_rules": RULES,
        "threshold_method": "synthetic: levels at fixed top fractions of each unit's pixels on the IoU set",
        "layers": document_layers,
    }


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[SceneGenerator, dict, Path]:
    """A tiny random 64x64 scene GAN, a synthetic dissection of two layers of 8 units, and its report."""
    torch.manual_seed(0)
    generator = SceneGenerator(GeneratorConfig(z_dim=8, channels=(16, 8, 8, 8))).eval()
    document = synthetic_document(generator, ContrastSegmenter(), ["layer2", "layer3"])
    path = write_report(json.loads(json.dumps(document)), generator, tmp_path_factory.mktemp("report"),
                        images_per_unit=IMAGES_PER_UNIT)
    return generator, document, path


def erode(mask: np.ndarray, border: bool) -> np.ndarray:
    """Pixels of `mask` whose 4 neighbours are in it too; `border`: whether outside the image counts as in."""
    padded = np.pad(mask, 1, constant_values=border)
    return mask & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]


def nonzero_concepts(layer: dict) -> dict[str, int]:
    return {c: n for c, n in layer["interpretable_by_concept"].items() if n > 0}


def brute_force(generator, document: dict, layer: str, unit: int, threshold: float) -> list[tuple]:
    """Per top image of `unit`: the picture, its region above `threshold` (F.interpolate, one sample at a
    time) and where the activation is clearly off the threshold (batching may move values a bit)."""
    record = document["layers"][layer]["units"][unit]
    out = []
    for sample in record["top_samples"][:IMAGES_PER_UNIT]:
        with torch.no_grad(), Trace(generator, [layer]) as trace:
            image = to_uint8(generator(sample_z(generator, document["config"]["iou_seed"], [sample])))[0]
        acts = F.interpolate(trace[layer][:, unit:unit + 1].float(), size=(64, 64), mode="bilinear",
                             align_corners=False)[0, 0]
        out.append((image, (acts > threshold).numpy(), ((acts - threshold).abs() > 1e-5).numpy()))
    return out


def dilate(mask: np.ndarray) -> np.ndarray:
    """`mask` and the pixels with a 4-neighbour in it."""
    return ~erode(~mask, border=True)


def check_highlight(strip: np.ndarray, expected: list[tuple]) -> None:
    """`strip` shows each picture dimmed outside its region, unchanged inside, outlined along its border, with
    a dark ring (HALO) just outside it."""
    assert strip.shape == (64, IMAGES_PER_UNIT * TILE, 3) and strip.dtype == np.uint8
    for rank, (image, mask, clear) in enumerate(expected):
        tile = strip[:, rank * TILE: rank * TILE + 64].astype(int)
        assert (strip[:, rank * TILE + 64] == 255).all()  # the gap after each image
        dimmed = np.round(image.astype(np.float32) * DIM)
        out = ~mask & clear & ~dilate(mask | ~clear)  # clearly outside, and no neighbour in (or near) the region
        assert np.abs(tile[out] - dimmed[out]).max(initial=0) <= 1, "outside the region must be dimmed"
        ring = ~mask & clear & dilate(mask & clear)
        assert (tile[ring] == np.array(HALO)).all(), "the ring just outside the region is HALO"
        inside = tile[mask & clear]
        kept = (inside == image[mask & clear]).all(1)
        outline = (inside == np.array(OUTLINE)).all(1)
        assert (kept | outline).all(), "inside the region: the picture itself or the outline"
        eroded = erode(mask, border=False) & erode(clear, border=True)  # the image's border counts as outside
        assert (tile[eroded] == image[eroded]).all(), "the region's interior is shown unchanged"
        assert (outline.sum() > 0) == mask.any()


def overlay_regions(uri: str) -> np.ndarray:
    """The region an overlay data URI highlights: every pixel it neither dims nor rings with HALO (gaps
    included)."""
    assert uri.startswith("data:image/png;base64,")
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGBA"))
    ring = (image[..., 3] == 255) & (image[..., :3] == np.array(HALO)).all(-1)
    return (image[..., 3] != OVERLAY_ALPHA) & ~ring


def check_overlay(uri: str, expected: list[tuple]) -> None:
    region = overlay_regions(uri)
    assert region.shape == (64, IMAGES_PER_UNIT * TILE)
    for rank, (_, mask, clear) in enumerate(expected):
        tile = region[:, rank * TILE: rank * TILE + 64]
        assert (tile[clear] == mask[clear]).all(), f"image {rank}: the overlay's region is not the mask"


def page_data(path: Path) -> dict:
    payload = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', path.read_text(), re.S)
    assert payload is not None
    return json.loads(payload.group(1))


def concept_case(generator, document: dict) -> tuple[str, str, int, float]:
    """A (concept, layer, unit, threshold) shown on a concept page whose region at the concept's threshold
    differs from the one at the unit's labelling threshold: drawing at the wrong one would show."""
    for name, layer in document["layers"].items():
        for concept, ranking in layer["concepts"].items():
            for unit, iou, threshold in list(zip(ranking["units"], ranking["iou"], ranking["thresholds"],
                                                 strict=True))[:3]:
                if iou <= 0 or threshold == layer["units"][unit]["threshold"]:
                    continue
                at_concept = brute_force(generator, document, name, unit, threshold)
                at_label = brute_force(generator, document, name, unit, layer["units"][unit]["threshold"])
                if any((a[1] != b[1]).mean() > 0.05 for a, b in zip(at_concept, at_label, strict=True)):
                    return concept, name, unit, threshold
    raise AssertionError("no concept page shows a unit at a threshold of its own: the test would prove nothing")


# ------------------------------------------------------------------------------------------- no browser


def test_unit_images_highlight_the_region_above_threshold(report):
    generator, document, _ = report
    layer, units = "layer3", [0, 1, 2]
    strips = render_unit_images(generator, document, layer, units=units, count=IMAGES_PER_UNIT, batch_size=2)
    assert sorted(strips) == units
    partial = 0
    for unit in units:
        expected = brute_force(generator, document, layer, unit, document["layers"][layer]["units"][unit]["threshold"])
        check_highlight(strips[unit], expected)
        partial += sum(0 < mask.mean() < 1 for _, mask, _ in expected)
    assert partial > 0, "no tile had a region that covers part of the image: the test would prove nothing"


def test_unit_images_at_given_thresholds(report):
    generator, document, _ = report
    _, layer, unit, threshold = concept_case(generator, document)
    strips = render_unit_images(generator, document, layer, count=IMAGES_PER_UNIT, thresholds={unit: threshold})
    assert list(strips) == [unit]
    check_highlight(strips[unit], brute_force(generator, document, layer, unit, threshold))


def luminance(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(float) @ np.array([0.2126, 0.7152, 0.0722])


@pytest.mark.parametrize("colour", [(255, 255, 255), (250, 222, 70), (236, 240, 245)])  # cloud, sun, haze
def test_outline_stays_visible_on_light_concepts(colour):
    """On a light concept the region's border is still a strong edge: every pixel just inside it (OUTLINE) and
    its neighbour just outside (HALO) differ in luminance by at least 150 of 255; the overlay drawn over the
    picture is the same picture as `highlight`."""
    from gandissect.viz.report.images import overlay_uri

    picture = np.full((64, 64, 3), colour, np.uint8)
    picture[:, :8] = (90, 140, 60)  # some grass at the left
    yy, xx = np.mgrid[:64, :64]
    mask = (yy - 30) ** 2 + (xx - 34) ** 2 < 15**2
    drawn = highlight(picture, mask)
    light = luminance(drawn)
    pairs = 0
    for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        inside = mask & ~np.roll(mask, (dy, dx), (0, 1))  # in the region, its neighbour at -(dy, dx) is not
        ys, xs = np.nonzero(inside)
        step = np.abs(light[ys, xs] - light[ys - dy, xs - dx])
        assert step.min() >= 150, f"a weak border on {colour}: luminance step {step.min():.0f}"
        pairs += len(ys)
    assert pairs > 40
    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(overlay_uri(mask, np.ones_like(mask)).split(",")[1])))
                         .convert("RGBA")).astype(float)
    alpha = overlay[..., 3:] / 255
    composed = picture * (1 - alpha) + overlay[..., :3] * alpha
    assert np.abs(composed - drawn).max() <= 1.5


def test_unit_images_generate_each_sample_once(report):
    generator, document, _ = report
    seen: list[int] = []
    handle = generator.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    records = document["layers"]["layer2"]["units"]
    requests = [(r["unit"], t["threshold"]) for r in records for t in r["top_concepts"]]
    try:
        images = render_layer(generator, document, "layer2", requests, count=IMAGES_PER_UNIT, batch_size=5)
    finally:
        handle.remove()
    wanted = [s for r in records for s in r["top_samples"][:IMAGES_PER_UNIT]]
    assert len(set(wanted)) < len(wanted), "units share no sample: the test would prove nothing"
    assert len(set(requests)) > len(records), "one threshold per unit: the test would prove nothing"
    assert sum(seen) == len(set(wanted))
    assert max(seen) <= 5
    assert len(images.pictures) == len(records) and len(images.masks) == len(set(requests))
    with pytest.raises(KeyError, match="no units"):
        render_unit_images(generator, document, "layer2", units=[99])


def check_self_contained(text: str) -> None:
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"<(link|iframe)\b", text) and not re.search(r"<script[^>]*\bsrc=", text)
    assert not re.search(r"\b(src|href)=\"(?!data:|#)", text), "every src/href is a data: URI or a # link"
    assert "@import" not in text and "url(" not in text


def test_report_is_self_contained_and_complete(report):
    _, document, path = report
    text = path.read_text()
    assert path.name == "report.html"
    check_self_contained(text)
    for name, layer in document["layers"].items():
        cards = re.findall(rf'class="unit-card[^"]*"[^>]*data-layer="{name}" data-unit="(\d+)"', text)
        assert sorted(map(int, cards)) == list(range(len(layer["units"])))
        chart = re.search(rf'<svg class="concept-chart" data-layer="{name}".*?</svg>', text, re.S)
        assert chart is not None
        bars = re.findall(r'<rect class="bar"[^>]*data-concept="([^"]+)"[^>]*data-count="(\d+)"', chart.group(0))
        assert {c: int(n) for c, n in bars} == nonzero_concepts(layer)
    assert sum(len(nonzero_concepts(layer)) for layer in document["layers"].values()) >= 3
    data = page_data(path)
    unit = data["layers"]["layer3"]["units"]["0"]
    record = document["layers"]["layer3"]["units"][0]
    assert [t["concept"] for t in unit["top_concepts"]] == [t["concept"] for t in record["top_concepts"]]
    assert [t["threshold"] for t in unit["top_concepts"]] == pytest.approx([t["threshold"] for t in
                                                                            record["top_concepts"]])
    units = sum(len(layer["units"]) for layer in document["layers"].values())
    assert len(re.findall(r'<img class="picture" src="data:image/', text)) == units, "one picture strip per unit"
    assert text.count('<img class="overlay" src="data:image/png') == units
    assert path.stat().st_size < 2_000_000


def test_css_and_js_files_are_inlined(report):
    text = report[2].read_text()
    package = resources.files("gandissect.viz.report")
    assert "<link" not in text and not re.search(r"<script[^>]*\bsrc", text)
    assert f"<style>{package.joinpath('report.css').read_text()}</style>" in text
    assert f"<script>{package.joinpath('report.js').read_text()}</script>" in text
    assert "${" not in text, "every placeholder of report.html is filled"


def test_concept_pages_draw_units_at_the_concepts_threshold(report):
    generator, document, path = report
    concept, layer, unit, threshold = concept_case(generator, document)
    data = page_data(path)
    entry = next(e for e in data["concepts"][concept]["layers"][layer] if e["unit"] == unit)
    assert entry["threshold"] == pytest.approx(threshold)
    check_overlay(data["overlays"][entry["overlay"]], brute_force(generator, document, layer, unit, threshold))
    baselines = {c["name"]: c["baseline_iou"] for c in document["concepts"]}
    assert data["concepts"][concept]["baseline_iou"] == pytest.approx(baselines[concept])


def test_old_schema_is_refused(report, tmp_path):
    generator, document, _ = report
    with pytest.raises(ValueError, match="schema 2"):
        write_report({**document, "schema": 1}, generator, tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_real_dissection_end_to_end(tmp_path):
    """The real pipeline: Dissector -> dissect.json -> report.html (the only test here that needs the dissection)."""
    from gandissect.dissection import DissectConfig, Dissector

    torch.manual_seed(0)
    generator = SceneGenerator(GeneratorConfig(z_dim=8, channels=(16, 8, 8, 8))).eval()
    config = DissectConfig(layers=["layer3"], samples=16, batch_size=16, quantile=0.05, min_iou=0.02)
    dissector = Dissector(generator, ContrastSegmenter(), config, tmp_path, progress=False)
    document = dissector.finish(dissector.run())
    assert document is not None
    path = write_report(json.loads((tmp_path / "dissect.json").read_text()), generator, tmp_path,
                        images_per_unit=IMAGES_PER_UNIT)
    assert len(page_data(path)["layers"]["layer3"]["units"]) == document["layers"]["layer3"]["shape"][0]

# ---------------------------------------------------------------------------------------------- causal

CAUSAL_LAYER = "layer3"
ACE_ORDER = [5, 3, 0, 7, 1, 6, 2, 4]  # units of CAUSAL_LAYER by ACE, highest first: unit 0 ranks third
ACE_VALUES = [0.61, 0.42, 0.3, 0.12, 0.05, 0.0, -0.01, -0.2]
OTHER_ACE = [(2, 0.2), (0, 0.07), (6, -0.03)]  # a second concept, measured on 3 units: unit 0 ranks second
SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20" viewBox="0 0 40 20">'
       '<rect width="40" height="20" fill="#2f6fde"/><text x="2" y="14">ACE</text></svg>')


class CausalCase(NamedTuple):
    run: Path
    path: Path  # run / "report.html"
    concept: str  # unit 0's label, with an ace.json and the figures
    other: str  # a second concept with an ace.json
    labels: dict[int, str | None]  # causal labels of CAUSAL_LAYER
    agreement: dict[str, float]
    figures: dict[str, bytes]


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 6), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def write_causal(run: Path, document: dict) -> CausalCase:
    """What the causal tools write into `run / "causal"` for CAUSAL_LAYER, with known values: two concepts'
    ace.json, labels.json (unit 0 agrees with its label, unit 1 does not, unit 2 has none), two figures; and a
    folder for a layer the dissection lacks."""
    units = document["layers"][CAUSAL_LAYER]["units"]
    concept = units[0]["concept"]
    other = next(c["name"] for c in document["concepts"] if c["name"] != concept)
    folder = run / "causal" / CAUSAL_LAYER
    rows = [{"unit": u, "ace": a, "inserted": a + 0.1, "ablated": 0.1, "value": 2.5, "iou": 0.01 * (u + 1)}
            for u, a in zip(ACE_ORDER, ACE_VALUES, strict=True)]
    others = [{"unit": u, "ace": a, "inserted": a, "ablated": 0.0, "value": 1.0, "iou": 0.0} for u, a in OTHER_ACE]
    for name, ranked in ((concept, rows), (other, others)):
        (folder / name).mkdir(parents=True)
        (folder / name / "ace.json").write_text(json.dumps({
            "layer": CAUSAL_LAYER, "concept": name, "samples": 64, "seed": 3, "definition": "ACE = inserted - ablated",
            "units": ranked}))
    figures = {"ablation-curve.svg": SVG.encode(), "samples.png": tiny_png()}
    for name, content in figures.items():
        (folder / concept / name).write_bytes(content)
    own = units[1]["concept"]
    named = [label["concept"] for label in units[1]["labels"].values()]
    wrong = next((c for c in named if c != own), next(c["name"] for c in document["concepts"] if c["name"] != own))
    labels = {record["unit"]: record["concept"] for record in units} | {0: concept, 1: wrong, 2: None}
    agreement = {rule: 0.125 * (i + 1) for i, rule in enumerate(RULES)}
    (folder / "labels.json").write_text(json.dumps({
        "layer": CAUSAL_LAYER, "agreement": agreement,
        "units": [{"unit": u, "concept": c, "effect": 0.5 if c else 0.01} for u, c in labels.items()]}))
    (run / "causal" / "no-such-layer" / concept).mkdir(parents=True)
    (run / "causal" / "no-such-layer" / concept / "ace.json").write_text(json.dumps({"units": []}))
    return CausalCase(run, run / "report.html", concept, other, labels, agreement, figures)


@pytest.fixture(scope="module")
def causal_report(report, tmp_path_factory: pytest.TempPathFactory) -> CausalCase:
    """The report of the `report` fixture's run with causal results in its run folder."""
    generator, document, _ = report
    case = write_causal(tmp_path_factory.mktemp("causal-run"), document)
    assert write_report(json.loads(json.dumps(document)), generator, case.run,
                        images_per_unit=IMAGES_PER_UNIT, files=FolderFiles(case.run)) == case.path
    return case


def causal_data(path: Path) -> dict:
    payload = re.search(r'<script type="application/json" id="causal-data">(.*?)</script>', path.read_text(), re.S)
    assert payload is not None
    return json.loads(payload.group(1))


def test_causal_results_are_in_the_page(report, causal_report):
    _, document, _ = report
    case = causal_report
    text = case.path.read_text()
    check_self_contained(text)
    header = re.search(r'<section class="causal-summary" id="causal">.*?</section>', text, re.S)
    assert header is not None and "</header>" in text[header.end():header.end() + 20]
    for rule, fraction in case.agreement.items():
        assert re.search(rf'<tr data-rule="{rule}"[^>]*><td>{rule}</td><td data-layer="{CAUSAL_LAYER}">'
                         rf'{re.escape(fmt(fraction))}</td></tr>', header.group(0)), rule
    assert f'<tr data-rule="{document["label_method"]}" class="current">' in header.group(0)
    assert "no-such-layer" in header.group(0), "a folder the dissection lacks is named as left out"
    for name in document["layers"]:
        cards = re.findall(rf'data-layer="{name}" data-unit="(\d+)".*?</a>', text, re.S)
        tags = dict(re.findall(rf'data-layer="{name}" data-unit="(\d+)"[^>]*>(?:(?!</a>).)*?'
                               r'<span class="causal-tag[^"]*" (?:data-causal="([^"]*)")?', text, re.S))
        if name == CAUSAL_LAYER:
            assert {int(u): c or None for u, c in tags.items()} == case.labels and len(cards) == len(case.labels)
        else:
            assert tags == {}, "no causal tags without labels.json"
    card = re.search(rf'data-layer="{CAUSAL_LAYER}" data-unit="0".*?</a>', text, re.S).group(0)
    assert f'<span class="causal-tag agree" data-causal="{case.concept}"' in card and "✓" in card

    data = causal_data(case.path)
    unit0 = data["units"][CAUSAL_LAYER]["0"]
    assert unit0["measured"] and [(a["concept"], a["ace"], a["rank"], a["of"]) for a in unit0["ace"]] == \
        [(case.concept, 0.3, 3, 8), (case.other, 0.07, 2, 3)]
    record = document["layers"][CAUSAL_LAYER]["units"][0]
    assert unit0["label"]["agrees"] is True and unit0["label"]["concept"] == case.concept
    assert unit0["label"]["rules"] == [r for r in RULES if record["labels"][r]["concept"] == case.concept]
    assert data["units"][CAUSAL_LAYER]["1"]["label"]["agrees"] is False
    assert data["units"][CAUSAL_LAYER]["2"]["label"] == {"concept": None, "effect": 0.01, "agrees": False, "rules": []}
    page = data["concepts"][case.concept][CAUSAL_LAYER]
    assert [t["unit"] for t in page["top"]] == ACE_ORDER[:TOP_UNITS] and page["of"] == len(ACE_ORDER)
    assert [t["ace"] for t in page["top"]] == ACE_VALUES[:TOP_UNITS]
    assert [t["iou"] for t in page["top"]] == pytest.approx([0.01 * (u + 1) for u in ACE_ORDER][:TOP_UNITS])
    assert [name for name, *_ in page["figures"]] == sorted(case.figures)
    for name, uri, title, caption in page["figures"]:
        assert (title, caption) == ("", name), "a figure of another name keeps its file name as its caption"
        kind = "image/svg+xml" if name.endswith(".svg") else "image/png"
        assert uri.startswith(f"data:{kind};base64,")
        assert base64.b64decode(uri.split(",", 1)[1]) == case.figures[name]
    assert data["concepts"][case.other][CAUSAL_LAYER]["figures"] == []
    assert "layer2" not in data["units"] and data["ace_layers"] == [CAUSAL_LAYER]
    package = resources.files("gandissect.viz.report")
    assert f"<script>{package.joinpath('causal.js').read_text()}</script>" in text
    assert f"<style>{package.joinpath('causal.css').read_text()}</style>" in text


def test_causal_files_for_a_staging_folder(report, causal_report, tmp_path):
    """The causal commands write the report into a staging folder: `files` names the run's files."""
    generator, document, _ = report
    path = write_report(json.loads(json.dumps(document)), generator, tmp_path, images_per_unit=IMAGES_PER_UNIT,
                        files=FolderFiles(causal_report.run))
    assert path == tmp_path / "report.html"
    assert path.read_bytes() == causal_report.path.read_bytes()


def test_without_causal_results_the_report_is_unchanged(report, tmp_path):
    """No files, a folder that does not exist, or one with nothing for this dissection: the same bytes as the
    report without causal results, and no trace of them."""
    generator, document, path = report
    expected = path.read_bytes()
    assert "causal" not in expected.decode().lower()
    assert b"</style>\n</head>" in expected and b"</script>\n</body>" in expected
    empty = tmp_path / "empty"
    (empty / "causal" / "no-such-layer" / "sky").mkdir(parents=True)
    (empty / "causal" / "no-such-layer" / "sky" / "ace.json").write_text('{"units": []}')
    for out, files in ((tmp_path / "plain", None), (tmp_path / "elsewhere", FolderFiles(tmp_path / "missing")),
                       (empty, FolderFiles(empty))):
        out.mkdir(exist_ok=True)
        written = write_report(json.loads(json.dumps(document)), generator, out, images_per_unit=IMAGES_PER_UNIT,
                               files=files)
        assert written.read_bytes() == expected, out


def test_causal_files_are_checked(report, tmp_path):
    """An unreadable or inconsistent file is skipped with a warning; a concept page lists at most TOP_UNITS."""
    _, document, _ = report
    folder = tmp_path / "causal" / CAUSAL_LAYER
    concept = document["layers"][CAUSAL_LAYER]["units"][0]["concept"]
    (folder / concept).mkdir(parents=True)
    (folder / concept / "ace.json").write_text(json.dumps({"units": [{"unit": 99, "ace": 0.1}]}))
    (folder / "labels.json").write_text("{not json")
    with pytest.warns(UserWarning) as caught:
        assert load_causal(FolderFiles(tmp_path), document) is None
    assert {Path(str(w.message).split(": ")[1]).name for w in caught} == {"ace.json", "labels.json"}
    (folder / "labels.json").write_text(json.dumps({"units": [  # as CausalLabels.to_json writes them
        {"unit": 0, "label": concept, "effect": 0.4}, {"unit": 1, "label": "none", "effect": 0.0}]}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the ace.json above
        causal = load_causal(FolderFiles(tmp_path), document)
    assert causal is not None and causal.ace == {} and causal.agreement == {CAUSAL_LAYER: {}}
    assert causal.labels == {CAUSAL_LAYER: {0: {"concept": concept, "effect": 0.4},
                                            1: {"concept": None, "effect": 0.0}}}
    ranked = [{"unit": u, "rank": u + 1, "ace": 1.0 - u / 20, "inserted": None, "ablated": None, "value": None,
               "iou": None} for u in range(TOP_UNITS + 2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = page_json(Causal(ace={CAUSAL_LAYER: {concept: ranked}}), document)
    entry = data["concepts"][concept][CAUSAL_LAYER]
    assert [t["unit"] for t in entry["top"]] == list(range(TOP_UNITS)) and entry["of"] == TOP_UNITS + 2


# ---------------------------------------------------------------------------------------------- browser


class Page:
    """A fresh offline page on the report that records console errors and every request it makes."""

    def __init__(self, browser, path: Path, fragment: str = "") -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.set_offline(True)
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.blocked: list[str] = []

        def route(route):
            url = route.request.url
            if url.startswith(("file:", "data:")):
                route.continue_()
            else:
                self.blocked.append(url)
                route.abort()

        self.context.route("**/*", route)
        self.page = self.context.new_page()
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(path.as_uri() + fragment)
        self.page.wait_for_load_state("load")

    def close(self) -> None:
        assert self.errors == [], f"console errors: {self.errors}"
        assert self.blocked == [], f"network requests: {self.blocked}"
        assert all(url.startswith(("file:", "data:")) for url in self.requests), self.requests
        self.context.close()


def _pages(browser, path: Path):
    opened: list[Page] = []

    def open_page(fragment: str = "") -> Page:
        opened.append(Page(browser, path, fragment))
        return opened[-1]

    yield open_page
    for p in opened:
        p.close()


@pytest.fixture
def page(browser, report):
    yield from _pages(browser, report[2])


@pytest.fixture
def causal_page(browser, causal_report):
    yield from _pages(browser, causal_report.path)


ALL_IMAGES_LOADED = "sel => Array.from(document.querySelectorAll(sel)).every(i => i.complete && i.naturalWidth > 0)"


def test_browser_chart_and_gallery_render(page, report):
    _, document, _ = report
    p = page().page
    for name, layer in document["layers"].items():
        bars = p.locator(f'svg.concept-chart[data-layer="{name}"] rect.bar')
        assert bars.count() == len(nonzero_concepts(layer))
        heights = {}
        for i in range(bars.count()):
            box = bars.nth(i).bounding_box()
            assert box is not None and box["width"] > 0 and box["height"] > 0
            heights[bars.nth(i).get_attribute("data-concept")] = box["height"]
        counts = nonzero_concepts(layer)
        assert heights[max(counts, key=counts.get)] == pytest.approx(max(heights.values()))
        cards = p.locator(f'.unit-card[data-layer="{name}"]')
        assert cards.count() == len(layer["units"])
        assert "crossfit" in cards.first.locator(".card-head").inner_text()
    assert p.evaluate(ALL_IMAGES_LOADED, "img")
    rows = 2  # IMAGES_PER_UNIT (6) images in 2 rows of 3
    assert p.evaluate("document.images.length") == 2 * rows * sum(len(layer["units"])
                                                                  for layer in document["layers"].values())
    picture, overlay = (p.locator(f".unit-card .strip img.{kind}").first.bounding_box() for kind in ("picture",
                                                                                                       "overlay"))
    assert picture == overlay, "the overlay lies exactly on the pictures"
    assert p.locator("#unit-view").is_hidden() and p.locator("#concept-view").is_hidden()
    target = os.environ.get("GANDISSECT_SCREENSHOT")
    if target:
        out = Path(target) if target.endswith(".png") else REPO / "docs" / "report-screenshot.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        p.screenshot(path=str(out))
    check_card_strip(p, p.locator(".unit-card .strip").first, rows)


def check_card_strip(p, strip, rows: int, per_row: int = IMAGES_PER_UNIT // 2) -> None:
    """The strip's rows each show `per_row` of the 64-px top images, in order, each drawn at least 96 px wide
    (1.5x): the screenshot of each row is the strip's pictures under its overlay, scaled up."""
    strip.scroll_into_view_if_needed()
    picture = decode_uri(strip.locator("img.picture").first.get_attribute("src")).convert("RGBA")
    overlay = decode_uri(strip.locator("img.overlay").first.get_attribute("src")).convert("RGBA")
    expected = np.asarray(Image.alpha_composite(picture, overlay).convert("RGB"))
    boxes = [strip.locator(".strip-row").nth(r).bounding_box() for r in range(strip.locator(".strip-row").count())]
    assert len(boxes) == rows
    for r, box in enumerate(boxes):
        tile = box["width"] / per_row * 64 / TILE
        assert tile >= 96 and box["height"] >= 96, f"row {r}: images drawn {tile:.0f}x{box['height']:.0f} px"
        clip = {k: round(box[k]) for k in ("x", "y", "width", "height")}
        shown = np.asarray(Image.open(io.BytesIO(p.screenshot(clip=clip))).convert("RGB")).astype(float)
        errors = []
        for k in range(rows):
            part = expected[:, k * per_row * TILE:(k + 1) * per_row * TILE]
            want = Image.fromarray(part).resize((shown.shape[1], shown.shape[0]), Image.NEAREST)
            errors.append(np.abs(shown - np.asarray(want).astype(float)).mean())
        assert errors[r] < 10 and errors[r] < 0.5 * min(e for k, e in enumerate(errors) if k != r), \
            f"row {r} does not show images {r * per_row} to {(r + 1) * per_row - 1}: {errors}"


def decode_uri(uri: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def _order(p, layer: str, attribute: str) -> list[str]:
    return p.eval_on_selector_all(f'.layer-section[data-layer="{layer}"] .unit-card',
                                  f"cards => cards.map(c => c.dataset.{attribute})")


def test_browser_gallery_sorts_and_filters(page, report):
    _, document, _ = report
    p = page().page
    for name, layer in document["layers"].items():
        section = p.locator(f'.layer-section[data-layer="{name}"]')
        ious = [float(v) for v in _order(p, name, "iou")]
        assert ious == sorted(ious, reverse=True), "IoU order is the default"
        section.locator('button[data-sort="unit"]').click()
        assert [int(u) for u in _order(p, name, "unit")] == list(range(len(layer["units"])))
        section.locator('button[data-sort="crossfit"]').click()
        crossfit = [float(v) for v in _order(p, name, "crossfit")]
        assert crossfit == sorted(crossfit, reverse=True)
        section.locator('button[data-sort="concept"]').click()
        concepts = _order(p, name, "concept")
        assert concepts == sorted(concepts)
        section.locator('button[data-sort="iou"]').click()
        ious = [float(v) for v in _order(p, name, "iou")]
        assert ious == sorted(ious, reverse=True)
        assert section.locator('button[data-sort="iou"]').get_attribute("class") == "active"
        section.locator("input.filter-interpretable").check()
        assert section.locator(".unit-card:visible").count() == sum(r["interpretable"] for r in layer["units"])
        section.locator("input.filter-interpretable").uncheck()
        assert section.locator(".unit-card:visible").count() == len(layer["units"])


def test_browser_unit_page_shows_rules_and_top_concepts(page, report):
    generator, document, _ = report
    p = page().page
    card = p.locator('.layer-section[data-layer="layer3"] .unit-card').first
    unit = int(card.get_attribute("data-unit"))
    card.click()
    view = p.locator("#unit-view")
    view.wait_for(state="visible")
    assert p.evaluate("location.hash") == f"#unit/layer3/{unit}"
    assert f"unit {unit}" in view.locator("h2").inner_text()
    record = document["layers"]["layer3"]["units"][unit]
    text = view.inner_text()
    assert record["concept"] in text and "crossfit IoU" in text
    rows = view.locator("table.rules tbody tr")
    assert [rows.nth(i).get_attribute("data-rule") for i in range(rows.count())] == list(RULES)
    for i, rule in enumerate(RULES):
        assert rows.nth(i).locator("td").nth(1).inner_text() == record["labels"][rule]["concept"]
    assert view.locator("table.rules tr.current").get_attribute("data-rule") == document["label_method"]
    tops = view.locator(".top-concept")
    assert [tops.nth(i).get_attribute("data-concept") for i in range(tops.count())] == \
        [t["concept"] for t in record["top_concepts"]]
    assert p.evaluate(ALL_IMAGES_LOADED, "#unit-view img")
    # a strip only for a threshold not drawn before (the unit's own is the strip at the top)
    drawn, own = {record["threshold"]}, []
    for i, top in enumerate(record["top_concepts"]):
        assert tops.nth(i).locator(".strip").count() == (top["threshold"] not in drawn), top
        assert tops.nth(i).locator(".same-region").count() == (top["threshold"] in drawn)
        if top["threshold"] not in drawn:
            own.append(i)
        drawn.add(top["threshold"])
    assert own and len(own) < len(record["top_concepts"]), "the test needs top concepts of both kinds"
    top = record["top_concepts"][own[-1]]
    uri = tops.nth(own[-1]).locator("img.overlay").first.get_attribute("src")
    check_overlay(uri, brute_force(generator, document, "layer3", unit, top["threshold"]))
    assert "each drawn at its own threshold" in view.locator("h3.top-concepts-title").inner_text()
    p.keyboard.press("Escape")
    view.wait_for(state="hidden")


def test_browser_top_concepts_at_one_threshold_are_drawn_once(browser, report, tmp_path):
    """Under a rule with one threshold per unit (quantile) the top concepts all outline the unit's own region:
    the page says so once and draws no strip for them."""
    generator, document, _ = report
    single = json.loads(json.dumps(document))
    single["label_method"] = "quantile"
    for layer in single["layers"].values():
        for record in layer["units"]:
            record["top_concepts"] = [{**t, "threshold": record["threshold"]} for t in record["top_concepts"]]
    path = write_report(single, generator, tmp_path, images_per_unit=IMAGES_PER_UNIT)
    opened = Page(browser, path, "#unit/layer3/1")
    view = opened.page.locator("#unit-view")
    view.wait_for(state="visible")
    threshold = single["layers"]["layer3"]["units"][1]["threshold"]
    assert view.locator("h3.top-concepts-title").inner_text() == (
        f"Top 5 concepts: all at the unit's threshold {js_fmt(threshold, 4)}, so all outline the region of the "
        "strip above")
    assert view.locator(".top-concept").count() == 5 and view.locator(".top-concepts .strip").count() == 0
    assert view.locator(".strip").count() == 1
    opened.close()


def test_browser_concept_page_draws_units_at_its_threshold(page, report):
    generator, document, _ = report
    concept, layer, unit, threshold = concept_case(generator, document)
    p = page(f"#concept/{quote(concept, safe='')}").page
    view = p.locator("#concept-view")
    view.wait_for(state="visible")
    baseline = next(c["baseline_iou"] for c in document["concepts"] if c["name"] == concept)
    assert f"baseline IoU {float(f'{baseline:.4g}')}" in view.locator("p.baseline").inner_text()
    shown = view.locator(f'.concept-unit[data-layer="{layer}"]')
    ranking = document["layers"][layer]["concepts"][concept]
    assert [int(shown.nth(i).get_attribute("data-unit")) for i in range(shown.count())] == \
        [u for u, iou in zip(ranking["units"], ranking["iou"], strict=True) if iou > 0][:shown.count()]
    assert "crossfit" in shown.first.inner_text()
    assert p.evaluate(ALL_IMAGES_LOADED, "#concept-view img")
    shown_unit = view.locator(f'.concept-unit[data-layer="{layer}"][data-unit="{unit}"]')
    uri = shown_unit.locator("img.overlay").first.get_attribute("src")
    check_overlay(uri, brute_force(generator, document, layer, unit, threshold))
    view.locator(".concept-unit").first.click()
    p.locator("#unit-view").wait_for(state="visible")
    assert view.is_hidden()
    p.go_back()  # back to the concept page, then to the report via a chart bar
    view.wait_for(state="visible")
    p.evaluate("location.hash = ''")
    view.wait_for(state="hidden")
    p.locator("svg.concept-chart rect.bar").first.click()
    view.wait_for(state="visible")


def test_browser_causal_unit_page(causal_page, causal_report, report):
    _, document, _ = report
    case = causal_report
    p = causal_page(f"#unit/{CAUSAL_LAYER}/0").page
    view = p.locator("#unit-view")
    view.wait_for(state="visible")
    rows = view.locator("table.unit-summary tr")
    assert rows.nth(1).get_attribute("class") == "causal-effect", "the causal row follows the concept row"
    effect = rows.nth(1).locator("td").inner_text()
    assert f"ACE 0.3 on {case.concept}: rank 3 of 8 units" in effect
    assert f"other concepts: ACE 0.07 on {case.other}: rank 2 of 3 units" in effect
    assert view.locator(f'.ace[data-concept="{case.concept}"]').get_attribute("data-rank") == "3"
    label = rows.first.locator(".causal-label")
    assert label.get_attribute("class") == "causal-label agree"
    assert label.get_attribute("data-concept") == case.concept and "✓ agrees" in label.inner_text()
    own = document["layers"][CAUSAL_LAYER]["units"][0]["concept"]
    assert rows.first.locator("td").inner_text().startswith(f"{own} (")
    assert f"rule · causal label: {case.concept} (effect 0.5) ✓ agrees" in rows.first.inner_text()
    for unit in (0, 1):
        if unit:
            p.evaluate(f"location.hash = '#unit/{CAUSAL_LAYER}/{unit}'")
            view.locator("h2", has_text=f"unit {unit}").wait_for()
        record = document["layers"][CAUSAL_LAYER]["units"][unit]
        rules = view.locator("table.rules tbody tr")
        marks = {rules.nth(i).get_attribute("data-rule"): rules.nth(i).locator("td.causal-agree").inner_text()
                 for i in range(rules.count())}
        agreeing = {r for r in RULES if record["labels"][r]["concept"] == case.labels[unit]}
        assert marks == {r: "✓" if r in agreeing else "" for r in RULES}
        assert 0 < len(agreeing) < len(RULES), "every rule or none agrees: the test would prove less"
    label = view.locator(".causal-label")
    assert label.get_attribute("class") == "causal-label disagree" and "✗ differs" in label.inner_text()
    assert label.get_attribute("data-concept") == case.labels[1]
    p.evaluate(f"location.hash = '#unit/{CAUSAL_LAYER}/2'")
    view.locator("h2", has_text="unit 2").wait_for()
    assert view.locator(".causal-label").inner_text().startswith("causal label: none")
    assert view.locator("td.causal-agree", has_text="✓").count() == 0
    p.evaluate("location.hash = '#unit/layer2/0'")
    view.locator("h2", has_text="layer2, unit 0").wait_for()
    assert view.locator("h2").inner_text() == "layer2, unit 0", "a layer named layer2 is not \"Layer layer2\""
    assert view.locator(".causal-label, tr.causal-effect, td.causal-agree").count() == 0
    p.evaluate("location.hash = ''")
    view.wait_for(state="hidden")
    tag = p.locator(f'.unit-card[data-layer="{CAUSAL_LAYER}"][data-unit="0"] .causal-tag')
    assert tag.is_visible() and tag.inner_text() == f"causal: {case.concept} ✓"
    assert p.locator('.unit-card[data-layer="layer2"] .causal-tag').count() == 0
    assert p.locator(f'#causal table.agreement tr[data-rule="{document["label_method"]}"] td').nth(1).inner_text() \
        == fmt(case.agreement[document["label_method"]])


def test_browser_causal_concept_page(causal_page, causal_report):
    case = causal_report
    p = causal_page(f"#concept/{quote(case.concept, safe='')}").page
    view = p.locator("#concept-view")
    view.wait_for(state="visible")
    block = view.locator(f'.causal-concept[data-layer="{CAUSAL_LAYER}"]')
    rows = block.locator("table.ace-top tbody tr")
    assert [int(rows.nth(i).get_attribute("data-unit")) for i in range(rows.count())] == ACE_ORDER[:TOP_UNITS]
    assert [rows.nth(i).locator("td").nth(2).inner_text() for i in range(rows.count())] == \
        [fmt(a, 4) for a in ACE_VALUES[:TOP_UNITS]]
    assert rows.first.locator("td").nth(3).inner_text() == fmt(0.01 * (ACE_ORDER[0] + 1), 4)
    iou_units = view.locator(".concept-units").filter(has=p.locator(f'.concept-unit[data-layer="{CAUSAL_LAYER}"]'))
    if iou_units.count():  # above the IoU-ranked units of the same layer
        assert block.evaluate("(b, units) => !!(b.compareDocumentPosition(units) & Node.DOCUMENT_POSITION_FOLLOWING)",
                              iou_units.element_handle())
    figures = block.locator("figure.causal-figure")
    assert [figures.nth(i).locator("figcaption").inner_text() for i in range(figures.count())] == sorted(case.figures)
    assert p.evaluate(ALL_IMAGES_LOADED, "#concept-view .causal-figure img")
    sizes = p.eval_on_selector_all("#concept-view .causal-figure img", "imgs => imgs.map(i => [i.naturalWidth, "
                                   "i.naturalHeight, i.src.slice(0, 5)])")
    assert sizes == [[40, 20, "data:"], [12, 6, "data:"]]
    rows.first.locator("a").first.click()
    unit_view = p.locator("#unit-view")
    unit_view.wait_for(state="visible")
    assert p.evaluate("location.hash") == f"#unit/{CAUSAL_LAYER}/{ACE_ORDER[0]}"
    assert f"ACE {fmt(ACE_VALUES[0], 4)} on {case.concept}: rank 1 of 8 units" in \
        unit_view.locator("tr.causal-effect").inner_text()
    p.go_back()
    view.wait_for(state="visible")
    assert view.locator(".causal-concept").count() == 1, "drawn once per visit"
    other = causal_page(f"#concept/{quote(case.other, safe='')}").page
    other.locator("#concept-view").wait_for(state="visible")
    block = other.locator(f'#concept-view .causal-concept[data-layer="{CAUSAL_LAYER}"]')
    assert block.locator("table.ace-top tbody tr").count() == len(OTHER_ACE)
    assert block.locator("figure").count() == 0


# ------------------------------------------------------------------------- causal, schema 2 (gandissect causal)

S2_LAYER = "layer4"
STRIP_COUNTS = [0, 1, 2, 4]


def js_fmt(value: float | None, digits: int = 3) -> str:
    """A number as causal.js writes it (report.js's fmt)."""
    if value is None:
        return "–"
    if value != 0 and abs(value) < 1e-3:
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    rounded = float(f"{value:.{digits}g}")
    return str(int(rounded)) if rounded == int(rounded) else str(rounded)


def synthetic_curve(name: str, units: list[int], draws: int = 0) -> dict:
    """A curves.json entry as AblationCurve.to_json writes it (with its intervals)."""
    removed = [0.0, 0.3, 0.45, 0.6]
    return {"layer": S2_LAYER, "concept": "tree", "ranking": name, "units": units, "counts": STRIP_COUNTS,
            "removed": removed, "others_kept": [1.0, 0.95, 0.9, 0.85], "pixels_before": 1000.0,
            "pixels_after": [1000.0, 700.0, 550.0, 400.0], "samples": 48, "seed": 4,
            "removed_low": [r - 0.1 for r in removed], "removed_high": [r + 0.1 for r in removed],
            "removed_se": [0.05] * 4, "others_kept_low": [0.9] * 4, "others_kept_high": [1.0] * 4,
            "missing": [0, 0, 1, 0], "draws": draws}


class Schema2Case(NamedTuple):
    run: Path
    path: Path  # run / "report.html"
    ace: dict[str, dict]  # concept -> its ace.json as gandissect causal wrote it (door: rewritten as an older file)


def write_figures(folder: Path, record: dict) -> None:
    """curves.json, curves.svg, ablation-strip.png, context.json and context.svg, as `--curves --context` writes
    them (small stand-ins for the pictures)."""
    order = {d: r["order"] for d, r in record["rankings"].items()}
    curves = {"removal": synthetic_curve("removal", order["removal"]), "ace": synthetic_curve("ace", order["ace"]),
              "IoU": synthetic_curve("IoU", list(range(32))), "random": synthetic_curve("random", [], draws=10)}
    (folder / "curves.json").write_text(json.dumps(curves))
    (folder / "context.json").write_text(json.dumps({
        "layer": S2_LAYER, "concept": "tree", "units": order["insertion"][:20], "values": [1.0] * 20, "patch": 2,
        "stride": 1, "margin": 2, "before": ["sky", "none"], "locations": [10, 2], "gained": [3.0, None],
        "appeared": [0.5, None], "samples": 4, "seed": 5}))
    (folder / "curves.svg").write_text(SVG)
    (folder / "context.svg").write_text(SVG)
    (folder / "ablation-strip.png").write_bytes(tiny_png())


@pytest.fixture(scope="module")
def schema2_report(painter_run, tmp_path_factory: pytest.TempPathFactory) -> Schema2Case:
    """`gandissect report` on a copy of the painter's run (schema-2 ace.json for tree, door and sky at layer4,
    from `gandissect causal`), with figures for tree, door's ace.json rewritten as an older run wrote it, a NaN
    in sky's, and a labels.json with the newer keys (a definition, chance levels, a unit not measured)."""
    import shutil

    from gandissect.cli import main

    run = tmp_path_factory.mktemp("schema2") / "run"
    shutil.copytree(painter_run, run)
    folder = run / "causal" / S2_LAYER
    ace = {c: json.loads((folder / c / "ace.json").read_text()) for c in ("tree", "door", "sky")}
    assert all(record["schema"] == 2 for record in ace.values())
    write_figures(folder / "tree", ace["tree"])
    old = {k: ace["door"][k] for k in ("layer", "concept", "samples", "seed")}
    ace["door"] = {**old, "definition": "ACE = inserted - ablated", "units": [
        {k: u[k] for k in ("unit", "ace", "inserted", "ablated", "value", "iou")} for u in ace["door"]["units"]]}
    ace["sky"]["stopping"] = {"rule": "auto", "top": 3, "budget": 200, "rounds": [32, 64],
                              "reasons": {"removal": "separated", "insertion": "budget"}}
    ace["sky"]["missing"] = {**ace["sky"]["missing"], "unedited_images": 2}
    ace["sky"]["units"][-1]["iou"] = float("nan")
    ace["sky"]["units"][-1]["effects"]["ace"]["p_adjusted"] = float("nan")
    for concept in ("door", "sky"):
        (folder / concept / "ace.json").write_text(json.dumps(ace[concept]))  # NaN as JSON's NaN
    (folder / "labels.json").write_text(json.dumps({
        "layer": S2_LAYER, "definition": "share", "definitions": {"share": "mean change of the concept's share"},
        "agreement": {"quantile": {"rule": "quantile", "units": 8, "agree": 3, "fraction": 0.375, "chance": 0.125}},
        "units": [{"unit": u, "label": "tree" if u % 2 else "none", "effect": 0.02 if u % 2 else None,
                   "measured": u != 31} for u in range(32)]}))
    rehash(run, add=True)  # listed in run.json, as the causal commands list what they write
    assert main(["report", str(run)]) == 0
    return Schema2Case(run, run / "report.html", ace)


def _strict(payload: str) -> dict:
    def refuse(token: str) -> None:
        raise AssertionError(f"{token} in the page's JSON")

    return json.loads(payload, parse_constant=refuse)


def test_schema2_evidence_is_in_the_page(schema2_report):
    case = schema2_report
    text = case.path.read_text()
    check_self_contained(text)
    payload = re.search(r'<script type="application/json" id="causal-data">(.*?)</script>', text, re.S).group(1)
    data = _strict(payload)
    assert len(payload) < 48_000, "3 concepts x 32 units: a few hundred bytes per unit and concept"
    tree = case.ace["tree"]
    for row in tree["units"]:
        shown = next(a for a in data["units"][S2_LAYER][str(row["unit"])]["ace"] if a["concept"] == "tree")
        assert "inserted" not in shown and shown["of"] == len(tree["units"])
        for direction, (mean, low, high, significant, rank, p) in shown["effects"].items():
            e = row["effects"][direction]
            assert [mean, low, high, p] == pytest.approx([e["mean"], e["low"], e["high"], e["p_adjusted"]], rel=1e-3,
                                                         abs=1e-12)
            assert (significant, rank) == (e["significant"], e["rank"])
    door = next(a for a in data["units"][S2_LAYER]["0"]["ace"] if a["concept"] == "door")
    assert "effects" not in door and {"inserted", "ablated", "rank"} <= set(door), "an older file, as before"
    assert data["concepts"]["door"][S2_LAYER]["top"] and "evidence" not in data["concepts"]["door"][S2_LAYER]
    entry = data["concepts"]["tree"][S2_LAYER]
    evidence = entry["evidence"]
    assert entry["top"] == [] and entry["samples"] == tree["samples"] and entry["seed"] == tree["seed"]
    for direction, ranking in tree["rankings"].items():
        shown = evidence["rankings"][direction]
        assert [t["unit"] for t in shown["top"]] == ranking["order"][:TOP_UNITS]
        assert [t["separated"] for t in shown["top"]] == ranking["separated"][:TOP_UNITS]
        assert [t["significant"] for t in shown["top"]] == [u in ranking["significant"] for u in
                                                            ranking["order"][:TOP_UNITS]]
        assert (shown["significant"], shown["of"]) == (len(ranking["significant"]), len(ranking["order"]))
    for direction, sets in tree.get("sets", {}).items():
        assert [s["units"] for s in evidence["sets"][direction]] == [s["units"] for s in sets]
        assert [s["description"] for s in evidence["sets"][direction]] == [s["description"] for s in sets]
    assert evidence["stopping"]["rule"] == tree["stopping"]["rule"]
    assert evidence["insertion_value"] == tree["insertion_value"] and "Holm" not in evidence["correction"]
    assert evidence["baseline"] == pytest.approx([tree["baseline"][k] for k in ("mean", "low", "high")], rel=1e-3)
    assert set(data["definitions"]) >= {"removal", "insertion", "ace", "significant", "separated"}
    sky = next(a for a in data["units"][S2_LAYER][str(case.ace["sky"]["units"][-1]["unit"])]["ace"]
               if a["concept"] == "sky")
    assert sky["effects"]["ace"][5] is None, "NaN becomes null"
    figures = {name: (title, caption) for name, _, title, caption in entry["figures"]}
    assert list(figures) == ["curves.svg", "ablation-strip.png", "context.svg"], "in reading order"
    title, caption = figures["curves.svg"]
    assert title.startswith("Ablation curves") and "y axis: the fraction of tree pixels removed" in caption
    assert all(words in caption for words in ("removal (", "ACE (", "IoU (", "x axis: N", "95% interval shaded",
                                              "48 held-out samples (seed 4)", "up to 1 unreadable",
                                              "grey band is N units drawn at random", "10 draws"))
    title, caption = figures["ablation-strip.png"]
    assert title == "Switching off the top removal units for tree"
    assert "the removal ranking for tree" in caption and "N = 0, the unedited image, then 1, 2, 4" in caption
    title, caption = figures["context.svg"]
    assert f"top 20 units by insertion for tree ({', '.join(map(str, tree['rankings']['insertion']['order'][:20]))})" \
        in caption and "2×2 patch" in caption and "4 samples (seed 5)" in caption
    header = re.search(r'<section class="causal-summary" id="causal">.*?</section>', text, re.S).group(0)
    assert "3/8); chance 0.125" in header and "definition share: mean change of the concept&#x27;s share" in header
    labels = data["units"][S2_LAYER]
    assert "label" not in labels["31"] and labels["1"]["label"]["concept"] == "tree", "unit 31 was not measured"
    assert labels["2"]["label"] == {"concept": None, "effect": None, "agrees": False, "rules": []}


def test_browser_schema2_unit_page(browser, schema2_report):
    case = schema2_report
    data = causal_data(case.path)
    concept, row = next((c, r) for c in ("tree", "sky") for r in case.ace[c]["units"]
                        if r["effects"]["removal"]["significant"])
    unit = row["unit"]
    shown = next(a for a in data["units"][S2_LAYER][str(unit)]["ace"] if a["concept"] == concept)
    opened = Page(browser, case.path, f"#unit/{S2_LAYER}/{unit}")
    p = opened.page
    view = p.locator("#unit-view")
    view.wait_for(state="visible")
    effect = view.locator("tr.causal-effect")
    table = effect.locator("table.causal-effects")
    assert table.locator("tbody tr").count() == 2, "tree and sky; door's older file is shown as before"
    cell = table.locator(f'tr[data-concept="{concept}"] td[data-direction="removal"]')
    mean, low, high, _, rank, _ = shown["effects"]["removal"]
    assert cell.get_attribute("data-significant") == "1" and cell.get_attribute("data-rank") == str(rank)
    assert cell.inner_text().startswith(f"{js_fmt(mean)} [{js_fmt(low)}, {js_fmt(high)}] ✓ significant")
    assert f"rank {rank} of 32" in cell.inner_text()
    assert cell.get_attribute("title").startswith(f"rank {rank} of 32 units for removing {concept}; Holm-adjusted p")
    assert "Holm" in cell.locator(".sig").get_attribute("title")
    for direction in ("insertion", "ace"):
        other = table.locator(f'tr[data-concept="{concept}"] td[data-direction="{direction}"]')
        m, lo, hi, significant, r, _ = shown["effects"][direction]
        assert other.inner_text().startswith(f"{js_fmt(m)} [{js_fmt(lo)}, {js_fmt(hi)}]")
        assert ("✓ significant" in other.inner_text()) == significant and f"rank {r} of 32" in other.inner_text()
    assert "95% interval" in effect.inner_text() and "Holm's correction" in effect.inner_text()
    door = next(a for a in data["units"][S2_LAYER][str(unit)]["ace"] if a["concept"] == "door")
    assert f"ACE {js_fmt(door['ace'], 4)} on door: rank {door['rank']} of 32 units" in effect.inner_text()
    opened.close()


def test_browser_schema2_concept_page(browser, schema2_report):
    case = schema2_report
    tree = case.ace["tree"]
    data = causal_data(case.path)
    evidence = data["concepts"]["tree"][S2_LAYER]["evidence"]
    opened = Page(browser, case.path, "#concept/tree")
    p = opened.page
    block = p.locator(f'#concept-view .causal-concept[data-layer="{S2_LAYER}"]')
    block.wait_for(state="visible")
    samples = block.locator(".causal-samples").inner_text()
    assert samples == f"{tree['samples']} held-out samples (seed {tree['seed']}), a fixed number."
    settings = block.locator(".causal-settings").inner_text()
    assert tree["insertion_value"] in settings
    assert "Significance: Holm, over the 32 units measured, p < 0.05" in settings
    assert "The segmenter read every image." in settings and "tree covers " in settings
    for direction in ("removal", "insertion", "ace"):
        ranking, shown = tree["rankings"][direction], evidence["rankings"][direction]
        table = block.locator(f'table.causal-ranking[data-direction="{direction}"]')
        assert table.is_visible() == (direction != "ace"), "the ACE ranking is collapsed"
        rows = table.locator("tbody tr")
        assert [int(rows.nth(i).get_attribute("data-unit")) for i in range(rows.count())] == ranking["order"][:10]
        for i, t in enumerate(shown["top"]):
            assert rows.nth(i).get_attribute("data-significant") == ("1" if t["significant"] else "0")
            assert rows.nth(i).locator("td.interval").text_content() == f"[{js_fmt(t['low'])}, {js_fmt(t['high'])}]"
            assert rows.nth(i).get_attribute("data-separated") == ("yes" if ranking["separated"][i] else "no")
            assert rows.nth(i).locator("td").nth(5).text_content() == ("✓" if t["significant"] else "")
    whisker = block.locator('table.causal-ranking[data-direction="removal"] tbody tr').first.locator(".whisker")
    box, mean = whisker.locator(".range").bounding_box(), whisker.locator(".mean").bounding_box()
    assert box["width"] > 5 and box["x"] < mean["x"] + mean["width"] / 2 < box["x"] + box["width"]
    assert "distinguishable from the next" in block.locator("table.causal-ranking thead").first.inner_text()
    sets = block.locator(".causal-sets li")
    expected = []
    for direction, verb in (("removal", "Switching off"), ("insertion", "Switching on")):
        found = tree.get("sets", {}).get(direction)
        if found:
            last = found[-1]
            n = len(last["units"])
            expected.append(f"{verb} the {n} significant {direction} unit{'s' if n > 1 else ''} "
                            f"({', '.join(map(str, last['units']))}){' together' if n > 1 else ''} "
                            f"{last['description']} on {last['samples']} held-out samples (seed {last['seed']})")
    assert expected, "tree has no significant set: the test would prove nothing"
    texts = [sets.nth(i).inner_text() for i in range(sets.count())]
    assert all(any(t.startswith(e) for t in texts) for e in expected), (expected, texts)
    figures = block.locator("figure.causal-figure")
    assert [figures.nth(i).get_attribute("data-name") for i in range(3)] == ["curves.svg", "ablation-strip.png",
                                                                              "context.svg"]
    for i, (name, _, title, caption) in enumerate(data["concepts"]["tree"][S2_LAYER]["figures"]):
        assert figures.nth(i).locator("img").get_attribute("alt") == title
        assert figures.nth(i).locator("figcaption").inner_text() == f"{title}. {caption} ({name})"
    opened.close()
    sky = Page(browser, case.path, "#concept/sky")
    block = sky.page.locator(f'#concept-view .causal-concept[data-layer="{S2_LAYER}"]')
    block.wait_for(state="visible")
    assert block.locator(".causal-samples").inner_text() == (
        f"{case.ace['sky']['samples']} held-out samples (seed 3), chosen automatically: measured in rounds (32, 64 "
        "samples in all) until the top 3 units of each ranking settled, at most 200 samples; removal: settled (the "
        "top 3 distinguishable from the next unit); insertion: not settled when the budget ran out.")
    assert "Unreadable by the segmenter, left out: 2 unedited images." in block.locator(".causal-settings").inner_text()
    sky.close()
    door = Page(browser, case.path, "#concept/door")
    block = door.page.locator(f'#concept-view .causal-concept[data-layer="{S2_LAYER}"]')
    block.wait_for(state="visible")
    assert block.locator("table.ace-top tbody tr").count() == TOP_UNITS, "an older file: the ACE table as before"
    assert block.locator("table.causal-ranking, .causal-sets").count() == 0
    door.close()
