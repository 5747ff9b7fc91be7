"""Per-sample pixel counts of ablations, and the ablation curves with intervals that they give.

For every held-out sample and every ablated unit set the pass (`curves.ablation_pixels`) keeps three counts
per concept: its pixels before the ablation, after it, and kept (showing it both before and after). Only
pixels the segmenter knows (no label channel says -2) in both the unedited and the edited image count; a
sample with no such pixel is missing (a NaN row) and is left out. Keeping samples apart, rather than sums,
is what gives each point of a curve its interval (`core.inference.ratio_estimate`, the delta method):

- fraction of the concept's pixels removed: 1 - sum(after) / sum(before) over the samples;
- share of the other concepts' pixels kept: sum(kept) / sum(before) over the other concepts.

`CurveSampleCounts` is the statistic that carries the counts through the sample pass: its rows are sample
indices, and ranks of a torchrun job fill disjoint rows that merge into the table of one process.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields

import torch

from gandissect.core.errors import ConfigError
from gandissect.core.inference import Estimate, ratio_estimate
from gandissect.core.segmenters import Segmenter, check_labels
from gandissect.core.stats import UNKNOWN, Statistic, register_statistic

RANDOM = "random"
BAND = (0.05, 0.95)  # the random baseline's band: percentiles over draws


def segmenter_concept(segmenter: Segmenter, concept: str) -> int:
    """The index of `concept` among the segmenter's concepts; a one-line error listing them otherwise."""
    concepts = list(segmenter.concepts)
    if concept not in concepts:
        raise ConfigError(f"the segmenter knows no concept {concept!r}; its concepts: {', '.join(concepts)}")
    return concepts.index(concept)


def known_presence(segmenter: Segmenter, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) bool: whether each pixel shows each concept (in any label channel), and (N, H, W) bool:
    whether the segmenter knows the pixel (no channel says unknown, -2). Unknown pixels show no concept."""
    num = len(segmenter.concepts)
    with torch.no_grad():
        labels = check_labels(segmenter.segment(images), images, num, type(segmenter).__name__)
    known = (labels != UNKNOWN).all(1)
    present = torch.zeros(labels.shape[0], num + 1, *labels.shape[-2:], dtype=torch.bool, device=labels.device)
    for k in range(labels.shape[1]):
        present.scatter_(1, labels[:, k:k + 1].clamp(min=-1) + 1, True)
    return present[:, 1:] & known[:, None], known


def concept_presence(segmenter: Segmenter, images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) bool: whether each pixel shows each concept; unlabelled and unknown pixels show none (use
    `known_presence` to tell unknown pixels apart)."""
    return known_presence(segmenter, images)[0]


def pixel_counts(before: torch.Tensor, after: torch.Tensor, known: torch.Tensor,
                 columns: torch.Tensor) -> torch.Tensor:
    """(3, ..., K + 1) float64 counts of pixels known in both images: per concept of `columns` and, last, summed
    over all concepts, before, after and kept, from presence (..., C, H, W) and known pixels (..., H, W); NaN
    where no pixel is known."""
    known = known[..., None, :, :]
    masks = (before & known, after & known, before & after & known)
    counts = torch.stack([mask.flatten(-2).sum(-1) for mask in masks]).double()
    counts = torch.cat([counts[..., columns], counts.sum(-1, keepdim=True)], -1)
    missing = ~known.flatten(-2).any(-1)
    return counts.masked_fill(missing[None], float("nan"))


