"""Dissection speed against the bare forward passes it cannot avoid, and the quantile sketch's rank error.

    python benchmarks/bench_dissect.py [--samples 512] [--layers layer3] [--repeats 3]

Baseline: generator + segmenter forward over both sample sets (threshold and IoU sets), batched the same
way, no hooks and no statistics. Dissection: the full two-pass `Dissector.run()` on the same samples.
Both run alternately in one process; the table reports medians and their ratio. `--pytorch-statistics`
counts with the PyTorch path (what runs on a GPU or without numba) instead of the fused CPU kernels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch

from gandissect.core import kernels
from gandissect.core.features import upsample
from gandissect.core.hooks import Trace
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import ColorSegmenter, MergedSegmenter, ModuleSegmenter
from gandissect.core.stats import UnitQuantiles
from gandissect.dissection import DissectConfig, Dissector
from gandissect.models import available, load
from gandissect.models.scenegan import SceneGenerator
from gandissect.models.unet import UNetSegmenter
from gandissect.scenes.world import CATEGORIES, CONCEPTS


def models(name: str):
    if name in available():
        bundle = load(name)
        return bundle.generator, MergedSegmenter(bundle.segmenter, ColorSegmenter()), f"shipped {name}"
    torch.manual_seed(0)
    segmenter = ModuleSegmenter(UNetSegmenter(), CONCEPTS, [CATEGORIES[c] for c in CONCEPTS])
    return SceneGenerator().eval(), MergedSegmenter(segmenter, ColorSegmenter()), "random weights, scenes64 shapes"


def bare_passes(generator, segmenter, config: DissectConfig) -> float:
    began = time.perf_counter()
    with torch.no_grad():
        for seed in (config.threshold_seed, config.iou_seed):
            for start in range(0, config.samples, config.batch_size):
                z = sample_z(generator, seed, range(start, min(start + config.batch_size, config.samples)))
                segmenter.segment(generator(z))
    return time.perf_counter() - began


def full_dissection(generator, segmenter, config: DissectConfig) -> float:
    with tempfile.TemporaryDirectory() as out:
        began = time.perf_counter()
        dissector = Dissector(generator, segmenter, config, out, progress=False)
        dissector.finish(dissector.run())
        return time.perf_counter() - began


def rank_errors(generator, layer: str, samples: int, seg_size: int) -> dict[str, dict[str, float]]:
    """Max over units of the rank error |F_exact(v) - q| of the estimated quantile v, both interpolated inside
    its bin and snapped to the nearest histogram edge (the thresholds and levels the dissection uses)."""
    z = sample_z(generator, 5, range(samples))
    with torch.no_grad(), Trace(generator, [layer], stop=True) as trace:
        generator(z)
    acts = upsample(trace[layer], (seg_size, seg_size))
    sketch = UnitQuantiles.calibrate(acts[:32])
    for start in range(0, samples, 32):
        sketch.add(acts[start:start + 32])
    q = torch.tensor([0.5, 0.9, 0.99, 0.995, 0.999])
    interpolated = sketch.quantiles(q)
    snapped = sketch.edge_values(sketch.nearest_edges(interpolated))
    flat = acts.transpose(0, 1).reshape(acts.shape[1], -1).double()
    figures = {}
    for name, estimate in (("interpolated", interpolated), ("edge", snapped)):
        below = (flat[:, :, None] < estimate[:, None, :]).double().mean(1)
        at_or_below = (flat[:, :, None] <= estimate[:, None, :]).double().mean(1)
        target = q.double()
        inside = (below <= target) & (target <= at_or_below)
        error = torch.where(inside, 0.0, torch.minimum((below - target).abs(), (at_or_below - target).abs()))
        figures[name] = {f"q={float(v):g}": float(error[:, i].max()) for i, v in enumerate(q)}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="scenes64")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--layers", default="layer3")
    parser.add_argument("--seg-size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--pytorch-statistics", action="store_true",
                        help="count with the PyTorch path instead of the fused numba kernels")
    args = parser.parse_args()
    if args.pytorch_statistics:
        kernels.numba = None
    generator, segmenter, origin = models(args.model)
    config = DissectConfig(layers=args.layers.split(","), samples=args.samples, batch_size=args.batch_size,
                           seg_size=args.seg_size, checkpoint_every=10**9)
    bare, full = [], []
    for _ in range(args.repeats):
        bare.append(bare_passes(generator, segmenter, config))
        full.append(full_dissection(generator, segmenter, config))
    figures = {
        "model": origin,
        "layers": config.layers,
        "samples_per_set": args.samples,
        "threads": torch.get_num_threads(),
        "statistics": "pytorch" if not kernels.available() else "fused kernels (numba)",
        "bare_seconds_median": statistics.median(bare),
        "dissect_seconds_median": statistics.median(full),
        "ratio": statistics.median(full) / statistics.median(bare),
        "dissect_samples_per_second": 2 * args.samples / statistics.median(full),
        "bare_samples_per_second": 2 * args.samples / statistics.median(bare),
        "rank_error": rank_errors(generator, config.layers[0], min(args.samples, 256), args.seg_size or 64),
    }
    print(json.dumps(figures, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)


if __name__ == "__main__":
    main()
