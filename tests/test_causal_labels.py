"""Causal labels against a planted model whose answer is known, a per-sample brute force, images the segmenter
cannot read, hand-made agreement examples and chance levels checked over every permutation."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from gandissect.causal.ace import concept_shares
from gandissect.causal.interventions import insertion_values
from gandissect.causal.labels import (
    DEFINITIONS,
    NONE,
    Agreement,
    CausalLabels,
    agreement,
    agreement_table,
    causal_labels,
    rule_agreement,
    summary_table,
)
from gandissect.cli import labels as cli_labels
from gandissect.cli import main
from gandissect.core.edits import UnitEdit
from gandissect.core.errors import ConfigError
from gandissect.core.hooks import Trace
from gandissect.core.inference import holm, paired_estimate
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import ColorSegmenter
from gandissect.dissection import RULES, Dissection
from gandissect.engine.runfiles import Snapshot
from gandissect.engine.storage import read_json
from gandissect.viz.report.causal import load_causal
from planted import DISTRACTORS, PLANTED, PlantedGenerator

MARK = 0.123  # a pixel value the planted painter never makes


class MarkedGenerator(PlantedGenerator):
    """The planted model, with pixel (0, 0) set to MARK in the images of samples whose z[0] > 0."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        image = super().forward(z)
        image[z[:, 0] > 0, :, 0, 0] = MARK
        return image


class BlindSegmenter(ColorSegmenter):
    """The colour segmenter, unknown (-2) at every pixel of a marked image."""

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> torch.Tensor:
        labels = super().segment(images)
        labels[(images[:, :, 0, 0] == MARK).all(1)] = -2
        return labels


def test_planted_units_draw_their_colours_and_noise_units_draw_nothing(planted_run):
    causal = causal_labels(PlantedGenerator(), ColorSegmenter(), planted_run, "features", samples=16,
                           progress=False)
    for definition in DEFINITIONS:
        names = causal.names(definition)
        assert [names[u] for u in PLANTED] == list(PLANTED.values()), definition
        assert [names[u] for u in DISTRACTORS] == ["none", "none"], definition
        assert causal.distribution(definition) == {"none": 2, "blue": 1, "green": 1, "red": 1}
        assert causal.reliability(definition).fraction == 1.0
    for unit in DISTRACTORS:  # the painter never reads them: no pixel changes, no test
        assert float(causal.estimate.mean[unit].abs().max()) == 0.0
        assert bool(torch.isnan(causal.adjusted[unit]).all())
    assert float(causal.labels()[1][0]) > 0.3  # unit 0 adds over 30% of the image in red
    assert causal.missing() == {"unedited": 0, "effects": 0}
    agreements = {name: rule_agreement(planted_run, causal, definition=name) for name in DEFINITIONS}
    document = json.loads(json.dumps(causal.to_json(agreements, "relative"), allow_nan=False))
    assert [u["label"] for u in document["units"]] == causal.names("relative")
    assert document["units"][2]["labels"] == {name: "blue" for name in DEFINITIONS}
    assert document["agreement"]["quantile"] == agreements["relative"]["quantile"].to_json()
    assert set(document["by_definition"]) == set(DEFINITIONS) and document["definition"] == "relative"


def shares(segmenter: ColorSegmenter, image: torch.Tensor) -> torch.Tensor:
    labels = segmenter.segment(image)[0, 0]
    return torch.stack([(labels == c).sum() for c in range(len(segmenter.concepts))]).double() / labels.numel()


