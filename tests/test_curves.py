"""Ablation curves and the context of insertion against brute force and a planted model whose answer is known."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import pytest
import torch
from PIL import Image

from gandissect.causal.context import InsertionContext, insertion_context, window_masks
from gandissect.causal.curves import (
    AblationCurve,
    AblationPixels,
    ablation_curves,
    ablation_curves_multi,
    ablation_images,
    ablation_pixels,
    iou_ranking,
    parse_counts,
    random_rankings,
    unit_counts,
)
from gandissect.causal.interventions import insertion_values
from gandissect.core.edits import UnitEdit
from gandissect.core.errors import ConfigError
from gandissect.core.hooks import Trace
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import ColorSegmenter
from gandissect.core.stats import statistic_class
from gandissect.engine.collectives import SingleProcess
from gandissect.viz.plots import context_chart, curves_chart, image_strip, save_strip
from planted import PlantedGenerator

SVG = "{http://www.w3.org/2000/svg}"
CONCEPTS = ColorSegmenter().concepts


@pytest.fixture(scope="module")
def blue_curves(planted_run):
    rankings = {"removal": [2, 0, 1, 3, 4], "IoU": iou_ranking(planted_run, "features", "blue")}
    return ablation_curves(PlantedGenerator(), ColorSegmenter(), "features", "blue", rankings, samples=24,
                           progress=False)


def labels_of(segmenter, image):
    return segmenter.segment(image)[0, 0]  # (H, W): ColorSegmenter labels every pixel, one channel


def brute_counts(segmenter, units, samples, seed, concept):
    """Per sample (before, after, others before, others kept) of `concept`, by plain Trace/UnitEdit on the whole
    batch: only pixels known (no -2) in both images count; NaN for a sample with no such pixel."""
    generator, c = PlantedGenerator(), CONCEPTS.index(concept)
    z = sample_z(generator, seed, range(samples))
    plain = segmenter.segment(generator(z))
    with Trace(generator, edit={"features": UnitEdit.ablate(list(units))}):
        edited = segmenter.segment(generator(z))
    known = (plain != -2).all(1) & (edited != -2).all(1)
    shows = [((plain == k).any(1) & known, (edited == k).any(1) & known) for k in range(len(CONCEPTS))]
    total = [sum(pair[i].flatten(1).sum(1) for k, pair in enumerate(shows) if k != c) for i in range(2)]
    kept = sum((a & b).flatten(1).sum(1) for k, (a, b) in enumerate(shows) if k != c)
    rows = torch.stack([shows[c][0].flatten(1).sum(1), shows[c][1].flatten(1).sum(1), total[0], kept], 1).double()
    return rows.masked_fill(~known.flatten(1).any(1)[:, None], float("nan"))


def pooled(rows):
    """(fraction removed, others kept) pooled over the non-missing samples of brute_counts' rows."""
    rows = rows[~torch.isnan(rows[:, 0])]
    return 1 - float(rows[:, 1].sum() / rows[:, 0].sum()), float(rows[:, 3].sum() / rows[:, 2].sum())


class HalfUnknown:
    """The colour segmenter, but every pixel of an image with fewer than four red blocks (8x8 pixels) is unknown
    (-2): about half of the images. Red stays where it is when green, blue or noise units are ablated, so a sample is
    unknown or known in its unedited and edited images alike."""

    concepts, categories = ColorSegmenter().concepts, ColorSegmenter().categories

    def segment(self, images):
        labels = ColorSegmenter().segment(images)
        few = (labels == CONCEPTS.index("red")).flatten(1).sum(1) < 4 * 64
        return labels.masked_fill(few[:, None, None, None], -2)


class GreenUnknown(HalfUnknown):
    """The colour segmenter, but green pixels are unknown."""

    def segment(self, images):
        labels = ColorSegmenter().segment(images)
        return labels.masked_fill(labels == CONCEPTS.index("green"), -2)


def test_unit_counts_double_up_to_the_width():
    assert unit_counts(5) == [0, 1, 2, 4, 5]
    assert unit_counts(64) == [0, 1, 2, 4, 8, 16, 32, 64]
    assert unit_counts(64, up_to=20) == [0, 1, 2, 4, 8, 16, 20]
    assert unit_counts(1) == [0, 1]


