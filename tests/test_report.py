"""The HTML report: unit images against a brute-force mask, a self-contained page, and (in Chromium) a page
that renders, sorts, routes and never touches the network.

Browser tests need Debian's /usr/bin/chromium and the `playwright` package; without them they are skipped,
unless GANDISSECT_REQUIRE_BROWSER=1 (CI), where they fail. GANDISSECT_SCREENSHOT=1 (or a .png path) also
writes a 1280x900 screenshot of the report's top to docs/report-screenshot.png (or that path).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gandissect.core.hooks import Trace
from gandissect.core.images import to_uint8
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import ColorSegmenter
from gandissect.dissection import DissectConfig, Dissector
from gandissect.models.scenegan import GeneratorConfig, SceneGenerator
from gandissect.viz.report import DIM, OUTLINE, render_unit_images, write_report

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
IMAGES_PER_UNIT = 6
REPO = Path(__file__).resolve().parents[1]


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


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[SceneGenerator, dict, Path]:
    """A real tiny dissection (random 64x64 scene GAN, two layers of 8 units) and its report."""
    torch.manual_seed(0)
    generator = SceneGenerator(GeneratorConfig(z_dim=8, channels=(16, 8, 8, 8))).eval()
    out = tmp_path_factory.mktemp("report") / "run"
    config = DissectConfig(layers=["layer2", "layer3"], samples=32, batch_size=16, quantile=0.05, min_iou=0.02)
    dissector = Dissector(generator, ContrastSegmenter(), config, out, progress=False)
    document = dissector.finish(dissector.run())
    assert document is not None
    path = write_report(document, generator, out, images_per_unit=IMAGES_PER_UNIT)
    return generator, document, path


def erode(mask: np.ndarray, border: bool) -> np.ndarray:
    """Pixels of `mask` whose 4 neighbours are in it too; `border`: whether outside the image counts as in."""
    padded = np.pad(mask, 1, constant_values=border)
    return mask & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]


def nonzero_concepts(layer: dict) -> dict[str, int]:
    return {c: n for c, n in layer["interpretable_by_concept"].items() if n > 0}


# ------------------------------------------------------------------------------------------- no browser


def test_unit_images_highlight_the_region_above_threshold(report):
    generator, document, _ = report
    layer, units, count = "layer3", [0, 1, 2], 3
    strips = render_unit_images(generator, document, layer, units=units, count=count, batch_size=2)
    assert sorted(strips) == units
    records = {r["unit"]: r for r in document["layers"][layer]["units"]}
    seed = document["config"]["iou_seed"]
    partial = 0
    for unit in units:
        strip = strips[unit]
        assert strip.shape == (64, count * 65, 3) and strip.dtype == np.uint8
        for rank, sample in enumerate(records[unit]["top_samples"][:count]):
            with torch.no_grad(), Trace(generator, [layer]) as trace:
                image = to_uint8(generator(sample_z(generator, seed, [sample])))[0]
            acts = F.interpolate(trace[layer][:, unit:unit + 1].float(), size=(64, 64), mode="bilinear",
                                 align_corners=False)[0, 0]
            mask = (acts > records[unit]["threshold"]).numpy()
            clear = ((acts - records[unit]["threshold"]).abs() > 1e-5).numpy()  # batching may move values a bit
            tile = strip[:, rank * 65: rank * 65 + 64].astype(int)
            assert (strip[:, rank * 65 + 64] == 255).all()  # the gap after each image
            dimmed = np.round(image.astype(np.float32) * DIM)
            out = ~mask & clear
            assert np.abs(tile[out] - dimmed[out]).max(initial=0) <= 1, "outside the region must be dimmed"
            inside = tile[mask & clear]
            kept = (inside == image[mask & clear]).all(1)
            outline = (inside == np.array(OUTLINE)).all(1)
            assert (kept | outline).all(), "inside the region: the picture itself or the outline"
            # the image's border counts as outside the region: the outline runs along it
            eroded = erode(mask, border=False) & erode(clear, border=True)
            assert (tile[eroded] == image[eroded]).all(), "the region's interior is shown unchanged"
            assert (outline.sum() > 0) == mask.any()
            partial += int(0 < mask.mean() < 1)
    assert partial > 0, "no tile had a region that covers part of the image: the test would prove nothing"


def test_unit_images_generate_each_sample_once(report):
    generator, document, _ = report
    seen: list[int] = []
    handle = generator.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    try:
        strips = render_unit_images(generator, document, "layer2", count=IMAGES_PER_UNIT, batch_size=5)
    finally:
        handle.remove()
    wanted = [s for r in document["layers"]["layer2"]["units"] for s in r["top_samples"][:IMAGES_PER_UNIT]]
    assert len(set(wanted)) < len(wanted), "units share no sample: the test would prove nothing"
    assert sum(seen) == len(set(wanted))
    assert max(seen) <= 5
    assert len(strips) == len(document["layers"]["layer2"]["units"])
    with pytest.raises(KeyError, match="no units"):
        render_unit_images(generator, document, "layer2", units=[99])


def test_report_is_self_contained_and_complete(report):
    _, document, path = report
    text = path.read_text()
    assert path.name == "report.html"
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"<(link|iframe)\b", text) and not re.search(r"<script[^>]*\bsrc=", text)
    assert not re.search(r"\b(src|href)=\"(?!data:|#)", text), "every src/href is a data: URI or a # link"
    assert "@import" not in text and "url(" not in text
    for name, layer in document["layers"].items():
        cards = re.findall(rf'class="unit-card[^"]*"[^>]*data-layer="{name}" data-unit="(\d+)"', text)
        assert sorted(map(int, cards)) == list(range(len(layer["units"])))
        chart = re.search(rf'<svg class="concept-chart" data-layer="{name}".*?</svg>', text, re.S)
        assert chart is not None
        bars = re.findall(r'<rect class="bar"[^>]*data-concept="([^"]+)"[^>]*data-count="(\d+)"', chart.group(0))
        assert {c: int(n) for c, n in bars} == nonzero_concepts(layer)
    assert sum(len(nonzero_concepts(layer)) for layer in document["layers"].values()) >= 3
    payload = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    assert payload is not None
    data = json.loads(payload.group(1))
    unit = data["layers"]["layer3"]["units"]["0"]
    assert 0 < len(unit["top_concepts"]) <= 5
    ious = [iou for _, iou in unit["top_concepts"]]
    assert ious == sorted(ious, reverse=True) and ious[0] == pytest.approx(unit["iou"])
    assert text.count("data:image/") == sum(len(layer["units"]) for layer in document["layers"].values())
    assert path.stat().st_size < 2_000_000


# ---------------------------------------------------------------------------------------------- browser


def _unavailable(reason: str) -> None:
    if os.environ.get("GANDISSECT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser tests are required (GANDISSECT_REQUIRE_BROWSER=1) but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        _unavailable(f"playwright is not importable: {error}")
    manager = sync_playwright().start()
    try:
        browser = manager.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    except Exception as error:
        manager.stop()
        _unavailable(f"chromium does not start: {error}")
    yield browser
    browser.close()
    manager.stop()


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


@pytest.fixture
def page(browser, report):
    opened: list[Page] = []

    def open_page(fragment: str = "") -> Page:
        opened.append(Page(browser, report[2], fragment))
        return opened[-1]

    yield open_page
    for p in opened:
        p.close()


def test_browser_chart_and_gallery_render(page, report):
    _, document, _ = report
    view = page()
    p = view.page
    for name, layer in document["layers"].items():
        chart = p.locator(f'svg.concept-chart[data-layer="{name}"]')
        bars = chart.locator("rect.bar")
        assert bars.count() == len(nonzero_concepts(layer))
        for i in range(bars.count()):
            box = bars.nth(i).bounding_box()
            assert box is not None and box["width"] > 0 and box["height"] > 0
        heights = {bars.nth(i).get_attribute("data-concept"): bars.nth(i).bounding_box()["height"]
                   for i in range(bars.count())}
        counts = nonzero_concepts(layer)
        top = max(counts, key=counts.get)
        assert heights[top] == pytest.approx(max(heights.values()))
        assert p.locator(f'.unit-card[data-layer="{name}"]').count() == len(layer["units"])
    assert p.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    assert p.evaluate("document.images.length") == sum(len(layer["units"]) for layer in document["layers"].values())
    assert p.locator("#unit-view").is_hidden() and p.locator("#concept-view").is_hidden()
    target = os.environ.get("GANDISSECT_SCREENSHOT")
    if target:
        out = Path(target) if target.endswith(".png") else REPO / "docs" / "report-screenshot.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        p.screenshot(path=str(out))


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
        section.locator('button[data-sort="concept"]').click()
        concepts = _order(p, name, "concept")
        assert concepts == sorted(concepts)
        section.locator('button[data-sort="iou"]').click()
        ious = [float(v) for v in _order(p, name, "iou")]
        assert ious == sorted(ious, reverse=True)
        assert section.locator('button[data-sort="iou"]').get_attribute("class") == "active"
        section.locator("input.filter-interpretable").check()
        visible = section.locator(".unit-card:visible")
        assert visible.count() == sum(r["interpretable"] for r in layer["units"])
        section.locator("input.filter-interpretable").uncheck()
        assert section.locator(".unit-card:visible").count() == len(layer["units"])


def test_browser_unit_view_opens_from_a_card(page, report):
    _, document, _ = report
    p = page().page
    card = p.locator('.layer-section[data-layer="layer3"] .unit-card').first
    unit = int(card.get_attribute("data-unit"))
    card.click()
    view = p.locator("#unit-view")
    view.wait_for(state="visible")
    assert p.evaluate("location.hash") == f"#unit/layer3/{unit}"
    assert f"unit {unit}" in view.locator("h2").inner_text()
    assert view.locator("img").count() >= 1
    assert p.evaluate("Array.from(document.querySelectorAll('#unit-view img')).every(i => i.naturalWidth > 0)")
    record = document["layers"]["layer3"]["units"][unit]
    assert record["concept"] in view.inner_text()
    assert 1 <= view.locator("table.top-concepts tr").count() <= 5
    p.keyboard.press("Escape")
    view.wait_for(state="hidden")


def test_browser_concept_view_lists_best_units(page, report):
    _, document, _ = report
    counts: dict[str, int] = {}
    for layer in document["layers"].values():
        for concept, n in layer["interpretable_by_concept"].items():
            counts[concept] = counts.get(concept, 0) + n
    concept = max(counts, key=counts.get)
    p = page(f"#concept/{concept}").page
    view = p.locator("#concept-view")
    view.wait_for(state="visible")
    units = view.locator(".concept-unit")
    assert 1 <= units.count() <= 12
    ious = [float(units.nth(i).get_attribute("data-iou")) for i in range(units.count())]
    assert ious == sorted(ious, reverse=True)
    best = max((iou, name) for name, layer in document["layers"].items()
               for iou in layer["concepts"][concept]["iou"][:1])
    assert ious[0] == pytest.approx(best[0])
    assert p.evaluate("Array.from(document.querySelectorAll('#concept-view img')).every(i => i.naturalWidth > 0)")
    view.locator(".concept-unit").first.click()
    p.locator("#unit-view").wait_for(state="visible")
    assert view.is_hidden()
    p.go_back()  # back to the concept page, then to the report via a chart bar
    view.wait_for(state="visible")
    p.evaluate("location.hash = ''")
    view.wait_for(state="hidden")
    p.locator("svg.concept-chart rect.bar").first.click()
    view.wait_for(state="visible")
