"""The output-range policy (core/ranges.py): overshoot is clipped and counted, never a failure partway; wild
values are refused in the first batches with the figures; NaN stops at once wherever it appears. The counts
in dissect.json, run.json and the report are checked against a brute-force count over the same images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gandissect.core.ranges import STRICT_BATCHES, WILD, RangeCounts, RangeError, clip_to_range
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import ColorSegmenter
from gandissect.dissection import DissectConfig, Dissector
from gandissect.engine.samplepass import NonFiniteError
from planted import PlantedGenerator

SAMPLES, BATCH = 48, 8
CONFIG = {"layers": ["features"], "samples": SAMPLES, "batch_size": BATCH, "quantile": 0.15}
IOU_SEED = DissectConfig(layers=["x"]).iou_seed


def late(samples: int = SAMPLES) -> tuple[float, list[int]]:
    """A cut on z[:, 0] that no sample of the first STRICT_BATCHES batches of the IoU set passes, and the
    samples that pass it (all in later batches)."""
    z = sample_z(PlantedGenerator(), IOU_SEED, range(samples))
    cut = float(z[:STRICT_BATCHES * BATCH, 0].max()) + 1e-3
    return cut, [i for i in range(samples) if float(z[i, 0]) > cut]


class Overshoots(PlantedGenerator):
    """Images 1.3 times the planted ones: moderately outside [-1, 1]."""

    def forward(self, z):
        return super().forward(z) * 1.3


class WildLater(PlantedGenerator):
    """Planted images, but 10 times larger (or NaN) for the samples past `late()`'s cut: only in later batches."""

    def __init__(self, bad: float = 10.0) -> None:
        super().__init__()
        self.cut, self.bad = late()[0], bad

    def forward(self, z):
        images = super().forward(z)
        wild = (z[:, 0] > self.cut)[:, None, None, None]
        return torch.where(wild, images * self.bad, images)


def dissect(out: Path, generator) -> dict:
    d = Dissector(generator, ColorSegmenter(), DissectConfig(**CONFIG), out, progress=False)
    return d.finish(d.run())


def brute_force(generator) -> dict:
    """Image values outside [-1, 1] over the IoU set, one sample at a time."""
    values = samples = 0
    largest = 0.0
    with torch.no_grad():
        for i in range(SAMPLES):
            images = generator(sample_z(generator, IOU_SEED, [i]))
            outside = int(((images < -1) | (images > 1)).sum())
            values, samples = values + outside, samples + (outside > 0)
            largest = max(largest, float(images.abs().max()) - 1)
    return {"clipped_values": values, "clipped_samples": samples, "largest_overshoot": largest}


def test_overshoot_is_clipped_and_counted_everywhere_it_is_reported(tmp_path):
    document = dissect(tmp_path / "run", Overshoots())
    counts, truth = document["output_range"], brute_force(Overshoots())
    assert counts["clipped_values"] == truth["clipped_values"] > 0
    assert counts["clipped_samples"] == truth["clipped_samples"]
    assert counts["largest_overshoot"] == pytest.approx(truth["largest_overshoot"], abs=1e-5)
    assert counts["of_samples"] == SAMPLES and counts["of_values"] == SAMPLES * 3 * 32 * 32
    assert json.loads((tmp_path / "run" / "run.json").read_text())["output_range"] == counts


def test_wild_values_in_later_batches_are_clipped_not_fatal(tmp_path):
    _, wild = late()
    assert wild and min(wild) >= STRICT_BATCHES * BATCH  # the planted wild samples are all in later batches
    document = dissect(tmp_path / "run", WildLater())
    assert document["output_range"]["clipped_samples"] >= len(wild)
    assert document["output_range"]["largest_overshoot"] > 5


def test_wild_values_in_the_first_batches_are_refused_with_the_figures(tmp_path):
    class Wild(PlantedGenerator):
        def forward(self, z):
            return super().forward(z) * 4

    with pytest.raises(RangeError, match=r"images lie in \[-\d.*\], outside its declared range \[-1, 1\] by more "
                                         rf"than {WILD:g} of its width"):
        dissect(tmp_path / "run", Wild())
    assert not (tmp_path / "run").exists()


def test_nan_in_a_later_batch_stops_at_once_naming_the_samples(tmp_path):
    _, wild = late()
    with pytest.raises(NonFiniteError, match=rf"samples \[{wild[0]}\b"):
        dissect(tmp_path / "run", WildLater(bad=float("nan")))


def test_clip_to_range_and_counts_merge_like_one_pass():
    images = torch.tensor([[-1.5, 0.0, 1.2, 0.3], [0.1, 0.2, -0.3, 0.9]]).reshape(2, 1, 2, 2)
    clipped, per_sample, largest = clip_to_range(images, -1.0, 1.0)
    assert clipped.min() == -1 and clipped.max() == 1 and per_sample.tolist() == [2, 0] and largest == 0.5
    whole, first, second = RangeCounts(-1, 1), RangeCounts(-1, 1), RangeCounts(-1, 1)
    whole.add(per_sample, 4, largest)
    first.add(per_sample[:1], 4, largest)
    second.add(per_sample[1:], 4, 0.0)
    first.merge(second)
    assert first.to_json() == whole.to_json() == {"declared": [-1.0, 1.0], "clipped_values": 2, "of_values": 8,
                                                  "clipped_samples": 1, "of_samples": 2, "largest_overshoot": 0.5}
    with pytest.raises(ValueError, match="different low"):
        first.merge(RangeCounts(0, 1))
