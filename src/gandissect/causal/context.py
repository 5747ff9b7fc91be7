"""The context of an insertion: where does inserting a concept's units make the concept appear?

Insert a unit set (each unit set to its value) in one feature cell, or a small square patch of cells, at a
time, at every location of the layer's grid (or every `stride`-th), on many held-out samples, and count the
concept's pixels gained near the location: the pixels showing the concept after the insertion minus before,
inside the patch's footprint in the image widened by `margin` feature cells on each side. Locations are
grouped by what the segmenter saw there before the edit: the concept that covers most of the patch's pixels
("none" where no pixel of it is labelled). The paper's example: door units inserted on a building draw a door,
in the sky nothing. Beside the concept's pixels, the pixels whose colour changed at all (by more than
`CHANGED` of the value range in some channel) are counted in the same window: a location where the image
changes but the segmenter sees no new concept pixels tells the generator's context apart from the
segmenter's.

Many locations of a sample share one generator call: the batch's features are computed once, repeated once
per location of a block, and each copy edited at its own location. Rides the engine's sample pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from gandissect.causal.curves import (
    concept_presence,
    layer_width,
    repeat_batch,
    segmenter_concept,
)
from gandissect.causal.cut import Cut
from gandissect.causal.interventions import check_units
from gandissect.core.errors import ConfigError
from gandissect.core.segmenters import Segmenter
from gandissect.core.stats import Statistic, Tally
from gandissect.engine.collectives import Collective
from gandissect.engine.samplepass import Batch, SamplePass

CONTEXT_SEED = 5
NONE = "none"
CHANGED = 0.1


def locations(size: tuple[int, int], patch: int = 1, stride: int = 1) -> list[tuple[int, int]]:
    """Top-left cells (row, column) of every `patch` x `patch` square on a grid of `size`, every `stride` cells."""
    h, w = size
    return [(i, j) for i in range(0, h - patch + 1, stride) for j in range(0, w - patch + 1, stride)]


def location_masks(size: tuple[int, int], patch: int = 1, stride: int = 1) -> torch.Tensor:
    """(L, 1, h, w) float: 1 on each location's patch."""
    where = locations(size, patch, stride)
    masks = torch.zeros(len(where), 1, *size)
    for n, (i, j) in enumerate(where):
        masks[n, 0, i:i + patch, j:j + patch] = 1
    return masks


