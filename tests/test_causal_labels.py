"""Causal labels against a planted model whose answer is known, a per-sample brute force, and hand-made
agreement examples."""

from __future__ import annotations

import json

import pytest
import torch

from gandissect.causal.interventions import insertion_values
from gandissect.causal.labels import (
    NONE,
    Agreement,
    CausalLabels,
    agreement,
    agreement_table,
    causal_labels,
    distribution_table,
    rule_agreement,
)
from gandissect.core.edits import UnitEdit
from gandissect.core.errors import ConfigError
from gandissect.core.hooks import Trace
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import ColorSegmenter
from gandissect.dissection import RULES, Dissection
from planted import DISTRACTORS, PLANTED, PlantedGenerator


@pytest.mark.parametrize("insert", ["shifted", "inactive"])
def test_planted_units_draw_their_colours_and_noise_units_draw_nothing(planted_run, insert):
    causal = causal_labels(PlantedGenerator(), ColorSegmenter(), planted_run, "features", samples=16,
                           insert=insert, progress=False)
    names = causal.names()
    for unit, colour in PLANTED.items():
        assert names[unit] == colour, (insert, names)
        assert float(causal.labels()[0][unit]) > 0.5
    for unit in DISTRACTORS:  # the painter never reads them: no pixel changes at all
        assert names[unit] == "none"
        assert float(causal.effect[unit].abs().max()) == 0.0
    assert causal.distribution() == {"none": 2, "blue": 1, "green": 1, "red": 1}
    assert causal.reliability().fraction == 1.0
    document = json.loads(json.dumps(causal.to_json(), allow_nan=False))
    assert [u["label"] for u in document["units"]] == names


def pixel_counts(segmenter: ColorSegmenter, image: torch.Tensor) -> torch.Tensor:
    labels = segmenter.segment(image)[0, 0]
    return torch.stack([(labels == c).sum() for c in range(len(segmenter.concepts))]).double()


