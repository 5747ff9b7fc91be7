"""Streaming, mergeable statistics of unit activations against concept labels.

Every statistic takes full batches, keeps memory bounded by units x concepts x bins whatever the number
of samples, merges with another of its kind (shards of a sample set, ranks of a distributed run), and
saves to / loads from safetensors. Activations arrive as (N, U, H, W) tensors already upsampled to the
segmentation's size; labels as (N, K, H, W) concept indices with -1 for none (see `segmenters`).

Feature maps may arrive at their layer's resolution with the size to upsample them to (bilinear, see
`features.upsample`); the fused kernels (`kernels`) then upsample on the fly.

- `UnitQuantiles`: per-unit histogram over a calibrated range -> quantiles (thresholds, candidate levels).
- `TopK`: the k samples with the highest peak activation per unit.
- `Moments`: per-unit count, mean and variance of activations.
- `ConditionalMean`: per (unit, concept), the mean activation where the concept is, weighted by how much of
  each feature cell it covers (the insertion value of the causal tools).
- `SampleTable`: one row of values per sample, for measurements that need per-sample spread (intervals).
- `LevelCounts` (in `levels`): exact integer counts per (unit, concept) at many levels per unit -> IoU and
  the information-quality ratio at each level.

Labels may mark pixels unknown (UNKNOWN = -2, "the segmenter cannot say"): such pixels are left out of
every count, unlike -1 ("none of the concepts").
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from gandissect.core import kernels
from gandissect.core.features import upsample
from gandissect.core.kernels import slot_coefficients

UNKNOWN = -2


def unique_channels(labels: torch.Tensor) -> torch.Tensor:
    """Labels (N, K, P) with a concept repeated at a pixel in a later channel replaced by -1."""
    if labels.shape[1] == 1:
        return labels
    channels = [labels[:, 0]]
    for k in range(1, labels.shape[1]):
        channel = labels[:, k]
        for earlier in channels:
            channel = torch.where(channel == earlier, -1, channel)
        channels.append(channel)
    return torch.stack(channels, 1)


def _flat(acts: torch.Tensor, labels: torch.Tensor | None = None,
          aligned: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N, U, H, W) activations and (N, K, H, W) labels -> (N, U, P) and (N, K, P) with repeated concepts
    removed, checked to align (with `aligned`, also in H and W)."""
    if acts.dim() != 4:
        raise ValueError(f"activations must be (N, U, H, W), got shape {tuple(acts.shape)}")
    flat = acts.reshape(acts.shape[0], acts.shape[1], -1)
    if labels is None:
        return flat, None
    if labels.dim() != 4 or labels.shape[0] != acts.shape[0] or (aligned and labels.shape[-2:] != acts.shape[-2:]):
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not align with activations of shape "
                         f"{tuple(acts.shape)}: expected (N, K, H, W) with the same N, H, W")
    return flat, unique_channels(labels.reshape(labels.shape[0], labels.shape[1], -1).long())


class Statistic:
    """Base: tensors named in `fields` make up the state; subclasses define `add` and `merge`."""

    fields: ClassVar[tuple[str, ...]] = ()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).detach().cpu() for name in self.fields}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> Statistic:
        stat = cls.__new__(cls)
        for name in cls.fields:
            setattr(stat, name, state[name].clone())
        return stat

    def to(self, device: torch.device | str) -> Statistic:
        for name in self.fields:
            setattr(self, name, getattr(self, name).to(device))
        return self

    def _check_mergeable(self, other: Statistic, *same: str) -> None:
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        for name in same:
            a, b = getattr(self, name), getattr(other, name)
            if a.shape != b.shape or not torch.equal(a.cpu(), b.cpu()):
                raise ValueError(f"cannot merge {type(self).__name__}s with different {name}")


