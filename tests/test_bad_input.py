"""User mistakes get one line and exit 2 before any work, never a traceback or a run that trains on NaN."""

from __future__ import annotations

import dataclasses
import json

import pytest

from gandissect.cli import main
from gandissect.core.errors import ConfigError
from gandissect.scenes.training import train_gan
from tamper import rehash

NO_LATENT = """
import torch
from torch import nn


class G(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1 = nn.Linear(4, 3 * 8 * 8)

    def forward(self, z):
        return torch.tanh(self.layer1(z)).view(-1, 3, 8, 8)


def make():
    return G()
"""


def one_line(capsys: pytest.CaptureFixture[str], *words: str) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(word in err for word in words), err


@pytest.mark.parametrize(("flags", "message"), [
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--dataset-size", "0"], "--dataset-size must be at least 1"),
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--iterations", "0"], "--iterations must be at least 1"),
])
def test_training_settings_that_cannot_train_are_refused(tmp_path, capsys, flags, message):
    assert main(["train", "gan", "--out", str(tmp_path / "gan"), *flags]) == 2
    one_line(capsys, message)
    assert not (tmp_path / "gan" / "train_config.json").exists()


def test_resuming_a_training_run_with_another_model_is_refused_before_anything_is_written(tmp_path,
                                                                                           make_gan_config):
    config = make_gan_config(tmp_path / "gan", iterations=2)
    train_gan(config)
    stored = (tmp_path / "gan" / "train_config.json").read_text()
    with pytest.raises(ConfigError, match="z_dim: 8 then, 16 now"):
        train_gan(dataclasses.replace(config, z_dim=16, iterations=4))
    assert (tmp_path / "gan" / "train_config.json").read_text() == stored
    assert json.loads(stored)["z_dim"] == 8


def test_an_out_folder_that_cannot_be_created_is_refused(tmp_path, capsys):
    assert main(["dissect", "--model", "scenes64", "--samples", "8", "--out", "/proc/gandissect-run"]) == 2
    one_line(capsys, "cannot create it")


def test_a_generator_without_a_latent_size_is_told_so(tmp_path, capsys):
    (tmp_path / "g.py").write_text(NO_LATENT)
    spec = f"{tmp_path / 'g.py'}:make"
    assert main(["layers", "--model", spec]) == 2
    one_line(capsys, "declares no latent size", "z_dim")
    assert main(["dissect", "--model", spec, "--segmenter", "color", "--layers", "layer1", "--out",
                 str(tmp_path / "run")]) == 2
    one_line(capsys, "declares no latent size")


def test_a_dissect_json_without_layers_is_refused_before_any_work(painter_run, tmp_path, capsys):
    import shutil

    run = shutil.copytree(painter_run, tmp_path / "run")
    document = json.loads((run / "dissect.json").read_text())
    del document["layers"]
    (run / "dissect.json").write_text(json.dumps(document))
    for argv in (["report", str(run)], ["causal", str(run), "--layer", "layer4", "--concept", "tree"]):
        assert main(argv) == 2
        one_line(capsys, "dissect.json was changed after gandissect wrote it")
    rehash(run)  # handed over consistent: refused for what it holds
    for argv in (["report", str(run)], ["causal", str(run), "--layer", "layer4", "--concept", "tree"]):
        assert main(argv) == 2
        one_line(capsys, "dissect.json: layers is missing")


FLAT_IMAGES = """
import torch
from torch import nn


class Flat(nn.Module):
    z_dim = 4

    def __init__(self):
        super().__init__()
        self.layer1 = nn.Linear(4, 8 * 8)

    def forward(self, z):
        return torch.tanh(self.layer1(z)).view(-1, 8, 8)


def make():
    return Flat()
"""


def test_a_generator_returning_no_rgb_batch_is_told_what_it_returned(tmp_path, capsys):
    (tmp_path / "g.py").write_text(FLAT_IMAGES)
    assert main(["dissect", "--model", f"{tmp_path / 'g.py'}:make", "--segmenter", "color", "--layers", "layer1",
                 "--samples", "8", "--out", str(tmp_path / "run")]) == 2
    one_line(capsys, "Flat returned a tensor of shape (1, 8, 8)", "(N, 3, H, W)")
    assert not (tmp_path / "run").exists()
