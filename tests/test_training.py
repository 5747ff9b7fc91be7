"""Training loops: resuming from a checkpoint gives exactly the weights of an uninterrupted run."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from gandissect.models.scenegan import GeneratorConfig, SceneGenerator
from gandissect.models.unet import SegmenterConfig, UNetSegmenter
from gandissect.scenes import training
from gandissect.scenes.training import train_gan, train_segmenter


class Interrupted(Exception):
    pass


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, stop_at: int) -> None:
    """Make the next training run die right after it checkpoints iteration `stop_at`, as a killed job would."""
    record = training._record_progress

    def record_then_die(out, iteration, seconds):
        record(out, iteration, seconds)
        if iteration == stop_at:
            raise Interrupted

    monkeypatch.setattr(training, "_record_progress", record_then_die)


def _assert_same_tensors(path_a, path_b):
    a, b = load_file(str(path_a)), load_file(str(path_b))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_gan_run_writes_weights_samples_and_progress(tiny_gan_run):
    run = tiny_gan_run
    tensors = load_file(str(run / "generator.safetensors"))
    expected = SceneGenerator(GeneratorConfig(8, (16, 8, 8, 8), (8, 8, 8, 8))).state_dict()
    assert tensors.keys() == expected.keys()
    assert all(tensors[k].shape == expected[k].shape for k in expected)
    assert (run / "discriminator.safetensors").exists()
    for done in (2, 4):
        with Image.open(run / f"samples_{done:06d}.png") as picture:
            assert picture.size == ((8 * 65 + 1) * 2, (8 * 65 + 1) * 2)  # 8x8 grid of 64px, 1px gaps, doubled
    assert json.loads((run / "progress.json").read_text())["iteration"] == 4
    assert json.loads((run / "train_config.json").read_text())["channels"] == [16, 8, 8, 8]


def test_gan_extended_run_equals_uninterrupted_run(tiny_gan_run, tmp_path, make_gan_config):
    train_gan(make_gan_config(tmp_path, iterations=2))
    first_half = load_file(str(tmp_path / "generator.safetensors"))
    train_gan(make_gan_config(tmp_path, iterations=4))
    assert not all(torch.equal(first_half[k], v) for k, v in load_file(str(tmp_path / "generator.safetensors")).items())
    _assert_same_tensors(tiny_gan_run / "generator.safetensors", tmp_path / "generator.safetensors")
    _assert_same_tensors(tiny_gan_run / "discriminator.safetensors", tmp_path / "discriminator.safetensors")


def test_gan_killed_and_resumed_equals_uninterrupted_run(tiny_gan_run, tmp_path, make_gan_config, monkeypatch):
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 2)
        with pytest.raises(Interrupted):
            train_gan(make_gan_config(tmp_path))
    assert not (tmp_path / "generator.safetensors").exists()
    train_gan(make_gan_config(tmp_path))
    _assert_same_tensors(tiny_gan_run / "generator.safetensors", tmp_path / "generator.safetensors")


def test_gan_refuses_mismatched_image_size(tmp_path, make_gan_config):
    config = make_gan_config(tmp_path)
    config.image_size = 32
    with pytest.raises(ValueError, match="image_size 32"):
        train_gan(config)


def test_segmenter_run_writes_weights(tiny_segmenter_run):
    tensors = load_file(str(tiny_segmenter_run / "segmenter.safetensors"))
    expected = UNetSegmenter(SegmenterConfig(12, (4, 8))).state_dict()
    assert tensors.keys() == expected.keys()
    assert json.loads((tiny_segmenter_run / "progress.json").read_text())["iteration"] == 4
    with Image.open(tiny_segmenter_run / "samples_000004.png") as picture:  # scenes, truth, prediction rows
        assert picture.size == ((8 * 65 + 1) * 2, (3 * 65 + 1) * 2)


def test_segmenter_killed_and_resumed_equals_uninterrupted_run(tiny_segmenter_run, tmp_path, make_segmenter_config,
                                                                monkeypatch):
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 2)
        with pytest.raises(Interrupted):
            train_segmenter(make_segmenter_config(tmp_path))
    assert json.loads((tmp_path / "progress.json").read_text())["iteration"] == 2
    train_segmenter(make_segmenter_config(tmp_path))
    _assert_same_tensors(tiny_segmenter_run / "segmenter.safetensors", tmp_path / "segmenter.safetensors")


def test_segmenter_resume_with_another_schedule_length_says_why(tmp_path, make_segmenter_config):
    """The one-cycle learning-rate schedule is fixed by `iterations`, so it cannot be stretched on resume."""
    train_segmenter(make_segmenter_config(tmp_path, iterations=2))
    with pytest.raises(ValueError, match="--iterations 2"):
        train_segmenter(make_segmenter_config(tmp_path, iterations=4))
    assert json.loads((tmp_path / "train_config.json").read_text())["iterations"] == 2


def test_finished_run_is_not_trained_further(tmp_path, make_segmenter_config):
    train_segmenter(make_segmenter_config(tmp_path))
    before = load_file(str(tmp_path / "segmenter.safetensors"))
    train_segmenter(make_segmenter_config(tmp_path))
    after = load_file(str(tmp_path / "segmenter.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)