@register_statistic
class CurveSampleCounts(Statistic):
    """Per sample (rows), unit set and column, the pixels before, after and kept (float64, NaN until filled or
    for a missing sample); `done` marks the rows computed. Merging takes the rows the other shard computed."""

    fields = ("before", "after", "kept", "done")

    def __init__(self, samples: int, sets: int, columns: int) -> None:
        for name in self.fields[:3]:
            setattr(self, name, torch.full((samples, sets, columns), float("nan"), dtype=torch.float64))
        self.done = torch.zeros(samples, dtype=torch.bool)

    def add(self, start: int, counts: torch.Tensor) -> None:
        """Counts (3, n, sets, columns) of samples start..start + n - 1."""
        counts = counts.detach().to(self.before.device, torch.float64)
        rows = slice(start, start + counts.shape[1])
        for name, values in zip(self.fields[:3], counts, strict=True):
            getattr(self, name)[rows] = values
        self.done[rows] = True

    def merge(self, other: CurveSampleCounts) -> None:
        self._check_mergeable(other)
        if other.before.shape != self.before.shape:
            raise ValueError(f"cannot merge CurveSampleCounts of shapes {tuple(self.before.shape)} and "
                             f"{tuple(other.before.shape)}")
        rows = other.done.to(self.done.device)
        for name in self.fields[:3]:
            getattr(self, name)[rows] = getattr(other, name).to(self.before.device)[rows]
        self.done |= rows


FLOATS = ("removed", "others_kept", "pixels_after", "removed_low", "removed_high", "removed_se", "others_kept_low",
          "others_kept_high")


@dataclass
class AblationCurve:
    """One ranking's curve: for each count N, the fraction of the concept's pixels removed by ablating its top N
    units with a 95% interval [removed_low, removed_high] and standard error, the share of the other concepts'
    pixels kept with its interval, and how many samples were missing (no known pixel). For the random baseline
    (ranking "random", `draws` > 0) the values are means over draws of N random units, the bands run from the
    5th to the 95th percentile over draws, removed_se is the standard error of the mean over draws and
    `missing` the most missing in a draw. pixels_before: the concept's known pixels on the unedited images."""

    layer: str
    concept: str
    ranking: str
    units: list[int]
    counts: list[int]
    removed: list[float]
    others_kept: list[float]
    pixels_before: float
    pixels_after: list[float]
    samples: int
    seed: int
    removed_low: list[float] = field(default_factory=list)
    removed_high: list[float] = field(default_factory=list)
    removed_se: list[float] = field(default_factory=list)
    others_kept_low: list[float] = field(default_factory=list)
    others_kept_high: list[float] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    draws: int = 0

    def at(self, count: int) -> float:
        """The fraction removed by the top `count` units."""
        if count not in self.counts:
            raise ConfigError(f"the {self.ranking} curve has no point at N={count}; its counts: {self.counts}")
        return self.removed[self.counts.index(count)]

    def to_json(self) -> dict:
        """A JSON-able dict; NaN (a concept with no pixels before, too few samples) becomes None."""
        data = asdict(self)
        for key in FLOATS:
            data[key] = [None if math.isnan(v) else v for v in data[key]]
        data["pixels_before"] = None if math.isnan(self.pixels_before) else self.pixels_before
        return data

    @classmethod
    def from_json(cls, data: Mapping) -> AblationCurve:
        known = {f.name for f in fields(cls)}
        data = {key: value for key, value in data.items() if key in known}
        for key in FLOATS:
            if key in data:
                data[key] = [float("nan") if v is None else float(v) for v in data[key]]
        data["pixels_before"] = float("nan") if data.get("pixels_before") is None else float(data["pixels_before"])
        return cls(**data)


def _listed(values: torch.Tensor) -> list[float]:
    return [float(v) for v in values.tolist()]