def test_shares_and_labels_equal_a_per_sample_brute_force(planted_run):
    generator, segmenter = PlantedGenerator(), ColorSegmenter()
    units, samples, seed = [1, 0, 3], 6, 5
    causal = causal_labels(generator, segmenter, planted_run, "features", samples=samples, seed=seed, batch_size=4,
                           group=2, units=units, progress=False)
    values = insertion_values(planted_run, "features", quantile=0.99)
    assert torch.equal(causal.values, values)
    num = len(segmenter.concepts)
    before = torch.zeros(samples, num, dtype=torch.float64)
    ablated = torch.full((samples, 5, num), float("nan"), dtype=torch.float64)
    inserted = ablated.clone()
    for sample in range(samples):
        z = sample_z(generator, seed, [sample])
        before[sample] = shares(segmenter, generator(z))
        for unit in units:
            with Trace(generator, edit={"features": UnitEdit.ablate([unit])}):
                ablated[sample, unit] = shares(segmenter, generator(z))
            with Trace(generator, edit={"features": UnitEdit.insert([unit], values[[unit]])}):
                inserted[sample, unit] = shares(segmenter, generator(z))
    assert torch.equal(causal.before, before)
    assert torch.equal(causal.ablated.nan_to_num(-1), ablated.nan_to_num(-1))
    assert torch.equal(causal.inserted.nan_to_num(-1), inserted.nan_to_num(-1))
    d = inserted - ablated
    mean = torch.stack([d[:, u].mean(0) for u in range(5)])
    scale = {"share": torch.ones(num), "relative": before.mean(0), "lift": mean[units].abs().mean(0)}
    for definition in DEFINITIONS:
        expected = []
        for unit in range(5):
            estimate = paired_estimate(d[:, unit])
            moved = (d[:, unit].nan_to_num(0) != 0).any(0)
            p = holm(torch.where(moved, estimate.p, float("nan")))
            best, label = -float("inf"), NONE
            for c in range(num):
                effect = float(estimate.mean[c] / scale[definition][c])
                if float(p[c]) < 0.05 and float(estimate.mean[c]) > 0 and effect > best:
                    best, label = effect, c
            expected.append(label)
        assert causal.labels(definition)[0].tolist() == expected, definition
    assert causal.names()[:2] == ["red", "green"] and causal.names()[2] == causal.names()[4] == "none"


def test_concept_shares_leave_unknown_pixels_out_and_count_a_pixel_once():
    class Fixed:
        concepts = ("a", "b", "c")

        def segment(self, images: torch.Tensor) -> torch.Tensor:
            first = torch.tensor([[0, 0], [1, -2]])
            second = torch.tensor([[0, 2], [-1, 2]])
            blank = torch.full((2, 2, 2), -2)
            return torch.stack([torch.stack([first, second]), blank])

    out = concept_shares(Fixed(), torch.zeros(2, 3, 2, 2), range(3))
    assert out[0].tolist() == [2 / 3, 1 / 3, 1 / 3]  # 3 known pixels; concept 0 twice at one pixel counts once
    assert bool(torch.isnan(out[1]).all())  # no known pixel: a missing sample


def test_images_the_segmenter_cannot_read_are_left_out(planted_run):
    blind = causal_labels(MarkedGenerator(), BlindSegmenter(), planted_run, "features", samples=16, progress=False)
    plain = causal_labels(PlantedGenerator(), ColorSegmenter(), planted_run, "features", samples=16, progress=False)
    marked = sample_z(PlantedGenerator(), blind.seed, range(16))[:, 0] > 0
    assert 4 <= int(marked.sum()) <= 12
    assert blind.missing() == {"unedited": int(marked.sum()), "effects": 5 * int(marked.sum())}
    assert bool(torch.isnan(blind.ablated[marked]).all()) and bool(torch.isnan(blind.before[marked]).all())
    kept = replace(plain, before=plain.before[~marked], ablated=plain.ablated[~marked],
                   inserted=plain.inserted[~marked])
    assert torch.equal(blind.before[~marked], kept.before)
    for definition in DEFINITIONS:
        assert torch.allclose(blind.effect(definition), kept.effect(definition), equal_nan=True)
        assert torch.equal(blind.labels(definition)[0], kept.labels(definition)[0])
    assert torch.allclose(blind.adjusted, kept.adjusted, equal_nan=True)
    assert blind.names() == plain.names()


