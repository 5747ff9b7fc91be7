"""Fused CPU kernels for the statistics' hot loops, compiled by numba when it is installed.

The statistics place every upsampled activation in its unit's histogram slot and, for the level counts,
count it at its level and concept. In PyTorch that is about ten passes over the values (multiply, add, ceil,
clamp, convert, offset, look up, and per label channel an add and a bincount); these kernels do it in one
pass per unit, in parallel over units. They compute exactly what the PyTorch path computes (the slot of v
is ceil(fl(fl(v * scale) + bias)) clamped to [0, bins + 1], in float32), which tests check; the PyTorch path
serves other devices and machines without numba.
"""

from __future__ import annotations

import numpy as np
import torch

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency, but the statistics work without it
    numba = None


def available(*tensors: torch.Tensor) -> bool:
    """Whether the fused kernels can take these tensors (numba installed, all on the CPU)."""
    return numba is not None and all(t.device.type == "cpu" for t in tensors)


if numba is not None:

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _histogram(values, scale, bias, bins, counts, minimum, maximum):  # pragma: no cover - compiled
        n, units, pixels = values.shape
        for u in numba.prange(units):
            low_seen, high_seen = np.inf, -np.inf
            for i in range(n):
                for p in range(pixels):
                    v = values[i, u, p]
                    x = np.float32(np.float32(v * scale[u]) + bias[u])
                    s = int(np.ceil(x))
                    s = 0 if s < 0 else (bins + 1 if s > bins + 1 else s)
                    counts[u, s] += 1
                    if v < low_seen:
                        low_seen = v
                    if v > high_seen:
                        high_seen = v
            if low_seen < minimum[u]:
                minimum[u] = low_seen
            if high_seen > maximum[u]:
                maximum[u] = high_seen

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _level_counts(values, scale, bias, bins, exceeded, folds, labels, known, joint, totals):  # pragma: no cover
        n, units, pixels = values.shape
        channels = labels.shape[1]
        for u in numba.prange(units):
            for i in range(n):
                f = folds[i]
                for p in range(pixels):
                    if not known[i, p]:
                        continue
                    x = np.float32(np.float32(values[i, u, p] * scale[u]) + bias[u])
                    s = int(np.ceil(x))
                    s = 0 if s < 0 else (bins + 1 if s > bins + 1 else s)
                    b = exceeded[u, s]
                    totals[f, u, b] += 1
                    for k in range(channels):
                        c = labels[i, k, p]
                        if c >= 0:
                            joint[f, u, b, c] += 1


def slot_coefficients(low: torch.Tensor, high: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (scale, bias) per unit: the slot of v is ceil(fl(fl(v * scale) + bias)), clamped."""
    low, high = low.float(), high.float()
    scale = bins / (high - low)
    return scale, -low * scale


def histogram(values: torch.Tensor, low: torch.Tensor, high: torch.Tensor, counts: torch.Tensor,
              minimum: torch.Tensor, maximum: torch.Tensor) -> None:
    """Add values (N, U, P) float32 to per-unit slot counts (U, bins + 2) int64 and float64 extremes, in place."""
    scale, bias = slot_coefficients(low, high, counts.shape[1] - 2)
    _histogram(values.float().contiguous().numpy(), scale.numpy(), bias.numpy(), counts.shape[1] - 2,
               counts.numpy(), minimum.numpy(), maximum.numpy())


def level_counts(values: torch.Tensor, low: torch.Tensor, high: torch.Tensor, bins: int, exceeded: torch.Tensor,
                 folds: torch.Tensor, labels: torch.Tensor, known: torch.Tensor, joint: torch.Tensor,
                 totals: torch.Tensor) -> None:
    """Count values (N, U, P) at their level (exceeded: (U, bins + 2) levels below each slot) into joint
    (F, U, L + 1, C) by label (N, K, P; negatives skipped) and totals (F, U, L + 1), for known pixels (N, P)."""
    scale, bias = slot_coefficients(low, high, bins)
    _level_counts(values.float().contiguous().numpy(), scale.numpy(), bias.numpy(), bins,
                  exceeded.to(torch.int32).contiguous().numpy(), folds.to(torch.int64).contiguous().numpy(),
                  labels.to(torch.int32).contiguous().numpy(), known.contiguous().numpy(), joint.numpy(),
                  totals.numpy())
