"""Fused CPU kernels for the statistics' hot loops, compiled by numba when it is installed.

The statistics upsample every feature map to the segmentation's size, place each value in its unit's
histogram slot and, for the level counts, count it at its level and concept. In PyTorch that is a dozen
passes over the upsampled values (two taps per axis, multiply, add, ceil, clamp, convert, offset, look up,
and per label channel an add and a bincount) and a large upsampled tensor; these kernels upsample each map
in a small buffer and count it in one pass, in parallel over units. They compute exactly what the PyTorch
path computes (the same float32 operations for the upsampling, and the slot of v is ceil(fl(fl(v * scale)
+ bias)) clamped to [0, bins + 1]), which tests check; the PyTorch path serves other devices and machines
without numba. The loops themselves live in `core.compiled`, imported on first use.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from gandissect.core.features import interpolation_taps

NUMBA_MISSING = importlib.util.find_spec("numba") is None
numba: Any = None if NUMBA_MISSING else "not loaded"
"""None where the kernels cannot run (numba is missing, or a test turned them off); else the numba module
once loaded."""


def available(*tensors: torch.Tensor) -> bool:
    """Whether the fused kernels can take these tensors (numba installed, all on the CPU)."""
    return numba is not None and all(t.device.type == "cpu" for t in tensors)


def _compiled() -> Any:
    """The compiled loops (`core.compiled`): numba is imported when they are first needed, not with this module
    (commands that never count pay nothing for it)."""
    global numba
    module = importlib.import_module("gandissect.core.compiled")
    if numba is not None:
        numba = module.numba
    return module


def slot_coefficients(low: torch.Tensor, high: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (scale, bias) per unit: the slot of v is ceil(fl(fl(v * scale) + bias)), clamped."""
    low, high = low.float(), high.float()
    scale = bins / (high - low)
    return scale, -low * scale


@contextmanager
def _torch_threads() -> Iterator[None]:
    """Run a parallel kernel on as many threads as torch may use, and leave torch's count as it was: numba's
    OpenMP layer sets the process-wide OpenMP thread count, which torch shares."""
    threads = torch.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _taps(acts: torch.Tensor, size: tuple[int, int]) -> list[np.ndarray]:
    (h, w), (height, width) = acts.shape[-2:], size
    return [t.numpy() for t in (*interpolation_taps(h, height), *interpolation_taps(w, width))]


def _histogram_args(acts: torch.Tensor, size: tuple[int, int], low: torch.Tensor, high: torch.Tensor,
                    counts: torch.Tensor, minimum: torch.Tensor, maximum: torch.Tensor) -> tuple[Any, ...]:
    scale, bias = slot_coefficients(low, high, counts.shape[1] - 2)
    return (acts.float().contiguous().numpy(), *_taps(acts, size), scale.numpy(), bias.numpy(), counts.shape[1] - 2,
            counts.numpy(), minimum.numpy(), maximum.numpy())


def histogram(acts: torch.Tensor, size: tuple[int, int], low: torch.Tensor, high: torch.Tensor,
              counts: torch.Tensor, minimum: torch.Tensor, maximum: torch.Tensor) -> None:
    """Add feature maps (N, U, h, w), upsampled to `size`, to per-unit slot counts (U, bins + 2) int64 and
    float64 extremes, in place."""
    compiled = _compiled()
    with _torch_threads():
        compiled._histogram(*_histogram_args(acts, size, low, high, counts, minimum, maximum))


def _level_count_args(acts: torch.Tensor, low: torch.Tensor, high: torch.Tensor, bins: int, exceeded: torch.Tensor,
                      folds: torch.Tensor, labels: torch.Tensor, unknown: int, joint: torch.Tensor,
                      totals: torch.Tensor, concept_area: torch.Tensor, pixels: torch.Tensor,
                      histogram: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None
                      ) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The arguments of `_prepare_labels` and of `_level_counts`."""
    scale, bias = slot_coefficients(low, high, bins)
    codes = labels.flatten(2).to(torch.int32, copy=True).numpy()
    known = np.empty((codes.shape[0], codes.shape[2]), np.bool_)
    partly_known = np.empty(codes.shape[0], np.bool_)
    folds_array = folds.to(torch.int64).contiguous().numpy()
    area, pixel_counts = concept_area.numpy(), pixels.numpy()
    if histogram is None:
        extremes = np.empty(0, np.float64)
        counts, minimum, maximum = np.empty((0, bins + 2), np.int64), extremes, extremes
    else:
        counts, minimum, maximum = (t.numpy() for t in histogram)
    slots = torch.arange(bins + 2, dtype=exceeded.dtype, device=exceeded.device)
    identity = exceeded.shape[1] == bins + 2 and bool((exceeded == slots).all())
    levels = torch.empty(0, 0, dtype=torch.int32) if identity else exceeded.to(torch.int32).contiguous()
    prepare = (codes, folds_array, unknown, known, partly_known, area, pixel_counts)
    count = (acts.float().contiguous().numpy(), *_taps(acts, tuple(labels.shape[-2:])), scale.numpy(), bias.numpy(),
             bins, levels.numpy(), folds_array, codes, known, partly_known, area, pixel_counts, joint.numpy(),
             totals.numpy(), counts, minimum, maximum)
    return prepare, count


def level_counts(acts: torch.Tensor, low: torch.Tensor, high: torch.Tensor, bins: int, exceeded: torch.Tensor,
                 folds: torch.Tensor, labels: torch.Tensor, unknown: int, joint: torch.Tensor, totals: torch.Tensor,
                 concept_area: torch.Tensor, pixels: torch.Tensor,
                 histogram: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> None:
    """Count feature maps (N, U, h, w), upsampled to the labels' (H, W), at their level (exceeded: (U, bins + 2)
    levels below each slot) into joint (F, U, L + 1, C) by label (N, K, H, W: -1 none, `unknown` for pixels left
    out, a concept counted once per pixel) and totals (F, U, L + 1); known pixels also into concept_area (F, C)
    and pixels (F,). `histogram` (counts, minimum, maximum) of the same bins over (low, high], if given, gets
    every value as `histogram()` would add it, from the same pass; it needs every edge to be a level."""
    compiled = _compiled()
    prepare, count = _level_count_args(acts, low, high, bins, exceeded, folds, labels, unknown, joint, totals,
                                       concept_area, pixels, histogram)
    compiled._prepare_labels(*prepare)
    with _torch_threads():
        compiled._level_counts(*count)
