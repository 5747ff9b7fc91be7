"""The numba-compiled loops behind `gandissect.core.kernels` (imported only when they are first needed:
loading numba and its on-disk cache of these functions takes about a second)."""

from __future__ import annotations

import numba
import numpy as np


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