def histogram_slots(values: torch.Tensor, low: torch.Tensor, high: torch.Tensor, bins: int,
                    unit_stride: int = 0) -> torch.Tensor:
    """Slot (int32) of each value among `bins` equal bins per unit over (low, high]: 0 for values <= low,
    s for (low + (s - 1) w, low + s w], bins + 1 above high. Values (N, U, P) or one per unit (U,).
    With `unit_stride`, unit u's slots are offset by u * unit_stride (a flat index for `bincount`)."""
    scale, bias = slot_coefficients(low, high, bins)
    if values.dim() > 1:
        scale, bias = scale[:, None], bias[:, None]
    slots = (values * scale).add_(bias).ceil_().clamp_(0, bins + 1)
    if unit_stride:
        offsets = torch.arange(values.shape[-2 if values.dim() > 1 else 0], device=values.device) * unit_stride
        slots += offsets.float()[:, None] if values.dim() > 1 else offsets.float()
    return slots.to(torch.int32)


class UnitQuantiles(Statistic):
    """Per-unit histogram of `bins` equal bins over (low, high], plus two end slots and exact extremes.

    Slot 0 holds values <= low, slot s the values in (low + (s - 1) w, low + s w], slot bins + 1 those
    above high. The range comes from a calibration batch (`calibrate`): low is its minimum, so the point
    mass of a ReLU unit's zeros falls in slot 0 by itself and quantiles inside it come out as exactly 0.
    Shards that share the range merge. Quantiles interpolate linearly inside a bin, so the rank error is
    at most one bin's share of the samples.
    """

    fields = ("low", "high", "counts", "minimum", "maximum")

    def __init__(self, low: torch.Tensor, high: torch.Tensor, bins: int = 4096) -> None:
        self.low = low.double()
        self.high = torch.maximum(high.double(), self.low + 1e-6)
        self.counts = torch.zeros(len(low), bins + 2, dtype=torch.long, device=low.device)
        self.minimum = torch.full_like(self.low, float("inf"))
        self.maximum = torch.full_like(self.low, float("-inf"))

    @classmethod
    def calibrate(cls, acts: torch.Tensor, bins: int = 4096, margin: float = 0.05) -> UnitQuantiles:
        """A histogram from the calibration activations' (N, U, h, w) minimum to their maximum plus `margin`.
        Bilinear upsampling keeps values within these bounds and keeps a ReLU unit's zeros at the minimum."""
        flat, _ = _flat(acts)
        low, high = flat.amin((0, 2)).double(), flat.amax((0, 2)).double()
        return cls(low, high + margin * (high - low).clamp(min=1e-6), bins)

    @property
    def bins(self) -> int:
        return self.counts.shape[1] - 2

    def _slot_of(self, values: torch.Tensor) -> torch.Tensor:
        """Histogram slot (int32) of values (N, U, P), or of one value per unit (U,)."""
        return histogram_slots(values, self.low, self.high, self.bins)

    def edge_values(self, edges: torch.Tensor) -> torch.Tensor:
        """Values (U, L) float64 of edge indices (U, L) in [0, bins]: a value exceeds edge e iff its slot > e."""
        return self.low[:, None] + edges.double() * ((self.high - self.low) / self.bins)[:, None]

    def nearest_edges(self, values: torch.Tensor) -> torch.Tensor:
        """Edge indices (U, L) nearest to values (U, L)."""
        width = ((self.high - self.low) / self.bins)[:, None]
        return ((values.double() - self.low[:, None]) / width).round().clamp(0, self.bins).long()

    def add(self, acts: torch.Tensor, size: tuple[int, int] | None = None) -> None:
        """Feature maps (N, U, h, w), counted as upsampled (`features.upsample`) to `size` (None: as they are)."""
        size = tuple(size or acts.shape[-2:])
        if acts.dim() == 4 and kernels.available(acts, self.counts):
            kernels.histogram(acts.detach(), size, self.low, self.high, self.counts, self.minimum, self.maximum)
            return
        flat, _ = _flat(upsample(acts.detach(), size) if acts.dim() == 4 else acts)
        units = flat.shape[1]
        index = histogram_slots(flat, self.low, self.high, self.bins, unit_stride=self.bins + 2)
        self.counts += torch.bincount(index.flatten(), minlength=units * (self.bins + 2)).view(units, -1)
        self.minimum = torch.minimum(self.minimum, flat.amin((0, 2)).double())
        self.maximum = torch.maximum(self.maximum, flat.amax((0, 2)).double())

    def merge(self, other: UnitQuantiles) -> None:
        self._check_mergeable(other, "low", "high")
        self.counts += other.counts.to(self.counts.device)
        self.minimum = torch.minimum(self.minimum, other.minimum.to(self.minimum.device))
        self.maximum = torch.maximum(self.maximum, other.maximum.to(self.maximum.device))

    def quantiles(self, q: torch.Tensor | list[float]) -> torch.Tensor:
        """Values (U, Q) below which a fraction q of each unit's activations lie."""
        q = torch.as_tensor(q, dtype=torch.float64, device=self.counts.device)
        counts = self.counts.double()
        cumulative = counts.cumsum(1)
        rank = q[None, :] * cumulative[:, -1:]
        index = torch.searchsorted(cumulative, rank.contiguous(), right=False).clamp(max=self.bins + 1)
        before = torch.where(index > 0, cumulative.gather(1, (index - 1).clamp(min=0)), torch.zeros_like(rank))
        fraction = ((rank - before) / counts.gather(1, index).clamp(min=1)).clamp(0, 1)
        width = (self.high - self.low)[:, None] / self.bins
        right = self.low[:, None] + index.double() * width
        left = right - width
        low, minimum = self.low[:, None].expand_as(left), self.minimum[:, None].expand_as(left)
        left = torch.where(index == 0, minimum, left)
        right = torch.where(index == 0, low, right)
        left = torch.where(index == self.bins + 1, self.high[:, None].expand_as(left), left)
        right = torch.where(index == self.bins + 1, self.maximum[:, None].expand_as(right), right)
        value = left + fraction * (right - left)
        return torch.minimum(torch.maximum(value, self.minimum[:, None]), self.maximum[:, None])


