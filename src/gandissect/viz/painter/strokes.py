"""Strokes as regions: pure tensor functions, no model and no I/O.

A stroke is a polyline of points (x, y) in image pixel coordinates (0 <= x <= W, 0 <= y <= H, the top-left
corner of the image at (0, 0)) and a radius. Its region is the union of the discs of that radius along the
polyline: pixel (row i, column j) belongs to it when its centre (j + 0.5, i + 0.5) lies within `radius` of
some segment (or of the single point). Regions are hard 0/1 masks at image resolution; `UnitEdit` resizes
them to a layer's grid with soft coverage (`core.features.resize_region`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

SEGMENTS_PER_STEP = 32
"""Segments measured at once: bounds memory at (h * w * 32) doubles for a stroke box of h x w pixels."""


def _squared_distances(x: torch.Tensor, y: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """(h, w, S) squared distance from each pixel centre (x (1, w, 1), y (h, 1, 1)) to each segment
    starts[s] -> ends[s] (S, 2); a segment of length 0 is its point."""
    ax, ay = starts[:, 0], starts[:, 1]
    dx, dy = ends[:, 0] - ax, ends[:, 1] - ay
    length2 = (dx * dx + dy * dy).clamp(min=1e-12)
    ox, oy = x - ax, y - ay
    along = ((ox * dx + oy * dy) / length2).clamp(0.0, 1.0)
    gx, gy = ox - along * dx, oy - along * dy
    return gx * gx + gy * gy


def stroke_mask(points: torch.Tensor | Sequence[Sequence[float]], radius: float, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) float32 mask, 1 where a pixel's centre lies within `radius` of the polyline through `points`
    ((P, 2) as x, y in pixels; one point gives a disc), 0 elsewhere. Only the stroke's bounding box is measured."""
    height, width = size
    mask = torch.zeros(size)
    line = torch.as_tensor(points, dtype=torch.float64).reshape(-1, 2)
    if line.shape[0] == 0:
        return mask
    radius = float(radius)
    low, high = line.min(0).values - radius, line.max(0).values + radius
    # pixel j's centre j + 0.5 can lie within the box only if low - 0.5 <= j <= high - 0.5
    left, right = max(0, math.ceil(float(low[0]) - 0.5)), min(width - 1, math.floor(float(high[0]) - 0.5))
    top, bottom = max(0, math.ceil(float(low[1]) - 0.5)), min(height - 1, math.floor(float(high[1]) - 0.5))
    if left > right or top > bottom:
        return mask
    x = (torch.arange(left, right + 1, dtype=torch.float64) + 0.5)[None, :, None]
    y = (torch.arange(top, bottom + 1, dtype=torch.float64) + 0.5)[:, None, None]
    starts = line if line.shape[0] == 1 else line[:-1]
    ends = line if line.shape[0] == 1 else line[1:]
    nearest = torch.full((bottom - top + 1, right - left + 1), math.inf, dtype=torch.float64)
    for first in range(0, starts.shape[0], SEGMENTS_PER_STEP):
        step = slice(first, first + SEGMENTS_PER_STEP)
        nearest = torch.minimum(nearest, _squared_distances(x, y, starts[step], ends[step]).amin(2))
    mask[top:bottom + 1, left:right + 1] = (nearest <= radius * radius).float()
    return mask


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
