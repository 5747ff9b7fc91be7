"""Fused CPU kernels for the statistics' hot loops, compiled by numba when it is installed.

The statistics upsample every feature map to the segmentation's size, place each value in its unit's
histogram slot and, for the level counts, count it at its level and concept. In PyTorch that is a dozen
passes over the upsampled values (two taps per axis, multiply, add, ceil, clamp, convert, offset, look up,
and per label channel an add and a bincount) and a large upsampled tensor; these kernels upsample each map
in a small buffer and count it in one pass, in parallel over units. They compute exactly what the PyTorch
path computes (the same float32 operations for the upsampling, and the slot of v is ceil(fl(fl(v * scale)
+ bias)) clamped to [0, bins + 1]), which tests check; the PyTorch path serves other devices and machines
without numba.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from gandissect.core.features import interpolation_taps

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency, but the statistics work without it
    numba = None


def available(*tensors: torch.Tensor) -> bool:
    """Whether the fused kernels can take these tensors (numba installed, all on the CPU)."""
    return numba is not None and all(t.device.type == "cpu" for t in tensors)


if numba is not None:

    @numba.njit(inline="always")
    def _upsample_into(out, acts, i, u, y0, y1, wy0, wy1, x0, x1, wx0, wx1, rows):  # pragma: no cover
        """out (H * W,) <- acts[i, u] upsampled, in the float32 operations of `features.upsample`."""
        width_in = acts.shape[3]
        for y in range(y0.size):
            for c in range(width_in):
                rows[y, c] = np.float32(acts[i, u, y0[y], c] * wy0[y]) + np.float32(acts[i, u, y1[y], c] * wy1[y])
        width = x0.size
        for y in range(y0.size):
            for x in range(width):
                out[y * width + x] = np.float32(rows[y, x0[x]] * wx0[x]) + np.float32(rows[y, x1[x]] * wx1[x])

    @numba.njit(inline="always")
    def _slot(v, scale, bias, bins):  # pragma: no cover
        s = int(np.ceil(np.float32(np.float32(v * scale) + bias)))
        return 0 if s < 0 else (bins + 1 if s > bins + 1 else s)

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _histogram(acts, y0, y1, wy0, wy1, x0, x1, wx0, wx1, scale, bias, bins, counts, minimum,
                   maximum):  # pragma: no cover
        n, units = acts.shape[0], acts.shape[1]
        for u in numba.prange(units):
            rows = np.empty((y0.size, acts.shape[3]), np.float32)
            values = np.empty(y0.size * x0.size, np.float32)
            low_seen, high_seen = np.inf, -np.inf
            for i in range(n):
                _upsample_into(values, acts, i, u, y0, y1, wy0, wy1, x0, x1, wx0, wx1, rows)
                for p in range(values.size):
                    v = values[p]
                    counts[u, _slot(v, scale[u], bias[u], bins)] += 1
                    low_seen = min(low_seen, v)
                    high_seen = max(high_seen, v)
            minimum[u] = min(minimum[u], low_seen)
            maximum[u] = max(maximum[u], high_seen)

    @numba.njit(cache=True, nogil=True)
    def _prepare_labels(labels, folds, unknown, known, partly_known, concept_area, pixels):  # pragma: no cover
        """In place on labels (N, K, P): a concept repeated at a pixel in a later channel, and every label of
        a pixel with an `unknown` label, become -1; known (N, P) marks pixels with no `unknown` label and
        partly_known (N,) the samples with any other; concept areas (F, C) and pixels (F,) count known pixels."""
        n, channels, size = labels.shape
        for i in range(n):
            f = folds[i]
            partly_known[i] = False
            for p in range(size):
                ok = True
                for k in range(channels):
                    c = labels[i, k, p]
                    if c == unknown:
                        ok = False
                    for earlier in range(k):
                        if labels[i, earlier, p] == c:
                            labels[i, k, p] = -1
                known[i, p] = ok
                if ok:
                    pixels[f] += 1
                    for k in range(channels):
                        c = labels[i, k, p]
                        if c >= 0:
                            concept_area[f, c] += 1
                else:
                    partly_known[i] = True
                    for k in range(channels):
                        labels[i, k, p] = -1

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _level_counts(acts, y0, y1, wy0, wy1, x0, x1, wx0, wx1, scale, bias, bins, exceeded, folds, labels, known,
                      partly_known, concept_area, pixels, joint, totals, counts, minimum,
                      maximum):  # pragma: no cover
        """Per unit and sample: upsample, find each value's level (its slot when `exceeded` is empty), then
        count the known pixels' levels, then each label channel's (labels of unknown pixels are -1 by
        `_prepare_labels`). Separate loops keep each one simple.

        Level 0 (values at or below every level: a ReLU unit's zeros, often half its values) is not counted per
        value: once a unit is done, it is what the known pixels (`pixels`) and each concept's area
        (`concept_area`, this batch included) leave after the other levels. When `counts` has rows (the levels
        are then the slots), it gets every value's slot count and `minimum`/`maximum` its extremes, as
        `_histogram` would: the unknown pixels' counts directly, the known pixels' as what this call added to
        the totals."""
        n, units = acts.shape[0], acts.shape[1]
        channels, concepts, folds_count = labels.shape[1], joint.shape[3], joint.shape[0]
        with_histogram = counts.shape[0] > 0
        identity = exceeded.shape[0] == 0
        for u in numba.prange(units):
            rows = np.empty((y0.size, acts.shape[3]), np.float32)
            values = np.empty(y0.size * x0.size, np.float32)
            levels = np.empty(values.size, np.int32)
            low_seen, high_seen = np.inf, -np.inf
            if with_histogram:
                counts[u] -= totals[:, u].sum(0)
            for i in range(n):
                _upsample_into(values, acts, i, u, y0, y1, wy0, wy1, x0, x1, wx0, wx1, rows)
                if identity:
                    for p in range(values.size):
                        levels[p] = _slot(values[p], scale[u], bias[u], bins)
                else:
                    level_of = exceeded[u]
                    for p in range(values.size):
                        levels[p] = level_of[_slot(values[p], scale[u], bias[u], bins)]
                if with_histogram:
                    for p in range(values.size):
                        low_seen = min(low_seen, values[p])
                        high_seen = max(high_seen, values[p])
                total = totals[folds[i], u]
                if partly_known[i]:
                    for p in range(values.size):
                        if not known[i, p]:
                            if with_histogram:
                                counts[u, levels[p]] += 1
                        elif levels[p] > 0:
                            total[levels[p]] += 1
                else:
                    for p in range(values.size):
                        if levels[p] > 0:
                            total[levels[p]] += 1
                counted = joint[folds[i], u]
                for k in range(channels):
                    label = labels[i, k]
                    for p in range(values.size):
                        c = label[p]
                        if c >= 0 and levels[p] > 0:
                            counted[levels[p], c] += 1
            above = np.zeros(concepts, np.int64)
            for f in range(folds_count):
                totals[f, u, 0] = pixels[f] - totals[f, u, 1:].sum()
                above[:] = 0
                for b in range(1, joint.shape[2]):
                    for c in range(concepts):
                        above[c] += joint[f, u, b, c]
                for c in range(concepts):
                    joint[f, u, 0, c] = concept_area[f, c] - above[c]
            if with_histogram:
                counts[u] += totals[:, u].sum(0)
                minimum[u] = min(minimum[u], low_seen)
                maximum[u] = max(maximum[u], high_seen)


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


def histogram(acts: torch.Tensor, size: tuple[int, int], low: torch.Tensor, high: torch.Tensor,
              counts: torch.Tensor, minimum: torch.Tensor, maximum: torch.Tensor) -> None:
    """Add feature maps (N, U, h, w), upsampled to `size`, to per-unit slot counts (U, bins + 2) int64 and
    float64 extremes, in place."""
    scale, bias = slot_coefficients(low, high, counts.shape[1] - 2)
    with _torch_threads():
        _histogram(acts.float().contiguous().numpy(), *_taps(acts, size), scale.numpy(), bias.numpy(),
                   counts.shape[1] - 2, counts.numpy(), minimum.numpy(), maximum.numpy())


def level_counts(acts: torch.Tensor, low: torch.Tensor, high: torch.Tensor, bins: int, exceeded: torch.Tensor,
                 folds: torch.Tensor, labels: torch.Tensor, unknown: int, joint: torch.Tensor, totals: torch.Tensor,
                 concept_area: torch.Tensor, pixels: torch.Tensor,
                 histogram: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> None:
    """Count feature maps (N, U, h, w), upsampled to the labels' (H, W), at their level (exceeded: (U, bins + 2)
    levels below each slot) into joint (F, U, L + 1, C) by label (N, K, H, W: -1 none, `unknown` for pixels left
    out, a concept counted once per pixel) and totals (F, U, L + 1); known pixels also into concept_area (F, C)
    and pixels (F,). `histogram` (counts, minimum, maximum) of the same bins over (low, high], if given, gets
    every value as `histogram()` would add it, from the same pass; it needs every edge to be a level."""
    scale, bias = slot_coefficients(low, high, bins)
    codes = labels.flatten(2).to(torch.int32, copy=True).numpy()
    known = np.empty((codes.shape[0], codes.shape[2]), np.bool_)
    partly_known = np.empty(codes.shape[0], np.bool_)
    folds_array = folds.to(torch.int64).contiguous().numpy()
    _prepare_labels(codes, folds_array, unknown, known, partly_known, concept_area.numpy(), pixels.numpy())
    if histogram is None:
        extremes = np.empty(0, np.float64)
        counts, minimum, maximum = np.empty((0, bins + 2), np.int64), extremes, extremes
    else:
        counts, minimum, maximum = (t.numpy() for t in histogram)
    slots = torch.arange(bins + 2, dtype=exceeded.dtype, device=exceeded.device)
    identity = exceeded.shape[1] == bins + 2 and bool((exceeded == slots).all())
    levels = torch.empty(0, 0, dtype=torch.int32) if identity else exceeded.to(torch.int32).contiguous()
    with _torch_threads():
        _level_counts(acts.float().contiguous().numpy(), *_taps(acts, tuple(labels.shape[-2:])), scale.numpy(),
                      bias.numpy(), bins, levels.numpy(), folds_array, codes, known, partly_known,
                      concept_area.numpy(), pixels.numpy(), joint.numpy(), totals.numpy(), counts, minimum, maximum)
