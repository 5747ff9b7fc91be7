"""Feature maps: bilinear upsampling to the segmentation's size (a fixed order of float32 operations), and
resizing of edit regions from image size to a layer's grid by exact area coverage."""

from __future__ import annotations

import functools

import torch

from gandissect.core.errors import ShapeError


@functools.lru_cache(maxsize=64)
def interpolation_taps(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """1-D linear interpolation with pixel centres aligned, as in `F.interpolate(..., mode="bilinear",
    align_corners=False)` (source = (i + 0.5) * n_in / n_out - 0.5): per output i, the two input indices
    (long) and their float32 weights. Where both taps are the same input the second weight is 0, so an edge
    value is copied exactly."""
    source = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    lower = source.floor().long().clamp(max=n_in - 1)
    upper = (lower + 1).clamp(max=n_in - 1)
    weight = torch.where(upper == lower, 0.0, source - lower)
    return lower, upper, (1 - weight).float(), weight.float()


def upsample(acts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, pixel-centre aligned (align_corners=False) upsampling of feature maps (N, U, h, w) to `size`,
    separably: rows first, then columns, each output the float32 sum of two weighted taps. This fixed order of
    float32 operations is the definition the fused kernels (`core.kernels`) reproduce bit for bit; it equals
    `F.interpolate` up to float rounding."""
    acts = acts.float()
    (h, w), (height, width) = acts.shape[-2:], tuple(size)
    if (h, w) == (height, width):
        return acts
    y0, y1, wy0, wy1 = (t.to(acts.device) for t in interpolation_taps(h, height))
    x0, x1, wx0, wx1 = (t.to(acts.device) for t in interpolation_taps(w, width))
    rows = acts.index_select(-2, y0) * wy0[:, None] + acts.index_select(-2, y1) * wy1[:, None]
    return rows.index_select(-1, x0) * wx0 + rows.index_select(-1, x1) * wx1


@functools.lru_cache(maxsize=32)
def overlap_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) overlaps of output cell i with input cell j when both tile the same interval, counted in
    units where an input cell is n_out long and an output cell n_in long: integers, so sums of them are exact."""
    cells = torch.arange(n_out, dtype=torch.float64)[:, None] * n_in
    pixels = torch.arange(n_in, dtype=torch.float64)[None, :] * n_out
    low = torch.maximum(cells, pixels)
    high = torch.minimum(cells + n_in, pixels + n_out)
    return (high - low).clamp(min=0)


def as_region(region: torch.Tensor) -> torch.Tensor:
    """A region (H, W), (N, H, W) or (N, 1, H, W) with values in [0, 1], checked and viewed as (N or 1, 1, H, W)."""
    if not isinstance(region, torch.Tensor):
        raise ShapeError(f"a region must be a tensor (H, W), (N, H, W) or (N, 1, H, W), got {type(region).__name__}")
    shape = tuple(region.shape)
    if region.dim() not in (2, 3, 4) or (region.dim() == 4 and shape[1] != 1):
        raise ShapeError(f"a region must have shape (H, W), (N, H, W) or (N, 1, H, W), got {shape}")
    if region.dtype == torch.bool:
        region = region.float()
    elif not region.is_floating_point():
        raise ShapeError(f"a region must hold floats or bools in [0, 1], got dtype {region.dtype}")
    if region.numel() == 0:
        raise ShapeError(f"a region must not be empty, got shape {shape}")
    with torch.no_grad():
        low, high = float(region.min()), float(region.max())
    if not (low >= 0.0 and high <= 1.0):
        raise ShapeError(f"region values must lie in [0, 1], got values from {low} to {high}")
    return region.reshape(-1 if region.dim() > 2 else 1, 1, *shape[-2:])


def resize_region(region: torch.Tensor, size: tuple[int, int], soft: bool = True) -> torch.Tensor:
    """A region at any resolution on a feature grid of `size` (h, w), as (N or 1, 1, h, w) floats.

    Soft: each cell gets the fraction of its area that the region covers (the area average when shrinking,
    nearest-neighbour when enlarging by a whole factor). Hard: cells covered by at least half become 1, the
    rest 0. Coverage is computed from exact integer overlaps, so a half-covered cell is exactly 0.5."""
    region = as_region(region)
    dtype = region.dtype
    (height, width), (h, w) = region.shape[-2:], size
    if (height, width) == (h, w):
        return region if soft else (region >= 0.5).to(dtype)
    rows = overlap_matrix(height, h).to(region.device)
    cols = overlap_matrix(width, w).to(region.device)
    covered = torch.matmul(torch.matmul(rows, region.double()), cols.t())
    if not soft:
        return (covered * 2 >= height * width).to(dtype)
    return (covered / (height * width)).to(dtype)
