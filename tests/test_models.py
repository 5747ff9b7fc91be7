"""Shipped models: ship a tiny trained pair, load it back by name, refuse broken weight files, resolve specs."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from gandissect import models
from gandissect.cli import main
from gandissect.core.errors import ConfigError
from gandissect.core.segmenters import ColorSegmenter, MergedSegmenter, ModuleSegmenter
from gandissect.models import WeightFileError
from gandissect.models.scenegan import SceneDiscriminator, SceneGenerator
from gandissect.scenes import world
from gandissect.scenes.ship import ship


@pytest.fixture(scope="module")
def shipped(tiny_gan_run, tiny_segmenter_run, tmp_path_factory) -> Path:
    """A weights folder holding the tiny model shipped as 'tiny'."""
    weights = tmp_path_factory.mktemp("weights")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(models, "WEIGHTS", weights)
        ship("tiny", tiny_gan_run, tiny_segmenter_run, extra={"note": "test"}, into=weights)
    return weights


@pytest.fixture
def weights(shipped, monkeypatch, tmp_path) -> Path:
    """A private copy of the shipped folder, installed as the package's weights folder."""
    folder = tmp_path / "weights"
    shutil.copytree(shipped, folder)
    monkeypatch.setattr(models, "WEIGHTS", folder)
    return folder


def _assert_state_equals_file(module: nn.Module, path: Path) -> None:
    state, stored = module.state_dict(), load_file(str(path))
    assert state.keys() == stored.keys()
    for key in state:
        assert torch.equal(state[key], stored[key]), key


def test_load_returns_the_trained_weights(weights, tiny_gan_run, tiny_segmenter_run):
    bundle = models.load("tiny")
    assert isinstance(bundle.generator, SceneGenerator) and not bundle.generator.training
    assert isinstance(bundle.discriminator, SceneDiscriminator)
    assert isinstance(bundle.segmenter, ModuleSegmenter) and not bundle.segmenter.training
    _assert_state_equals_file(bundle.generator, tiny_gan_run / "generator.safetensors")
    _assert_state_equals_file(bundle.discriminator, tiny_gan_run / "discriminator.safetensors")
    _assert_state_equals_file(bundle.segmenter.network, tiny_segmenter_run / "segmenter.safetensors")
    assert bundle.segmenter.concepts == list(world.CONCEPTS)
    assert bundle.segmenter.categories == [world.CATEGORIES[c] for c in world.CONCEPTS]
    meta = bundle.metadata
    assert meta["z_dim"] == 8 and meta["image_size"] == 64 and meta["note"] == "test"
    assert meta["layers"]["layer1"] == [16, 4, 4] and meta["layers"]["output"] == [3, 64, 64]
    assert meta["training"]["gan"]["iterations_done"] == 4
    assert bundle.generator(torch.zeros(2, 8)).shape == (2, 3, 64, 64)


def test_available_lists_shipped_models(weights):
    assert models.available() == ["tiny"]
    (weights / "incomplete").mkdir()  # a folder without model.json is not a model
    assert models.available() == ["tiny"]


def test_unknown_name_lists_known_names(weights):
    with pytest.raises(KeyError) as info:
        models.load("nonexistent")
    assert "nonexistent" in str(info.value) and "tiny" in str(info.value)


def _reseal(path: Path) -> None:
    """Record the current sha256 of weight file `path` in its model.json, as shipping a bad file would."""
    meta_path = path.parent / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["weights"][path.stem]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))


def test_corrupt_weight_file_is_named(weights):
    path = weights / "tiny" / "generator.safetensors"
    path.write_bytes(b"this is not a safetensors file at all" * 10)
    with pytest.raises(WeightFileError, match=re.escape("generator.safetensors")) as info:
        models.load("tiny")
    assert "sha256" in str(info.value)
    _reseal(path)  # a garbage file shipped with its own checksum still fails, when read
    with pytest.raises(WeightFileError, match=re.escape(f"cannot read weight file {path}")):
        models.load("tiny")


def test_ship_records_checksums_and_sizes(weights):
    meta = json.loads((weights / "tiny" / "model.json").read_text())
    for part in ("generator", "discriminator", "segmenter"):
        data = (weights / "tiny" / f"{part}.safetensors").read_bytes()
        assert meta["weights"][part] == {"file": f"{part}.safetensors", "sha256": hashlib.sha256(data).hexdigest(),
                                         "bytes": len(data)}
    spec = models.registry.get("tiny")
    assert spec.weights["segmenter"].sha256 == meta["weights"]["segmenter"]["sha256"]
    assert spec.default_layers == ("layer2", "layer3", "layer4") and spec.default_segmenter == "tiny+color"


def test_misshapen_tensor_is_named(weights):
    path = weights / "tiny" / "segmenter.safetensors"
    tensors = load_file(str(path))
    tensors["head.weight"] = torch.zeros(5, 4, 1, 1)
    save_file(tensors, str(path))
    _reseal(path)
    with pytest.raises(WeightFileError, match=re.escape("'head.weight'")) as info:
        models.load("tiny")
    assert "(5, 4, 1, 1)" in str(info.value) and "(12, 4, 1, 1)" in str(info.value)