class TopK(Statistic):
    """Per unit, the k samples with the highest score (peak activation); ties go to the lower index."""

    fields = ("values", "indices")

    def __init__(self, units: int, k: int, device: torch.device | str = "cpu") -> None:
        self.values = torch.full((units, k), float("-inf"), device=device)
        self.indices = torch.full((units, k), -1, dtype=torch.long, device=device)

    @property
    def k(self) -> int:
        return self.values.shape[1]

    def add(self, scores: torch.Tensor, sample_indices: torch.Tensor) -> None:
        """Scores (N, U) of samples `sample_indices` (N,)."""
        units = self.values.shape[0]
        if scores.dim() != 2 or scores.shape[1] != units:
            raise ValueError(f"scores must be (N, {units}), got {tuple(scores.shape)}")
        indices = sample_indices.to(self.indices.device).long()[None, :].expand(units, -1)
        self._keep(torch.cat([self.values, scores.t().float()], 1), torch.cat([self.indices, indices], 1))

    def merge(self, other: TopK) -> None:
        if type(other) is not TopK or other.values.shape != self.values.shape:
            raise ValueError("cannot merge TopK statistics of different shapes")
        self._keep(torch.cat([self.values, other.values.to(self.values.device)], 1),
                   torch.cat([self.indices, other.indices.to(self.indices.device)], 1))

    def _keep(self, values: torch.Tensor, indices: torch.Tensor) -> None:
        by_index = torch.sort(indices, dim=1, stable=True).indices
        values, indices = values.gather(1, by_index), indices.gather(1, by_index)
        by_value = torch.sort(values, dim=1, descending=True, stable=True).indices[:, : self.k]
        self.values, self.indices = values.gather(1, by_value), indices.gather(1, by_value)


