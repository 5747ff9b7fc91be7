"""The one-pass dissection: slot histograms summed into level counts, and the choice between one and two passes."""

from __future__ import annotations

import json

import pytest
import torch

from gandissect.core import kernels
from gandissect.core.errors import ConfigError
from gandissect.core.levels import LevelCounts
from gandissect.core.segmenters import ColorSegmenter
from gandissect.core.stats import UnitQuantiles
from gandissect.dissection import DissectConfig, Dissector, dissector
from gandissect.engine.storage import load_statistics
from planted import PlantedGenerator

CONFIG = {"layers": ["features"], "samples": 64, "batch_size": 32, "quantile": 0.15}
FIELDS = ("joint", "totals", "concept_area", "pixels", "edges", "low", "high")


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("dtype", [torch.int32, torch.long])
def test_slot_histogram_at_any_levels_equals_counting_at_those_levels(monkeypatch, fused, dtype):
    if not fused:
        monkeypatch.setattr(kernels, "numba", None)
    generator = torch.Generator().manual_seed(3)
    acts = torch.relu(torch.randn(6, 5, 8, 8, generator=generator))  # a point mass at 0, as a ReLU unit has
    labels = torch.randint(-2, 4, (6, 2, 16, 16), generator=generator)  # with unknown (-2) and none (-1)
    folds = torch.arange(6) % 3
    histogram = UnitQuantiles.calibrate(acts[:2], 64)
    slots = LevelCounts.slot_histogram(histogram.low, histogram.high, 64, 4, 3, dtype)
    slots.add(acts[:4], labels[:4], folds[:4])
    slots.add(acts[4:], labels[4:], folds[4:])  # batches add up
    assert slots.joint.dtype == dtype
    for edges in (torch.randint(0, 65, (5, 7), generator=generator), torch.tensor([[0, 64]] * 5)):
        direct = LevelCounts(histogram.low, histogram.high, 64, edges, 4, 3)
        direct.add(acts, labels, folds)
        summed = slots.at_levels(edges)
        for field in FIELDS:
            assert torch.equal(getattr(summed, field), getattr(direct, field)), field
        assert summed.joint.dtype == torch.long


def run(out, capsys=None, **overrides):
    config = DissectConfig(**{**CONFIG, **overrides})
    dissect = Dissector(PlantedGenerator(), ColorSegmenter(), config, out, progress=capsys is not None)
    result = dissect.run()
    return dissect, result, dissect.finish(result)


def test_auto_runs_one_pass_when_the_slot_histograms_fit_and_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(dissector, "_free_memory", lambda device: 2**30)
    dissect, result, document = run(tmp_path / "one", capsys, passes="auto")
    need = 2 * 5 * (4096 + 2) * len(ColorSegmenter().concepts) * 4  # folds x units x slots x concepts x int32
    assert dissect.passes == "one" and document["config"]["passes"] == "one" and result.config.passes == "one"
    assert f"dissection in one pass: slot histograms of {need / 2**20:,.0f} MiB fit" in capsys.readouterr().err
    stats, meta = load_statistics(tmp_path / "one" / "statistics.safetensors")
    assert not any(name.startswith("slots/") for name in stats) and meta["config"]["passes"] == "one"
    assert json.loads((tmp_path / "one" / "run.json").read_text())["passes"] == "one"

    monkeypatch.setattr(dissector, "_free_memory", lambda device: 4 * need - 1)
    dissect, result, document = run(tmp_path / "two", capsys, passes="auto")
    assert dissect.passes == "two" and document["config"]["passes"] == "two"
    assert "dissection in two passes: slot histograms" in capsys.readouterr().err


def test_passes_one_that_cannot_fit_is_refused_before_work(tmp_path, monkeypatch):
    monkeypatch.setattr(dissector, "_physical_memory", lambda: 10 * 2**20)  # a batch needs 4 MiB, the slots 7
    config = DissectConfig(**CONFIG, passes="one", bins=4 * 4096)
    with pytest.raises(ConfigError, match="--passes one needs slot histograms of 7 MiB, more than half of this"):
        Dissector(PlantedGenerator(), ColorSegmenter(), config, tmp_path).check()


@pytest.mark.parametrize("samples, dtype", [(4_194_302, torch.int32), (4_194_304, torch.long)])
def test_slot_counts_are_int32_only_while_no_cell_can_overflow(tmp_path, samples, dtype):
    """A cell counts at most the pixels of one fold: 2,097,151 samples x 32 x 32 < 2**31 <= 2,097,152 x 1024."""
    config = DissectConfig(**{**CONFIG, "samples": samples, "passes": "auto"})
    dissect = Dissector(PlantedGenerator(), ColorSegmenter(), config, tmp_path)
    dissect.check()
    assert dissect._slot_histograms()[1] == dtype
