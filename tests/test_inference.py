"""Intervals, p-values and multiple-testing corrections against brute force and textbook values."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from gandissect.core.inference import (
    adjacent_separation,
    benjamini_hochberg,
    holm,
    paired_estimate,
    ratio_estimate,
    t_critical,
    t_two_sided_p,
    top_set_stability,
)


@pytest.mark.parametrize(("df", "value"), [(1, 12.706), (5, 2.571), (10, 2.228), (30, 2.042), (1000, 1.962)])
def test_t_critical_values_match_the_table(df, value):
    assert t_critical(df) == pytest.approx(value, abs=1e-3)


def test_t_tail_is_a_distribution_function():
    # against numerical integration of the t density
    df = 7.0
    density = lambda x: math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2)) * (  # noqa: E731
        1 + x * x / df) ** (-(df + 1) / 2)
    for t in (0.3, 1.0, 2.5):
        steps = 20000
        width = t / steps
        inside = sum(density((i + 0.5) * width) for i in range(steps)) * width
        assert t_two_sided_p(t, df) == pytest.approx(1 - 2 * inside, abs=1e-6)
    assert t_two_sided_p(0.0, df) == pytest.approx(1.0)
    assert math.isnan(t_two_sided_p(1.0, 0))


def bootstrap_interval(statistic, columns: list[torch.Tensor], draws: int, seed: int) -> tuple[float, float]:
    generator = torch.Generator().manual_seed(seed)
    n = columns[0].shape[0]
    values = []
    for _ in range(draws):
        pick = torch.randint(0, n, (n,), generator=generator)
        values.append(float(statistic(*(c[pick] for c in columns))))
    values.sort()
    return values[int(0.025 * draws)], values[int(0.975 * draws) - 1]


def test_paired_interval_agrees_with_a_brute_force_bootstrap():
    generator = torch.Generator().manual_seed(11)
    d = torch.distributions.Gamma(2.0, 20.0).sample((400,)) - 0.05  # skewed per-sample differences
    d = d + 0.01 * torch.randn(400, generator=generator)
    e = paired_estimate(d[:, None])
    low, high = bootstrap_interval(lambda x: x.double().mean(), [d], 4000, 0)
    width = high - low
    assert float(e.mean[0]) == pytest.approx(float(d.double().mean()))
    assert float(e.low[0]) == pytest.approx(low, abs=0.1 * width)
    assert float(e.high[0]) == pytest.approx(high, abs=0.1 * width)
    assert float(e.se[0]) == pytest.approx(float(d.double().std()) / 20, rel=1e-9)


def test_ratio_interval_agrees_with_a_brute_force_bootstrap():
    generator = torch.Generator().manual_seed(3)
    before = torch.rand(300, generator=generator) * 100
    after = before * (0.4 + 0.3 * torch.rand(300, generator=generator))
    e = ratio_estimate(after[:, None], before[:, None])
    low, high = bootstrap_interval(lambda a, b: a.double().sum() / b.double().sum(), [after, before], 4000, 1)
    width = high - low
    assert float(e.mean[0]) == pytest.approx(float(after.double().sum() / before.double().sum()))
    assert float(e.low[0]) == pytest.approx(low, abs=0.15 * width)
    assert float(e.high[0]) == pytest.approx(high, abs=0.15 * width)
    removed = e.shifted(1.0, -1.0)
    assert float(removed.mean[0]) == pytest.approx(1 - float(e.mean[0]))
    assert float(removed.low[0]) == pytest.approx(1 - float(e.high[0]))


def test_missing_samples_are_left_out_per_column():
    d = torch.tensor([[1.0, 2.0], [float("nan"), 4.0], [3.0, float("nan")], [5.0, 6.0]])
    e = paired_estimate(d)
    alone = [paired_estimate(torch.tensor([[1.0], [3.0], [5.0]])), paired_estimate(torch.tensor([[2.0], [4.0], [6.0]]))]
    for column, single in enumerate(alone):
        for field in ("mean", "se", "low", "high", "p", "n"):
            assert float(getattr(e, field)[column]) == pytest.approx(float(getattr(single, field)[0]))


def test_zero_spread_is_no_evidence_unless_the_mean_moves():
    e = paired_estimate(torch.tensor([[0.0, 0.5], [0.0, 0.5], [0.0, 0.5]]))
    assert e.p.tolist() == [1.0, 0.0]
    assert e.low.tolist() == e.high.tolist() == [0.0, 0.5]


def brute_holm(p: list[float]) -> list[float]:
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - k) * p[i]))
        out[i] = running
    return out


def brute_bh(p: list[float]) -> list[float]:
    m = len(p)
    return [min(min(1.0, p[j] * m / sum(p[k] <= p[j] for k in range(m))) for j in range(m) if p[j] >= p[i])
            for i in range(m)]


def test_corrections_equal_their_definitions():
    generator = torch.Generator().manual_seed(5)
    for _ in range(20):
        p = torch.rand(9, generator=generator) ** 3
        assert holm(p).tolist() == pytest.approx(brute_holm(p.tolist()))
        assert benjamini_hochberg(p).tolist() == pytest.approx(brute_bh(p.tolist()))
    with_nan = torch.tensor([0.01, float("nan"), 0.02])
    assert holm(with_nan)[[0, 2]].tolist() == pytest.approx(brute_holm([0.01, 0.02]))
    assert math.isnan(float(holm(with_nan)[1]))


def test_holm_keeps_the_family_wise_error_rate_on_null_data():
    generator = torch.Generator().manual_seed(8)
    families, hits = 400, 0
    for _ in range(families):
        d = torch.randn(30, 16, generator=generator)  # 16 null units, 30 samples each
        hits += bool((holm(paired_estimate(d).p) < 0.05).any())
    assert hits / families <= 0.05 + 0.025  # nominal 5%, plus three binomial standard errors


def test_adjacent_separation_is_the_paired_difference_of_neighbours():
    generator = torch.Generator().manual_seed(2)
    d = torch.randn(50, 4, generator=generator) + torch.tensor([3.0, 0.0, 1.0, 0.9])
    sep = adjacent_separation(d, [0, 2, 3, 1])
    expected = paired_estimate(torch.stack([d[:, 0] - d[:, 2], d[:, 2] - d[:, 3], d[:, 3] - d[:, 1]], 1))
    assert sep.mean.tolist() == pytest.approx(expected.mean.tolist())
    assert float(sep.low[0]) > 0 and float(sep.low[1]) < 0 < float(sep.high[1])


def test_top_set_stability_is_seeded_and_counts_resamples():
    generator = torch.Generator().manual_seed(4)
    clear = torch.randn(40, 6, generator=generator) * 0.1 + torch.tensor([5.0, 4.0, 0, 0, 0, 0])
    share, membership = top_set_stability(clear, 2, draws=100, seed=1)
    assert share == 1.0 and membership.tolist() == [1, 1, 0, 0, 0, 0]
    noisy = torch.randn(40, 6, generator=generator)
    share, membership = top_set_stability(noisy, 2, draws=200, seed=3)
    again, membership_again = top_set_stability(noisy, 2, draws=200, seed=3)
    assert share == again and torch.equal(membership, membership_again)
    assert share < 0.9 and float(membership.sum()) == pytest.approx(2.0)
    # against a brute-force loop over the same resamples
    g = torch.Generator().manual_seed(3)
    picks = torch.randint(0, 40, (200, 40), generator=g)
    reference = set(noisy.double().mean(0).topk(2).indices.tolist())
    same = sum(set(noisy.double()[row].mean(0).topk(2).indices.tolist()) == reference for row in picks)
    assert share == pytest.approx(same / 200)


def test_all_subsets_of_small_samples_give_finite_estimates():
    values = torch.tensor([0.0, 1.0, 3.0])
    for n in (2, 3):
        for subset in itertools.combinations(values.tolist(), n):
            e = paired_estimate(torch.tensor(subset)[:, None])
            assert math.isfinite(float(e.low[0])) and math.isfinite(float(e.high[0]))
    one = paired_estimate(torch.tensor([[2.0]]))
    assert math.isnan(float(one.se[0])) and math.isnan(float(one.p[0]))
