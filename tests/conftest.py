"""Shared fixtures: one CPU thread, tiny training and dissection runs reused by several test modules, and the
headless browser of the report's and the painter's tests."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest
import torch

from gandissect.core.segmenters import ColorSegmenter
from gandissect.dissection import DissectConfig, Dissection, Dissector
from gandissect.scenes.training import GanTrainConfig, SegmenterTrainConfig, train_gan, train_segmenter

# The tests never see nor write the user's own cache and shipped models (tests that need a cache set their own).
os.environ["GANDISSECT_CACHE"] = tempfile.mkdtemp(prefix="gandissect-test-cache-")
os.environ.pop("GANDISSECT_MODELS", None)

PLANTED_CONFIG = {"layers": ["features"], "samples": 64, "batch_size": 32, "quantile": 0.15, "checkpoint_every": 8}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test (the loaders work offline)."""
    def refuse(*args, **kwargs):
        raise AssertionError("tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="session")
def planted_run(tmp_path_factory: pytest.TempPathFactory) -> Dissection:
    """A finished dissection of tests/planted.py's model with the colour segmenter, read back (not to write into)."""
    from planted import PlantedGenerator

    out = tmp_path_factory.mktemp("planted_run")
    dissector = Dissector(PlantedGenerator(), ColorSegmenter(), DissectConfig(**PLANTED_CONFIG), out, progress=False)
    dissector.finish(dissector.run())
    return Dissection.load(out)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_gan_config(out: Path, iterations: int = 4) -> GanTrainConfig:
    """A 64x64 GAN small enough to train in about a second (4 * 2 ** 4 = 64)."""
    return GanTrainConfig(out=str(out), iterations=iterations, batch_size=4, dataset_size=16, z_dim=8,
                          channels=(16, 8, 8, 8), disc_channels=(8, 8, 8, 8), checkpoint_every=2, sample_every=2)


def tiny_segmenter_config(out: Path, iterations: int = 4) -> SegmenterTrainConfig:
    return SegmenterTrainConfig(out=str(out), iterations=iterations, batch_size=2, widths=(4, 8),
                                checkpoint_every=2, sample_every=2)


@pytest.fixture(scope="session")
def tiny_gan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny GAN run folder (4 iterations, uninterrupted)."""
    return train_gan(tiny_gan_config(tmp_path_factory.mktemp("gan")))


@pytest.fixture(scope="session")
def tiny_segmenter_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny segmenter run folder (4 iterations, uninterrupted)."""
    return train_segmenter(tiny_segmenter_config(tmp_path_factory.mktemp("seg")))


@pytest.fixture(scope="session")
def make_gan_config():
    return tiny_gan_config


@pytest.fixture(scope="session")
def make_segmenter_config():
    return tiny_segmenter_config


@pytest.fixture(scope="session")
def painter_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished dissection of the shipped scenes64 generator for the painter, with causal unit rankings.

    Returns the run folder (a Path; read it, never write into it: copy it first). Made in about 20 s with small
    sample counts, so its figures mean little; it holds:
    - dissect.json (model "scenes64", segmenter "scenes64+color"), dissect.csv, statistics.safetensors, run.json
      and report.html: layers layer3 (64 units, 16x16) and layer4 (32 units, 32x32), 32 samples per set;
    - causal/layer4/<concept>/ace.json and ace.csv for tree, door and sky (`gandissect causal` on 16 held-out
      samples, the significant sets checked on 8 more): removal, insertion and ACE with intervals;
    - causal/layer4/tree/units.json: an optimised unit set (16 fit pairs, one epoch).
    `gandissect paint RUN` serves it (the model comes from dissect.json).
    """
    from gandissect.causal.interventions import insertion_values
    from gandissect.causal.optimize import optimize_units
    from gandissect.cli import main
    from gandissect.engine.speed import channels_last
    from gandissect.models import resolve_generator, resolve_segmenter

    run = tmp_path_factory.mktemp("painter") / "scenes64-run"
    assert main(["dissect", "--model", "scenes64", "--layers", "layer3,layer4", "--samples", "32", "--topk", "4",
                 "--passes", "two", "--out", str(run)]) == 0  # two passes: the tests name what each layer shows
    assert main(["causal", str(run), "--layer", "layer4", "--concept", "tree,door,sky", "--samples", "16",
                 "--set-samples", "8", "--no-report"]) == 0
    result = Dissection.load(run)
    generator, segmenter = resolve_generator("scenes64"), resolve_segmenter("scenes64+color")
    channels_last(generator, segmenter)  # as `gandissect causal` does
    optimized = optimize_units(generator, segmenter, "layer4", "tree", insertion_values(result, "layer4", "tree"),
                               samples=16, epochs=1, batch_size=8, patch=1, eval_samples=8, init=result,
                               progress=False)
    optimized.save(run / "causal" / "layer4" / "tree" / "units.json")
    from tamper import rehash

    rehash(run, add=True)  # listed in run.json, as `gandissect causal --optimize` lists it
    return run


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def browser_unavailable(reason: str) -> None:
    """Skip a browser test, or fail it when GANDISSECT_REQUIRE_BROWSER=1 (CI: the browser tests must run)."""
    if os.environ.get("GANDISSECT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser tests are required (GANDISSECT_REQUIRE_BROWSER=1) but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser():
    """Headless Debian chromium driven by Playwright, shared by the report's and the painter's browser tests."""
    if not Path(CHROMIUM).exists():
        browser_unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        browser_unavailable(f"playwright is not importable: {error}")
    manager = sync_playwright().start()
    try:
        launched = manager.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    except Exception as error:
        manager.stop()
        browser_unavailable(f"chromium does not start: {error}")
    yield launched
    launched.close()
    manager.stop()
