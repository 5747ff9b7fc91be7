"""Shipping a user's model: into their models folder (or one they name), loadable by name, never over an existing
name unless asked, never over the packaged model, with a warning when training was far shorter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gandissect import models
from gandissect.cli import main
from gandissect.core.errors import ConfigError
from gandissect.scenes.ship import ship, short_training


@pytest.fixture
def package(tmp_path, monkeypatch) -> Path:
    """An isolated package weights folder holding a stand-in 'scenes64' (its model.json only, trained on
    9,000 x 32 GAN images and 2,500 x 16 segmenter images like the real one), and an empty user cache."""
    weights = tmp_path / "package"
    (weights / "scenes64").mkdir(parents=True)
    training = {"gan": {"iterations_done": 9000, "batch_size": 32},
                "segmenter": {"iterations_done": 2500, "batch_size": 16}}
    (weights / "scenes64" / "model.json").write_text(json.dumps({"name": "scenes64", "training": training}))
    monkeypatch.setattr(models, "WEIGHTS", weights)
    monkeypatch.setenv("GANDISSECT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GANDISSECT_MODELS", raising=False)
    return weights


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_ship_goes_to_the_user_folder_and_loads_by_name(package, tiny_gan_run, tiny_segmenter_run, tmp_path):
    before = _snapshot(package)
    shipped = ship("mine", tiny_gan_run, tiny_segmenter_run)
    assert shipped.folder == tmp_path / "cache" / "models" / "mine" and shipped.by_name
    assert _snapshot(package) == before  # the package is untouched
    assert "mine" in models.available()
    generator = models.resolve_generator("mine")
    expected = load_file(str(tiny_gan_run / "generator.safetensors"))
    state = generator.state_dict()
    assert all(torch.equal(state[k], v) for k, v in expected.items())


def test_existing_name_is_refused_unless_replace(package, tiny_gan_run, tiny_segmenter_run):
    first = ship("mine", tiny_gan_run, tiny_segmenter_run)
    meta = (first.folder / "model.json").read_bytes()
    with pytest.raises(ConfigError, match="pass --replace"):
        ship("mine", tiny_gan_run, tiny_segmenter_run, extra={"description": "second"})
    assert (first.folder / "model.json").read_bytes() == meta
    again = ship("mine", tiny_gan_run, tiny_segmenter_run, extra={"description": "second"}, replace=True)
    assert json.loads((again.folder / "model.json").read_text())["description"] == "second"
    assert any("replacing model 'mine'" in w for w in again.warnings)


def test_packaged_name_is_refused_even_with_replace(package, tiny_gan_run, tiny_segmenter_run, tmp_path):
    before = _snapshot(package)
    for into in (None, tmp_path / "elsewhere"):
        with pytest.raises(ConfigError, match="packaged with gandissect"):
            ship("scenes64", tiny_gan_run, tiny_segmenter_run, into=into, replace=True)
    assert _snapshot(package) == before
    assert not (tmp_path / "cache" / "models" / "scenes64").exists()
    assert not (tmp_path / "elsewhere").exists()


def test_replacing_the_packaged_model_needs_replace_and_says_so(package, tiny_gan_run, tiny_segmenter_run):
    with pytest.raises(ConfigError, match="pass --replace"):
        ship("scenes64", tiny_gan_run, tiny_segmenter_run, into=package)
    shipped = ship("scenes64", tiny_gan_run, tiny_segmenter_run, into=package, replace=True)
    assert any("replacing the packaged model 'scenes64'" in w for w in shipped.warnings)


def test_folder_of_choice_loads_by_name_through_gandissect_models(package, tiny_gan_run, tiny_segmenter_run, tmp_path,
                                                                   monkeypatch):
    shipped = ship("chosen", tiny_gan_run, tiny_segmenter_run, into=tmp_path / "mine")
    assert shipped.folder == tmp_path / "mine" / "chosen" and not shipped.by_name
    assert "chosen" not in models.available()
    monkeypatch.setenv("GANDISSECT_MODELS", str(tmp_path / "mine"))
    assert "chosen" in models.available()
    assert models.registry.shipped_folder("chosen") == shipped.folder


def test_short_training_warns_against_the_packaged_model(package, tiny_gan_run, tiny_segmenter_run):
    shipped = ship("mine", tiny_gan_run, tiny_segmenter_run)  # 4 iterations of batch 4 and of batch 2
    assert any("the gan was trained on 16 images" in w and "288,000" in w for w in shipped.warnings)
    assert any("the segmenter was trained on 8 images" in w and "40,000" in w for w in shipped.warnings)
    reference = {"gan": {"iterations_done": 100, "batch_size": 4}}
    assert short_training({"gan": {"iterations_done": 25, "batch_size": 4}}, reference) == []  # exactly a quarter
    assert len(short_training({"gan": {"iterations_done": 24, "batch_size": 4}}, reference)) == 1
    assert short_training({"gan": {"iterations_done": 1, "batch_size": 4}}, {}) == []  # nothing to compare with


def test_wrong_run_folders_and_names_are_one_line(package, tiny_gan_run, tiny_segmenter_run, tmp_path):
    with pytest.raises(ConfigError, match="is it a gan run"):
        ship("mine", tiny_segmenter_run, tiny_segmenter_run)
    with pytest.raises(ConfigError, match="not a segmenter training run folder"):
        ship("mine", tiny_gan_run, tmp_path)
    for bad in ("", "a/b", "x:y", "color", ".."):
        with pytest.raises(ConfigError, match="model name"):
            ship(bad, tiny_gan_run, tiny_segmenter_run)
    assert not (tmp_path / "cache").exists()


def test_ship_command_warns_and_refuses(package, tiny_gan_run, tiny_segmenter_run, capsys):
    argv = ["ship", "--name", "mine", "--gan", str(tiny_gan_run), "--segmenter", str(tiny_segmenter_run)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "warning: the gan was trained on 16 images" in captured.err
    assert "gandissect dissect --model mine" in captured.out
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--replace" in err
    assert main([*argv, "--replace"]) == 0
