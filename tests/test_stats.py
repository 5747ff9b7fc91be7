"""Streaming statistics against brute-force computations on small random data."""

from __future__ import annotations

import math

import pytest
import torch

from gandissect.core import kernels
from gandissect.core.features import upsample
from gandissect.core.levels import LevelCounts
from gandissect.core.stats import ConditionalMean, Moments, TopK, UnitQuantiles, concept_coverage
from gandissect.engine.storage import load_statistics, save_statistics


def random_batch(seed: int, n: int = 6, units: int = 5, size: int = 8, concepts: int = 4, channels: int = 2):
    g = torch.Generator().manual_seed(seed)
    acts = torch.relu(torch.randn(n, units, size, size, generator=g))
    acts = (acts * 4).round() / 4  # many ties, and exact zeros
    labels = torch.randint(-1, concepts, (n, channels, size, size), generator=g)
    return acts, labels


def brute_counts(acts: torch.Tensor, labels: torch.Tensor, levels: torch.Tensor, concepts: int):
    """n11[u, c, l] = pixels with act > level and concept c present in any channel; n1[u, l]; nc[c]."""
    units, num_levels = levels.shape
    present = torch.stack([(labels == c).any(1) for c in range(concepts)], 1)  # (N, C, H, W)
    n11 = torch.zeros(units, concepts, num_levels, dtype=torch.long)
    n1 = torch.zeros(units, num_levels, dtype=torch.long)
    for u in range(units):
        for j in range(num_levels):
            above = acts[:, u] > levels[u, j]
            n1[u, j] = above.sum()
            for c in range(concepts):
                n11[u, c, j] = (above & present[:, c]).sum()
    return n11, n1, present.sum((0, 2, 3)), acts.shape[0] * acts.shape[2] * acts.shape[3]


def brute_iqr(n11: int, n1: int, nc: int, total: int) -> float:
    cells = [n11, n1 - n11, nc - n11, total - n1 - nc + n11]
    p = [c / total for c in cells]

    def h(ps):
        return -sum(x * math.log(x) for x in ps if x > 0)

    joint = h(p)
    pa, pc = (cells[0] + cells[1]) / total, (cells[0] + cells[2]) / total
    mutual = h([pa, 1 - pa]) + h([pc, 1 - pc]) - joint
    return mutual / joint if joint > 0 else 0.0


BINS = 32


