"""Streaming, mergeable statistics of unit activations against concept labels.

Every statistic takes full batches, keeps memory bounded by units x concepts x bins whatever the number
of samples, merges with another of its kind (shards of a sample set, ranks of a distributed run), and
saves to / loads from safetensors. Activations arrive as (N, U, H, W) tensors already upsampled to the
segmentation's size; labels as (N, K, H, W) concept indices with -1 for none (see `segmenters`).

- `UnitQuantiles`: per-unit histogram over a calibrated range -> quantiles (thresholds, candidate levels).
- `LevelCounts`: exact integer counts per (unit, concept) at many levels per unit -> IoU and the
  information-quality ratio at each level.
- `TopK`: the k samples with the highest peak activation per unit.
"""

from __future__ import annotations

from typing import ClassVar

import torch


def unique_channels(labels: torch.Tensor) -> torch.Tensor:
    """Labels (N, K, P) with a concept repeated at a pixel in a later channel replaced by -1."""
    if labels.shape[1] == 1:
        return labels
    channels = [labels[:, 0]]
    for k in range(1, labels.shape[1]):
        channel = labels[:, k].clone()
        for earlier in channels:
            channel[channel == earlier] = -1
        channels.append(channel)
    return torch.stack(channels, 1)


def _flat(acts: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N, U, H, W) activations and (N, K, H, W) labels -> (N, U, P) and (N, K, P), checked to align."""
    if acts.dim() != 4:
        raise ValueError(f"activations must be (N, U, H, W), got shape {tuple(acts.shape)}")
    flat = acts.reshape(acts.shape[0], acts.shape[1], -1)
    if labels is None:
        return flat, None
    if labels.dim() != 4 or labels.shape[0] != acts.shape[0] or labels.shape[-2:] != acts.shape[-2:]:
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
        """A histogram from the calibration activations' (N, U, H, W) minimum to their maximum plus `margin`."""
        flat, _ = _flat(acts)
        low, high = flat.amin((0, 2)).double(), flat.amax((0, 2)).double()
        return cls(low, high + margin * (high - low).clamp(min=1e-6), bins)

    @property
    def bins(self) -> int:
        return self.counts.shape[1] - 2

    def _slot_of(self, values: torch.Tensor) -> torch.Tensor:
        """Histogram slot (int32) of values (N, U, P), or of one value per unit (U,)."""
        low, high = self.low.float(), self.high.float()
        if values.dim() > 1:
            low, high = low[:, None], high[:, None]
        scale = self.bins / (high - low)
        return torch.addcmul(-low * scale, values, scale).ceil_().clamp_(0, self.bins + 1).to(torch.int32)

    def add(self, acts: torch.Tensor) -> None:
        flat, _ = _flat(acts)
        units = flat.shape[1]
        index = self._slot_of(flat)
        index += torch.arange(units, device=flat.device, dtype=torch.int32)[None, :, None] * (self.bins + 2)
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


