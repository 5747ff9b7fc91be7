"""Causal evidence: significance on planted models whose answer is known, calibration on null units, unknown
pixels left out, adaptive sample sizes, and the causal command's files and checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gandissect.causal.ace import measure_effects
from gandissect.causal.evidence import rank, settle_effects, settled
from gandissect.causal.interventions import insertion_values
from gandissect.cli import main
from gandissect.core.inference import paired_estimate
from gandissect.core.segmenters import COLOR_PROTOTYPES, ColorSegmenter
from planted import PLANTED, PlantedGenerator

BANDS = {1: (0, 2), 2: (2, 4), 3: (4, 6)}  # null unit -> the grid columns it acts on


class NullUnits(nn.Module):
    """Unit 0 marks the top half of an 8x8 grid red. Null units 1..3 each act on their own band of columns:
    where the unit exceeds 0.5 it paints red (when its own sign from z is +) or erases red (-). Each band
    holds as many top cells as bottom cells and the unit's cells are i.i.d., so ablating or inserting a null
    unit changes the red share by a per-sample amount whose mean is exactly 0."""

    z_dim = 3 * 16 + 3

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Identity()
        top = torch.zeros(1, 1, 8, 8)
        top[..., :4, :] = 1.0
        self.register_buffer("top", top)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n = z.shape[0]
        units = [self.top.expand(n, 1, 8, 8)]
        for j, (left, right) in BANDS.items():
            unit = torch.zeros(n, 1, 8, 8)
            unit[..., left:right] = torch.relu(z[:, (j - 1) * 16:j * 16]).view(n, 1, 8, 2)
            units.append(unit)
        r = self.features(torch.cat(units, 1))
        red = r[:, 0] > 0.5
        for j, (left, right) in BANDS.items():
            band = torch.zeros(8, 8, dtype=torch.bool)
            band[:, left:right] = True
            on = (r[:, j] > 0.5) & band
            positive = (z[:, 48 + j - 1] > 0)[:, None, None]
            red = torch.where(positive, red | on, red & ~on)
        colours = torch.tensor([COLOR_PROTOTYPES["grey"], COLOR_PROTOTYPES["red"]])
        image = colours[red.long()].permute(0, 3, 1, 2)
        return F.interpolate(image, scale_factor=4, mode="nearest") * 2 - 1


def test_the_planted_unit_is_the_only_significant_unit_for_its_colour(planted_run):
    generator, segmenter = PlantedGenerator(), ColorSegmenter()
    values = insertion_values(planted_run, "features", quantile=0.99)
    effects = measure_effects(generator, segmenter, "features", list(PLANTED.values()), values, samples=24,
                              batch_size=8, progress=False)
    for unit, colour in PLANTED.items():
        for direction in ("removal", "insertion", "ace"):
            assert rank(effects[colour], direction).significant == [unit], (colour, direction)


def test_null_units_are_significant_in_no_more_than_the_nominal_share_of_seeds():
    generator, segmenter = NullUnits(), ColorSegmenter()
    values = torch.tensor([1.0, 1.0, 1.0, 1.0])
    seeds, flagged, planted, raw = 40, 0, 0, 0
    for seed in range(seeds):
        effects = measure_effects(generator, segmenter, "features", ["red"], values, samples=24, seed=100 + seed,
                                  batch_size=24, progress=False)["red"]
        ranking = rank(effects, "removal")
        planted += ranking.significant == [0] or ranking.significant[:1] == [0]
        flagged += any(u in ranking.significant for u in BANDS)
        raw += int((ranking.estimate.p[1:] < 0.05).sum())
    assert planted == seeds  # the planted unit is found every time
    assert flagged / seeds <= 0.05 + 0.05  # Holm: at most the nominal 5% of families (plus binomial slack)
    assert raw / (3 * seeds) <= 0.05 + 0.05  # each null test alone holds its level too


class HalfUnknown(nn.Module):
    """The colour segmenter, but every pixel of an image whose top-left pixel is white is unknown (-2)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = ColorSegmenter()
        self.concepts, self.categories = self.inner.concepts, self.inner.categories

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        labels = self.inner.segment(images)
        white = images[:, :, 0, 0].min(1).values > 0.9
        return torch.where(white[:, None, None, None], torch.full_like(labels, -2), labels)