def test_agreement_and_its_chance_level_on_a_hand_made_example():
    causal = torch.tensor([0, 1, NONE, 2, 1])
    rule = torch.tensor([0, 2, 1, 2, 1])
    interpretable = torch.tensor([True, True, True, False, True])
    result = agreement("r", causal, rule, interpretable)
    assert (result.units, result.agree, result.interpretable_units, result.interpretable_agree) == (4, 3, 3, 2)
    assert result.fraction == 0.75 and result.interpretable_fraction == pytest.approx(2 / 3)
    shuffled = [agreement("r", causal, rule[list(p)], interpretable).fraction for p in itertools.permutations(range(5))]
    assert result.chance_fraction == pytest.approx(sum(shuffled) / len(shuffled), abs=1e-12)
    assert result.chance_fraction == pytest.approx((1 + 2 + 2 + 2) / (4 * 5))
    empty = agreement("r", torch.full((3,), NONE), rule[:3], interpretable[:3])
    assert empty.units == 0 and empty.fraction != empty.fraction  # NaN
    assert empty.to_json()["fraction"] is None and empty.to_json()["chance"] is None
    table = agreement_table({"share": {"a": {"r": result}, "b": {"r": Agreement("r", 2, 1, 0, 0, 0.5)}}})
    assert table.splitlines()[0].startswith("share: ")
    assert table.splitlines()[4] == ("| r | 0.75 (3/4) | 0.35 | 0.67 (2/3) | 0.50 (1/2) | 0.25 | - | 0.67 (4/6) "
                                     "| 0.32 | 0.67 (2/3) |")
    with pytest.raises(ConfigError, match="same shape"):
        agreement("r", causal, rule[:3], interpretable)


def hand_made(result: Dissection, labels: list[int], folds: list[list[int]] | None = None) -> CausalLabels:
    """Causal labels whose unit u adds 0.5 + 0.01 i of concept labels[u] to sample i (none for -1), the even
    samples following folds[0] and the odd ones folds[1]."""
    concepts, folds, samples = list(result.concepts), folds or [labels, labels], 8
    width = len(folds[0])
    inserted = torch.zeros(samples, width, len(concepts), dtype=torch.float64)
    for sample in range(samples):
        for unit, concept in enumerate(folds[sample % 2]):
            if concept != NONE:
                inserted[sample, unit, concept] = 0.5 + 0.01 * sample
    before = torch.full((samples, len(concepts)), 0.1, dtype=torch.float64)
    return CausalLabels("features", concepts, list(range(width)), before, torch.zeros_like(inserted), inserted,
                        torch.ones(width), 3)


def test_rule_agreement_reads_every_rule_of_the_run(planted_run):
    red, green, blue = (planted_run.concepts.index(c) for c in ("red", "green", "blue"))
    causal = hand_made(planted_run, [red, blue, NONE, green, red])
    assert all(causal.names(name) == ["red", "blue", "none", "green", "red"] for name in DEFINITIONS)
    outcome = rule_agreement(planted_run, causal)
    assert list(outcome) == list(RULES)
    labels = causal.labels()[0].tolist()
    for rule, measured in outcome.items():
        named = planted_run.layers["features"].rules[rule].labels()[1].tolist()
        flags = planted_run.interpretable("features", rule)
        units = [u for u in range(5) if labels[u] != NONE]
        same = [u for u in units if named[u] == labels[u]]
        interpretable = [u for u in units if bool(flags[u, named[u]])]
        assert (measured.units, measured.agree) == (len(units), len(same)), rule
        assert measured.interpretable_units == len(interpretable), rule
        assert measured.interpretable_agree == len([u for u in same if u in interpretable]), rule
        assert measured.chance == pytest.approx(sum(named.count(labels[u]) for u in units) / 5), rule
    assert outcome["quantile"].agree >= 1  # the planted red unit 0 is labelled red by the quantile rule
    assert set(rule_agreement(planted_run, causal, ["iqr"], "lift")) == {"iqr"}
    summary = summary_table({"features": causal})
    assert "| features | share | 1.00 (4/4) | 0.38 | red: 2, blue: 1, green: 1, none: 1 |" in summary


