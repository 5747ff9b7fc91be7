"""Average causal effect of single units on a concept, batched over units and samples.

ACE_{u -> c} = E_z[ share of c's pixels in f(r with u := k_u) ] - E_z[ share of c's pixels in f(r with u := 0) ],
the intervention made at every position of the layer (or inside a region), the share measured by the
segmenter's labels on held-out samples (a seed of their own). Each batch computes the layer's features once
and then generates every (sample, unit) pair with the unit inserted and with it ablated, `group` units' pairs
per generator call. A unit that is zero wherever it would be ablated leaves the image as it was, so those
pairs reuse the unedited image's share (exactly what generating them would give). Rides the engine's sample
pass, so it shards and merges under torchrun like every pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from gandissect.causal.cut import Cut
from gandissect.core.features import resize_region
from gandissect.core.segmenters import MergedSegmenter, Segmenter, check_labels
from gandissect.core.stats import Statistic, Tally
from gandissect.engine.collectives import Collective
from gandissect.engine.samplepass import Batch, SamplePass

HELD_OUT_SEED = 3


@dataclass
class UnitEffects:
    """Per unit of `units`: the concept's mean pixel share after insertion, after ablation, and their difference."""

    layer: str
    concept: str
    units: list[int]
    inserted: torch.Tensor
    ablated: torch.Tensor
    samples: int
    seed: int

    @property
    def ace(self) -> torch.Tensor:
        return self.inserted - self.ablated

    def ranking(self) -> list[int]:
        """Units by ACE, highest first (ties by unit number)."""
        order = self.ace.argsort(descending=True, stable=True).tolist()
        return [self.units[i] for i in order]


def concept_share(segmenter: Segmenter, images: torch.Tensor, concept: int) -> torch.Tensor:
    """(N,) the fraction of each image's labelled pixels that show `concept` (in any label channel). Of merged
    segmenters only the part that knows the concept runs."""
    if isinstance(segmenter, MergedSegmenter):
        for part, offset in zip(segmenter.parts, segmenter.offsets, strict=True):
            if offset <= concept < offset + len(part.concepts):
                return concept_share(part, images, concept - offset)
    with torch.no_grad():
        labels = check_labels(segmenter.segment(images), images, len(segmenter.concepts), type(segmenter).__name__)
    known = (labels != -2).all(1)
    present = (labels == concept).any(1) & known
    return present.flatten(1).sum(1).double() / known.flatten(1).sum(1).clamp(min=1).double()


def edit_pairs(features: torch.Tensor, samples: torch.Tensor, units: torch.Tensor, targets: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:
    """One copy of features[samples[j]] (B, U, h, w) per pair j, with unit units[j] set to targets[j] inside
    mask (1, 1, h, w) or everywhere: (P, U, h, w)."""
    out = features[samples].clone()
    rows = torch.arange(len(samples), device=features.device)
    target = targets.to(features.device, features.dtype)[:, None, None]
    current = out[rows, units]
    out[rows, units] = target.expand_as(current) if mask is None else current + mask[0, 0] * (target - current)
    return out


def unit_effects(generator: nn.Module, segmenter: Segmenter, layer: str, concept: int, concept_name: str,
                 values: torch.Tensor, units: Sequence[int] | None = None, samples: int = 200,
                 seed: int = HELD_OUT_SEED, batch_size: int = 8, group: int = 32,
                 region: torch.Tensor | None = None, device: str | torch.device = "cpu",
                 collective: Collective | None = None, progress: bool = True) -> UnitEffects:
    """Single-unit insertion and ablation effects on `concept` for `units` (default: every unit of the layer),
    inserting `values[u]` (U,) at every position (or inside `region`, any resolution)."""
    cut = Cut(generator, layer)
    chunk = max(1, group * batch_size)
    width = values.shape[0]
    chosen = list(range(width)) if units is None else [int(u) for u in units]
    stats: dict[str, Statistic] = {"inserted": Tally(width), "ablated": Tally(width)}

    def update(batch: Batch, stats: dict[str, Statistic]) -> None:
        with torch.no_grad():
            features = cut.head(batch.z)
            mask = None if region is None else resize_region(region, tuple(features.shape[-2:]))
            baseline = concept_share(segmenter, cut.tail(features, batch.z), concept)
            samples = torch.arange(features.shape[0]).repeat(len(chosen))
            units = torch.tensor(chosen).repeat_interleave(features.shape[0])
            inside = features if mask is None else features * (mask > 0)
            active = inside[samples, units].flatten(1).ne(0).any(1)
            for name, targets, todo in (("inserted", values[units], torch.ones_like(active)),
                                        ("ablated", torch.zeros(len(units)), active)):
                # ablating a unit that is zero where it is ablated changes nothing: its image is the baseline
                stats[name].add(baseline[samples[~todo]], units[~todo])  # type: ignore[attr-defined]
                pending = todo.nonzero().flatten()
                for start in range(0, len(pending), chunk):
                    pick = pending[start:start + chunk]
                    edited = edit_pairs(features, samples[pick], units[pick], targets[pick], mask)
                    images = cut.tail(edited, batch.z[samples[pick]])
                    stats[name].add(concept_share(segmenter, images, concept), units[pick])  # type: ignore[attr-defined]

    sample_pass = SamplePass(generator, seed=seed, samples=samples, batch_size=batch_size, generate=False,
                             device=device, collective=collective, description=f"ACE {layer} -> {concept_name}",
                             progress=progress)
    merged = sample_pass.run(stats, update)
    inserted, ablated = merged["inserted"], merged["ablated"]
    assert isinstance(inserted, Tally) and isinstance(ablated, Tally)
    index = torch.tensor(chosen)
    return UnitEffects(layer, concept_name, chosen, inserted.mean()[index].float(), ablated.mean()[index].float(),
                       samples, seed)
