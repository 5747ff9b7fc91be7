"""Uncertainty of causal effects measured on samples: paired means, ratio estimates, multiple testing, ranks.

Causal effects are paired: the edited and unedited (or inserted and ablated) images come from the same z, so
the per-sample difference d_i carries the effect and its spread carries the noise. Everything here takes
per-sample values (N, ...) with NaN for a missing sample (an image the segmenter could not read at all) and
works along dimension 0:

- `paired_estimate`: mean, standard error sd(d)/sqrt(n), a Student-t interval and a two-sided p-value
  against 0, per column.
- `ratio_estimate`: sum(a) / sum(b) over samples (a share of pixels pooled over samples), with the
  delta-method standard error of a ratio estimator.
- `holm`, `benjamini_hochberg`: adjusted p-values for testing many units at once (family-wise error rate,
  false discovery rate).
- `adjacent_separation`: for a ranking, whether each entry's effect is distinguishable from the next one's
  (a paired test on the same samples).
- `top_set_stability`: how often a bootstrap resample of the samples keeps the same top-k set.

The t distribution's tails come from the regularised incomplete beta function, evaluated by its continued
fraction in float64, so no SciPy is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LEVEL = 0.95


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), by Lentz's continued fraction."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _incomplete_beta(b, a, 1.0 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    value = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            value *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * value / a


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom (NaN for df < 1 or a NaN t)."""
    if not df >= 1 or math.isnan(t):
        return float("nan")
    if math.isinf(t):
        return 0.0
    return _incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def t_critical(df: float, level: float = LEVEL) -> float:
    """The t value with P(|T| <= t) = level, by bisection on the tail (NaN for df < 1)."""
    if not df >= 1:
        return float("nan")
    tail = 1.0 - level
    low, high = 0.0, 1.0
    while t_two_sided_p(high, df) > tail:
        high *= 2.0
    for _ in range(100):
        middle = (low + high) / 2.0
        if t_two_sided_p(middle, df) > tail:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


@dataclass
class Estimate:
    """Per column: the estimate, its standard error, a `level` interval [low, high], a two-sided p-value
    against 0 and the number of (non-missing) samples behind it. All tensors share one shape."""

    mean: torch.Tensor
    se: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    p: torch.Tensor
    n: torch.Tensor
    level: float = LEVEL

    def __getitem__(self, index: object) -> Estimate:
        return Estimate(self.mean[index], self.se[index], self.low[index], self.high[index], self.p[index],
                        self.n[index], self.level)

    def shifted(self, offset: float, sign: float = 1.0) -> Estimate:
        """The estimate of offset + sign * (this quantity): e.g. 1 - a ratio (the interval flips with the sign)."""
        low, high = (offset + sign * self.low, offset + sign * self.high)
        return Estimate(offset + sign * self.mean, self.se, torch.minimum(low, high), torch.maximum(low, high),
                        self.p if offset == 0 else torch.full_like(self.p, float("nan")), self.n, self.level)


def _finish(mean: torch.Tensor, se: torch.Tensor, n: torch.Tensor, level: float) -> Estimate:
    """Interval and p-value from mean, standard error and sample count (df = n - 1). A zero standard error
    gives a zero-width interval, and p = 1 for a zero mean (no evidence of an effect), 0 otherwise."""
    flat_mean, flat_se, flat_n = mean.flatten().tolist(), se.flatten().tolist(), n.flatten().tolist()
    cache: dict[float, float] = {}
    half, p = [], []
    for m, s, k in zip(flat_mean, flat_se, flat_n, strict=True):
        df = k - 1.0
        if df not in cache:
            cache[df] = t_critical(df, level)
        half.append(cache[df] * s if s > 0 else (0.0 if df >= 1 else float("nan")))
        if not df >= 1 or math.isnan(m):
            p.append(float("nan"))
        elif s > 0:
            p.append(t_two_sided_p(m / s, df))
        else:
            p.append(1.0 if m == 0 else 0.0)
    half_t = torch.tensor(half, dtype=torch.float64).view(mean.shape)
    return Estimate(mean, se, mean - half_t, mean + half_t, torch.tensor(p, dtype=torch.float64).view(mean.shape),
                    n, level)


def paired_estimate(differences: torch.Tensor, level: float = LEVEL) -> Estimate:
    """Mean of per-sample differences (N, ...) along dimension 0, NaN entries left out per column, with its
    standard error sd/sqrt(n) (sd with n - 1), a Student-t interval and a p-value against a zero mean."""
    d = differences.detach().double().cpu()
    known = ~torch.isnan(d)
    n = known.sum(0).double()
    values = torch.where(known, d, torch.zeros_like(d))
    mean = values.sum(0) / n.clamp(min=1)
    mean = torch.where(n > 0, mean, torch.full_like(mean, float("nan")))
    squares = torch.where(known, (d - mean) ** 2, torch.zeros_like(d)).sum(0)
    variance = squares / (n - 1).clamp(min=1)
    se = torch.where(n > 1, (variance / n.clamp(min=1)).sqrt(), torch.full_like(mean, float("nan")))
    return _finish(mean, se, n, level)