def test_missing_tensor_is_named(weights):
    path = weights / "tiny" / "generator.safetensors"
    tensors = load_file(str(path))
    del tensors["output.1.bias"]
    save_file(tensors, str(path))
    _reseal(path)
    with pytest.raises(WeightFileError, match=re.escape("output.1.bias")):
        models.load("tiny")


GENERATOR_FILE = """
import torch
from torch import nn


class Tiny(nn.Module):
    z_dim = 3

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 3 * 16 * 16)

    def forward(self, z):
        return self.layer(z).tanh().reshape(-1, 3, 16, 16)


def make():
    return Tiny()


def not_a_module():
    return 42
"""

SEGMENTER_FILE = """
import torch


class Dark:
    concepts = ["dark", "light"]
    categories = ["color", "color"]

    def segment(self, images):
        return (images.mean(1, keepdim=True) > 0).long()


class Shapeless:
    concepts = ["thing"]


def make():
    return Dark()


def broken():
    return Shapeless()
"""


def test_resolve_generator_from_a_file(tmp_path):
    (tmp_path / "my_gen.py").write_text(GENERATOR_FILE)
    generator = models.resolve_generator(f"{tmp_path / 'my_gen.py'}:make")
    assert type(generator).__name__ == "Tiny" and not generator.training
    assert generator(torch.zeros(2, 3)).shape == (2, 3, 16, 16)


def test_resolve_generator_from_a_module(tmp_path, monkeypatch):
    package = tmp_path / "gd_test_pkg_gen"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(GENERATOR_FILE)
    monkeypatch.syspath_prepend(str(tmp_path))
    generator = models.resolve_generator("gd_test_pkg_gen.nets:make")
    assert type(generator).__name__ == "Tiny"


def test_resolve_generator_by_shipped_name(weights, tiny_gan_run):
    generator = models.resolve_generator("tiny")
    _assert_state_equals_file(generator, tiny_gan_run / "generator.safetensors")


def test_resolve_segmenter_color_file_module_and_merge(weights, tmp_path, monkeypatch):
    assert isinstance(models.resolve_segmenter("color"), ColorSegmenter)
    (tmp_path / "my_seg.py").write_text(SEGMENTER_FILE)
    from_file = models.resolve_segmenter(f"{tmp_path / 'my_seg.py'}:make")
    assert from_file.concepts == ["dark", "light"]
    monkeypatch.syspath_prepend(str(tmp_path))
    assert models.resolve_segmenter("my_seg:make").concepts == ["dark", "light"]

    merged = models.resolve_segmenter("tiny+color")
    assert isinstance(merged, MergedSegmenter)
    assert merged.concepts == [*world.CONCEPTS, *ColorSegmenter().concepts]
    labels = merged.segment(torch.zeros(1, 3, 64, 64))
    assert labels.shape == (1, 2, 64, 64)
    assert int(labels[:, 1].min()) >= len(world.CONCEPTS)


def test_bad_specs_say_what_is_wrong(weights, tmp_path):
    with pytest.raises(ValueError, match=re.escape("file.py:factory")) as info:
        models.resolve_generator("no-such-model")
    assert "tiny" in str(info.value)
    with pytest.raises(ConfigError, match=re.escape("missing.py")):
        models.resolve_generator(f"{tmp_path / 'missing.py'}:make")
    (tmp_path / "my_gen.py").write_text(GENERATOR_FILE)
    (tmp_path / "my_seg.py").write_text(SEGMENTER_FILE)
    with pytest.raises(ConfigError, match="nothere"):
        models.resolve_generator(f"{tmp_path / 'my_gen.py'}:nothere")
    with pytest.raises(ConfigError, match="int"):
        models.resolve_generator(f"{tmp_path / 'my_gen.py'}:not_a_module")
    with pytest.raises(ConfigError, match="Shapeless"):
        models.resolve_segmenter(f"{tmp_path / 'my_seg.py'}:broken")
    with pytest.raises(ConfigError, match="gd_no_such_package"):
        models.resolve_segmenter("gd_no_such_package.nets:make")


def test_evaluate_command_prints_and_writes_both_metrics(weights, tmp_path, capsys):
    out = tmp_path / "eval" / "tiny.json"
    assert main(["evaluate", "--model", "tiny", "--samples", "3", "--batch-size", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["model"] == "tiny"
    assert result["segmenter_iou"]["count"] == 3 and set(result["segmenter_iou"]["per_concept"]) == set(world.CONCEPTS)
    assert 0.0 <= result["segmenter_iou"]["mean_iou"] <= 1.0
    assert result["fsd"]["count"] == 3 and result["fsd"]["fsd"] >= 0.0
    assert set(result["fsd"]["per_concept"]) == set(world.CONCEPTS)
    assert f"full results: {out}" in capsys.readouterr().out
    assert main(["evaluate", "--model", "missing"]) == 2
    assert "tiny" in capsys.readouterr().err
