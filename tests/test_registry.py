"""The model registry: lookup, lazy parts, checksums, per-model defaults and the `gandissect models` command."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from gandissect import models
from gandissect.cli import main
from gandissect.core.errors import ConfigError, GandissectError
from gandissect.core.images import from_uint8
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import ColorSegmenter, MergedSegmenter, ModuleSegmenter
from gandissect.models import WeightFileError, registry
from gandissect.models.registry import ModelSpec, UnknownModelError
from gandissect.models.scenegan import SceneGenerator
from gandissect.models.scenegan import spec as scenegan_spec
from gandissect.scenes import world

SHIPPED = Path(models.__file__).parent / "weights" / "scenes64"
PARTS = ("generator", "discriminator", "segmenter")


@pytest.fixture
def copied(monkeypatch, tmp_path) -> Path:
    """A private copy of the shipped scenes64 folder, installed as the package's weights folder."""
    folder = tmp_path / "weights" / "scenes64"
    shutil.copytree(SHIPPED, folder)
    monkeypatch.setattr(models, "WEIGHTS", folder.parent)
    return folder


@pytest.fixture
def no_scene_generator(monkeypatch):
    """Make building any scene generator fail, so that a test can prove it never builds one."""

    def refuse(*args, **kwargs):
        raise AssertionError("the scene generator was built")

    monkeypatch.setattr(scenegan_spec, "SceneGenerator", refuse)


class Small(nn.Module):
    layer_names = ("layer1", "layer2", "layer3")

    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Linear(2, 4)
        self.layer2 = nn.Linear(4, 4)
        self.layer3 = nn.Linear(4, 3 * 4 * 4)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layer3(self.layer2(self.layer1(z))).tanh().reshape(-1, 3, 4, 4)


@pytest.fixture
def small_spec():
    """A registered spec 'small' whose generator counts its constructions."""
    built = []

    def build() -> Small:
        built.append(1)
        return Small()

    spec = registry.register(ModelSpec("small", "a test model", build, build_segmenter=ColorSegmenter,
                                       z_shape=(2,), default_layers=("layer3",), default_segmenter="color"))
    yield spec, built
    registry.unregister("small")


def test_shipped_spec_carries_the_models_policy():
    assert "scenes64" in registry.names() and "scenes64" in models.available()
    spec = registry.get("scenes64")
    assert spec.name == "scenes64" and spec.description
    assert spec.default_layers == ("layer2", "layer3", "layer4")
    assert spec.default_segmenter == "scenes64+color"
    assert spec.image_size == 64 and spec.z_shape == (128,) and spec.output_range == (-1.0, 1.0)
    assert spec.concepts == tuple(world.CONCEPTS) and spec.hosts == dict(world.HOSTS)
    assert set(spec.weights) == set(PARTS)


def test_unknown_name_lists_known_names():
    with pytest.raises(UnknownModelError) as info:
        registry.get("no-such-model")
    assert isinstance(info.value, KeyError) and isinstance(info.value, GandissectError)
    assert "no model named 'no-such-model'" in str(info.value) and "scenes64" in str(info.value)


def test_shipped_checksums_match_the_files():
    spec = registry.get("scenes64")
    for part in PARTS:
        data = (SHIPPED / f"{part}.safetensors").read_bytes()
        assert spec.weights[part].sha256 == hashlib.sha256(data).hexdigest(), part
        assert spec.weights[part].size == len(data), part
    bundle = models.load("scenes64")
    assert isinstance(bundle.generator, SceneGenerator) and bundle.spec.name == spec.name
    assert bundle.metadata["weights"]["generator"]["sha256"] == spec.weights["generator"].sha256


def test_segmenter_is_loaded_without_building_the_generator(no_scene_generator):
    spec = registry.get("scenes64")
    with pytest.raises(AssertionError, match="scene generator was built"):
        spec.generator()  # the guard works
    segmenter = spec.segmenter()
    assert isinstance(segmenter, ModuleSegmenter) and not segmenter.training
    pictures, labels = world.render_batch(range(3), 64)
    images = from_uint8(pictures)
    predicted = segmenter.segment(images)[:, 0]
    assert (predicted == torch.from_numpy(labels).long()).double().mean() > 0.9
    assert spec.discriminator()(images).shape == (3,)


def test_resolving_the_default_segmenter_builds_no_generator(no_scene_generator):
    merged = models.resolve_segmenter("scenes64+color")
    assert isinstance(merged, MergedSegmenter)
    assert merged.concepts == [*world.CONCEPTS, *ColorSegmenter().concepts]


def test_a_corrupted_byte_is_refused_and_the_file_named(copied):
    path = copied / "segmenter.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the tensor data: the file still parses as safetensors
    path.write_bytes(bytes(data))
    expected = registry.get("scenes64").weights["segmenter"].sha256
    actual = hashlib.sha256(data).hexdigest()
    with pytest.raises(WeightFileError) as info:
        models.resolve_segmenter("scenes64+color")
    message = str(info.value)
    assert str(path) in message and expected[:12] in message and actual[:12] in message
    assert isinstance(models.resolve_generator("scenes64"), SceneGenerator)  # the other parts still load
    with pytest.raises(WeightFileError, match=re.escape("segmenter.safetensors")):
        models.load("scenes64")


def test_a_missing_weight_file_is_named(copied):
    (copied / "discriminator.safetensors").unlink()
    with pytest.raises(WeightFileError, match=re.escape(f"{copied / 'discriminator.safetensors'} is missing")):
        registry.get("scenes64").discriminator()
    assert registry.get("scenes64").segmenter() is not None


