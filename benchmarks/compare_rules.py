"""Compare the labelling rules of a finished dissection: what each names, how many units it calls
interpretable, how far the in-sample IoU is from the cross-fitted one, and how often two rules agree.

    python benchmarks/compare_rules.py runs/demo [--layers layer3] > tables.md

Reads only the run folder (Dissection.load); prints Markdown tables.
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch

from gandissect.dissection import RULES, Dissection


def top_concepts(counter: Counter, shown: int = 4) -> str:
    return ", ".join(f"{name} {count}" for name, count in counter.most_common(shown)) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--layers", default=None, help="comma-separated (default: every layer of the run)")
    args = parser.parse_args()
    result = Dissection.load(args.run)
    layers = args.layers.split(",") if args.layers else list(result.layers)
    large = [c for c in ("sky", "grass") if c in result.concepts]
    print("| layer | rule | interpretable | labelled " + "/".join(large) + " | most named (interpretable) | "
          "median IoU - crossfit | max IoU - crossfit |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    labels: dict[str, dict[str, torch.Tensor]] = {}
    for layer in layers:
        labels[layer] = {}
        for rule, outcome in result.layers[layer].rules.items():
            _, concept = outcome.labels()
            labels[layer][rule] = concept
            units = torch.arange(concept.numel())
            interpretable = result.interpretable(layer, rule)[units, concept]
            names = Counter(result.concepts[int(c)] for c, ok in zip(concept, interpretable, strict=True) if ok)
            gap = (outcome.iou - outcome.crossfit_iou)[units, concept]
            on_large = sum(int((concept == result.concepts.index(c)).sum()) for c in large)
            print(f"| {layer} | {rule} | {int(interpretable.sum())} of {concept.numel()} | {on_large} | "
                  f"{top_concepts(names)} | {float(gap.median()):.3f} | {float(gap.max()):.3f} |")
    for layer in layers:
        print(f"\nUnits of {layer} on which two rules name the same concept:\n")
        rules = list(RULES)
        print("| | " + " | ".join(rules) + " |")
        print("| --- " * (len(rules) + 1) + "|")
        for a in rules:
            row = [str(int((labels[layer][a] == labels[layer][b]).sum())) for b in rules]
            print(f"| {a} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
