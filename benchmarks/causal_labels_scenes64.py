"""Which label is right: each unit's causal label on scenes64, against every labelling rule of a dissection.

    python benchmarks/causal_labels_scenes64.py [--run runs/demo] [--layers layer2,layer3,layer4] [--samples 32]

For each layer, `causal_labels` ablates every unit where it is active and inserts it elsewhere on held-out
samples, and names the concept whose pixels change most relative to its area; `rule_agreement` says how often
each rule of the run names that concept. Prints Markdown tables: agreement per rule and layer (all units with a
causal label, and those the rule calls interpretable), the split-half reliability of the causal labels, the
distribution of causal labels, and a robustness check that labels units by lift instead (each concept's change
divided by its mean change over the layer's units: no area normalisation, so large concepts can win too).
Reads the run folder only; `--json` writes every number.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gandissect.causal.labels import (
    NONE,
    Agreement,
    CausalLabels,
    agreement,
    agreement_table,
    causal_labels,
    distribution_table,
    rule_agreement,
)
from gandissect.dissection import Dissection
from gandissect.models import resolve_generator, resolve_segmenter

MIN_LIFT = 3.0


def lift_agreement(result: Dissection, labels: CausalLabels, min_lift: float = MIN_LIFT) -> dict[str, Agreement]:
    """Agreement of every rule with labels by lift: argmax over concepts of (removed + gained) / its mean over
    the layer's units, none below `min_lift`."""
    change = labels.removed.sum(0) + labels.gained.sum(0)
    lift = change / change.mean(0, keepdim=True).clamp(min=1.0)
    best, concept = lift.max(1)
    causal = torch.where(best >= min_lift, concept, torch.full_like(concept, NONE))
    out = {}
    for rule, outcome in result.layers[labels.layer].rules.items():
        named = outcome.labels()[1].cpu()
        flags = result.interpretable(labels.layer, rule).cpu()[torch.arange(named.numel()), named]
        out[rule] = agreement(rule, causal, named, flags)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/demo")
    parser.add_argument("--model", default="scenes64")
    parser.add_argument("--segmenter", default="scenes64+color", help="the segmenter the run was dissected with")
    parser.add_argument("--layers", default="layer2,layer3,layer4")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="write every result here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = Dissection.load(args.run)
    generator, segmenter = resolve_generator(args.model), resolve_segmenter(args.segmenter)
    labels, agreements, lifted, seconds = {}, {}, {}, {}
    for layer in args.layers.split(","):
        start = time.perf_counter()
        labels[layer] = causal_labels(generator, segmenter, result, layer, samples=args.samples,
                                      batch_size=args.batch_size, progress=False)
        seconds[layer] = time.perf_counter() - start
        agreements[layer] = rule_agreement(result, labels[layer])
        lifted[layer] = lift_agreement(result, labels[layer])
    first = next(iter(labels.values()))
    print(f"## Causal labels on {args.model} ({args.run}): {args.samples} held-out samples (seed {first.seed}), "
          f"min effect {first.min_effect}, area floor {first.area_floor}\n")
    print("Seconds per layer: " + ", ".join(f"{layer} {s:.0f}" for layer, s in seconds.items()) + "\n")
    print("### Agreement of each rule with the causal label: fraction (agree/units)\n")
    print(agreement_table(agreements) + "\n")
    print("### Split-half reliability of the causal labels (units labelled on both halves; same label)\n")
    print("| layer | units | same | fraction |\n|---|---|---|---|")
    for layer, causal in labels.items():
        r = causal.reliability()
        print(f"| {layer} | {r.units} | {r.agree} | {r.fraction:.2f} |")
    print("\n### Distribution of causal labels\n")
    print(distribution_table(labels) + "\n")
    print(f"### Robustness: labels by lift (change / the concept's mean change over the layer's units, "
          f"none below {MIN_LIFT})\n")
    print(agreement_table(lifted))
    if args.json:
        document = {"run": args.run, "model": args.model, "samples": args.samples, "seconds": seconds,
                    "layers": {layer: {"causal": labels[layer].to_json(agreements[layer]),
                                       "lift_agreement": {k: a.to_json() for k, a in lifted[layer].items()}}
                               for layer in labels}}
        with open(args.json, "w") as handle:
            json.dump(document, handle, indent=1)


if __name__ == "__main__":
    main()
