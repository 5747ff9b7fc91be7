"""Strokes as regions: pure tensor functions, no model and no I/O.

A stroke is a polyline of points (x, y) in image pixel coordinates (0 <= x <= W, 0 <= y <= H, the top-left
corner of the image at (0, 0)) and a radius. Its region is the union of the discs of that radius along the
polyline: pixel (row i, column j) belongs to it when its centre (j + 0.5, i + 0.5) lies within `radius` of
some segment (or of the single point). Regions are hard 0/1 masks at image resolution; `UnitEdit` resizes
them to a layer's grid with soft coverage (`core.features.resize_region`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

SEGMENTS_PER_STEP = 32
"""Segments measured at once: bounds memory at (H * W * 32) doubles whatever the stroke's length."""


def _squared_distances(centres: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """(P, S) squared distance from each of P points (P, 2) to each segment starts[s] -> ends[s] (S, 2)."""
    direction = ends - starts
    length2 = (direction * direction).sum(1)
    offset = centres[:, None, :] - starts[None, :, :]
    along = (offset * direction[None]).sum(2) / length2.clamp(min=1e-12)[None]
    nearest = starts[None] + along.clamp(0.0, 1.0)[..., None] * direction[None]
    gap = centres[:, None, :] - nearest
    return (gap * gap).sum(2)


def stroke_mask(points: torch.Tensor | Sequence[Sequence[float]], radius: float, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) float32 mask, 1 where a pixel's centre lies within `radius` of the polyline through `points`
    ((P, 2) as x, y in pixels; one point gives a disc), 0 elsewhere."""
    height, width = size
    line = torch.as_tensor(points, dtype=torch.float64).reshape(-1, 2)
    if line.shape[0] == 0:
        return torch.zeros(size)
    rows = torch.arange(height, dtype=torch.float64) + 0.5
    cols = torch.arange(width, dtype=torch.float64) + 0.5
    centres = torch.stack(torch.meshgrid(cols, rows, indexing="xy"), -1).reshape(-1, 2)
    starts = line if line.shape[0] == 1 else line[:-1]
    ends = line if line.shape[0] == 1 else line[1:]
    nearest = torch.full((centres.shape[0],), float("inf"), dtype=torch.float64)
    for first in range(0, starts.shape[0], SEGMENTS_PER_STEP):
        step = slice(first, first + SEGMENTS_PER_STEP)
        nearest = torch.minimum(nearest, _squared_distances(centres, starts[step], ends[step]).min(1).values)
    return (nearest <= float(radius) ** 2).reshape(height, width).float()


def apply_erasers(masks: Sequence[torch.Tensor], erasers: Sequence[bool],
                  strengths: Sequence[float]) -> list[torch.Tensor]:
    """The masks after erasing, in order: each eraser i multiplies every earlier non-eraser mask by
    (1 - strengths[i] * masks[i]). Erasers' own masks are returned unchanged; nothing is modified in place."""
    if not len(masks) == len(erasers) == len(strengths):
        raise ValueError("masks, erasers and strengths must have one entry per stroke")
    out = list(masks)
    for i, (mask, erasing) in enumerate(zip(masks, erasers, strict=True)):
        if not erasing:
            continue
        keep = 1.0 - float(strengths[i]) * mask
        out[:i] = [earlier if erasers[j] else earlier * keep for j, earlier in enumerate(out[:i])]
    return out
