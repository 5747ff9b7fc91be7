"""Speed of single-unit ACE: every unit of a layer of scenes64 on held-out samples.

    python benchmarks/bench_causal.py [--run runs/demo] [--layer layer3] [--concept tree] [--samples 200]

Needs a finished dissection of scenes64 (`make demo` writes runs/demo). Prints JSON: wall time, images
generated and segmented per second, and the top 10 units by ACE. The issue's target: under 2 minutes for
layer3 (64 units) on 200 samples, on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gandissect.causal.ace import unit_effects
from gandissect.causal.interventions import concept_index, insertion_values
from gandissect.core.segmenters import ColorSegmenter, MergedSegmenter
from gandissect.dissection import Dissection
from gandissect.engine.speed import channels_last
from gandissect.models import registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/demo")
    parser.add_argument("--layer", default="layer3")
    parser.add_argument("--concept", default="tree")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--group", type=int, default=32)
    parser.add_argument("--default-memory-format", action="store_true", help="do not convert to channels-last")
    args = parser.parse_args()
    spec = registry.get("scenes64")
    generator, segmenter = spec.generator(), MergedSegmenter(spec.segmenter(), ColorSegmenter())
    if not args.default_memory_format:
        channels_last(generator, segmenter)
    result = Dissection.load(args.run)
    values = insertion_values(result, args.layer, args.concept)
    began = time.perf_counter()
    effects = unit_effects(generator, segmenter, args.layer, concept_index(result, args.concept), args.concept, values,
                           samples=args.samples, batch_size=args.batch_size, group=args.group, progress=False)
    seconds = time.perf_counter() - began
    top = effects.ranking()[:10]
    print(json.dumps({
        "layer": args.layer, "concept": args.concept, "units": len(effects.units), "samples": args.samples,
        "threads": torch.get_num_threads(), "channels_last": not args.default_memory_format, "seconds": seconds,
        "interventions_per_second": 2 * len(effects.units) * args.samples / seconds,
        "top_units": [{"unit": u, "ace": float(effects.ace[effects.units.index(u)])} for u in top],
    }, indent=1))


if __name__ == "__main__":
    main()