def test_counts_take_numbers_and_shares_of_the_layer():
    assert parse_counts("1,2,4,5%,20", 64) == [0, 1, 2, 3, 4, 20]  # 5% of 64 units: 3.2 -> 3
    assert parse_counts(" 8 , 2,2 ", 10) == [0, 2, 8]
    assert parse_counts("1%", 64) == [0, 1]  # 0.64 -> at least one unit
    assert parse_counts("50%", 5) == [0, 3] and parse_counts("100%,0", 64) == [0, 64]
    assert parse_counts("0", 5) == [0] and parse_counts("2.5%", 100) == [0, 3]


@pytest.mark.parametrize("text", ["", " ", "1,,2", "a", "2.5", "-1", "65", "101%", "-5%", "x%", "nan%"])
def test_bad_counts_are_refused_in_one_line_naming_the_width(text):
    with pytest.raises(ConfigError) as error:
        parse_counts(text, 64)
    assert "64 units" in str(error.value) and "\n" not in str(error.value)


def test_ablating_the_blue_unit_first_removes_all_blue_and_keeps_the_rest(blue_curves):
    assert list(blue_curves) == ["removal", "IoU", "random"]
    first = blue_curves["removal"]
    assert first.units == [2, 0, 1, 3, 4] and first.counts == [0, 1, 2, 4, 5]
    assert first.pixels_before > 0 and first.missing == [0] * 5
    assert first.removed[0] == 0.0 and first.others_kept[0] == 1.0
    assert first.at(1) == 1.0 and first.pixels_after[1] == 0.0
    assert first.removed_low[1] == first.removed_high[1] == 1.0 and first.removed_se[1] == 0.0  # every sample
    assert first.others_kept[1] >= 1 - 1e-9  # no red, green or grey pixel lost
    assert all(r == 1.0 for r in first.removed[1:])
    assert blue_curves["IoU"].units[0] == 2  # the planted unit also has the best IoU here
    random = blue_curves["random"]
    assert random.draws == 10 and random.units == [] and random.counts == first.counts
    assert random.removed[0] == 0.0 and random.removed[-1] == 1.0  # all five units: every draw removes all blue
    assert random.removed_low[1] == 0.0 and random.removed_high[1] == 1.0  # one unit: blue's or another
    assert 0 < random.removed[1] < 1


def test_points_and_per_sample_counts_equal_a_brute_force_loop():
    segmenter, ranking, counts = ColorSegmenter(), [1, 3, 0, 4, 2], [0, 1, 3, 5]
    curves = ablation_curves(PlantedGenerator(), segmenter, "features", "red", {"mine": ranking}, counts=counts,
                             samples=10, seed=7, batch_size=4, chunk=4, random_draws=0, progress=False)
    assert list(curves) == ["mine"]
    curve = curves["mine"]
    pixels = ablation_pixels(PlantedGenerator(), segmenter, "features", [ranking[:n] for n in counts], samples=10,
                             seed=7, batch_size=3, chunk=5, progress=False, concepts=["red"])
    for k, n in enumerate(counts):
        rows = brute_counts(segmenter, ranking[:n], 10, 7, "red")
        removed, kept = pooled(rows)
        assert curve.removed[k] == pytest.approx(removed, abs=1e-12)
        assert curve.others_kept[k] == pytest.approx(kept, abs=1e-12)
        assert curve.pixels_after[k] == float(rows[:, 1].sum())
        row = pixels.row(ranking[:n])
        assert torch.equal(pixels.before[:, row, 0], rows[:, 0]) and torch.equal(pixels.after[:, row, 0], rows[:, 1])
        assert torch.equal(pixels.before[:, row, 1] - pixels.before[:, row, 0], rows[:, 2])
        assert torch.equal(pixels.kept[:, row, 1] - pixels.kept[:, row, 0], rows[:, 3])
    assert curve.pixels_before == float(brute_counts(segmenter, [], 10, 7, "red")[:, 0].sum())
    assert curve.units == ranking and curve.others_kept[1] < 1  # ablating green (unit 1) loses green pixels