def test_register_a_spec_and_use_it_by_name(small_spec):
    spec, built = small_spec
    assert "small" in registry.names() and registry.get("small") is spec
    segmenter = models.resolve_segmenter("small")
    assert isinstance(segmenter, ColorSegmenter) and built == []
    generator = models.resolve_generator("small")
    assert isinstance(generator, Small) and not generator.training and built == [1]
    assert generator.z_shape == (2,)  # the spec's z shape, given to a generator that declares none
    assert sample_z(generator, 3, range(5)).shape == (5, 2)
    bundle = models.load("small")
    assert bundle.discriminator is None and isinstance(bundle.segmenter, ColorSegmenter)
    with pytest.raises(ConfigError, match="already exists"):
        registry.register(spec)
    with pytest.raises(ConfigError, match="has no discriminator"):
        spec.discriminator()
    for bad in ("a+b", "x.py:make", "color", ""):
        with pytest.raises(ConfigError):
            registry.register(ModelSpec(bad, "", Small))
    registry.unregister("small")
    assert "small" not in registry.names()


def test_builders_may_take_the_spec_and_samplers_reach_the_generator():
    def sampler(shape, seed, indices):
        return torch.full((len(indices), *shape), float(seed))

    spec = ModelSpec("own", "", lambda spec: Small().requires_grad_(spec.name != "own"), z_shape=(2,),
                     sampler=sampler)
    generator = spec.generator()
    assert not any(p.requires_grad for p in generator.parameters())  # the builder saw the spec
    assert torch.equal(sample_z(generator, 7, range(3)), torch.full((3, 2), 7.0))
    default = ModelSpec("plain", "", Small, z_shape=(2,))
    assert torch.equal(default.sample_z(1, range(3)), default.sample_z(1, range(70))[:3])
    assert torch.equal(default.sample_z(1, range(3)), sample_z(default.generator(), 1, range(3)))
    with pytest.raises(ConfigError, match=re.escape("(5,)")):
        ModelSpec("wrong", "", lambda: SceneGenerator(), z_shape=(5,)).generator()


def test_default_layers_and_segmenter_come_from_the_spec(copied, small_spec):
    generator = models.resolve_generator("scenes64")
    assert models.default_layers_for("scenes64", generator) == ["layer2", "layer3", "layer4"]
    assert models.default_segmenter_for("scenes64") == "scenes64+color"
    assert models.default_layers_for("small", Small()) == ["layer3"]
    assert models.default_segmenter_for("small") == "color"
    meta = json.loads((copied / "model.json").read_text())
    meta.update(default_layers=["layer1"], default_segmenter="color")
    (copied / "model.json").write_text(json.dumps(meta))
    assert models.default_layers_for("scenes64", generator) == ["layer1"]
    assert models.default_segmenter_for("scenes64") == "color"


def test_factory_models_fall_back_to_the_layer_rule():
    assert models.default_layers_for("my_gen.py:make", Small()) == ["layer2", "layer3"]
    two = Small()
    two.layer_names = ("layer1", "layer2", "output")
    assert models.default_layers_for("my_gen.py:make", two) == ["layer1", "layer2"]
    with pytest.raises(ConfigError, match="--layers"):
        models.default_layers_for("my_gen.py:make", nn.Linear(2, 2))
    assert models.default_segmenter_for("my_gen.py:make") is None


def test_models_command_lists_models_and_files(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "scenes64:" in out and "gandissect dissect --model scenes64 --out runs/scenes64" in out
    assert "layer2, layer3, layer4" in out and "scenes64+color" in out and "file.py:factory" in out
    for part in PARTS:
        digest = hashlib.sha256((SHIPPED / f"{part}.safetensors").read_bytes()).hexdigest()
        assert re.search(rf"{part}\s+\S*{part}\.safetensors\s.*sha256 {digest[:12]}\s+present", out), part


def test_models_command_json_reports_missing_files(copied, capsys):
    (copied / "generator.safetensors").unlink()
    assert main(["models", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    [model] = document["models"]
    assert model["name"] == "scenes64" and model["z_shape"] == [128] and model["image_size"] == 64
    assert model["default_layers"] == ["layer2", "layer3", "layer4"] and model["default_segmenter"] == "scenes64+color"
    files = {f["part"]: f for f in model["weights"]}
    assert not files["generator"]["present"] and files["generator"]["bytes"] == 3658788
    assert files["segmenter"]["present"]
    assert files["segmenter"]["sha256"] == hashlib.sha256((copied / "segmenter.safetensors").read_bytes()).hexdigest()
    assert model["dissect"] == "gandissect dissect --model scenes64 --out runs/scenes64"
    assert "file.py:factory" in document["own_generator"]


def test_models_package_imports_only_core_and_engine():
    code = ("import json, sys, gandissect.models, gandissect.models.scenegan.spec; "
            "print(json.dumps(sorted({m.split('.')[1] for m in sys.modules if m.startswith('gandissect.')})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert set(json.loads(result.stdout)) <= {"core", "engine", "models"}


@pytest.mark.parametrize("damage", ["truncate", "drop-key", "not-an-object"])
def test_a_damaged_shipped_model_json_is_one_line(copied, capsys, damage):
    from gandissect.cli import main

    path = copied / "model.json"
    text = path.read_text()
    if damage == "truncate":
        path.write_text(text[: len(text) // 2])
    elif damage == "drop-key":
        meta = json.loads(text)
        del meta["generator_config"]
        path.write_text(json.dumps(meta))
    else:
        path.write_text("[1, 2]")
    for argv in (["models"], ["layers", "--model", "scenes64"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "model.json" in err and "reinstall" in err, err