def window_masks(size: tuple[int, int], image: tuple[int, int], patch: int = 1, stride: int = 1,
                 margin: int = 1) -> torch.Tensor:
    """(L, H, W) bool: each location's patch widened by `margin` cells, as pixels of an image of size `image`."""
    (h, w), (height, width) = size, image
    where = locations(size, patch, stride)
    masks = torch.zeros(len(where), height, width, dtype=torch.bool)
    for n, (i, j) in enumerate(where):
        top, bottom = max(i - margin, 0), min(i + patch + margin, h)
        left, right = max(j - margin, 0), min(j + patch + margin, w)
        masks[n, top * height // h:bottom * height // h, left * width // w:right * width // w] = True
    return masks


@dataclass
class InsertionContext:
    """Per 'before' concept (the segmenter's concepts, then "none"): locations tried, the mean concept pixels
    gained near them (NaN where none was tried), the share of them where the concept gained any pixel, and
    the mean pixels near them whose colour changed."""

    layer: str
    concept: str
    units: list[int]
    values: list[float]
    patch: int
    stride: int
    margin: int
    before: list[str]
    locations: list[int]
    gained: list[float]
    appeared: list[float]
    samples: int
    seed: int
    changed: list[float] = field(default_factory=list)

    def gain(self, before: str) -> float:
        """The mean pixels gained at locations that showed `before` (NaN if there were none)."""
        if before not in self.before:
            raise ConfigError(f"no 'before' concept {before!r}; they are: {', '.join(self.before)}")
        return self.gained[self.before.index(before)]

    def rows(self, min_locations: int = 1) -> list[dict]:
        """The 'before' concepts tried at least `min_locations` times, most pixels gained first."""
        changed = self.changed or [float("nan")] * len(self.before)
        rows = [{"before": name, "locations": n, "gained": g, "appeared": a, "changed": d}
                for name, n, g, a, d in zip(self.before, self.locations, self.gained, self.appeared, changed,
                                            strict=True)
                if n >= max(min_locations, 1)]
        return sorted(rows, key=lambda row: -row["gained"])

    def to_json(self) -> dict:
        data = asdict(self)
        for key in ("gained", "appeared", "changed"):
            data[key] = [None if math.isnan(v) else v for v in data[key]]
        return data

    @classmethod
    def from_json(cls, data: Mapping) -> InsertionContext:
        data = dict(data)
        for key in ("gained", "appeared", "changed"):
            data[key] = [float("nan") if v is None else v for v in data.get(key, [])]
        return cls(**data)


def insertion_context(generator: nn.Module, segmenter: Segmenter, layer: str, concept: str, units: Sequence[int],
                      values: torch.Tensor, patch: int = 1, stride: int = 1, margin: int = 1, samples: int = 16,
                      seed: int = CONTEXT_SEED, batch_size: int = 4, chunk: int = 64,
                      device: str | torch.device = "cpu", collective: Collective | None = None,
                      progress: bool = True) -> InsertionContext:
    """Insert `units` (each set to values[u], values (U,) over the layer's units) in a `patch` x `patch` square
    of cells at every `stride`-th location of `layer`, on `samples` samples of sample set `seed`, and count the
    pixels of `concept` gained near each location, grouped by the concept the segmenter saw there before;
    at most `chunk` images per generator call."""
    c = segmenter_concept(segmenter, concept)
    width = layer_width(generator, layer, seed, device)
    chosen = check_units(units, width, layer, "unit set")
    if not chosen:
        raise ConfigError("give at least one unit to insert")
    values = torch.as_tensor(values, dtype=torch.float32).flatten()
    if values.numel() != width:
        raise ConfigError(f"values must hold one value per unit of layer {layer!r} ({width}); got {values.numel()}")
    if patch < 1 or stride < 1 or margin < 0:
        raise ConfigError(f"patch and stride must be at least 1 and margin at least 0; got {patch}, {stride}, {margin}")
    if samples < 1:
        raise ConfigError(f"samples must be at least 1; got {samples}")
    cut, num = Cut(generator, layer), len(segmenter.concepts)
    stats: dict[str, Statistic] = {"gained": Tally(num + 1), "appeared": Tally(num + 1), "changed": Tally(num + 1)}
    grids: dict[str, torch.Tensor] = {}

    def update(batch: Batch, stats: dict[str, Statistic]) -> None:
        with torch.no_grad():
            features = cut.head(batch.z)
            b, size = features.shape[0], tuple(features.shape[-2:])
            if patch > min(size):
                raise ConfigError(f"patch {patch} is larger than layer {layer!r}'s {size[0]}x{size[1]} grid")
            if "masks" not in grids:
                grids["masks"] = location_masks(size, patch, stride).to(features.device, features.dtype)
            masks = grids["masks"]
            unedited = cut.tail(features, batch.z)
            base = concept_presence(segmenter, unedited)
            image = tuple(base.shape[-2:])
            if "windows" not in grids:
                grids["windows"] = window_masks(size, image, patch, stride, margin).to(base.device)
            windows = grids["windows"].flatten(1).double()  # (L, H*W)
            before = base[:, c].flatten(1).double() @ windows.t()  # (B, L)
            pooled = F.avg_pool2d(_coverage(base, size), patch, stride).flatten(2)  # (B, C, L)
            share, label = pooled.max(1)
            label = torch.where(share > 0, label, torch.full_like(label, num))  # (B, L)
            values_in = values.to(features.device, features.dtype)[chosen][:, None, None]
            per_call = max(1, chunk // b)
            for start in range(0, len(masks), per_call):
                block = masks[start:start + per_call]  # (l, 1, h, w)
                r = repeat_batch(features, len(block))
                m = block.repeat_interleave(b, 0)  # copy-major: rows l * b + sample
                current = r[:, chosen]
                r[:, chosen] = current + m * (values_in - current)
                edited = cut.tail(r, repeat_batch(batch.z, len(block)))
                after = concept_presence(segmenter, edited)[:, c].view(len(block), b, -1).double()
                moved = (edited.view(len(block), b, *edited.shape[1:]) - unedited[None]).abs().amax(2)
                moved = F.interpolate(moved, size=image, mode="nearest") if moved.shape[-2:] != image else moved
                moved = (moved > 2 * CHANGED).flatten(2).double()  # images span [-1, 1]: a range of 2
                inside = (after * windows[start:start + len(block), None]).sum(2)  # (l, b)
                gained = inside - before.t()[start:start + len(block)]
                keys = label.t()[start:start + len(block)]
                stats["gained"].add(gained.flatten().cpu(), keys.flatten().cpu())  # type: ignore[attr-defined]
                stats["appeared"].add((gained > 0).double().flatten().cpu(),  # type: ignore[attr-defined]
                                      keys.flatten().cpu())
                changed = (moved * windows[start:start + len(block), None]).sum(2)  # (l, b)
                stats["changed"].add(changed.flatten().cpu(), keys.flatten().cpu())  # type: ignore[attr-defined]

    sample_pass = SamplePass(generator, seed=seed, samples=samples, batch_size=batch_size, generate=False,
                             device=device, collective=collective, description=f"insertion context {layer}",
                             progress=progress)
    merged = sample_pass.run(stats, update)
    gained, appeared, changed = merged["gained"], merged["appeared"], merged["changed"]
    assert isinstance(gained, Tally) and isinstance(appeared, Tally) and isinstance(changed, Tally)
    return InsertionContext(layer, concept, chosen, values[chosen].tolist(), patch, stride, margin,
                            [*segmenter.concepts, NONE], gained.count.long().tolist(), gained.mean().tolist(),
                            appeared.mean().tolist(), samples, seed, changed.mean().tolist())


def _coverage(present: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, h, w) float64 fraction of each cell's pixels showing each concept, from presence (N, C, H, W)."""
    return F.adaptive_avg_pool2d(present.double(), size)
