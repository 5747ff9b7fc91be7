"""Soft causal effects at chosen feature cells: where to ablate and insert (cells the concept mostly covers,
cells it does not touch), the edit over a patch of cells with strength alpha, and the differentiable loss
(score after ablating at the ablation cell, minus score after inserting at the insertion cell, plus a
penalty on alpha) that `optimize` minimises."""

from __future__ import annotations

from typing import NamedTuple

import torch

from gandissect.causal.cut import Cut
from gandissect.core.features import overlap_matrix
from gandissect.core.segmenters import Segmenter, check_labels

MOSTLY = 0.5


class Loss(NamedTuple):
    """The loss (a scalar with its graph) and its terms, detached."""

    total: torch.Tensor
    ablated: float
    inserted: float
    penalty: float


# ---------------------------------------------------------------------------------------------- pieces


def cell_means(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, H, W) -> (N, h, w): the mean of each feature cell's pixels (exact area weights when the grids do
    not divide), differentiable."""
    (height, width), (h, w) = maps.shape[-2:], size
    rows = overlap_matrix(height, h).to(maps.device, maps.dtype)
    cols = overlap_matrix(width, w).to(maps.device, maps.dtype)
    rows, cols = rows / rows.sum(1, keepdim=True), cols / cols.sum(1, keepdim=True)
    return rows @ maps @ cols.t()


def concept_coverage_grid(segmenter: Segmenter, images: torch.Tensor, concept: int,
                          size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) fraction of each feature cell's pixels that the segmenter labels `concept` (any channel)."""
    with torch.no_grad():
        labels = check_labels(segmenter.segment(images), images, len(segmenter.concepts), type(segmenter).__name__)
    present = ((labels == concept).any(1) & (labels != -2).all(1)).double()
    return cell_means(present, size)


def choose_locations(coverage: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample of coverage (N, h, w): an ablation cell (covered more than MOSTLY) and an insertion cell
    (not covered at all), each drawn uniformly among the candidates; (N, 2) long (row, column), -1 for none."""
    n, h, w = coverage.shape
    flat = coverage.reshape(n, h * w).cpu()
    out = []
    for candidates in (flat > MOSTLY, flat == 0):
        weights = candidates.double()
        has = candidates.any(1)
        weights[~has] = 1.0  # drawn, then discarded
        cell = torch.multinomial(weights, 1, generator=generator)[:, 0]
        where = torch.stack([cell // w, cell % w], 1)
        where[~has] = -1
        out.append(where)
    return out[0], out[1]


def patch_mask(locations: torch.Tensor, size: tuple[int, int], patch: int) -> torch.Tensor:
    """(N, 1, h, w) 1 on the `patch` x `patch` cells centred on each location (clipped at the border), 0
    elsewhere and for rows without a location (-1)."""
    h, w = size
    rows = torch.arange(h, device=locations.device)
    cols = torch.arange(w, device=locations.device)
    reach = patch // 2
    near_row = (rows[None, :] - locations[:, :1]).abs() <= reach
    near_col = (cols[None, :] - locations[:, 1:]).abs() <= reach
    mask = near_row[:, :, None] & near_col[:, None, :] & (locations[:, 0] >= 0)[:, None, None]
    return mask[:, None].float()


def _score_at(cells: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
    """(N,) the cell values (N, h, w) at locations (N, 2)."""
    rows = torch.arange(cells.shape[0], device=cells.device)
    return cells[rows, locations[:, 0], locations[:, 1]]


def penalty(alpha: torch.Tensor, weight: float) -> torch.Tensor:
    """lambda * ||alpha||_2 (the paper's regulariser)."""
    return weight * torch.linalg.vector_norm(alpha)


def ace_loss(cut: Cut, segmenter: Segmenter, concept: int, values: torch.Tensor, alpha: torch.Tensor,
             features: torch.Tensor, z: torch.Tensor, ablate_at: torch.Tensor, insert_at: torch.Tensor, *,
             patch: int = 3, weight: float = 0.0) -> Loss:
    """The local ACE loss on one batch: features (B, U, h, w) = cut.head(z); ablate_at, insert_at (B, 2)
    feature cells (-1: none for that sample). Differentiable in alpha (U,)."""
    size = tuple(features.shape[-2:])
    shape = (1, -1, 1, 1)
    weights = alpha.to(features.dtype).reshape(shape)
    cost = penalty(alpha, weight)
    counts, edited, latents, places = [], [], [], []
    for where, target in ((ablate_at, torch.zeros((), dtype=features.dtype, device=features.device)),
                          (insert_at, values.to(features.device, features.dtype).reshape(shape))):
        keep = where[:, 0] >= 0
        counts.append(int(keep.sum()))
        if counts[-1]:
            chosen = features[keep]
            mask = patch_mask(where[keep], size, patch).to(features.dtype)
            edited.append(torch.lerp(chosen, target.expand_as(chosen), weights * mask))
            latents.append(z[keep])
            places.append(where[keep])
    if not edited:
        return Loss(cost, 0.0, 0.0, float(cost.detach()))
    images = cut.tail(torch.cat(edited), torch.cat(latents))
    scores = segmenter.concept_scores(images)[:, concept]  # type: ignore[attr-defined]
    measured = _score_at(cell_means(scores.to(features.dtype), size), torch.cat(places))
    ablated_scores, inserted_scores = measured.split(counts)
    ablated = ablated_scores.mean() if counts[0] else measured.new_zeros(())
    inserted = inserted_scores.mean() if counts[1] else measured.new_zeros(())
    return Loss(ablated - inserted + cost, float(ablated.detach()), float(inserted.detach()), float(cost.detach()))


# ---------------------------------------------------------------------------------------------- checks
