"""The dissection pipeline: planted truth, brute-force recounts, resume, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from gandissect.core.hooks import Trace, UnknownLayerError
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import ColorSegmenter, SegmenterOutputError
from gandissect.dissection import (
    DissectConfig,
    Dissector,
    NonFiniteActivationError,
    RunFolderError,
    upsample,
)
from gandissect.engine.storage import load_statistics
from planted import DISTRACTORS, PLANTED, PlantedGenerator

CONFIG = {"layers": ["features"], "samples": 96, "batch_size": 32, "quantile": 0.15, "checkpoint_every": 1}


def dissect(out, resume=False, **overrides):
    config = DissectConfig(**{**CONFIG, **overrides})
    dissector = Dissector(PlantedGenerator(), ColorSegmenter(), config, out, progress=False, resume=resume)
    result = dissector.run()
    return result, dissector.finish(result)


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("planted")
    result, document = dissect(out)
    return out, result, document


def test_planted_units_get_their_concepts(planted_run):
    _, _, document = planted_run
    units = document["layers"]["features"]["units"]
    for unit, colour in PLANTED.items():
        record = units[unit]
        assert record["concept"] == colour and record["iqr_concept"] == colour
        assert record["iqr_iou"] > 0.85 and record["iqr"] > 0.5
        assert record["interpretable"]
    for unit in DISTRACTORS:
        record = units[unit]
        assert not record["interpretable"], record
        assert record["iqr"] < 0.01
        assert record["iou"] < min(units[u]["iou"] for u in PLANTED) / 2
    assert document["layers"]["features"]["interpretable_by_concept"] == {"red": 1, "green": 1, "blue": 1}
    ranking = document["layers"]["features"]["concepts"]["green"]["units"]
    assert ranking[0] == 1


def test_iou_equals_brute_force_recount(planted_run):
    _, result, _ = planted_run
    generator, segmenter = PlantedGenerator(), ColorSegmenter()
    z = sample_z(generator, CONFIG_IOU_SEED, range(CONFIG["samples"]))
    with torch.no_grad(), Trace(generator, ["features"]) as trace:
        images = generator(z)
    labels = segmenter.segment(images)[:, 0]
    acts = upsample(trace["features"], tuple(labels.shape[-2:]))
    layer = result.layers["features"]
    for u in range(acts.shape[1]):
        above = acts[:, u] > layer.thresholds[u]
        for c in range(len(segmenter.concepts)):
            concept = labels == c
            inter, union = int((above & concept).sum()), int((above | concept).sum())
            expected = inter / union if union else 0.0
            assert float(layer.iou[u, c]) == expected, (u, c)


CONFIG_IOU_SEED = DissectConfig(layers=["x"]).iou_seed


def test_threshold_is_the_quantile_of_the_threshold_set(planted_run):
    _, result, _ = planted_run
    generator = PlantedGenerator()
    z = sample_z(generator, DissectConfig(layers=["x"]).threshold_seed, range(CONFIG["samples"]))
    with torch.no_grad(), Trace(generator, ["features"]) as trace:
        generator(z)
    acts = upsample(trace["features"], (32, 32)).transpose(0, 1).reshape(5, -1)
    for u in range(5):
        share_above = (acts[u] > result.layers["features"].thresholds[u]).double().mean().item()
        assert abs(share_above - CONFIG["quantile"]) < 1e-3


def test_outputs_are_written(planted_run):
    out, _, document = planted_run
    assert json.loads((out / "dissect.json").read_text()) == document
    rows = (out / "dissect.csv").read_text().splitlines()
    assert rows[0].startswith("layer,unit,concept") and len(rows) == 1 + 5
    stats, meta = load_statistics(out / "statistics.safetensors")
    assert {"quantiles/features", "levels/features", "topk/features"} <= set(stats)
    assert meta["concepts"] == ColorSegmenter().concepts
    assert not any(p.name.startswith("checkpoint") for p in out.iterdir())


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("phase, batch", [("thresholds", 2), ("iou", 1), ("iou", 2)])
def test_resumed_run_equals_uninterrupted(planted_run, tmp_path, phase, batch):
    _, _, expected = planted_run

    def stop(at_phase, done):
        if (at_phase, done) == (phase, batch):
            raise Interrupt

    config = DissectConfig(**CONFIG)
    with pytest.raises(Interrupt):
        Dissector(PlantedGenerator(), ColorSegmenter(), config, tmp_path, progress=False, on_batch=stop).run()
    assert any(p.name.startswith("checkpoint") for p in tmp_path.iterdir())
    with pytest.raises(RunFolderError, match="--resume"):
        Dissector(PlantedGenerator(), ColorSegmenter(), config, tmp_path, progress=False)
    _, document = dissect(tmp_path, resume=True)
    assert document == expected


def test_resume_with_other_settings_is_refused(tmp_path):
    dissect(tmp_path)
    with pytest.raises(RunFolderError, match="samples"):
        Dissector(PlantedGenerator(), ColorSegmenter(), DissectConfig(**{**CONFIG, "samples": 64}), tmp_path,
                  progress=False, resume=True)
    forced = Dissector(PlantedGenerator(), ColorSegmenter(), DissectConfig(**{**CONFIG, "samples": 64}), tmp_path,
                       progress=False, force=True)
    forced.finish(forced.run())
    assert json.loads((tmp_path / "dissect.json").read_text())["config"]["samples"] == 64


def test_unknown_layer_lists_existing_layers(tmp_path):
    with pytest.raises(UnknownLayerError, match="features") as error:
        Dissector(PlantedGenerator(), ColorSegmenter(), DissectConfig(**{**CONFIG, "layers": ["layer9"]}), tmp_path)
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
    with pytest.raises(SegmenterOutputError, match=message) as error:
        Dissector(PlantedGenerator(), segmenter, DissectConfig(**CONFIG), tmp_path)
    assert "expected an integer tensor of shape (N=1, K, H, W)" in str(error.value)
    assert not any(tmp_path.iterdir())  # nothing written: a corrected run may use the folder


class NaNUnit(nn.Module):
    def forward(self, x):
        x = x.clone()
        x[:, 3] = float("nan")
        return x


def test_non_finite_activations_name_layer_and_units(tmp_path):
    generator = PlantedGenerator()
    generator.features = NaNUnit()
    with pytest.raises(NonFiniteActivationError, match=r"layer 'features'.*units \[3\]"):
        Dissector(generator, ColorSegmenter(), DissectConfig(**CONFIG), tmp_path)


def test_config_rejects_same_seeds_and_bad_quantile():
    with pytest.raises(ValueError, match="must differ"):
        DissectConfig(layers=["a"], threshold_seed=1, iou_seed=1)
    with pytest.raises(ValueError, match="quantile"):
        DissectConfig(layers=["a"], quantile=1.5)


@pytest.mark.parametrize("size_in, size_out", [((8, 8), (64, 64)), ((16, 16), (64, 64)), ((4, 6), (64, 48)),
                                               ((7, 7), (64, 64)), ((16, 16), (48, 48)), ((8, 8), (8, 8))])
def test_upsample_equals_bilinear_interpolation_without_corner_alignment(size_in, size_out):
    x = torch.randn(2, 3, *size_in, generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.interpolate(x, size=size_out, mode="bilinear", align_corners=False)
    assert torch.allclose(upsample(x, size_out), expected, atol=1e-5, rtol=0)