@dataclass
class AblationPixels:
    """Per-sample pixel counts (samples, S, K + 1) before, after and kept for each ablated unit set (S) and each
    concept of `concepts` (K), column K summed over all the segmenter's concepts; NaN rows for missing samples.
    The unit sets are sorted; set () is the unedited images."""

    layer: str
    concepts: list[str]
    unit_sets: list[tuple[int, ...]]
    before: torch.Tensor
    after: torch.Tensor
    kept: torch.Tensor
    samples: int
    seed: int

    def row(self, units: Sequence[int]) -> int:
        """The index of the unit set `units` (in any order)."""
        key = tuple(sorted(int(u) for u in units))
        if key not in self.unit_sets:
            raise ConfigError(f"units {list(key)} were not ablated in this pass")
        return self.unit_sets.index(key)

    def column(self, concept: str) -> int:
        if concept not in self.concepts:
            raise ConfigError(f"concept {concept!r} was not counted in this pass; counted: {', '.join(self.concepts)}")
        return self.concepts.index(concept)

    def removed(self, concept: str, rows: Sequence[int]) -> Estimate:
        """Fraction of the concept's pixels removed by each unit set of `rows` (an estimate per row)."""
        c, rows = self.column(concept), list(rows)
        return ratio_estimate(self.after[:, rows, c], self.before[:, rows, c]).shifted(1.0, -1.0)

    def others_kept(self, concept: str, rows: Sequence[int]) -> Estimate:
        """Share of the other concepts' pixels kept by each unit set of `rows`."""
        c, rows = self.column(concept), list(rows)
        kept = self.kept[:, rows, -1] - self.kept[:, rows, c]
        return ratio_estimate(kept, self.before[:, rows, -1] - self.before[:, rows, c])

    def missing(self, rows: Sequence[int]) -> torch.Tensor:
        """(len(rows),) the number of samples missing for each unit set."""
        return torch.isnan(self.before[:, list(rows), -1]).sum(0)

    def pixels(self, concept: str, rows: Sequence[int]) -> tuple[float, torch.Tensor]:
        """The concept's pixels on the unedited images and after each unit set of `rows`, summed over samples."""
        c = self.column(concept)
        return (float(self.before[:, self.row(()), c].nansum()), self.after[:, list(rows), c].nansum(0))

    def curve(self, concept: str, ranking: Sequence[int], counts: Sequence[int], name: str = "") -> AblationCurve:
        """The curve of ablating the first N units of `ranking` for each N in `counts`."""
        rows = [self.row(ranking[:n]) for n in counts]
        removed, kept = self.removed(concept, rows), self.others_kept(concept, rows)
        before, after = self.pixels(concept, rows)
        return AblationCurve(self.layer, concept, name, [int(u) for u in ranking[:max(counts, default=0)]],
                             [int(n) for n in counts], _listed(removed.mean), _listed(kept.mean), before,
                             _listed(after), self.samples, self.seed, _listed(removed.low), _listed(removed.high),
                             _listed(removed.se), _listed(kept.low), _listed(kept.high),
                             [int(m) for m in self.missing(rows).tolist()])

    def random_curve(self, concept: str, draws: Sequence[Sequence[int]], counts: Sequence[int],
                     name: str = RANDOM) -> AblationCurve:
        """The baseline of ablating the first N units of each random ranking in `draws`, for each N in `counts`:
        means over draws and the 5th-95th percentile band."""
        if not draws:
            raise ConfigError("the random baseline needs at least one draw")
        shape = (len(draws), len(counts))
        rows = [self.row(draw[:n]) for draw in draws for n in counts]
        removed = self.removed(concept, rows).mean.view(shape)
        kept = self.others_kept(concept, rows).mean.view(shape)
        before, after = self.pixels(concept, rows)
        band = torch.tensor(BAND, dtype=torch.float64)
        low, high = removed.nanquantile(band, dim=0)
        kept_low, kept_high = kept.nanquantile(band, dim=0)
        known = (~torch.isnan(removed)).sum(0).double()
        spread = torch.where(known > 1, _nanstd(removed) / known.clamp(min=1).sqrt(), torch.nan)
        return AblationCurve(self.layer, concept, name, [], [int(n) for n in counts], _listed(removed.nanmean(0)),
                             _listed(kept.nanmean(0)), before, _listed(after.view(shape).mean(0)), self.samples,
                             self.seed, _listed(low), _listed(high), _listed(spread), _listed(kept_low),
                             _listed(kept_high), [int(m) for m in self.missing(rows).view(shape).amax(0).tolist()],
                             len(draws))


def _nanstd(values: torch.Tensor) -> torch.Tensor:
    """Standard deviation (n - 1) along dimension 0, NaN entries left out."""
    known = ~torch.isnan(values)
    n = known.sum(0)
    centred = torch.where(known, values - values.nanmean(0), torch.zeros_like(values))
    return ((centred ** 2).sum(0) / (n - 1).clamp(min=1)).sqrt()