class Moments(Statistic):
    """Per-unit count, mean and sum of squared deviations (Chan's parallel update), in float64."""

    fields = ("count", "mean", "m2")

    def __init__(self, units: int, device: torch.device | str = "cpu") -> None:
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.mean = torch.zeros(units, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(units, dtype=torch.float64, device=device)

    def add(self, acts: torch.Tensor) -> None:
        """Activations (N, U, ...): every value of unit u counts once."""
        flat = acts.detach().transpose(0, 1).reshape(acts.shape[1], -1).double()
        n = torch.tensor(float(flat.shape[1]), dtype=torch.float64, device=self.mean.device)
        mean = flat.mean(1)
        self._combine(n, mean, ((flat - mean[:, None]) ** 2).sum(1))

    def merge(self, other: Moments) -> None:
        self._check_mergeable(other)
        self._combine(other.count.to(self.count.device), other.mean.to(self.mean.device), other.m2.to(self.m2.device))

    def _combine(self, n: torch.Tensor, mean: torch.Tensor, m2: torch.Tensor) -> None:
        total = self.count + n
        if float(total) == 0:
            return
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + self._spread(delta) * (self.count * n / total)
        self.count = total

    @staticmethod
    def _spread(delta: torch.Tensor) -> torch.Tensor:
        """The co-moment of a shift of the mean: per unit its square (a subclass may keep the whole matrix)."""
        return delta**2

    def variance(self) -> torch.Tensor:
        """Population variance per unit."""
        return self.m2 / self.count.clamp(min=1)


class ConditionalMean(Statistic):
    """Per (unit, concept): sum over feature cells of activation x concept coverage, and the coverage total.

    Coverage is the fraction of a feature cell's pixels (of the segmentation, pooled to the feature grid)
    that show the concept, so `mean()` is the unit's mean activation where the concept is, weighted by how
    much of each cell it covers."""

    fields = ("weighted", "coverage")

    def __init__(self, units: int, num_concepts: int, device: torch.device | str = "cpu") -> None:
        self.weighted = torch.zeros(units, num_concepts, dtype=torch.float64, device=device)
        self.coverage = torch.zeros(num_concepts, dtype=torch.float64, device=device)

    def add(self, acts: torch.Tensor, labels: torch.Tensor) -> None:
        """Activations (N, U, h, w) at feature resolution; labels (N, K, H, W) at any resolution."""
        cover = concept_coverage(labels, self.coverage.numel(), tuple(acts.shape[-2:]))
        self.weighted += torch.einsum("nuq,ncq->uc", acts.detach().flatten(2).double(), cover.flatten(2))
        self.coverage += cover.sum((0, 2, 3))

    def merge(self, other: ConditionalMean) -> None:
        self._check_mergeable(other)
        self.weighted += other.weighted.to(self.weighted.device)
        self.coverage += other.coverage.to(self.coverage.device)

    def mean(self) -> torch.Tensor:
        """(U, C) mean activation where each concept is; NaN for a concept never seen."""
        return self.weighted / torch.where(self.coverage > 0, self.coverage, float("nan"))[None, :]


class Tally(Statistic):
    """Per key (a unit, a group, ...): the sum and count of values added for it, in float64."""

    fields = ("total", "count")

    def __init__(self, keys: int, device: torch.device | str = "cpu") -> None:
        self.total = torch.zeros(keys, dtype=torch.float64, device=device)
        self.count = torch.zeros(keys, dtype=torch.float64, device=device)

    def add(self, values: torch.Tensor, keys: torch.Tensor) -> None:
        """Values (n,) for keys (n,)."""
        keys = keys.to(self.total.device).long()
        self.total.index_add_(0, keys, values.detach().to(self.total.device, torch.float64))
        self.count.index_add_(0, keys, torch.ones_like(keys, dtype=torch.float64))

    def merge(self, other: Tally) -> None:
        self._check_mergeable(other)
        self.total += other.total.to(self.total.device)
        self.count += other.count.to(self.count.device)

    def mean(self) -> torch.Tensor:
        """Mean per key; NaN where nothing was added."""
        return self.total / torch.where(self.count > 0, self.count, float("nan"))


class SampleTable(Statistic):
    """One row of values per sample (float64, NaN until filled): per-sample measurements whose spread gives
    intervals, e.g. a concept's pixel share after each unit's ablation. Rows are sample indices from `first`.
    Shards fill disjoint rows; merging takes every row the other shard filled."""

    fields = ("first", "values")

    def __init__(self, rows: int, width: int, first: int = 0, device: torch.device | str = "cpu") -> None:
        self.first = torch.tensor(int(first))
        self.values = torch.full((rows, width), float("nan"), dtype=torch.float64, device=device)

    def add(self, indices: torch.Tensor, values: torch.Tensor) -> None:
        """Rows (n, width) for samples `indices` (n,)."""
        rows = indices.to(self.values.device).long() - int(self.first)
        self.values[rows] = values.detach().to(self.values.device, torch.float64).reshape(len(rows), -1)

    def merge(self, other: SampleTable) -> None:
        self._check_mergeable(other, "first")
        if other.values.shape != self.values.shape:
            raise ValueError(f"cannot merge SampleTables of shapes {tuple(self.values.shape)} and "
                             f"{tuple(other.values.shape)}")
        theirs = other.values.to(self.values.device)
        self.values = torch.where(torch.isnan(theirs), self.values, theirs)


def concept_coverage(labels: torch.Tensor, num_concepts: int, size: tuple[int, int]) -> torch.Tensor:
    """Fraction (N, C, h, w) float64 of each cell of an (h, w) grid covered by each concept, from labels
    (N, K, H, W) (a concept counts once per pixel whatever the channel; unknown pixels cover nothing)."""
    n, channels, height, width = labels.shape
    (h, w), (sy, sx) = size, (height // size[0], width // size[1])
    if sy * h == height and sx * w == width:  # whole blocks: integer counts per cell, one bincount
        flat = unique_channels(labels.reshape(n, channels, -1).long()).view(n, channels, h, sy, w, sx)
        cell = (torch.arange(h, device=labels.device)[:, None, None, None] * w
                + torch.arange(w, device=labels.device)[None, None, :, None])
        base = torch.arange(n, device=labels.device).view(n, 1, 1, 1, 1, 1) * ((num_concepts + 1) * h * w) + cell
        index = flat.clamp(min=-1).add_(1).mul_(h * w).add_(base)
        counts = torch.bincount(index.flatten(), minlength=n * (num_concepts + 1) * h * w)
        return counts.view(n, num_concepts + 1, h, w)[:, 1:].double() / (sy * sx)
    present = torch.zeros(n, num_concepts + 1, height, width, dtype=torch.float64, device=labels.device)
    for k in range(channels):
        index = labels[:, k:k + 1].long().clamp(min=-1) + 1
        present.scatter_(1, index, 1.0)
    return F.adaptive_avg_pool2d(present[:, 1:], size)


STATISTICS: dict[str, type[Statistic]] = {}


def register_statistic(cls: type[Statistic]) -> type[Statistic]:
    """Make a statistic class loadable by name (from checkpoints, statistics files and other ranks)."""
    STATISTICS[cls.__name__] = cls
    return cls


for _cls in (UnitQuantiles, TopK, Moments, ConditionalMean, Tally, SampleTable):
    register_statistic(_cls)


def statistic_class(name: str) -> type[Statistic]:
    """The registered statistic class called `name` (for loading saved or gathered state)."""
    from gandissect.core import levels, ranges  # noqa: F401  (register LevelCounts and RangeCounts)

    if name not in STATISTICS:
        raise KeyError(f"no statistic class {name!r}; known: {sorted(STATISTICS)}")
    return STATISTICS[name]