@pytest.fixture
def grid() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A histogram over (0, 2] of 32 bins per unit (edges on multiples of 1/16: ties with the data's
    multiples of 1/4), and 9 level edges per unit, some repeated."""
    g = torch.Generator().manual_seed(7)
    low, high = torch.zeros(5, dtype=torch.float64), torch.full((5,), 2.0, dtype=torch.float64)
    edges = torch.cat([torch.tensor([0, 4, 8, 8, 12, 24]).expand(5, -1), torch.randint(0, BINS + 1, (5, 3),
                                                                                       generator=g)], 1)
    return low, high, edges


def counts_of(grid, folds=1) -> LevelCounts:
    low, high, edges = grid
    return LevelCounts(low, high, BINS, edges, 4, folds)


def test_level_counts_equal_brute_force(grid):
    acts, labels = random_batch(0)
    labels[:, 1] = torch.where(torch.rand(labels[:, 1].shape) < 0.3, labels[:, 0], labels[:, 1])  # repeats
    stat = counts_of(grid)
    stat.add(acts[:3], labels[:3])
    stat.add(acts[3:], labels[3:])
    levels = stat.levels
    assert torch.equal(levels, grid[2].sort(1).values.double() / 16)
    n11, n1, nc, total = brute_counts(acts, labels, levels, 4)
    got11, got10, got01, _ = stat.tables()
    assert torch.equal(got11.long(), n11)
    assert torch.equal((got11 + got10).long(), n1[:, None, :].expand_as(n11))
    assert torch.equal((got11 + got01).long()[0, :, 0], nc)
    assert int(stat.pixels.sum()) == total
    union = n1[:, None, :] + nc[None, :, None] - n11
    assert torch.equal(stat.iou(), torch.where(union > 0, n11.double() / union.clamp(min=1).double(), 0.0))


def test_folds_split_the_counts_by_sample(grid):
    acts, labels = random_batch(8, n=8)
    stat = counts_of(grid, folds=2)
    folds = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    stat.add(acts, labels, folds)
    for fold in (0, 1):
        alone = counts_of(grid)
        alone.add(acts[folds == fold], labels[folds == fold])
        for mine, theirs in zip(stat.tables(fold), alone.tables(), strict=True):
            assert torch.equal(mine, theirs)
    whole = counts_of(grid)
    whole.add(acts, labels)
    assert all(torch.equal(a, b) for a, b in zip(stat.tables(), whole.tables(), strict=True))


def test_unknown_pixels_are_left_out(grid):
    acts, labels = random_batch(9)
    unknown = torch.rand(labels.shape[0], 1, *labels.shape[2:]) < 0.3
    marked = torch.where(unknown.expand_as(labels) & (torch.arange(2)[None, :, None, None] == 1), -2, labels)
    stat = counts_of(grid)
    stat.add(acts, marked)
    keep = ~unknown[:, 0]
    expected = counts_of(grid)
    flat_acts = acts.permute(0, 2, 3, 1)[keep].T[None, :, :, None]  # (1, U, pixels, 1)
    flat_labels = labels.permute(0, 2, 3, 1)[keep].T[None, :, :, None]
    expected.add(flat_acts, flat_labels)
    assert all(torch.equal(a, b) for a, b in zip(stat.tables(), expected.tables(), strict=True))
    assert int(stat.pixels.sum()) == int(keep.sum())


def test_iqr_argmax_equals_brute_force_search(grid):
    acts, labels = random_batch(1, n=10)
    stat = counts_of(grid)
    stat.add(acts, labels)
    levels = stat.levels
    n11, n1, nc, total = brute_counts(acts, labels, levels, 4)
    iqr = stat.information_quality_ratio()
    for u in range(levels.shape[0]):
        for c in range(4):
            scores = [brute_iqr(int(n11[u, c, j]), int(n1[u, j]), int(nc[c]), total) for j in range(levels.shape[1])]
            assert iqr[u, c].tolist() == pytest.approx(scores, abs=1e-12)


def test_level_counts_merge_of_shards_equals_whole(grid):
    acts, labels = random_batch(2, n=9)
    whole = counts_of(grid, folds=2)
    whole.add(acts, labels, torch.arange(9) % 2)
    shards = [counts_of(grid, folds=2) for _ in range(3)]
    for i, shard in enumerate(shards):
        shard.add(acts[i::3], labels[i::3], torch.arange(i, 9, 3) % 2)
    shards[0].merge(shards[1])
    shards[0].merge(shards[2])
    for name in LevelCounts.fields:
        assert torch.equal(getattr(shards[0], name), getattr(whole, name)), name
    low, high, edges = grid
    with pytest.raises(ValueError, match="different edges"):
        whole.merge(LevelCounts(low, high, BINS, (edges + 1).clamp(max=BINS), 4, folds=2))


def test_labels_must_align_with_activations(grid):
    acts, labels = random_batch(3)
    with pytest.raises(ValueError, match="do not align"):
        counts_of(grid).add(acts, labels[:4])


def test_feature_maps_are_counted_as_upsampled_to_the_labels(grid):
    acts, labels = random_batch(12)
    small = acts[:, :, ::2, ::2]
    direct, upsampled = counts_of(grid), counts_of(grid)
    direct.add(small, labels)
    upsampled.add(upsample(small, (8, 8)), labels)
    assert all(torch.equal(a, b) for a, b in zip(direct.tables(), upsampled.tables(), strict=True))
    histogram, reference = UnitQuantiles(grid[0], grid[1], BINS), UnitQuantiles(grid[0], grid[1], BINS)
    histogram.add(small, (8, 8))
    reference.add(upsample(small, (8, 8)))
    assert torch.equal(histogram.counts, reference.counts)


def test_moments_and_conditional_means_equal_brute_force_and_merge():
    acts, labels = random_batch(10, n=8)
    moments, means = Moments(5), ConditionalMean(5, 4)
    for part in (slice(0, 3), slice(3, 8)):
        moments.add(acts[part])
        means.add(acts[part, :, ::2, ::2], labels[part])  # features on a 4x4 grid, labels at 8x8
    values = acts.transpose(0, 1).reshape(5, -1).double()
    assert torch.allclose(moments.mean, values.mean(1), atol=1e-12)
    assert torch.allclose(moments.variance(), values.var(1, unbiased=False), atol=1e-12)
    features = acts[:, :, ::2, ::2].double()
    for c in range(4):
        cover = torch.nn.functional.avg_pool2d((labels == c).any(1, keepdim=True).double(), 2)
        expected = (features * cover).sum((0, 2, 3)) / cover.sum()
        assert torch.allclose(means.mean()[:, c], expected, atol=1e-12)
    halves = [Moments(5), Moments(5)]
    halves[0].add(acts[:5])
    halves[1].add(acts[5:])
    halves[0].merge(halves[1])
    assert torch.allclose(halves[0].mean, moments.mean, atol=1e-12)
    assert torch.allclose(halves[0].m2, moments.m2, atol=1e-10)


def test_quantile_rank_error_is_small_and_merge_is_exact():
    g = torch.Generator().manual_seed(3)
    values = torch.relu(torch.randn(40, 3, 32, 32, generator=g) * torch.tensor([1.0, 3.0, 0.2])[None, :, None, None])
    values[:, 2] = torch.distributions.Exponential(2.0).sample((40, 32, 32))
    whole = UnitQuantiles.calibrate(values[:4], bins=4096)
    whole.add(values)
    q = torch.tensor([0.5, 0.9, 0.99, 0.999])
    estimate = whole.quantiles(q)
    flat = values.transpose(0, 1).reshape(3, -1)
    for u in range(3):
        for i, target in enumerate(q.tolist()):
            below = (flat[u] < estimate[u, i]).double().mean().item()
            at_or_below = (flat[u] <= estimate[u, i]).double().mean().item()
            error = 0.0 if below <= target <= at_or_below else min(abs(below - target), abs(at_or_below - target))
            assert error <= 1e-3, (u, target, error)
    shards = [UnitQuantiles(whole.low, whole.high, 4096) for _ in range(2)]
    shards[0].add(values[:25])
    shards[1].add(values[25:])
    shards[0].merge(shards[1])
    assert torch.equal(shards[0].counts, whole.counts)
    assert torch.equal(shards[0].quantiles(q), estimate)


def test_quantiles_stay_within_observed_range():
    values = torch.rand(2, 2, 4, 4)
    stat = UnitQuantiles.calibrate(values)
    stat.add(values)
    extremes = stat.quantiles([0.0, 1.0])
    flat = values.transpose(0, 1).reshape(2, -1)
    assert torch.allclose(extremes[:, 0].float(), flat.min(1).values)
    assert torch.allclose(extremes[:, 1].float(), flat.max(1).values)


def test_topk_equals_sorting_and_merges():
    g = torch.Generator().manual_seed(4)
    scores = (torch.rand(30, 4, generator=g) * 5).round()  # ties broken by lower sample index
    whole = TopK(4, 5)
    whole.add(scores, torch.arange(30))
    shards = [TopK(4, 5), TopK(4, 5)]
    shards[0].add(scores[1::2], torch.arange(1, 30, 2))
    shards[1].add(scores[::2], torch.arange(0, 30, 2))
    shards[1].merge(shards[0])
    for u in range(4):
        expected = sorted(range(30), key=lambda i: (-float(scores[i, u]), i))[:5]
        assert whole.indices[u].tolist() == expected
        assert shards[1].indices[u].tolist() == expected


def test_save_and_load_round_trip(tmp_path, grid):
    acts, labels = random_batch(5)
    counts = counts_of(grid, folds=2)
    counts.add(acts, labels, torch.arange(6) % 2)
    quantiles = UnitQuantiles.calibrate(acts)
    quantiles.add(acts)
    top = TopK(5, 3)
    top.add(acts.flatten(2).amax(2), torch.arange(6))
    save_statistics(tmp_path / "s.safetensors", {"a": counts, "b": quantiles, "c": top}, {"note": "x"})
    loaded, meta = load_statistics(tmp_path / "s.safetensors")
    assert meta == {"note": "x"}
    for name, original in {"a": counts, "b": quantiles, "c": top}.items():
        assert type(loaded[name]) is type(original)
        for field, tensor in original.state_dict().items():
            assert torch.equal(loaded[name].state_dict()[field], tensor), (name, field)


def test_point_mass_at_minimum_is_exact():
    g = torch.Generator().manual_seed(6)
    values = torch.relu(torch.randn(20, 2, 16, 16, generator=g) - 1.3)  # about 90% exact zeros
    stat = UnitQuantiles.calibrate(values[:2])
    for i in range(0, 20, 5):
        stat.add(values[i:i + 5])
    flat = values.transpose(0, 1).reshape(2, -1)
    zeros = (flat == 0).double().mean(1)
    assert torch.equal(stat.counts[:, 0], (flat == 0).sum(1))  # the zeros, alone in slot 0
    for u in range(2):
        for target in (0.5, float(zeros[u]) - 0.01, float(zeros[u]) + 0.02, 0.99):
            value = float(stat.quantiles([target])[u, 0])
            below = (flat[u] < value).double().mean().item()
            at_or_below = (flat[u] <= value).double().mean().item()
            assert below - 1e-3 <= target <= at_or_below + 1e-3, (u, target, value, below, at_or_below)
    split = [UnitQuantiles(stat.low, stat.high, stat.bins) for _ in range(2)]
    split[0].add(values[:7])
    split[1].add(values[7:])
    split[1].merge(split[0])
    assert torch.equal(split[1].counts, stat.counts)


@pytest.mark.skipif(not kernels.available(), reason="numba is not installed")
def test_fused_kernels_equal_the_pytorch_path(grid, monkeypatch):
    g = torch.Generator().manual_seed(11)
    acts = torch.relu(torch.randn(7, 5, 3, 4, generator=g)) * 1.5  # upsampled to the labels' 8x8 on the way
    acts[:, :, :2] = (acts[:, :, :2] * 16).round() / 16  # values on histogram edges, and in flat regions
    acts[0, 0, 0, 0] = 9.0  # above the histogram's range
    labels = torch.randint(-1, 4, (7, 2, 8, 8), generator=g)
    labels[2, :, 3:5] = -2
    labels[3, 0, 1, 1], labels[3, 1, 1, 1] = -2, 2  # unknown in one channel, a concept in the other
    folds = torch.arange(7) % 2

    def fill():
        quantiles = UnitQuantiles(grid[0], grid[1], BINS)
        quantiles.add(acts, (8, 8))
        counts = counts_of(grid, folds=2)
        counts.add(acts, labels, folds)
        slots = LevelCounts.slot_histogram(grid[0], grid[1], BINS, 4, 2)
        slots.add(acts, labels, folds)
        together = UnitQuantiles(grid[0], grid[1], BINS)
        with_slots = LevelCounts.slot_histogram(grid[0], grid[1], BINS, 4, 2)
        with_slots.add(acts[:3], labels[:3], folds[:3], quantiles=together)  # one pass over the values fills both
        with_slots.add(acts[3:], labels[3:], folds[3:], quantiles=together)
        for name in UnitQuantiles.fields:
            assert torch.equal(getattr(together, name), getattr(quantiles, name)), name
        for name in LevelCounts.fields:
            assert torch.equal(getattr(with_slots, name), getattr(slots, name)), name
        return quantiles, counts, slots

    for threads in (1, 2):  # the kernels run on torch's thread count and leave it as it was (they share OpenMP)
        torch.set_num_threads(threads)
        fused = fill()
        assert torch.get_num_threads() == threads
    torch.set_num_threads(1)
    monkeypatch.setattr(kernels, "numba", None)
    assert not kernels.available()
    plain = fill()
    with pytest.raises(ValueError, match="range and bins"):
        counts_of(grid).add(acts, labels, quantiles=UnitQuantiles(grid[0], grid[1] * 2, BINS))
    with pytest.raises(ValueError, match="only with a slot histogram"):
        counts_of(grid).add(acts, labels, quantiles=UnitQuantiles(grid[0], grid[1], BINS))
    for a, b in zip(fused, plain, strict=True):
        for name in type(a).fields:
            assert torch.equal(getattr(a, name), getattr(b, name)), name


@pytest.mark.parametrize("shape, size", [((5, 2, 16, 16), (4, 4)), ((4, 3, 12, 8), (3, 2)), ((3, 2, 10, 10), (4, 3))])
def test_concept_coverage_equals_pooled_one_hot_masks(shape, size):
    """Whole blocks are counted by one bincount, other grids pooled: both equal the mean of per-concept masks."""
    g = torch.Generator().manual_seed(5)
    labels = torch.randint(-2, 6, shape, generator=g)
    labels[:, 1][labels[:, 0] == 3] = 3  # a concept in two channels covers a pixel once
    masks = torch.stack([(labels == c).any(1) for c in range(6)], 1).double()
    expected = torch.nn.functional.adaptive_avg_pool2d(masks, size)
    assert torch.equal(concept_coverage(labels, 6, size), expected)
