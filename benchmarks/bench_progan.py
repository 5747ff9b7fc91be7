"""ProGAN-256 speed with random weights: the forward pass, and a layer4 dissection against its bare passes.

    python benchmarks/bench_progan.py [--samples 200] [--batch-size 8] [--repeats 3] [--threads 2]

Random weights only (no checkpoint is downloaded): the figures are speed, not meaning. The generator is
ProGANGenerator(256) (the released LSUN layout: 512 channels through 16x16, then 256, 128, 64, 32;
unclamped, so that the largest raw pixel is reported) seeded with 0, its biases drawn N(0, 0.5) as in
tests/test_progan.py, and its to-RGB weights scaled by 0.2 (to-RGB bias zeroed) so that the random images
stay near [-1, 1]. Forward: medians of `--repeats` timed passes at batch 1 and 8 after one warm-up pass. Dissection:
the full two-pass `Dissector.run()` of layer4 with the colour segmenter (`progress=False`, into a temporary
folder), against the bare generator + segmenter passes over both sample sets batched the same way; the two
alternate and the medians are reported. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from bench_dissect import full_dissection
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import ColorSegmenter
from gandissect.dissection import DissectConfig
from gandissect.models.progan import ProGANGenerator, load_progan


def random_progan(resolution: int = 256) -> ProGANGenerator:
    torch.manual_seed(0)
    generator = ProGANGenerator(resolution).eval()
    with torch.no_grad():
        for name, parameter in generator.named_parameters():
            if name.endswith("wscale.b"):
                parameter.normal_(0, 0.5)
    head = f"output_{resolution}x{resolution}"
    state = dict(generator.state_dict())
    state[f"{head}.conv.weight"] = state[f"{head}.conv.weight"] * 0.2
    state[f"{head}.wscale.b"] = torch.zeros(3)
    return load_progan(state, clamp=False)


def forward_seconds(generator, batch: int, repeats: int) -> float:
    z = torch.randn(batch, generator.z_dim, generator=torch.Generator().manual_seed(1))
    times = []
    with torch.no_grad():
        generator(z)  # warm-up
        for _ in range(repeats):
            began = time.perf_counter()
            generator(z)
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def bare_passes(generator, segmenter, config: DissectConfig) -> tuple[float, float]:
    """Seconds, and the largest |pixel| seen (the dissector refuses images far outside [-1, 1])."""
    largest = 0.0
    began = time.perf_counter()
    with torch.no_grad():
        for seed in (config.threshold_seed, config.iou_seed):
            for start in range(0, config.samples, config.batch_size):
                z = sample_z(generator, seed, range(start, min(start + config.batch_size, config.samples)))
                images = generator(z)
                segmenter.segment(images)
                largest = max(largest, float(images.abs().max()))
    return time.perf_counter() - began, largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=200, help="samples per set (threshold and IoU sets)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator, segmenter = random_progan(), ColorSegmenter()
    forward = {f"batch_{b}": forward_seconds(generator, b, args.repeats) for b in (1, 8)}
    config = DissectConfig(layers=["layer4"], samples=args.samples, batch_size=args.batch_size,
                           checkpoint_every=10**9)
    bare, full, largest = [], [], 0.0
    for _ in range(args.repeats):
        seconds, peak = bare_passes(generator, segmenter, config)
        bare.append(seconds)
        largest = max(largest, peak)
        full.append(full_dissection(generator, segmenter, config))
    figures = {
        "model": "ProGANGenerator(256), random weights, to-RGB weights x 0.2",
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "forward_seconds_median": forward,
        "forward_images_per_second": {k: int(k.split("_")[1]) / v for k, v in forward.items()},
        "layer": "layer4",
        "samples_per_set": args.samples,
        "batch_size": args.batch_size,
        "largest_abs_pixel": largest,
        "bare_seconds_median": statistics.median(bare),
        "dissect_seconds_median": statistics.median(full),
        "ratio": statistics.median(full) / statistics.median(bare),
        "bare_seconds": bare,
        "dissect_seconds": full,
    }
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
