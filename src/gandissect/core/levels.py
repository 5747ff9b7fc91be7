"""Exact counts of (unit above level, concept) at many levels per unit, split into folds of samples.

Levels are edges of a unit's `UnitQuantiles` histogram, so a value finds how many levels it exceeds by one
multiply-add (its histogram slot) and one table lookup, instead of a binary search. `joint[f, u, b, c]`
counts the pixels of fold f labelled c whose activation exceeds exactly b of unit u's levels; reverse
cumulative sums then give |A_{u,l} and S_c| for every level l at once. From these come the IoU and the
information-quality ratio I(A;S)/H(A,S) at every level, per fold or over all folds (cross-fitting).

With every edge of the histogram as a level (`slot_histogram`), the counts are a joint histogram of slot and
concept; `at_levels` then sums its slots into the counts at any chosen edges, exactly the counts a pass at
those levels would have made. That lets a dissection choose its levels after the one pass that counts them.
"""

from __future__ import annotations

import torch

from gandissect.core import kernels
from gandissect.core.features import upsample
from gandissect.core.stats import UNKNOWN, Statistic, UnitQuantiles, _flat, histogram_slots, register_statistic


@register_statistic
class LevelCounts(Statistic):
    """Counts at L ascending levels per unit (edges of a histogram over (low, high] in `bins` bins)."""

    fields = ("low", "high", "bin_count", "edges", "joint", "totals", "concept_area", "pixels")

    def __init__(self, low: torch.Tensor, high: torch.Tensor, bins: int, edges: torch.Tensor, num_concepts: int,
                 folds: int = 1, dtype: torch.dtype = torch.long) -> None:
        units, num_levels = edges.shape
        device = edges.device
        if edges.numel() and (int(edges.min()) < 0 or int(edges.max()) > bins):
            raise ValueError(f"level edges must lie in [0, {bins}]")
        self.low, self.high = low.double().to(device).clone(), high.double().to(device).clone()
        self.edges = edges.long().sort(1).values.contiguous()
        self.bin_count = torch.tensor(bins, device=device)
        self.joint = torch.zeros(folds, units, num_levels + 1, num_concepts, dtype=dtype, device=device)
        self.totals = torch.zeros(folds, units, num_levels + 1, dtype=torch.long, device=device)
        self.concept_area = torch.zeros(folds, num_concepts, dtype=torch.long, device=device)
        self.pixels = torch.zeros(folds, dtype=torch.long, device=device)
        self._lookup: torch.Tensor | None = None

    @classmethod
    def slot_histogram(cls, low: torch.Tensor, high: torch.Tensor, bins: int, num_concepts: int, folds: int = 1,
                       dtype: torch.dtype = torch.long) -> LevelCounts:
        """Counts at every edge 0..bins: a joint histogram of (fold, unit, slot, concept). int32 `dtype`
        halves its memory; the caller makes sure that no cell can pass 2**31 - 1."""
        edges = torch.arange(bins + 1, device=low.device).expand(len(low), -1)
        return cls(low, high, bins, edges, num_concepts, folds, dtype)

    @staticmethod
    def slot_histogram_bytes(units: int, bins: int, num_concepts: int, folds: int, dtype: torch.dtype) -> int:
        """Memory of `slot_histogram`'s joint counts, the bulk of its state."""
        return folds * units * (bins + 2) * num_concepts * torch.empty((), dtype=dtype).element_size()

    def at_levels(self, edges: torch.Tensor) -> LevelCounts:
        """The counts at `edges` (U, L) of this slot histogram (every edge a level): sums of whole slots,
        so equal to counting the same values at those levels directly."""
        if self.edges.shape[1] != self.bins + 1:
            raise ValueError("at_levels needs a slot histogram (every edge a level)")
        counts = LevelCounts(self.low, self.high, self.bins, edges.to(self.edges.device), self.joint.shape[-1],
                             self.folds)
        index = counts._exceeded()  # (U, bins + 2): the level each slot lands at
        folds, units, _, concepts = self.joint.shape
        for u in range(units):  # one unit at a time: no second copy of the slot histogram
            at = index[u][None, :].expand(folds, -1)
            counts.totals[:, u].scatter_add_(1, at, self.totals[:, u])
            counts.joint[:, u].scatter_add_(1, at[..., None].expand(-1, -1, concepts), self.joint[:, u].long())
        counts.concept_area, counts.pixels = self.concept_area.clone(), self.pixels.clone()
        return counts

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> LevelCounts:
        stat = super().from_state_dict(state)
        assert isinstance(stat, LevelCounts)
        stat._lookup = None
        return stat

    def to(self, device: torch.device | str) -> LevelCounts:
        super().to(device)
        self._lookup = None
        return self

    @property
    def bins(self) -> int:
        """Bins of the histogram whose edges the levels are."""
        return int(self.bin_count)

    @property
    def folds(self) -> int:
        return self.joint.shape[0]

    @property
    def levels(self) -> torch.Tensor:
        """Level values (U, L), float64: a value is above level l iff its histogram slot exceeds edge l."""
        return self.low[:, None] + self.edges.double() * ((self.high - self.low) / self.bins)[:, None]

    def _exceeded(self) -> torch.Tensor:
        """(U, bins + 2): for unit u and histogram slot s, how many of u's levels a value in slot s exceeds."""
        if self._lookup is None:
            slots = torch.arange(self.bins + 2, device=self.edges.device).expand(self.edges.shape[0], -1)
            self._lookup = torch.searchsorted(self.edges, slots.contiguous(), right=False)
        return self._lookup

    def add(self, acts: torch.Tensor, labels: torch.Tensor, fold: torch.Tensor | int = 0,
            quantiles: UnitQuantiles | None = None) -> None:
        """Feature maps (N, U, h, w), counted as upsampled to the labels' (N, K, H, W) size, and each sample's
        fold (N,) or one fold for all. `quantiles`, a histogram over the same range and bins, is given the same
        upsampled values too (`UnitQuantiles.add`), in the same pass over them: a slot histogram's totals
        already count the known pixels' slots."""
        if acts.dim() != 4 or labels.dim() != 4 or labels.shape[0] != acts.shape[0]:
            raise ValueError(f"labels of shape {tuple(labels.shape)} do not align with activations of shape "
                             f"{tuple(acts.shape)}: expected (N, K, H, W) and (N, U, h, w) with the same N")
        size = tuple(labels.shape[-2:])
        n = acts.shape[0]
        folds = torch.as_tensor(fold, device=acts.device).long().expand(n)
        if quantiles is not None and (quantiles.bins != self.bins or not torch.equal(quantiles.low, self.low)
                                      or not torch.equal(quantiles.high, self.high)):
            raise ValueError("the quantile histogram must have the counts' range and bins")
        if quantiles is not None and self.edges.shape[1] != self.bins + 1:
            raise ValueError("a quantile histogram is filled together only with a slot histogram")
        if kernels.available(acts, self.joint):  # labels prepared and counted inside the kernels
            histogram = None if quantiles is None else (quantiles.counts, quantiles.minimum, quantiles.maximum)
            kernels.level_counts(acts.detach(), self.low, self.high, self.bins, self._exceeded(), folds, labels,
                                 UNKNOWN, self.joint, self.totals, self.concept_area, self.pixels, histogram)
            return
        if quantiles is not None:
            quantiles.add(acts, size)
        flat, flat_labels = _flat(upsample(acts.detach(), size), labels)
        assert flat_labels is not None
        p, concepts = flat_labels.shape[2], self.joint.shape[-1]
        known = ~(flat_labels == UNKNOWN).any(1)
        self._add_by_bincount(flat, flat_labels, folds, known)
        for k in range(flat_labels.shape[1]):
            label = flat_labels[:, k]
            present = (label >= 0) & known
            index = folds[:, None].expand(-1, p)[present] * concepts + label[present]
            self.concept_area += torch.bincount(index, minlength=self.folds * concepts).view(self.folds, concepts)
        self.pixels += torch.bincount(folds, weights=known.sum(1).double(), minlength=self.folds).long()

    def _add_by_bincount(self, flat: torch.Tensor, flat_labels: torch.Tensor, folds: torch.Tensor,
                         known: torch.Tensor) -> None:
        """The counts of `add` in PyTorch ops (any device): a flat cell index per value, one bincount per channel."""
        n, units, p = flat.shape
        slots, concepts = self.edges.shape[1] + 1, self.joint.shape[-1]
        per_fold = units * slots * (concepts + 1)
        unit = torch.arange(units, device=flat.device)[:, None] * slots
        table = ((unit + self._exceeded()) * (concepts + 1)).to(torch.int32).flatten()
        slot = histogram_slots(flat, self.low, self.high, self.bins, unit_stride=self.bins + 2)
        cell = table.index_select(0, slot.flatten()).view(n, units, p)
        if self.folds > 1:
            cell += (folds.int() * per_fold)[:, None, None]
        size = self.folds * per_fold
        if not bool(known.all()):
            cell = torch.where(known[:, None, :], cell, size)
        for k in range(flat_labels.shape[1]):
            label = flat_labels[:, k:k + 1].int().clamp(min=-1) + 1
            counts = torch.bincount((cell + label).flatten(), minlength=size + concepts + 2)[:size]
            counts = counts.view(self.folds, units, slots, concepts + 1)
            if k == 0:
                self.totals += counts.sum(3)
            self.joint += counts[..., 1:]

    def merge(self, other: LevelCounts) -> None:
        self._check_mergeable(other, "low", "high", "bin_count", "edges")
        for name in ("joint", "totals", "concept_area", "pixels"):
            setattr(self, name, getattr(self, name) + getattr(other, name).to(self.pixels.device))

    def tables(self, fold: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per (unit, concept, level) counts n11 (above, concept), n10, n01, n00 as float64 (U, C, L), for one
        fold or (None) summed over all folds."""
        pick = (lambda t: t.sum(0)) if fold is None else (lambda t: t[fold])
        joint, totals, area, pixels = pick(self.joint), pick(self.totals), pick(self.concept_area), pick(self.pixels)
        n11 = joint.flip(1).cumsum(1).flip(1)[:, 1:].double().permute(0, 2, 1)
        above = totals.flip(1).cumsum(1).flip(1)[:, 1:].double()[:, None, :]
        n10 = above - n11
        n01 = area.double()[None, :, None] - n11
        n00 = pixels.double() - n11 - n10 - n01
        return n11, n10, n01, n00

    def iou(self, fold: int | None = None) -> torch.Tensor:
        """IoU (U, C, L) at every level."""
        return iou_of(*self.tables(fold))

    def information_quality_ratio(self, fold: int | None = None) -> torch.Tensor:
        """I(A;S) / H(A,S) (U, C, L) of the 2x2 table (unit above level, concept present) over pixels."""
        return information_quality_ratio(*self.tables(fold))


def iou_of(n11: torch.Tensor, n10: torch.Tensor, n01: torch.Tensor, n00: torch.Tensor) -> torch.Tensor:
    """|A and S| / |A or S| of count tables; 0 where the union is empty."""
    union = n11 + n10 + n01
    return torch.where(union > 0, n11 / union.clamp(min=1), 0.0)


def information_quality_ratio(n11: torch.Tensor, n10: torch.Tensor, n01: torch.Tensor,
                              n00: torch.Tensor) -> torch.Tensor:
    """I(A;S) / H(A,S) of 2x2 count tables; 0 where the joint entropy is 0."""
    cells = torch.stack([n11, n10, n01, n00], -1)
    cells = cells / cells.sum(-1, keepdim=True).clamp(min=1)
    joint_entropy = _entropy(cells)
    above = cells[..., 0] + cells[..., 1]
    concept = cells[..., 0] + cells[..., 2]
    marginals = _entropy(torch.stack([above, 1 - above], -1)) + _entropy(torch.stack([concept, 1 - concept], -1))
    mutual = (marginals - joint_entropy).clamp(min=0)
    return torch.where(joint_entropy > 0, mutual / joint_entropy.clamp(min=1e-300), 0.0)


def _entropy(probabilities: torch.Tensor) -> torch.Tensor:
    p = probabilities.clamp(min=0)
    return -(torch.where(p > 0, p * p.clamp(min=1e-300).log(), 0.0)).sum(-1)