class LevelCounts(Statistic):
    """Counts at L ascending levels per unit: for each pixel, how many levels it exceeds, by concept.

    `joint[u, b, c]` counts pixels labelled c whose activation exceeds exactly b of unit u's levels;
    reverse cumulative sums give |A_{u,l} and S_c| for every level l at once.
    """

    fields = ("levels", "joint", "totals", "concept_area", "pixels")

    def __init__(self, levels: torch.Tensor, num_concepts: int) -> None:
        units, num_levels = levels.shape
        device = levels.device
        self.levels = levels.float().contiguous()
        self.joint = torch.zeros(units, num_levels + 1, num_concepts, dtype=torch.long, device=device)
        self.totals = torch.zeros(units, num_levels + 1, dtype=torch.long, device=device)
        self.concept_area = torch.zeros(num_concepts, dtype=torch.long, device=device)
        self.pixels = torch.zeros((), dtype=torch.long, device=device)

    def add(self, acts: torch.Tensor, labels: torch.Tensor) -> None:
        flat, flat_labels = _flat(acts, labels)
        assert flat_labels is not None
        n, units, p = flat.shape
        slots, concepts = self.levels.shape[1] + 1, self.concept_area.numel()
        levels = self.levels[None].expand(n, -1, -1).contiguous()
        exceeded = torch.searchsorted(levels, flat.contiguous(), right=False, out_int32=True)
        offsets = torch.arange(units, device=flat.device, dtype=torch.int32)[None, :, None] * slots
        cell = (exceeded + offsets) * (concepts + 1)
        for k in range(flat_labels.shape[1]):
            label = flat_labels[:, k:k + 1].int() + 1
            counts = torch.bincount((cell + label).flatten(), minlength=units * slots * (concepts + 1))
            counts = counts.view(units, slots, concepts + 1)
            if k == 0:
                self.totals += counts.sum(2)
            self.joint += counts[:, :, 1:]
            self.concept_area += torch.bincount(label[label > 0] - 1, minlength=concepts)
        self.pixels += n * p

    def merge(self, other: LevelCounts) -> None:
        self._check_mergeable(other, "levels")
        for name in ("joint", "totals", "concept_area", "pixels"):
            setattr(self, name, getattr(self, name) + getattr(other, name).to(self.pixels.device))

    def tables(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per (unit, concept, level) counts n11 (above, concept), n10, n01, n00 as float64 (U, C, L)."""
        above_concept = self.joint.flip(1).cumsum(1).flip(1)[:, 1:].double().permute(0, 2, 1)
        above = self.totals.flip(1).cumsum(1).flip(1)[:, 1:].double()[:, None, :]
        concept = self.concept_area.double()[None, :, None]
        total = self.pixels.double()
        n11 = above_concept
        n10 = above - n11
        n01 = concept - n11
        n00 = total - n11 - n10 - n01
        return n11, n10, n01, n00

    def iou(self) -> torch.Tensor:
        """IoU (U, C, L) at every level."""
        n11, n10, n01, _ = self.tables()
        union = n11 + n10 + n01
        return torch.where(union > 0, n11 / union.clamp(min=1), 0.0)

    def information_quality_ratio(self) -> torch.Tensor:
        """I(A;S) / H(A,S) (U, C, L) of the 2x2 table (unit above level, concept present) over pixels."""
        cells = torch.stack(self.tables(), -1) / self.pixels.double().clamp(min=1)
        joint_entropy = _entropy(cells)
        above = cells[..., 0] + cells[..., 1]
        concept = cells[..., 0] + cells[..., 2]
        marginals = _entropy(torch.stack([above, 1 - above], -1)) + _entropy(torch.stack([concept, 1 - concept], -1))
        mutual = (marginals - joint_entropy).clamp(min=0)
        return torch.where(joint_entropy > 0, mutual / joint_entropy.clamp(min=1e-300), 0.0)

    def best_levels(self) -> dict[str, torch.Tensor]:
        """Per (unit, concept): the level index maximising the IQR, its value, IQR and IoU there."""
        iqr = self.information_quality_ratio()
        best = iqr.argmax(-1)
        pick = best[..., None]
        return {
            "level_index": best,
            "threshold": self.levels[:, None, :].expand_as(iqr).gather(-1, pick.to(self.levels.device))[..., 0],
            "iqr": iqr.gather(-1, pick)[..., 0],
            "iou": self.iou().gather(-1, pick)[..., 0],
        }


def _entropy(probabilities: torch.Tensor) -> torch.Tensor:
    p = probabilities.clamp(min=0)
    return -(torch.where(p > 0, p * p.clamp(min=1e-300).log(), 0.0)).sum(-1)


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


STATISTICS: dict[str, type[Statistic]] = {
    cls.__name__: cls for cls in (UnitQuantiles, LevelCounts, TopK)
}