class Marked(nn.Module):
    """The planted generator with its top-left pixel white for half of the samples (by a sign of z that no
    unit of `features` depends on)."""

    z_dim = 16

    def __init__(self) -> None:
        super().__init__()
        self.inner = PlantedGenerator()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        image = self.inner(z).clone()
        image[:, :, 0, 0] = torch.where((z[:, 15] > 0)[:, None], 1.0, -1.0)
        return image


def test_unknown_images_are_missing_samples_and_the_rest_are_measured_as_alone(planted_run):
    generator = Marked()
    values = insertion_values(planted_run, "features", quantile=0.99)
    full = measure_effects(generator, ColorSegmenter(), "inner.features", ["red", "green"], values, samples=32,
                           batch_size=8, progress=False)
    half = measure_effects(generator, HalfUnknown(), "inner.features", ["red", "green"], values, samples=32,
                           batch_size=8, progress=False)
    from gandissect.core.sampling import sample_z

    keep = ~(sample_z(generator, 3, range(32))[:, 15] > 0)
    assert 8 < int(keep.sum()) < 24
    for concept in ("red", "green"):
        assert half[concept].missing()["unedited_images"] == int((~keep).sum())
        for direction in ("removal", "insertion", "ace"):
            alone = paired_estimate(full[concept].per_sample(direction)[keep])
            measured = half[concept].estimate(direction)
            assert torch.allclose(measured.mean, alone.mean, equal_nan=True)
            assert torch.allclose(measured.low, alone.low, equal_nan=True)
            assert torch.equal(measured.n, alone.n)


def test_settling_stops_early_when_the_top_separates_and_says_why(planted_run):
    generator, segmenter = PlantedGenerator(), ColorSegmenter()
    values = insertion_values(planted_run, "features", quantile=0.99)
    calls = []

    def measure(first: int, samples: int):
        calls.append((first, samples))
        return measure_effects(generator, segmenter, "features", ["red"], values, samples=samples, first=first,
                               batch_size=8, progress=False)

    effects, stopping = settle_effects(measure, budget=256, top=1, first_round=8)
    assert calls[0] == (0, 8) and stopping.rounds[-1] < 256
    assert stopping.reasons["red"] == {"removal": "separated", "insertion": "separated"}
    once = measure_effects(generator, segmenter, "features", ["red"], values, samples=stopping.rounds[-1],
                           batch_size=8, progress=False)["red"]
    assert torch.equal(effects["red"].ablated_samples, once.ablated_samples)  # rounds equal one pass
    assert settled(once, "removal", 1) == "separated"


def test_settling_spends_the_budget_on_null_units_and_says_so():
    values = torch.ones(4)

    def measure(first: int, samples: int):
        return measure_effects(NullUnits(), ColorSegmenter(), "features", ["red"], values, samples=samples,
                               first=first, seed=7, batch_size=16, units=[1, 2, 3], progress=False)

    _, stopping = settle_effects(measure, budget=48, top=1, first_round=16)
    assert stopping.rounds == [16, 32, 48]
    assert "budget" in stopping.reasons["red"].values()


