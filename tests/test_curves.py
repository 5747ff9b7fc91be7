"""Ablation curves and the context of insertion against brute force and a planted model whose answer is known."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import pytest
import torch
from PIL import Image

from gandissect.causal.ace import unit_effects
from gandissect.causal.context import InsertionContext, insertion_context, window_masks
from gandissect.causal.curves import (
    AblationCurve,
    ablation_curves,
    ablation_images,
    ablation_pixels,
    iou_ranking,
    unit_counts,
)
from gandissect.causal.interventions import concept_index, insertion_values
from gandissect.core.edits import UnitEdit
from gandissect.core.errors import ConfigError
from gandissect.core.hooks import Trace
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import ColorSegmenter
from gandissect.viz.plots import context_chart, curves_chart, image_strip, save_strip
from planted import PLANTED, PlantedGenerator

COLOURS = list(PLANTED.values())



@pytest.fixture(scope="module")
def blue_curves(planted_run):
    values = insertion_values(planted_run, "features", "blue")
    effects = unit_effects(PlantedGenerator(), ColorSegmenter(), "features", concept_index(planted_run, "blue"),
                           "blue", values, samples=16, progress=False)
    rankings = {"ACE": effects.ranking(), "IoU": iou_ranking(planted_run, "features", "blue")}
    return ablation_curves(PlantedGenerator(), ColorSegmenter(), "features", "blue", rankings, samples=24,
                           progress=False)


def labels_of(segmenter, image):
    return segmenter.segment(image)[0, 0]  # (H, W): ColorSegmenter labels every pixel, one channel


def test_unit_counts_double_up_to_the_width():
    assert unit_counts(5) == [0, 1, 2, 4, 5]
    assert unit_counts(64) == [0, 1, 2, 4, 8, 16, 32, 64]
    assert unit_counts(64, up_to=20) == [0, 1, 2, 4, 8, 16, 20]
    assert unit_counts(1) == [0, 1]


def test_ablating_the_blue_unit_first_removes_all_blue_and_keeps_the_rest(blue_curves):
    ace = blue_curves["ACE"]
    assert ace.units[0] == 2 and ace.counts == [0, 1, 2, 4, 5]
    assert ace.pixels_before > 0
    assert ace.removed[0] == 0.0 and ace.others_kept[0] == 1.0
    assert ace.at(1) == 1.0 and ace.pixels_after[1] == 0.0
    assert ace.others_kept[1] >= 1 - 1e-9  # no red, green or grey pixel lost
    assert all(r == 1.0 for r in ace.removed[1:])
    assert blue_curves["IoU"].units[0] == 2  # the planted unit also has the best IoU here


def test_ablating_blue_removes_no_red_or_green_pixels():
    generator, segmenter = PlantedGenerator(), ColorSegmenter()
    pixels = ablation_pixels(generator, segmenter, "features", [[], [2]], samples=16, batch_size=5, progress=False)
    for colour in ("red", "green"):
        c = segmenter.concepts.index(colour)
        assert float(pixels.kept[1, c]) == float(pixels.before[c]) > 0  # every red/green pixel stays
        assert float(pixels.after[1, c]) >= float(pixels.before[c])  # and more show where blue was


def test_a_curve_point_equals_a_brute_force_count():
    generator, segmenter = PlantedGenerator(), ColorSegmenter()
    ranking, n, samples = [1, 3, 0, 4, 2], 3, 10
    curves = ablation_curves(generator, segmenter, "features", "red", {"mine": ranking}, counts=[0, n],
                             samples=samples, seed=7, batch_size=4, chunk=4, progress=False)
    red = segmenter.concepts.index("red")
    z = sample_z(generator, 7, range(samples))
    before = after = others_before = others_kept = 0
    for i in range(samples):
        plain = labels_of(segmenter, generator(z[i:i + 1]))
        with Trace(generator, edit={"features": UnitEdit.ablate(ranking[:n])}):
            edited = labels_of(segmenter, generator(z[i:i + 1]))
        for y in range(plain.shape[0]):
            for x in range(plain.shape[1]):
                a, b = int(plain[y, x]), int(edited[y, x])
                before += a == red
                after += b == red
                if a not in (red, -1, -2):
                    others_before += 1
                    others_kept += a == b
    curve = curves["mine"]
    assert curve.units == ranking[:n] and curve.counts == [0, n]
    assert curve.pixels_before == before and curve.pixels_after[1] == after
    assert curve.removed[1] == pytest.approx(1 - after / before, abs=1e-12)
    assert curve.others_kept[1] == pytest.approx(others_kept / others_before, abs=1e-12)
    assert curve.others_kept[1] < 1  # ablating green (unit 1) loses green pixels


def test_ablation_images_rows_follow_the_counts():
    generator, segmenter = PlantedGenerator(), ColorSegmenter()
    images = ablation_images(generator, "features", [2, 0], [0, 1, 2], samples=3, seed=4)
    assert images.shape == (3, 3, 3, 32, 32)
    assert torch.equal(images[0], generator(sample_z(generator, 4, range(3))))
    blue, red = segmenter.concepts.index("blue"), segmenter.concepts.index("red")
    assert not (segmenter.segment(images[1]) == blue).any()
    assert not (segmenter.segment(images[2]) == red).any()
    picture = image_strip(images, ["N=0", "N=1", "N=2"], scale=2)
    assert picture.dtype.name == "uint8" and picture.shape[0] == 3 * 65 + 1


def test_inserting_blue_gains_blue_wherever_it_was_not(planted_run):
    values = insertion_values(planted_run, "features", "blue")
    context = insertion_context(PlantedGenerator(), ColorSegmenter(), "features", "blue", [2], values, samples=6,
                                progress=False)
    assert sum(context.locations) == 6 * 64
    assert context.gain("blue") == 0.0  # already blue
    for before in ("red", "green", "grey"):
        assert context.locations[context.before.index(before)] > 0
        assert context.gain(before) == 16.0  # the cell's 4x4 pixels turn blue: blue is painted last
        assert context.appeared[context.before.index(before)] == 1.0


def test_inserting_red_gains_red_only_where_nothing_covers_it(planted_run):
    values = insertion_values(planted_run, "features", "red")
    context = insertion_context(PlantedGenerator(), ColorSegmenter(), "features", "red", [0], values, samples=6,
                                progress=False)
    assert context.gain("green") == 0.0 and context.gain("blue") == 0.0  # painted over by later colours
    assert context.gain("red") == 0.0
    assert context.gain("grey") > 0 and context.appeared[context.before.index("grey")] == 1.0
    assert context.locations[context.before.index("green")] > 0 and context.locations[context.before.index("blue")] > 0
    assert math.isnan(context.gain("none"))  # every pixel has a colour


def test_context_equals_a_brute_force_loop_over_locations(planted_run):
    generator, segmenter = PlantedGenerator(), ColorSegmenter()
    values = insertion_values(planted_run, "features", "red")
    units, patch, stride, margin, samples = [0, 3], 2, 3, 1, 3
    context = insertion_context(generator, segmenter, "features", "red", units, values, patch=patch, stride=stride,
                                margin=margin, samples=samples, seed=9, batch_size=2, chunk=5, progress=False)
    red = segmenter.concepts.index("red")
    z = sample_z(generator, 9, range(samples))
    totals: dict[str, list[float]] = {}
    for s in range(samples):
        plain = labels_of(segmenter, generator(z[s:s + 1]))
        for i in range(0, 8 - patch + 1, stride):
            for j in range(0, 8 - patch + 1, stride):
                region = torch.zeros(8, 8)
                region[i:i + patch, j:j + patch] = 1
                with Trace(generator, edit={"features": UnitEdit.insert(units, values[units], region=region)}):
                    edited = labels_of(segmenter, generator(z[s:s + 1]))
                top, left = max(i - margin, 0) * 4, max(j - margin, 0) * 4
                bottom, right = min(i + patch + margin, 8) * 4, min(j + patch + margin, 8) * 4
                window = (slice(top, bottom), slice(left, right))
                gained = float((edited[window] == red).sum() - (plain[window] == red).sum())
                cell = plain[i * 4:(i + patch) * 4, j * 4:(j + patch) * 4].flatten()
                majority = segmenter.concepts[int(torch.bincount(cell, minlength=len(segmenter.concepts)).argmax())]
                totals.setdefault(majority, []).append(gained)
    for name, gains in totals.items():
        assert context.locations[context.before.index(name)] == len(gains)
        assert context.gain(name) == pytest.approx(sum(gains) / len(gains), abs=1e-9)
    assert sum(context.locations) == sum(len(g) for g in totals.values())


def test_windows_widen_the_patch_by_the_margin():
    windows = window_masks((8, 8), (32, 32), patch=2, stride=3, margin=1)
    assert windows.shape == (9, 32, 32)
    assert windows[0].sum() == 12 * 12 and windows[0, :12, :12].all()  # clipped at the top-left corner
    assert windows[4].sum() == 16 * 16 and windows[4, 8:24, 8:24].all()


def test_charts_are_svg_with_axis_labels_and_legends(blue_curves, planted_run, tmp_path):
    svg = curves_chart(blue_curves)
    root = ET.fromstring(svg)
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {"units ablated", "fraction of blue pixels removed", "ACE", "IoU", "ACE: other concepts kept",
            "IoU: other concepts kept"} <= texts
    contexts = [insertion_context(PlantedGenerator(), ColorSegmenter(), "features", colour, [unit],
                                  insertion_values(planted_run, "features", colour), samples=2, progress=False)
                for unit, colour in ((0, "red"), (2, "blue"))]
    svg = context_chart(contexts)
    root = ET.fromstring(svg)
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {"concept at the location before the insertion", "concept pixels gained near the location",
            "grey", "green", "red (1 units at features)", "blue (1 units at features)"} <= texts
    assert "none" not in texts  # never seen: not charted
    images = ablation_images(PlantedGenerator(), "features", [2], [0, 1], samples=2)
    save_strip(tmp_path / "strip.png", images, ["N=0", "N=1"])
    assert Image.open(tmp_path / "strip.png").size[1] == 2 * 33 + 1


def test_results_round_trip_through_json(blue_curves, planted_run):
    curve = blue_curves["ACE"]
    assert AblationCurve.from_json(json.loads(json.dumps(curve.to_json()))) == curve
    context = insertion_context(PlantedGenerator(), ColorSegmenter(), "features", "red", [0],
                                insertion_values(planted_run, "features", "red"), samples=2, progress=False)
    data = json.loads(json.dumps(context.to_json(), allow_nan=False))  # NaN (never tried) becomes null
    back = InsertionContext.from_json(data)
    assert back.locations == context.locations and math.isnan(back.gain("none"))


def test_bad_input_is_refused_in_one_line(planted_run):
    generator, segmenter = PlantedGenerator(), ColorSegmenter()
    with pytest.raises(ConfigError, match=r"out of range: layer 'features' has units 0\.\.4"):
        ablation_curves(generator, segmenter, "features", "red", {"x": [0, 9]}, progress=False)
    with pytest.raises(ConfigError, match="more than once"):
        ablation_curves(generator, segmenter, "features", "red", {"x": [0, 0]}, progress=False)
    with pytest.raises(ConfigError, match=r"counts \[3\] do not fit the x ranking of 2 units"):
        ablation_curves(generator, segmenter, "features", "red", {"x": [0, 1]}, counts=[0, 3], progress=False)
    with pytest.raises(ConfigError, match="no concept 'dragon'"):
        ablation_curves(generator, segmenter, "features", "dragon", {"x": [0]}, progress=False)
    with pytest.raises(ConfigError, match="no concept 'door'"):
        iou_ranking(planted_run, "features", "door")
    values = insertion_values(planted_run, "features", "red")
    with pytest.raises(ConfigError, match=r"patch 9 is larger than layer 'features'"):
        insertion_context(generator, segmenter, "features", "red", [0], values, patch=9, samples=1, progress=False)
    with pytest.raises(ConfigError, match=r"one value per unit of layer 'features' \(5\); got 2"):
        insertion_context(generator, segmenter, "features", "red", [0], values[:2], samples=1, progress=False)
    with pytest.raises(ConfigError, match="N=3"):
        AblationCurve("l", "c", "r", [0], [0, 1], [0.0, 1.0], [1.0, 1.0], 1.0, [1.0, 0.0], 1, 4).at(3)