def ratio_estimate(numerator: torch.Tensor, denominator: torch.Tensor, level: float = LEVEL) -> Estimate:
    """sum(numerator) / sum(denominator) over samples (dimension 0; a sample missing in either is left out
    of both), with the delta-method standard error of a ratio estimator: sd(a_i - R b_i) / (sqrt(n) mean(b))."""
    a, b = numerator.detach().double().cpu(), denominator.detach().double().cpu()
    known = ~(torch.isnan(a) | torch.isnan(b))
    a, b = torch.where(known, a, torch.zeros_like(a)), torch.where(known, b, torch.zeros_like(b))
    n = known.sum(0).double()
    total = b.sum(0)
    ratio = torch.where(total > 0, a.sum(0) / total.clamp(min=1e-300), torch.full_like(total, float("nan")))
    residual = torch.where(known, a - ratio * b, torch.zeros_like(a))
    variance = (residual ** 2).sum(0) / (n - 1).clamp(min=1)
    mean_b = total / n.clamp(min=1)
    se = torch.where((n > 1) & (total > 0), variance.sqrt() / (n.clamp(min=1).sqrt() * mean_b.clamp(min=1e-300)),
                     torch.full_like(ratio, float("nan")))
    return _finish(ratio, se, n, level)


def holm(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Holm's step-down adjusted p-values along `dim` (controls the family-wise error rate); NaN p-values
    are not tests and stay NaN."""
    p = p.double().movedim(dim, -1)
    valid = ~torch.isnan(p)
    m = valid.sum(-1, keepdim=True).double()
    filled = torch.where(valid, p, torch.full_like(p, 2.0))
    sorted_p, order = filled.sort(dim=-1, stable=True)
    rank = torch.arange(p.shape[-1], dtype=torch.float64)
    adjusted = ((m - rank) * sorted_p).clamp(max=1.0).cummax(-1).values
    out = torch.empty_like(p).scatter_(-1, order, adjusted)
    return torch.where(valid, out, p).movedim(-1, dim)


def benjamini_hochberg(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Benjamini-Hochberg adjusted p-values along `dim` (controls the false discovery rate); NaN stays NaN."""
    p = p.double().movedim(dim, -1)
    valid = ~torch.isnan(p)
    m = valid.sum(-1, keepdim=True).double()
    filled = torch.where(valid, p, torch.full_like(p, 2.0))
    sorted_p, order = filled.sort(dim=-1, descending=True, stable=True)
    rank = p.shape[-1] - torch.arange(p.shape[-1], dtype=torch.float64)  # 1-based rank from the smallest
    adjusted = (sorted_p * m / rank.clamp(min=1)).clamp(max=1.0).cummin(-1).values
    out = torch.empty_like(p).scatter_(-1, order, adjusted)
    return torch.where(valid, out, p).movedim(-1, dim)


CORRECTIONS = {"holm": holm, "bh": benjamini_hochberg}


def adjusted(p: torch.Tensor, correction: str = "holm", dim: int = -1) -> torch.Tensor:
    """p-values adjusted by `correction` ('holm' or 'bh', or 'none') along `dim`."""
    if correction == "none":
        return p.double()
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of holm, bh, none; got {correction!r}")
    return CORRECTIONS[correction](p, dim)


def adjacent_separation(per_sample: torch.Tensor, order: list[int], level: float = LEVEL) -> Estimate:
    """For a ranking `order` of the columns of per-sample effects (N, U): the paired difference between the
    effect of entry k and of entry k + 1 (K - 1 estimates). Entry k is distinguishable from the next when
    the interval of difference k excludes 0."""
    if len(order) < 2:
        empty = torch.zeros(0, dtype=torch.float64)
        return Estimate(empty, empty, empty, empty, empty, empty, level)
    index = torch.tensor(order)
    ranked = per_sample.double()[:, index]
    return paired_estimate(ranked[:, :-1] - ranked[:, 1:], level)


def top_set_stability(per_sample: torch.Tensor, k: int, draws: int = 200, seed: int = 0) -> tuple[float,
                                                                                                   torch.Tensor]:
    """Bootstrap over samples of per-sample effects (N, U) (missing samples left out per column): the share of
    `draws` resamples whose top-k set (by mean effect) equals the full data's, and each column's share of
    resamples in which it is among the top k (U,). Seeded: the same input gives the same answer."""
    values = per_sample.detach().double().cpu()
    n, width = values.shape
    k = min(int(k), width)
    if n == 0 or k <= 0:
        return float("nan"), torch.zeros(width, dtype=torch.float64)
    known = ~torch.isnan(values)
    filled = torch.where(known, values, torch.zeros_like(values))

    def top(weights: torch.Tensor) -> torch.Tensor:
        count = weights @ known.double()
        means = (weights @ filled) / count.clamp(min=1)
        means = torch.where(count > 0, means, torch.full_like(means, -math.inf))
        return means.topk(k, dim=-1).indices

    reference = set(top(torch.ones(1, n, dtype=torch.float64))[0].tolist())
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, n, (draws, n), generator=generator)
    weights = torch.zeros(draws, n, dtype=torch.float64).scatter_add_(1, picks, torch.ones(draws, n,
                                                                                              dtype=torch.float64))
    tops = top(weights)
    same = sum(set(row) == reference for row in tops.tolist())
    membership = torch.zeros(width, dtype=torch.float64).index_add_(0, tops.flatten(),
                                                                    torch.ones(tops.numel(), dtype=torch.float64))
    return same / draws, membership / draws