@pytest.fixture(scope="module")
def causal_run(painter_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("evidence") / "run"
    shutil.copytree(painter_run, run)
    return run


def test_causal_writes_every_direction_with_intervals_for_several_concepts(causal_run):
    for concept in ("tree", "door", "sky"):
        document = json.loads((causal_run / "causal" / "layer4" / concept / "ace.json").read_text())
        assert document["schema"] == 2 and document["samples"] == 16 and len(document["units"]) == 32
        for row in document["units"]:
            for direction in ("removal", "insertion", "ace"):
                e = row["effects"][direction]
                assert e["low"] <= e["mean"] <= e["high"] and 0 <= e["p"] <= e["p_adjusted"] <= 1
                assert e["significant"] == (e["p_adjusted"] < 0.05 and e["mean"] > 0)
            assert row["effects"]["ace"]["mean"] == pytest.approx(row["inserted"] - row["ablated"], abs=1e-6)
        removal = document["rankings"]["removal"]
        means = {row["unit"]: row["effects"]["removal"]["mean"] for row in document["units"]}
        assert [means[u] for u in removal["order"]] == sorted(means.values(), reverse=True)
        csv = (causal_run / "causal" / "layer4" / concept / "ace.csv").read_text().splitlines()
        assert csv[0].startswith("unit,value,iou,inserted,ablated,removal_mean,removal_low") and len(csv) == 33


@pytest.mark.parametrize(("flags", "message"), [
    (["--concept", "tree,nothing"], "unknown nothing"),
    (["--concept", "tree,tree"], "twice"),
    (["--concept", "tree", "--samples", "1"], "at least 2"),
    (["--concept", "tree", "--samples", "auto", "--max-samples", "1"], "at least 2"),
    (["--concept", "tree", "--top", "0"], "--top"),
    (["--concept", "tree", "--quantile", "1.5"], "--quantile"),
    (["--concept", "tree", "--curves", "--units", "1,x"], "--units"),
    (["--concept", "tree", "--curves", "--units", "40"], "32"),
    (["--concept", "tree", "--set-samples", "1"], "--set-samples"),
])
def test_bad_causal_flags_are_refused_before_any_work(causal_run, capsys, flags, message):
    assert main(["causal", str(causal_run), "--layer", "layer4", "--no-report", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "batch" not in err  # one line, before any sample pass


HARD_ONLY = """
from gandissect.core.segmenters import ColorSegmenter


class HardOnly:
    def __init__(self):
        self.inner = ColorSegmenter()
        self.concepts, self.categories = self.inner.concepts, self.inner.categories

    def segment(self, images):
        return self.inner.segment(images)


def make():
    return HardOnly()
"""
PLANTED_SPEC = f"{Path(__file__).with_name('planted.py')}:PlantedGenerator"


def test_optimize_without_concept_scores_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "hard.py").write_text(HARD_ONLY)
    specs = ["--model", PLANTED_SPEC, "--segmenter", f"{tmp_path / 'hard.py'}:make"]
    assert main(["dissect", *specs, "--layers", "features", "--samples", "32", "--quantile", "0.15", "--no-report",
                 "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["causal", str(tmp_path / "run"), *specs, "--concept", "red", "--optimize", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "--optimize needs a segmenter with differentiable concept_scores" in err and "batch" not in err


def test_models_other_than_the_runs_are_refused_before_any_work(causal_run, capsys):
    assert main(["causal", str(causal_run), "--layer", "layer4", "--concept", "tree", "--segmenter", "scenes64",
                 "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "the segmenter is not the one" in err and "segmenter.concepts" in err and "batch" not in err
    assert main(["causal", str(causal_run), "--layer", "layer4", "--concept", "tree", "--model", PLANTED_SPEC,
                 "--no-report"]) == 2
    assert "the generator is not the one" in capsys.readouterr().err


def test_a_run_in_use_is_refused_and_the_lock_is_released_after_a_command(causal_run, tmp_path, capsys):
    from gandissect.engine.runfolder import RunFolder
    from gandissect.models import resolve_generator, resolve_segmenter

    causal_run = shutil.copytree(causal_run, tmp_path / "run")  # this test writes into it
    holder = RunFolder(causal_run, ()).hold(resolve_generator("scenes64"), resolve_segmenter("scenes64+color"))
    try:
        assert main(["causal", str(causal_run), "--layer", "layer4", "--concept", "tree", "--no-report"]) == 2
        assert "in use by another gandissect process" in capsys.readouterr().err
    finally:
        holder.close()
    assert main(["causal", str(causal_run), "--layer", "layer4", "--concept", "tree", "--samples", "2",
                 "--set-samples", "0", "--no-report"]) == 0
    again = RunFolder(causal_run, ()).hold(resolve_generator("scenes64"), resolve_segmenter("scenes64+color"))
    again.close()  # the command let go of the lock when it ended
