"""Which label is right: each unit's causal label on scenes64, against every labelling rule of a dissection.

    python benchmarks/causal_labels_scenes64.py RUN [--layers layer2,layer3,layer4] [--samples 64] [--json FILE]

For each layer, `causal_labels` ablates every unit over the whole feature map and inserts it over the whole
map at its 99th percentile, on held-out samples, and labels it with the concept of largest significant effect
under each definition (share, relative, lift: see gandissect.causal.labels); `rule_agreement` says how often
each rule of the run names that concept, beside the chance level of shuffling the rule's labels across units.
Prints Markdown tables: agreement per definition, rule and layer; split-half reliability and the distribution
of causal labels per layer and definition; how many units are labelled sky or grass; and a robustness check
from the same images, pooled over layers: the labels when the effect is only its ablation part (unedited minus
ablated share) or only its insertion part (inserted minus unedited). Reads the run folder only (the model and
segmenter it recorded); `--json` writes every number.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from gandissect.causal.labels import (
    DEFINITIONS,
    Agreement,
    CausalLabels,
    agreement_table,
    causal_labels,
    rule_agreement,
    summary_table,
)
from gandissect.dissection import Dissection
from gandissect.engine.speed import channels_last
from gandissect.engine.storage import read_json
from gandissect.models import resolve_generator, resolve_segmenter

WATCHED = ("sky", "grass")
PARTS = ("both", "ablation", "insertion")


def only(causal: CausalLabels, part: str) -> CausalLabels:
    """The measurement with its effect d cut to one part: 'ablation' (unedited - ablated share: the inserted
    image replaced by the unedited one), 'insertion' (inserted - unedited), or 'both' (inserted - ablated)."""
    unedited = causal.before[:, None].expand_as(causal.ablated).clone()
    unedited[torch.isnan(causal.ablated)] = float("nan")  # units not measured stay unmeasured
    return {"both": causal, "ablation": replace(causal, inserted=unedited),
            "insertion": replace(causal, ablated=unedited)}[part]


def pooled(agreements: list[Agreement]) -> str:
    """'agreement (chance)' pooled over layers."""
    units = sum(a.units for a in agreements)
    if not units:
        return "-"
    return f"{sum(a.agree for a in agreements) / units:.2f} ({sum(a.chance for a in agreements) / units:.2f})"


def parts_table(result: Dissection, labels: dict[str, CausalLabels]) -> tuple[str, dict]:
    """Markdown: per rule the pooled agreement (chance) under every part and definition, and the units labelled,
    and labelled sky or grass, under each; with the numbers as a dict."""
    columns = [(part, name) for part in PARTS for name in DEFINITIONS]
    cut = {part: {layer: only(causal, part) for layer, causal in labels.items()} for part in PARTS}
    found = {f"{part}/{name}": {layer: rule_agreement(result, causal, definition=name)
                                for layer, causal in cut[part].items()} for part, name in columns}
    lines = ["| rule | " + " | ".join(found) + " |", "|---|" + "---|" * len(found)]
    for rule in next(iter(next(iter(found.values())).values())):
        lines.append(f"| {rule} | " + " | ".join(pooled([by_layer[layer][rule] for layer in by_layer])
                                                 for by_layer in found.values()) + " |")
    for title, watched in (("units labelled", None), ("labelled " + "/".join(WATCHED), WATCHED)):
        counts = [sum(n for layer in labels for c, n in cut[part][layer].distribution(name).items()
                      if c != "none" and (watched is None or c in watched)) for part, name in columns]
        lines.append(f"| {title} | " + " | ".join(map(str, counts)) + " |")
    return "\n".join(lines), {key: {layer: {r: a.to_json() for r, a in by.items()} for layer, by in value.items()}
                              for key, value in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a finished dissection of scenes64 (e.g. runs/demo, made by `make demo`)")
    parser.add_argument("--layers", default=None, help="comma-separated layers (default: all of the run's)")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="write every result here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    document = read_json(Path(args.run) / "dissect.json")
    result = Dissection.load(args.run)
    generator, segmenter = resolve_generator(document["model"]), resolve_segmenter(document["segmenter"])
    channels_last(generator, segmenter)
    layers = args.layers.split(",") if args.layers else list(result.config.layers)
    labels, agreements, seconds = {}, {name: {} for name in DEFINITIONS}, {}
    total = time.perf_counter()
    for layer in layers:
        start = time.perf_counter()
        labels[layer] = causal_labels(generator, segmenter, result, layer, samples=args.samples, seed=args.seed,
                                      batch_size=args.batch_size, progress=False)
        seconds[layer] = time.perf_counter() - start
        for name in DEFINITIONS:
            agreements[name][layer] = rule_agreement(result, labels[layer], definition=name)
    seconds["total"] = time.perf_counter() - total
    first = next(iter(labels.values()))
    print(f"## Causal labels on {document['model']} ({args.run}): {args.samples} held-out samples (seed "
          f"{args.seed}), insertion at each unit's {first.quantile} quantile, Holm-adjusted p < {first.alpha}, "
          f"{args.threads} threads\n")
    print("Seconds: " + ", ".join(f"{name} {s:.0f}" for name, s in seconds.items()))
    print("Missing (unedited images, unit effects): " + ", ".join(
        f"{layer} {c.missing()['unedited']}, {c.missing()['effects']}" for layer, c in labels.items()) + "\n")
    print("### Agreement of each rule with the causal label: fraction (agree/units), chance = rule labels "
          "shuffled across units\n")
    print(agreement_table(agreements) + "\n")
    print("### Split-half reliability (units labelled on both halves: same label) and causal labels\n")
    print(summary_table(labels) + "\n")
    print("### Units labelled " + " or ".join(WATCHED) + "\n")
    print("| definition | " + " | ".join(f"{layer} {c}" for layer in labels for c in WATCHED) + " |")
    print("|---|" + "---|" * (len(labels) * len(WATCHED)))
    for name in DEFINITIONS:
        counts = [labels[layer].distribution(name).get(c, 0) for layer in labels for c in WATCHED]
        print(f"| {name} | " + " | ".join(map(str, counts)) + " |")
    table, parts = parts_table(result, labels)
    print("\n### Robustness: which part of the effect (same images), pooled over layers: agreement (chance)\n")
    print(table)
    if args.json:
        record = {"run": args.run, "samples": args.samples, "seed": args.seed, "seconds": seconds, "parts": parts,
                  "layers": {layer: labels[layer].to_json({name: agreements[name][layer] for name in DEFINITIONS})
                             for layer in labels}}
        Path(args.json).write_text(json.dumps(record, indent=1, allow_nan=False))


if __name__ == "__main__":
    main()
