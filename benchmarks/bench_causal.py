"""Speed of single-unit causal effects: removal, insertion and ACE of every unit of a layer of scenes64 on every
concept at once, with intervals, against the bare generator + segmenter passes the same images need.

    python benchmarks/bench_causal.py [--run runs/demo] [--layer layer4] [--concepts all] [--samples 200]

Needs a finished dissection of scenes64 (`make demo` writes runs/demo). The bare baseline, timed in the same
process, generates the same number of images from the layer (the tail of the generator) and segments them,
in batches of the same size: the ratio says what the bookkeeping costs beside the forward passes. Prints
JSON. The issue's target: under 2 minutes for every concept of layer4 on 200 samples, on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gandissect.causal.ace import measure_effects
from gandissect.causal.cut import Cut
from gandissect.causal.evidence import rank
from gandissect.causal.interventions import insertion_values
from gandissect.core.sampling import sample_z
from gandissect.dissection import Dissection
from gandissect.engine.speed import channels_last
from gandissect.models import resolve_generator, resolve_segmenter


def bare_seconds(generator: torch.nn.Module, segmenter: object, layer: str, images: int, chunk: int) -> float:
    """Seconds to generate `images` images from the layer's features and segment them, `chunk` at a time."""
    cut = Cut(generator, layer)
    z = sample_z(generator, 3, range(8))
    with torch.no_grad():
        features = cut.head(z)
        began = time.perf_counter()
        done = 0
        while done < images:
            n = min(chunk, images - done)
            picks = torch.arange(n) % 8
            segmenter.segment(cut.tail(features[picks].clone(), z[picks]))  # type: ignore[attr-defined]
            done += n
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/demo")
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--concepts", default="all", help="comma-separated, or all (every concept of the run)")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator, segmenter = resolve_generator("scenes64"), resolve_segmenter("scenes64+color")
    channels_last(generator, segmenter)
    result = Dissection.load(args.run)
    concepts = list(result.concepts) if args.concepts == "all" else args.concepts.split(",")
    values = insertion_values(result, args.layer, quantile=0.99)
    began = time.perf_counter()
    effects = measure_effects(generator, segmenter, args.layer, concepts, values, samples=args.samples,
                              batch_size=args.batch_size, progress=False)
    seconds = time.perf_counter() - began
    units = len(values)
    images = args.samples * (2 * units + 1)  # unedited, each unit ablated, each unit inserted
    bare = bare_seconds(generator, segmenter, args.layer, images, 32 * args.batch_size)
    top = {name: {d: rank(e, d).significant[:5] for d in ("removal", "insertion")} for name, e in effects.items()
           if name in ("tree", "door", "building")}
    print(json.dumps({
        "layer": args.layer, "concepts": len(concepts), "units": units, "samples": args.samples,
        "threads": torch.get_num_threads(), "seconds": seconds, "bare_seconds": bare, "ratio": seconds / bare,
        "images_per_second": images / seconds, "significant_top": top,
    }, indent=1))


if __name__ == "__main__":
    main()