def test_intervals_match_a_bootstrap_over_samples():
    segmenter, ranking, samples = ColorSegmenter(), [0, 1, 2], 300
    curve = ablation_curves(PlantedGenerator(), segmenter, "features", "grey", {"r": ranking}, counts=[1, 2],
                            samples=samples, seed=11, batch_size=50, random_draws=0, progress=False)["r"]
    picks = torch.randint(0, samples, (2000, samples), generator=torch.Generator().manual_seed(0))
    for k, n in enumerate(curve.counts[1:], start=1):
        rows = brute_counts(segmenter, ranking[:n], samples, 11, "grey")[picks]  # (draws, samples, 4)
        removed = 1 - rows[..., 1].sum(1) / rows[..., 0].sum(1)
        kept = rows[..., 3].sum(1) / rows[..., 2].sum(1)
        for values, low, high in ((removed, curve.removed_low[k], curve.removed_high[k]),
                                  (kept, curve.others_kept_low[k], curve.others_kept_high[k])):
            boot_low, boot_high = values.quantile(torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
            assert (high - low) == pytest.approx(boot_high - boot_low, rel=0.2)
            assert low < float(values.median()) < high
        assert curve.removed_se[k] == pytest.approx(float(removed.std()), rel=0.15)


def test_the_random_baseline_averages_the_same_seeded_draws():
    segmenter, counts = ColorSegmenter(), [0, 1, 2, 4]
    draws = random_rankings(5, 10, seed=3)
    assert draws == random_rankings(5, 10, seed=3) != random_rankings(5, 10, seed=4)
    assert all(sorted(draw) == list(range(5)) for draw in draws)
    curve = ablation_curves(PlantedGenerator(), segmenter, "features", "grey", {"r": list(range(5))}, counts=counts,
                            samples=12, seed=5, random_draws=10, random_seed=3, progress=False)["random"]
    per_draw = torch.tensor([[pooled(brute_counts(segmenter, draw[:n], 12, 5, "grey")) for n in counts]
                             for draw in draws], dtype=torch.float64)  # (draws, counts, 2)
    band = torch.tensor([0.05, 0.95], dtype=torch.float64)
    assert curve.counts == counts and curve.draws == 10
    assert curve.removed == pytest.approx(per_draw[..., 0].mean(0).tolist(), abs=1e-12)
    assert curve.others_kept == pytest.approx(per_draw[..., 1].mean(0).tolist(), abs=1e-12)
    assert curve.removed_low == pytest.approx(per_draw[..., 0].quantile(band[0], dim=0).tolist(), abs=1e-12)
    assert curve.removed_high == pytest.approx(per_draw[..., 0].quantile(band[1], dim=0).tolist(), abs=1e-12)
    assert curve.removed_se[1] == pytest.approx(float(per_draw[:, 1, 0].std() / math.sqrt(10)), abs=1e-12)
    assert curve.removed_low[2] < curve.removed[2] < curve.removed_high[2]


def test_unknown_images_are_missing_samples_left_out():
    ranking, counts, samples = [1, 2, 3], [0, 1, 2, 3], 16
    curve = ablation_curves(PlantedGenerator(), HalfUnknown(), "features", "green", {"r": ranking}, counts=counts,
                            samples=samples, seed=1, random_draws=0, progress=False)["r"]
    plain = ablation_pixels(PlantedGenerator(), ColorSegmenter(), "features", [ranking[:n] for n in counts],
                            samples=samples, seed=1, progress=False, concepts=["green"])
    z = sample_z(PlantedGenerator(), 1, range(samples))
    unknown = HalfUnknown().segment(PlantedGenerator()(z))[:, 0, 0, 0] == -2
    assert samples // 3 < int(unknown.sum()) < 2 * samples // 3  # about half
    masked = [t.masked_fill(unknown[:, None, None], float("nan")) for t in (plain.before, plain.after, plain.kept)]
    alone = AblationPixels(plain.layer, plain.concepts, plain.unit_sets, *masked, samples, 1)
    assert curve.to_json() == alone.curve("green", ranking, counts, "r").to_json()  # the known half alone
    assert curve.missing == [int(unknown.sum())] * len(counts)
    assert curve.removed[1] == 1.0 and curve.removed_low[1] == 1.0  # green's own unit removes green


def test_pixels_unknown_in_either_image_are_left_out():
    curve = ablation_curves(PlantedGenerator(), GreenUnknown(), "features", "grey", {"r": [1, 0]}, counts=[1, 2],
                            samples=8, seed=2, random_draws=0, progress=False)["r"]
    assert curve.removed[1] == 0.0 and curve.others_kept[1] == 1.0  # formerly green pixels are not counted
    removed, kept = pooled(brute_counts(GreenUnknown(), [1, 0], 8, 2, "grey"))
    assert curve.removed[2] == pytest.approx(removed, abs=1e-12) and curve.others_kept[2] == pytest.approx(kept)
    plain = ablation_curves(PlantedGenerator(), ColorSegmenter(), "features", "grey", {"r": [1]}, counts=[1],
                            samples=8, seed=2, random_draws=0, progress=False)["r"]
    assert plain.removed[1] < 0  # counted, green pixels turned grey would make grey grow


class _Shard(SingleProcess):
    """Rank `rank` of a pretend world of two: the second rank to finish merges both ranks' statistics."""

    def __init__(self, rank, parts):
        self.rank, self.world, self.parts = rank, 2, parts

    def merge(self, stats):
        self.parts.append({name: (type(stat).__name__, stat.state_dict()) for name, stat in stats.items()})
        if len(self.parts) < 2:
            return stats
        merged = {}
        for name in stats:
            cls = statistic_class(self.parts[0][name][0])
            merged[name] = cls.from_state_dict(self.parts[0][name][1])
            merged[name].merge(cls.from_state_dict(self.parts[1][name][1]))
        return merged


def test_ranks_merge_into_the_curves_of_one_process():
    run = dict(rankings={"r": [2, 1, 0]}, counts=[0, 1, 3], samples=10, seed=1, batch_size=3, random_draws=2,
               progress=False)
    one = ablation_curves(PlantedGenerator(), HalfUnknown(), "features", "blue", **run)
    parts: list = []
    ablation_curves(PlantedGenerator(), HalfUnknown(), "features", "blue", collective=_Shard(0, parts), **run)
    two = ablation_curves(PlantedGenerator(), HalfUnknown(), "features", "blue", collective=_Shard(1, parts), **run)
    assert {name: c.to_json() for name, c in one.items()} == {name: c.to_json() for name, c in two.items()}
    assert one["r"].missing[0] > 0


def test_several_concepts_share_one_pass():
    run = dict(counts="1,40%", samples=6, seed=3, random_draws=2, progress=False)
    multi = ablation_curves_multi(PlantedGenerator(), ColorSegmenter(), "features",
                                  {"red": {"a": [0, 1, 2], "b": [4, 3, 0]}, "grey": {"c": [1, 0]}}, **run)
    assert list(multi) == ["red", "grey"] and list(multi["red"]) == ["a", "b", "random"]
    assert multi["grey"]["c"].counts == [0, 1, 2]  # 40% of 5 units
    for concept, named in (("red", {"a": [0, 1, 2], "b": [4, 3, 0]}), ("grey", {"c": [1, 0]})):
        alone = ablation_curves(PlantedGenerator(), ColorSegmenter(), "features", concept, named, **run)
        assert {k: c.to_json() for k, c in alone.items()} == {k: c.to_json() for k, c in multi[concept].items()}


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
    moved: dict[str, list[float]] = {}
    for s in range(samples):
        unedited = generator(z[s:s + 1])
        plain = labels_of(segmenter, unedited)
        for i in range(0, 8 - patch + 1, stride):
            for j in range(0, 8 - patch + 1, stride):
                region = torch.zeros(8, 8)
                region[i:i + patch, j:j + patch] = 1
                with Trace(generator, edit={"features": UnitEdit.insert(units, values[units], region=region)}):
                    image = generator(z[s:s + 1])
                edited = labels_of(segmenter, image)
                top, left = max(i - margin, 0) * 4, max(j - margin, 0) * 4
                bottom, right = min(i + patch + margin, 8) * 4, min(j + patch + margin, 8) * 4
                window = (slice(top, bottom), slice(left, right))
                gained = float((edited[window] == red).sum() - (plain[window] == red).sum())
                cell = plain[i * 4:(i + patch) * 4, j * 4:(j + patch) * 4].flatten()
                majority = segmenter.concepts[int(torch.bincount(cell, minlength=len(segmenter.concepts)).argmax())]
                totals.setdefault(majority, []).append(gained)
                changed = ((image - unedited).abs().amax(1)[0] > 0.2)[window]
                moved.setdefault(majority, []).append(float(changed.sum()))
    for name, gains in totals.items():
        assert context.locations[context.before.index(name)] == len(gains)
        assert context.gain(name) == pytest.approx(sum(gains) / len(gains), abs=1e-9)
        assert context.changed[context.before.index(name)] == pytest.approx(sum(moved[name]) / len(gains))
    assert any(c > 0 for c in context.changed if c == c)
    assert sum(context.locations) == sum(len(g) for g in totals.values())


def test_windows_widen_the_patch_by_the_margin():
    windows = window_masks((8, 8), (32, 32), patch=2, stride=3, margin=1)
    assert windows.shape == (9, 32, 32)
    assert windows[0].sum() == 12 * 12 and windows[0, :12, :12].all()  # clipped at the top-left corner
    assert windows[4].sum() == 16 * 16 and windows[4, 8:24, 8:24].all()


def test_charts_are_svg_with_axis_labels_bands_and_legends(blue_curves, planted_run, tmp_path):
    root = ET.fromstring(curves_chart(blue_curves))
    texts = {t.text for t in root.iter(f"{SVG}text")}
    assert {"units ablated (N)", "fraction of blue pixels removed (held-out samples)", "removal", "IoU",
            "removal: other concepts kept", "IoU: other concepts kept", "random: mean of 10 draws",
            "random: 5-95% of draws", "shaded: 95% interval"} <= texts
    bands = [p for p in root.iter(f"{SVG}polygon")]
    assert len(bands) == 3 and bands[0].get("fill") == "#999999"  # the random baseline's band, drawn first
    dashed = [line for line in root.iter(f"{SVG}polyline") if line.get("stroke") == "#666666"]
    assert len(dashed) == 1 and dashed[0].get("stroke-dasharray")
    legacy = AblationCurve("l", "c", "old", [0], [0, 1], [0.0, 1.0], [1.0, 1.0], 1.0, [1.0, 0.0], 1, 4)
    assert not list(ET.fromstring(curves_chart([legacy])).iter(f"{SVG}polygon"))  # no intervals: no band
    contexts = [insertion_context(PlantedGenerator(), ColorSegmenter(), "features", colour, [unit],
                                  insertion_values(planted_run, "features", colour), samples=2, progress=False)
                for unit, colour in ((0, "red"), (2, "blue"))]
    root = ET.fromstring(context_chart(contexts))
    texts = {t.text for t in root.iter(f"{SVG}text")}
    assert {"concept at the location before the insertion", "concept pixels gained near the location",
            "grey", "green", "red (1 units at features)", "blue (1 units at features)"} <= texts
    assert "none" not in texts  # never seen: not charted
    images = ablation_images(PlantedGenerator(), "features", [2], [0, 1], samples=2)
    save_strip(tmp_path / "strip.png", images, ["N=0", "N=1"])
    assert Image.open(tmp_path / "strip.png").size[1] == 2 * 33 + 1


def test_results_round_trip_through_json(blue_curves, planted_run):
    for curve in blue_curves.values():
        assert AblationCurve.from_json(json.loads(json.dumps(curve.to_json()))) == curve
    black = ablation_curves(PlantedGenerator(), ColorSegmenter(), "features", "black", {"r": [0]}, samples=2,
                            random_draws=2, progress=False)  # never drawn: nothing to remove
    for curve in black.values():
        data = json.loads(json.dumps(curve.to_json(), allow_nan=False))  # NaN becomes null
        back = AblationCurve.from_json(data)
        assert back.to_json() == data and math.isnan(back.removed[1]) and back.pixels_before == 0.0
    old = {k: v for k, v in blue_curves["removal"].to_json().items() if k not in ("removed_low", "missing")}
    assert AblationCurve.from_json(old).removed_low == []  # curves.json written before intervals still loads
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
    with pytest.raises(ConfigError, match=r"counts \[6\] do not fit layer 'features' of 5 units"):
        ablation_curves(generator, segmenter, "features", "red", {"x": [0, 1]}, counts=[6], progress=False)
    with pytest.raises(ConfigError, match="5 units"):
        ablation_curves(generator, segmenter, "features", "red", {"x": [0, 1]}, counts="1,200%", progress=False)
    with pytest.raises(ConfigError, match="'random' is reserved"):
        ablation_curves(generator, segmenter, "features", "red", {"random": [0]}, progress=False)
    with pytest.raises(ConfigError, match="random_draws must be"):
        ablation_curves(generator, segmenter, "features", "red", {"x": [0]}, random_draws=-1, progress=False)
    with pytest.raises(ConfigError, match="no concept 'dragon'"):
        ablation_curves(generator, segmenter, "features", "dragon", {"x": [0]}, progress=False)
    with pytest.raises(ConfigError, match="at least one ranking"):
        ablation_curves(generator, segmenter, "features", "red", {}, progress=False)
    with pytest.raises(ConfigError, match="no concept 'door'"):
        iou_ranking(planted_run, "features", "door")
    values = insertion_values(planted_run, "features", "red")
    with pytest.raises(ConfigError, match=r"patch 9 is larger than layer 'features'"):
        insertion_context(generator, segmenter, "features", "red", [0], values, patch=9, samples=1, progress=False)
    with pytest.raises(ConfigError, match=r"one value per unit of layer 'features' \(5\); got 2"):
        insertion_context(generator, segmenter, "features", "red", [0], values[:2], samples=1, progress=False)
    with pytest.raises(ConfigError, match="N=3"):
        AblationCurve("l", "c", "r", [0], [0, 1], [0.0, 1.0], [1.0, 1.0], 1.0, [1.0, 0.0], 1, 4).at(3)
