"""StyleGAN2-256 forward speed with random weights, by noise mode and latent space.

    python benchmarks/bench_stylegan2.py [--size 256] [--batches 1,4] [--repeats 3] [--threads 2] [--device cpu]

Random weights only (no checkpoint is downloaded): the figures are speed, not meaning. The generator is
StyleGAN2Generator(size) with the port's config-F channels (channel multiplier 2, style_dim 512, 8 mapping
layers), seeded with 0; its w_avg is estimated (4096 seeded z) and truncation 0.7 is used. Each figure is the
median of `--repeats` timed passes after one warm-up pass; "sample_w" times `sample_z` in w space (mapping
whole chunks of 64 z). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial

import torch

from gandissect.models.stylegan2 import StyleGAN2Generator


def random_stylegan2(size: int, device: str) -> StyleGAN2Generator:
    torch.manual_seed(0)
    generator = StyleGAN2Generator(size, truncation=0.7)
    generator.estimate_w_avg()
    return generator.to(device).eval()


def median_seconds(run, argument, repeats: int, device: str) -> float:
    """Median seconds of `run(argument)` over `repeats` calls after one warm-up call."""
    times = []
    run(argument)  # warm-up
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        began = time.perf_counter()
        run(argument)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batches", default="1,4", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = random_stylegan2(args.size, args.device)
    figures: dict[str, object] = {"model": f"StyleGAN2Generator({args.size}), config F channels, random weights, "
                                           "truncation 0.7", "device": args.device, "threads": torch.get_num_threads(),
                                  "repeats": args.repeats}
    timings: dict[str, float] = {}
    with torch.no_grad():
        for batch in (int(b) for b in args.batches.split(",")):
            z = torch.randn(batch, 512, generator=torch.Generator().manual_seed(1)).to(args.device)
            for noise in ("fixed", "random"):
                generator.configure(noise=noise)
                timings[f"z_batch{batch}_noise_{noise}"] = median_seconds(generator, z, args.repeats, args.device)
            generator.configure(noise="fixed", space="w")
            w = generator.sample_z(0, range(batch)).to(args.device)
            timings[f"w_batch{batch}_noise_fixed"] = median_seconds(generator, w, args.repeats, args.device)
            timings[f"sample_w_{batch}"] = median_seconds(partial(generator.sample_z, 0), range(batch), args.repeats,
                                                          args.device)
            generator.configure(space="z")
    figures["seconds_median"] = timings
    figures["images_per_second"] = {k: int(k.split("batch")[1].split("_")[0]) / v for k, v in timings.items()
                                    if "batch" in k}
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
