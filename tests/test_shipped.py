"""The shipped scenes64 model: loads by name, matches its metadata, and its segmenter reads the world."""

from __future__ import annotations

import json

import torch

from gandissect.cli import main
from gandissect.core.hooks import layer_shapes
from gandissect.core.images import from_uint8
from gandissect.core.sampling import sample_z
from gandissect.models import available, load
from gandissect.scenes import world
from gandissect.scenes.training import HELD_OUT_SEEDS


def test_scenes64_loads_and_matches_its_metadata():
    assert "scenes64" in available()
    bundle = load("scenes64")
    meta = bundle.metadata
    assert meta["concepts"] == list(world.CONCEPTS)
    assert meta["categories"] == [world.CATEGORIES[c] for c in world.CONCEPTS]
    z = sample_z(bundle.generator, 0, range(2))
    shapes = layer_shapes(bundle.generator, z)
    assert {name: list(shapes[name]) for name in meta["layers"]} == meta["layers"]
    with torch.no_grad():
        images = bundle.generator(z)
        realism = bundle.discriminator(images)
    assert images.shape == (2, 3, 64, 64) and images.min() >= -1 and images.max() <= 1
    assert realism.shape == (2,) and torch.isfinite(realism).all()


def test_shipped_segmenter_agrees_with_rendered_ground_truth():
    pictures, labels = world.render_batch(range(HELD_OUT_SEEDS + 900_000, HELD_OUT_SEEDS + 900_016), 64)
    predicted = load("scenes64").segmenter.segment(from_uint8(pictures))[:, 0]
    accuracy = (predicted == torch.from_numpy(labels).long()).double().mean().item()
    assert accuracy > 0.95


def test_dissect_command_on_the_shipped_model(tmp_path, capsys):
    assert main(["dissect", "--model", "scenes64", "--layers", "layer4", "--samples", "32", "--batch-size", "16",
                 "--out", str(tmp_path)]) == 0
    assert "concept     layer4" in capsys.readouterr().out
    document = json.loads((tmp_path / "dissect.json").read_text())
    assert document["segmenter"] == "scenes64+color"
    assert [c["name"] for c in document["concepts"]][:12] == list(world.CONCEPTS)
    assert len(document["layers"]["layer4"]["units"]) == 32
    assert (tmp_path / "report.html").exists()
