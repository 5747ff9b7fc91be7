"""Dissection speed against the bare forward passes, and the quantile sketch's rank error.

    python benchmarks/bench_dissect.py [--samples 512] [--layers layer3] [--repeats 3] [--passes one,two]

Measured alternately in one process, each `--repeats` times (medians, wall seconds and process CPU seconds):
- `bare`: generator + segmenter forward over both sample sets (threshold and IoU sets), batched the same way,
  models in their default memory format, under no_grad, no hooks and no statistics: what the paper's design
  (and this project's first release) had to run.
- `floor`: generator + segmenter over the IoU set alone, channels-last, in inference mode: the forward passes
  that a one-pass dissection cannot avoid.
- `dissect-one`, `dissect-two`: the full `Dissector.run()` and `finish()` (dissect.json, dissect.csv,
  statistics), in one pass or two, on separate copies of the models (the dissector stores them channels-last).
Ratios are dissection / bare and dissection / floor. `--pytorch-statistics` counts with the PyTorch path
(what runs on a GPU or without numba) instead of the fused CPU kernels.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
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
from gandissect.engine.speed import channels_last
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


def timed(work) -> tuple[float, float]:
    """Wall and process CPU seconds of `work()`."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def forward_passes(generator, segmenter, config: DissectConfig, seeds: tuple[int, ...], grad_off) -> None:
    with grad_off():
        for seed in seeds:
            for start in range(0, config.samples, config.batch_size):
                z = sample_z(generator, seed, range(start, min(start + config.batch_size, config.samples)))
                segmenter.segment(generator(z))


def full_dissection(generator, segmenter, config: DissectConfig) -> None:
    with tempfile.TemporaryDirectory() as out:
        dissector = Dissector(generator, segmenter, config, out, progress=False)
        dissector.finish(dissector.run())
        assert dissector.passes == config.passes


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
    parser.add_argument("--passes", default="one,two", help="dissections to time: one, two or one,two")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--pytorch-statistics", action="store_true",
                        help="count with the PyTorch path instead of the fused numba kernels")
    args = parser.parse_args()
    if args.pytorch_statistics:
        kernels.numba = None
    generator, segmenter, origin = models(args.model)
    fast_generator, fast_segmenter = copy.deepcopy(generator), copy.deepcopy(segmenter)
    channels_last(fast_generator, fast_segmenter)
    config = DissectConfig(layers=args.layers.split(","), samples=args.samples, batch_size=args.batch_size,
                           seg_size=args.seg_size, checkpoint_every=10**9)
    work = {
        "bare": lambda: forward_passes(generator, segmenter, config, (config.threshold_seed, config.iou_seed),
                                       torch.no_grad),
        "floor": lambda: forward_passes(fast_generator, fast_segmenter, config, (config.iou_seed,),
                                        torch.inference_mode),
    }
    for passes in args.passes.split(","):
        work[f"dissect-{passes}"] = functools.partial(full_dissection, copy.deepcopy(generator),
                                                      copy.deepcopy(segmenter),
                                                      dataclasses.replace(config, passes=passes))
    for what in work.values():  # warm-up: numba's compiled kernels load, oneDNN picks its algorithms
        what()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in work}
    for _ in range(args.repeats):
        for name, what in work.items():
            times[name].append(timed(what))
    medians = {name: {"wall": statistics.median(t[0] for t in runs), "cpu": statistics.median(t[1] for t in runs)}
               for name, runs in times.items()}
    figures = {
        "model": origin,
        "layers": config.layers,
        "samples_per_set": args.samples,
        "threads": torch.get_num_threads(),
        "statistics": "pytorch" if not kernels.available() else "fused kernels (numba)",
        "median_seconds": medians,
        "ratios": {name: {f"/{base}": {k: medians[name][k] / medians[base][k] for k in ("wall", "cpu")}
                          for base in ("bare", "floor")}
                   for name in medians if name.startswith("dissect")},
        "samples_per_second": {name: args.samples / m["wall"] for name, m in medians.items()},
        "rank_error": rank_errors(generator, config.layers[0], min(args.samples, 256), args.seg_size or 64),
    }
    print(json.dumps(figures, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)


if __name__ == "__main__":
    main()
