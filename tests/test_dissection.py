"""The dissection pipeline: planted truth, brute-force recounts, cross-fitting, resume, load, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from gandissect.core.errors import ConfigError
from gandissect.core.features import upsample
from gandissect.core.hooks import Trace, UnknownLayerError
from gandissect.core.levels import information_quality_ratio, iou_of
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import ColorSegmenter, SegmenterOutputError
from gandissect.dissection import RULES, DissectConfig, Dissection, Dissector
from gandissect.dissection.labels import RESTRICTIONS
from gandissect.engine.samplepass import NonFiniteError
from gandissect.engine.storage import load_statistics
from planted import DISTRACTORS, PLANTED, PlantedGenerator

CONFIG = {"layers": ["features"], "samples": 96, "batch_size": 32, "quantile": 0.15, "checkpoint_every": 1}
SEEDS = DissectConfig(layers=["x"])


def dissect(out, resume=False, segmenter=None, **overrides):
    config = DissectConfig(**{**CONFIG, **overrides})
    dissector = Dissector(PlantedGenerator(), segmenter or ColorSegmenter(), config, out, progress=False,
                          resume=resume)
    result = dissector.run()
    return result, dissector.finish(result)


@pytest.fixture(scope="module", params=["one", "two"])
def planted_run(tmp_path_factory, request):
    """The planted model dissected in one pass and in two (every test below holds for both)."""
    out = tmp_path_factory.mktemp("planted")
    result, document = dissect(out, label_method="iqr-iou", passes=request.param)
    assert result.config.passes == document["config"]["passes"] == request.param
    return out, result, document


def iou_set(samples=CONFIG["samples"], segmenter=None):
    """The IoU set brute force: upsampled features (N, U, 32, 32) and labels (N, 32, 32)."""
    generator, segmenter = PlantedGenerator(), segmenter or ColorSegmenter()
    z = sample_z(generator, SEEDS.iou_seed, range(samples))
    with torch.no_grad(), Trace(generator, ["features"]) as trace:
        images = generator(z)
    labels = segmenter.segment(images)[:, 0]
    return upsample(trace["features"], tuple(labels.shape[-2:])), labels


def table(above: torch.Tensor, concept: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(torch.tensor(float(v), dtype=torch.float64) for v in (
        (above & concept).sum(), (above & ~concept).sum(), (~above & concept).sum(), (~above & ~concept).sum()))


def test_planted_units_get_their_concepts(planted_run):
    _, _, document = planted_run
    units = document["layers"]["features"]["units"]
    for unit, colour in PLANTED.items():
        record = units[unit]
        assert record["concept"] == colour and record["labels"]["iqr"]["concept"] == colour
        assert record["iou"] > 0.85 and record["crossfit_iou"] > 0.85 and record["iqr"] > 0.5
        assert record["interpretable"]
    for unit in DISTRACTORS:
        assert not units[unit]["interpretable"], units[unit]
        assert units[unit]["labels"]["iqr"]["iqr"] < 0.01
    assert document["layers"]["features"]["interpretable_by_concept"] == {"red": 1, "green": 1, "blue": 1}
    assert document["layers"]["features"]["concepts"]["green"]["units"][0] == 1


def test_every_rule_is_recorded_and_thresholds_keep_less_than_every_pixel(planted_run):
    _, result, document = planted_run
    acts, _ = iou_set()
    layer = result.layers["features"]
    for record in document["layers"]["features"]["units"]:
        assert set(record["labels"]) == set(RULES)
        for rule, label in record["labels"].items():
            if rule != "quantile" and label["iou"] > 0:
                kept = (acts[:, record["unit"]] > label["threshold"]).double().mean().item()
                assert 0 < kept < 1, (rule, record["unit"], kept)
                if "top-half" in rule:
                    assert kept <= 0.5 + 1e-9
    assert torch.equal(layer.rules["iqr"].threshold, layer.rules["iqr-iou"].threshold)


def test_iou_and_iqr_equal_brute_force_recount_for_every_rule(planted_run):
    _, result, _ = planted_run
    acts, labels = iou_set()
    layer = result.layers["features"]
    for rule in ("quantile", "iqr", "iqr-top-half", "iqr-precise"):
        outcome = layer.rules[rule]
        for u in range(acts.shape[1]):
            for c in range(len(result.concepts)):
                if rule != "quantile" and outcome.iou[u, c] == 0 and outcome.iqr[u, c] == 0:
                    continue
                counts = table(acts[:, u] > outcome.threshold[u, c], labels == c)
                assert float(outcome.iou[u, c]) == float(iou_of(*counts)), (rule, u, c)
                assert float(outcome.iqr[u, c]) == pytest.approx(float(information_quality_ratio(*counts)), abs=1e-12)
    assert torch.equal(layer.thresholds, layer.rules["quantile"].threshold[:, 0])


def test_crossfit_iou_equals_brute_force_choice_on_the_other_fold(planted_run):
    _, result, _ = planted_run
    acts, labels = iou_set()
    layer = result.layers["features"]
    levels = result.statistics["levels/features"].levels
    folds = torch.arange(acts.shape[0]) % 2
    for u in (0, 3):
        for c in (result.concepts.index("red"), result.concepts.index("grey")):
            concept = labels == c
            intersection = union = 0.0
            for fold in (0, 1):
                here, there = folds == fold, folds != fold
                scores = []
                for level in levels[u].tolist():
                    counts = table(acts[here, u] > level, concept[here])
                    kept, total = float(counts[0] + counts[1]), float(sum(counts))
                    positive = float(counts[0]) * total > kept * float(counts[0] + counts[2])
                    allowed = 0 < kept < total and positive
                    scores.append(float(information_quality_ratio(*counts)) if allowed else -1.0)
                if max(scores) < 0:
                    continue  # no allowed level on this fold: it adds nothing
                best = levels[u, max(range(len(scores)), key=lambda i: (scores[i], -i))]
                above = acts[there, u] > best
                intersection += float((above & concept[there]).sum())
                union += float((above | concept[there]).sum())
            expected = intersection / union if union else 0.0
            assert float(layer.rules["iqr"].crossfit_iou[u, c]) == pytest.approx(expected, abs=1e-12)


def test_chosen_threshold_is_within_001_of_the_brute_force_best(planted_run):
    """Levels are refined enough that the IQR-chosen threshold loses at most 0.01 IoU against a brute-force
    search of the IQR over 2,000 thresholds."""
    _, result, _ = planted_run
    acts, labels = iou_set()
    outcome = result.layers["features"].rules["iqr-iou"]
    for u, colour in PLANTED.items():
        c = result.concepts.index(colour)
        values, concept = acts[:, u].flatten(), (labels == c).flatten()
        thresholds = torch.quantile(values, torch.linspace(0, 0.999, 2000))
        # pixels above each threshold, in all and in the concept, by binary search in the sorted values
        above = len(values) - torch.searchsorted(values.sort().values, thresholds, right=True)
        n11 = int(concept.sum()) - torch.searchsorted(values[concept].sort().values, thresholds, right=True)
        counts = (n11, above - n11, concept.sum() - n11, len(values) - above - concept.sum() + n11)
        counts = tuple(t.double() for t in counts)
        best = int(information_quality_ratio(*counts).argmax())  # the first of the best, as a loop would keep
        best_iou = float(iou_of(*(t[best] for t in counts)))
        assert float(outcome.iou[u, c]) >= best_iou - 0.01, (u, float(outcome.iou[u, c]), best_iou)


def test_threshold_is_the_quantile_of_the_threshold_set(planted_run):
    """Within 1e-3 of the quantile, on the set that chose it: the IoU set in one pass, the threshold set in two."""
    _, result, _ = planted_run
    generator = PlantedGenerator()
    seed = SEEDS.iou_seed if result.config.passes == "one" else SEEDS.threshold_seed
    z = sample_z(generator, seed, range(CONFIG["samples"]))
    with torch.no_grad(), Trace(generator, ["features"]) as trace:
        generator(z)
    acts = upsample(trace["features"], (32, 32)).transpose(0, 1).reshape(5, -1)
    for u in range(5):
        share_above = (acts[u] > result.layers["features"].thresholds[u]).double().mean().item()
        assert abs(share_above - CONFIG["quantile"]) < 1e-3


class SkySegmenter:
    """One large concept: 'sky' on the top three quarters of every image."""

    concepts = ("sky",)
    categories = ("object",)

    def segment(self, images):
        labels = torch.full((images.shape[0], 1, 32, 32), -1)
        labels[:, :, :24] = 0
        return labels


class WeakSkyUnit(nn.Module):
    """Adds unit 5: noise with a weak pull towards the sky rows: it correlates with sky (IQR > 0.01) and
    overlaps it (IoU > 0.05) without drawing it."""

    def forward(self, x):
        sky = torch.zeros_like(x[:, :1])
        sky[:, :, :6] = 1
        return torch.cat([x, x[:, 3:4] * (1 + 0.5 * sky)], 1)


def test_interpretable_units_beat_the_whole_image_mask(tmp_path):
    generator = PlantedGenerator()
    generator.features = WeakSkyUnit()
    config = DissectConfig(**{**CONFIG, "label_method": "iqr-iou"})
    dissector = Dissector(generator, SkySegmenter(), config, tmp_path, progress=False)
    document = dissector.finish(dissector.run())
    assert document["concepts"][0]["baseline_iou"] == 0.75
    weak = document["layers"]["features"]["units"][5]
    assert weak["concept"] == "sky" and weak["iou"] > 0.05 and weak["iqr"] > 0.01
    assert weak["iou"] <= 0.75 and not weak["interpretable"]
    for record in document["layers"]["features"]["units"]:
        for label in record["labels"].values():
            assert not label["interpretable"] or label["iou"] > 0.75


class GroundUnit(nn.Module):
    """Adds unit 5, active exactly where SkySegmenter sees no sky: perfectly anti-correlated with sky."""

    def forward(self, x):
        ground = torch.zeros_like(x[:, :1])
        ground[:, :, 6:] = 1
        return torch.cat([x, ground], 1)


def test_a_unit_that_avoids_a_concept_is_not_named_after_it(tmp_path):
    generator = PlantedGenerator()
    generator.features = GroundUnit()
    result = Dissector(generator, SkySegmenter(), DissectConfig(**CONFIG), tmp_path, progress=False).run()
    counts = result.statistics["levels/features"]
    iqr = information_quality_ratio(*counts.tables())[5, 0]
    assert float(iqr.max()) > 0.5  # the IQR alone would call it a sky unit: I(A;S) does not see the sign
    for rule, outcome in result.layers["features"].rules.items():
        if rule != "quantile":
            assert float(outcome.iqr[5, 0]) == 0 and float(outcome.iou[5, 0]) == 0, rule
            assert not bool(result.interpretable("features", rule)[5, 0])


def test_outputs_are_written_and_load_round_trips(planted_run):
    out, result, document = planted_run
    assert json.loads((out / "dissect.json").read_text()) == document
    rows = (out / "dissect.csv").read_text().splitlines()
    assert rows[0].startswith("layer,unit,concept,category,iou,crossfit_iou") and len(rows) == 1 + 5
    assert "iqr-top-half_concept" in rows[0]
    stats, meta = load_statistics(out / "statistics.safetensors")
    assert {"quantiles/features", "levels/features", "topk/features", "moments/features",
            "condmean/features"} <= set(stats)
    assert meta["concepts"] == ColorSegmenter().concepts
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "dissect.csv", "dissect.json", "report.html", "run.json", "statistics.safetensors"][:0] + sorted(
        ["dissect.csv", "dissect.json", "run.json", "statistics.safetensors"])
    assert not (out / ".partial").exists()
    loaded = Dissection.load(out)
    assert loaded.config == result.config and loaded.concepts == result.concepts and loaded.size == result.size
    for rule, outcome in result.layers["features"].rules.items():
        for field in ("level_index", "threshold", "iou", "crossfit_iou", "iqr", "score"):
            assert torch.equal(getattr(loaded.layers["features"].rules[rule], field), getattr(outcome, field))
    assert torch.equal(loaded.layers["features"].top_indices, result.layers["features"].top_indices)


def test_conditional_mean_and_moments_equal_brute_force(planted_run):
    _, result, _ = planted_run
    generator, segmenter = PlantedGenerator(), ColorSegmenter()
    z = sample_z(generator, SEEDS.iou_seed, range(CONFIG["samples"]))
    with torch.no_grad(), Trace(generator, ["features"]) as trace:
        labels = segmenter.segment(generator(z))[:, 0]
    features = trace["features"].double()
    moments, condmean = result.statistics["moments/features"], result.statistics["condmean/features"]
    assert torch.allclose(moments.mean, features.mean((0, 2, 3)), atol=1e-12)
    assert torch.allclose(moments.variance(), features.var((0, 2, 3), unbiased=False), atol=1e-10)
    red = result.concepts.index("red")
    cover = torch.nn.functional.avg_pool2d((labels == red).double()[:, None], 4)  # 32 px -> 8 cells
    expected = (features * cover).sum((0, 2, 3)) / cover.sum()
    assert torch.allclose(condmean.mean()[:, red], expected, atol=1e-12)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("passes, phase, batch", [("two", "thresholds", 2), ("two", "iou", 1), ("two", "iou", 2),
                                                   ("one", "dissection", 1), ("one", "dissection", 2)])
def test_resumed_run_equals_uninterrupted(tmp_path_factory, passes, phase, batch):
    _, expected = dissect(tmp_path_factory.mktemp("whole"), passes=passes)
    out = tmp_path_factory.mktemp("resumed")

    def stop(at_phase, done):
        if (at_phase, done) == (phase, batch):
            raise Interrupt

    config = DissectConfig(**CONFIG, passes=passes)
    with pytest.raises(Interrupt):
        Dissector(PlantedGenerator(), ColorSegmenter(), config, out, progress=False, on_batch=stop).run()
    assert any(p.name.startswith("checkpoint") for p in (out / ".partial").iterdir())
    _, document = dissect(out, resume=True, passes=passes)
    assert document == expected


class UnknownOddSamples(ColorSegmenter):
    """Colour labels, but every odd sample of a batch is marked unknown (-2), like a face parser finding no face."""

    def segment(self, images):
        labels = super().segment(images)
        labels[1::2] = -2
        return labels


def test_unknown_pixels_are_left_out_of_every_count(tmp_path):
    result, _ = dissect(tmp_path, segmenter=UnknownOddSamples(), samples=64)
    acts, labels = iou_set(64)
    known = torch.arange(64) % 2 == 0  # batches of 32 start at even indices
    layer = result.layers["features"]
    for u in range(5):
        for c in range(len(result.concepts)):
            counts = table(acts[known, u] > layer.thresholds[u], labels[known] == c)
            assert float(layer.iou[u, c]) == float(iou_of(*counts)), (u, c)
    assert int(result.statistics["levels/features"].pixels.sum()) == 32 * 32 * 32


def test_unknown_layer_lists_existing_layers(tmp_path):
    with pytest.raises(UnknownLayerError, match="features") as error:
        Dissector(PlantedGenerator(), ColorSegmenter(), DissectConfig(**{**CONFIG, "layers": ["layer9"]}),
                  tmp_path).check()
    assert "layer9" in str(error.value) and "output" in str(error.value)


class FloatSegmenter:
    concepts = ("a", "b")
    categories = ("object", "object")

    def segment(self, images):
        return torch.zeros(images.shape[0], 1, 32, 32)


class RangeSegmenter(FloatSegmenter):
    def segment(self, images):
        return torch.full((images.shape[0], 1, 32, 32), 5)


@pytest.mark.parametrize("segmenter, message", [(FloatSegmenter(), "dtype torch.float32"),
                                                (RangeSegmenter(), r"labels in \[5, 5\]")])
def test_bad_segmenter_output_is_named_before_work_starts(tmp_path, segmenter, message):
    out = tmp_path / "run"
    with pytest.raises(SegmenterOutputError, match=message) as error:
        Dissector(PlantedGenerator(), segmenter, DissectConfig(**CONFIG), out).run()
    assert "expected an integer tensor of shape (N=1, K, H, W)" in str(error.value)
    assert not out.exists()  # nothing written: a corrected run may use the folder


class NaNUnit(nn.Module):
    def forward(self, x):
        x = x.clone()
        x[:, 3] = float("nan")
        return x


def test_non_finite_activations_name_layer_and_units(tmp_path):
    generator = PlantedGenerator()
    generator.features = NaNUnit()
    with pytest.raises(NonFiniteError, match=r"layer 'features'.*units \[3\]"):
        Dissector(generator, ColorSegmenter(), DissectConfig(**CONFIG), tmp_path).check()


def test_config_rejects_bad_settings():
    with pytest.raises(ConfigError, match="must differ"):
        DissectConfig(layers=["a"], threshold_seed=1, iou_seed=1)
    with pytest.raises(ConfigError, match="quantile"):
        DissectConfig(layers=["a"], quantile=1.5)
    with pytest.raises(ConfigError, match="more than once"):
        DissectConfig(layers=["a", "a"])
    with pytest.raises(ConfigError, match="label-method"):
        DissectConfig(layers=["a"], label_method="best")
    with pytest.raises(ConfigError, match="--passes must be one of auto, one, two"):
        DissectConfig(layers=["a"], passes="three")
    assert set(RESTRICTIONS.values()) == {"none", "top-half", "precise"}


class BigLabels(ColorSegmenter):
    """Colour labels at twice the image size, like a face parser at 256x256 on a 64-pixel generator."""

    def segment(self, images):
        labels = super().segment(images)
        return torch.nn.functional.interpolate(labels.float(), scale_factor=2, mode="nearest").long()


def test_statistics_default_to_the_smaller_of_image_and_segmentation(tmp_path):
    out = tmp_path / "run"
    dissector = Dissector(PlantedGenerator(), BigLabels(), DissectConfig(**CONFIG), out, progress=False)
    assert not out.exists()  # constructing a dissector touches nothing
    dissector.check()
    assert dissector.size == (32, 32) and not out.exists()
    forced = Dissector(PlantedGenerator(), BigLabels(), DissectConfig(**{**CONFIG, "seg_size": 64}), out)
    forced.check()
    assert forced.size == (64, 64)