def test_split_half_reliability_and_its_chance_level(planted_run):
    red, green = planted_run.concepts.index("red"), planted_run.concepts.index("green")
    causal = hand_made(planted_run, [], folds=[[red, red, NONE, green, red], [red, green, green, green, NONE]])
    reliability = causal.reliability()
    assert (reliability.units, reliability.agree) == (3, 2)
    assert causal.half(1).names() == ["red", "green", "green", "green", "none"]
    first, second = [red, red, green], [red, green, green]  # the units labelled on both halves: 0, 1, 3
    shuffled = [sum(a == second[p[i]] for i, a in enumerate(first)) / 3 for p in itertools.permutations(range(3))]
    assert reliability.chance_fraction == pytest.approx(sum(shuffled) / len(shuffled))


PLANTED_SPEC = f"{Path(__file__).with_name('planted.py')}:PlantedGenerator"


@pytest.fixture(scope="module")
def labels_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("labels") / "run"
    assert main(["dissect", "--model", PLANTED_SPEC, "--segmenter", "color", "--layers", "features", "--samples", "32",
                 "--quantile", "0.15", "--no-report", "--out", str(out)]) == 0
    return out


def test_command_writes_what_the_report_reads(labels_run, capsys):
    assert main(["causal-labels", str(labels_run), "--model", PLANTED_SPEC,
                 "--layer", "features", "--samples", "8", "--batch-size", "4",
                 "--definition", "lift", "--no-report"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}: " in out for name in DEFINITIONS) and "| features | lift |" in out
    record = json.loads((labels_run / "causal" / "features" / "labels.json").read_text())
    assert record["definition"] == "lift" and set(record["by_definition"]) == set(DEFINITIONS)
    with Snapshot(labels_run) as files:
        causal = load_causal(files, read_json(labels_run / "dissect.json"))
    assert causal is not None
    assert [causal.labels["features"][u]["concept"] for u in PLANTED] == list(PLANTED.values())
    assert causal.labels["features"][3]["concept"] is None
    assert causal.agreement["features"]["quantile"]["fraction"] == 1.0


@pytest.mark.parametrize("argv, message", [
    (["--samples", "1"], "--samples must be at least 2"),
    (["--layers", "features,features"], "names features more than once"),
    (["--layer", "features", "--layers", "features"], "not both"),
    (["--layers", "layer9"], "'layer9' was not dissected"),
])
def test_command_refuses_bad_flags_in_one_line(labels_run, capsys, argv, message):
    assert main(["causal-labels", str(labels_run), "--model", PLANTED_SPEC, *argv, "--no-report"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error
    with pytest.raises(SystemExit):
        main(["causal-labels", str(labels_run), "--model", PLANTED_SPEC, "--definition", "area"])
    assert "invalid choice: 'area'" in capsys.readouterr().err


def test_bad_input_is_refused_in_one_line(planted_run):
    generator, segmenter = PlantedGenerator(), ColorSegmenter()
    assert tuple(DEFINITIONS) == cli_labels.DEFINITIONS
    with pytest.raises(ConfigError, match="samples must be at least 2"):
        causal_labels(generator, segmenter, planted_run, "features", samples=1, progress=False)
    with pytest.raises(ConfigError, match=r"layer9.*features"):
        causal_labels(generator, segmenter, planted_run, "layer9", progress=False)
    with pytest.raises(ConfigError, match="out of range"):
        causal_labels(generator, segmenter, planted_run, "features", units=[7], progress=False)
    with pytest.raises(ConfigError, match="alpha"):
        causal_labels(generator, segmenter, planted_run, "features", alpha=0.0, progress=False)
    other = ColorSegmenter()
    other.concepts = other.concepts[:3]
    with pytest.raises(ConfigError, match="segmenter"):
        causal_labels(generator, other, planted_run, "features", progress=False)
    causal = hand_made(planted_run, [0] * 5)
    with pytest.raises(ConfigError, match="no labelling rule 'best'"):
        rule_agreement(planted_run, causal, ["best"])
    with pytest.raises(ConfigError, match="definition must be one of share, relative, lift; got 'area'"):
        causal.labels("area")