@pytest.mark.parametrize("insert", ["shifted", "inactive"])
def test_batched_counts_equal_a_per_sample_brute_force(planted_run, insert):
    generator, segmenter = PlantedGenerator(), ColorSegmenter()
    units, samples = [1, 0, 3], 6
    causal = causal_labels(generator, segmenter, planted_run, "features", samples=samples, seed=5, batch_size=4,
                           group=2, units=units, insert=insert, progress=False)
    values = insertion_values(planted_run, "features", quantile=1 - planted_run.config.quantile / 2)
    assert torch.equal(causal.values, values)
    threshold = planted_run.layers["features"].thresholds
    num = len(segmenter.concepts)
    removed, gained = torch.zeros(2, 5, num, dtype=torch.float64), torch.zeros(2, 5, num, dtype=torch.float64)
    area, pixels = torch.zeros(2, num, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    for sample in range(samples):
        fold = sample % 2
        z = sample_z(generator, 5, [sample])
        with Trace(generator, ["features"]) as trace:
            before = pixel_counts(segmenter, generator(z))
        area[fold] += before
        pixels[fold] += 32 * 32
        for unit in units:
            active = trace["features"][0, unit] > threshold[unit]
            elsewhere = ~active if insert == "inactive" else torch.roll(active, 4, 1) & ~active
            with Trace(generator, edit={"features": UnitEdit.ablate([unit], region=active.float())}):
                ablated = pixel_counts(segmenter, generator(z))
            edit = UnitEdit.insert([unit], values[[unit]], region=elsewhere.float())
            with Trace(generator, edit={"features": edit}):
                inserted = pixel_counts(segmenter, generator(z))
            removed[fold, unit] += (before - ablated).clamp(min=0)
            gained[fold, unit] += (inserted - before).clamp(min=0)
    assert torch.equal(causal.removed, removed)
    assert torch.equal(causal.gained, gained)
    assert torch.equal(causal.area, area)
    assert torch.equal(causal.pixels, pixels)
    assert float(removed[:, 1].sum()) > 0 and float(gained[:, 1].sum()) > 0  # the check is not vacuous
    floor = (area.sum(0)).clamp(min=0.01 * float(pixels.sum()))
    assert torch.allclose(causal.effect, ((removed.sum(0) + gained.sum(0)) / floor).float())
    assert causal.names()[2] == causal.names()[4] == "none"  # not measured


def test_agreement_on_a_hand_made_example():
    causal = torch.tensor([0, 1, NONE, 2, 1])
    rule = torch.tensor([0, 2, 1, 2, 1])
    interpretable = torch.tensor([True, True, True, False, True])
    result = agreement("r", causal, rule, interpretable)
    assert result == Agreement("r", units=4, agree=3, interpretable_units=3, interpretable_agree=2)
    assert result.fraction == 0.75 and result.interpretable_fraction == pytest.approx(2 / 3)
    empty = agreement("r", torch.full((3,), NONE), rule[:3], interpretable[:3])
    assert empty.units == 0 and empty.fraction != empty.fraction  # NaN
    assert empty.to_json()["fraction"] is None
    table = agreement_table({"a": {"r": result}, "b": {"r": Agreement("r", 2, 1, 0, 0)}})
    assert table.splitlines()[2] == "| r | 0.75 (3/4) | 0.67 (2/3) | 0.50 (1/2) | - (0/0) | 0.67 (4/6) | 0.67 (2/3) |"
    with pytest.raises(ConfigError, match="same shape"):
        agreement("r", causal, rule[:3], interpretable)


def hand_made(result: Dissection, labels: list[int], folds: list[list[int]] | None = None) -> CausalLabels:
    """Causal labels whose unit u has effect 1 on concept labels[u] (none for -1), fold by fold."""
    concepts = list(result.concepts)
    folds = folds or [labels, labels]
    width = len(folds[0])
    removed = torch.zeros(2, width, len(concepts), dtype=torch.float64)
    for f, fold in enumerate(folds):
        for unit, concept in enumerate(fold):
            if concept != NONE:
                removed[f, unit, concept] = 100.0
    area = torch.full((2, len(concepts)), 100.0, dtype=torch.float64)
    return CausalLabels("features", concepts, removed, torch.zeros_like(removed), area,
                        torch.tensor([1000.0, 1000.0], dtype=torch.float64), torch.ones(width), 4, 3, 0.01,
                        0.05)


def test_rule_agreement_reads_every_rule_of_the_run(planted_run):
    red, green, blue = (planted_run.concepts.index(c) for c in ("red", "green", "blue"))
    causal = hand_made(planted_run, [red, blue, NONE, green, red])
    assert causal.names() == ["red", "blue", "none", "green", "red"]
    outcome = rule_agreement(planted_run, causal)
    assert list(outcome) == list(RULES)
    labels = causal.labels()[1].tolist()
    for rule, measured in outcome.items():
        named = planted_run.layers["features"].rules[rule].labels()[1].tolist()
        flags = planted_run.interpretable("features", rule)
        units = [u for u in range(5) if labels[u] != NONE]
        same = [u for u in units if named[u] == labels[u]]
        interpretable = [u for u in units if bool(flags[u, named[u]])]
        assert (measured.units, measured.agree) == (len(units), len(same)), rule
        assert measured.interpretable_units == len(interpretable), rule
        assert measured.interpretable_agree == len([u for u in same if u in interpretable]), rule
    assert outcome["quantile"].agree >= 1  # the planted red unit 0 is labelled red by the quantile rule
    assert set(rule_agreement(planted_run, causal, ["iqr"])) == {"iqr"}
    document = json.loads(json.dumps(causal.to_json(outcome), allow_nan=False))  # the report's labels.json
    assert document["agreement"]["quantile"]["fraction"] == outcome["quantile"].fraction
    assert [(u["unit"], u["label"]) for u in document["units"]][1:3] == [(1, "blue"), (2, "none")]
    assert "| features | 5 | red: 2, blue: 1, green: 1, none: 1 |" in distribution_table({"features": causal})


def test_split_half_reliability_counts_units_labelled_on_both_halves(planted_run):
    red, green = planted_run.concepts.index("red"), planted_run.concepts.index("green")
    causal = hand_made(planted_run, [], folds=[[red, red, NONE, green, red], [red, green, green, green, NONE]])
    reliability = causal.reliability()
    assert (reliability.units, reliability.agree) == (3, 2)
    assert causal.half(1).names() == ["red", "green", "green", "green", "none"]


def test_bad_input_is_refused_in_one_line(planted_run):
    generator, segmenter = PlantedGenerator(), ColorSegmenter()
    with pytest.raises(ConfigError, match="insert must be one of shifted, inactive; got 'paint'"):
        causal_labels(generator, segmenter, planted_run, "features", insert="paint", progress=False)
    with pytest.raises(ConfigError, match=r"layer9.*features"):
        causal_labels(generator, segmenter, planted_run, "layer9", progress=False)
    with pytest.raises(ConfigError, match="out of range"):
        causal_labels(generator, segmenter, planted_run, "features", units=[7], progress=False)
    other = ColorSegmenter()
    other.concepts = other.concepts[:3]
    with pytest.raises(ConfigError, match="segmenter"):
        causal_labels(generator, other, planted_run, "features", progress=False)
    with pytest.raises(ConfigError, match="no labelling rule 'best'"):
        rule_agreement(planted_run, hand_made(planted_run, [0] * 5), ["best"])
