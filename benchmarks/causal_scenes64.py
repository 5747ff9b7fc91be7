"""Causal evidence on the shipped scenes64 GAN: rankings with intervals, ablation curves against random units,
the layer chosen on its own samples, and the context of insertion.

    .venv/bin/python benchmarks/causal_scenes64.py OUT_DIR [--run runs/demo] [--samples 200] ...

Three disjoint held-out sample sets, so that no figure is measured on the samples that chose it:
- seed 3 (`--samples`): single-unit removal, insertion and ACE of every unit of layer3 and layer4 on every
  concept asked, with 95% intervals (`gandissect.causal.ace.measure_effects`, inserted value: each unit's 0.99
  quantile, as `gandissect causal` does by default); the rankings come from here;
- seed 5 (`--select-samples`): per concept, the layer whose removal ranking's top ~6% of units removes most;
- seed 4 (`--curve-samples`): the ablation curves reported, for the removal, ACE and IoU (quantile rule)
  rankings and for `--draws` random unit sets per N (mean and 5-95% band), each point with its interval, at
  every layer (the chosen one marked *).
Then the context of insertion: each concept's significant insertion units (at most 20) inserted in a 2x2
patch at every location of layer4 (seed 6), the concept's pixels gained and the pixels changed at all, by what
was there before.

Prints Markdown tables on stdout (progress and timings on stderr) and writes results.json and charts to OUT_DIR.
The dissection run is only read.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from gandissect.causal.ace import measure_effects
from gandissect.causal.context import insertion_context
from gandissect.causal.curves import ablation_curves_multi, ablation_pixels, iou_ranking
from gandissect.causal.evidence import rank
from gandissect.causal.interventions import insertion_values
from gandissect.dissection import Dissection
from gandissect.engine.speed import channels_last
from gandissect.models import resolve_generator, resolve_segmenter
from gandissect.viz.plots import context_chart, curves_chart, save_svg

PAPER = {"tree": 0.60, "door": 0.53, "window": 0.47}  # church generator, top 20 ACE units of 512 at layer 4
START = time.time()


def log(message: str) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"[{time.time() - START:6.1f}s wall, {usage.ru_utime + usage.ru_stime:6.1f}s cpu] {message}",
          file=sys.stderr, flush=True)


def cell(mean: float | None, low: float | None = None, high: float | None = None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    return f"{mean:+.2f}" if low is None else f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"


def point(curve: dict, n: int) -> str:
    i = curve["counts"].index(n)
    return cell(curve["removed"][i], curve["removed_low"][i], curve["removed_high"][i])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--run", type=Path, default=Path("runs/demo"), help="finished dissection of scenes64")
    parser.add_argument("--concepts", nargs="+", default=["tree", "building", "window", "door", "grass", "sky"])
    parser.add_argument("--layers", nargs="+", default=["layer3", "layer4"])
    parser.add_argument("--samples", type=int, default=200, help="seed 3: rankings")
    parser.add_argument("--select-samples", type=int, default=32, help="seed 5: choosing the layer")
    parser.add_argument("--curve-samples", type=int, default=48, help="seed 4: the curves reported")
    parser.add_argument("--counts", default="1,2,4,8,20")
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--context", nargs="+", default=["door", "tree"])
    parser.add_argument("--context-samples", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    generator, segmenter = resolve_generator("scenes64"), resolve_segmenter("scenes64+color")
    channels_last(generator, segmenter)
    run = Dissection.load(args.run)
    results: dict = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                     "layers": {}}
    rankings: dict[tuple[str, str], dict[str, list[int]]] = {}
    effects_by_layer = {}
    for layer in args.layers:
        values = insertion_values(run, layer, quantile=0.99)
        began = time.time()
        effects = measure_effects(generator, segmenter, layer, args.concepts, values, samples=args.samples,
                                  batch_size=8, progress=False)
        log(f"{layer}: removal, insertion, ACE of {len(values)} units on {len(args.concepts)} concepts, "
            f"{args.samples} samples: {time.time() - began:.1f} s")
        effects_by_layer[layer] = effects
        results["layers"][layer] = {"seconds": time.time() - began, "concepts": {}}
        for name, e in effects.items():
            ranks = {d: rank(e, d) for d in ("removal", "insertion", "ace")}
            rankings[name, layer] = {"removal": ranks["removal"].order, "ace": ranks["ace"].order,
                                     "IoU": iou_ranking(run, layer, name)}
            results["layers"][layer]["concepts"][name] = {
                d: {"order": r.order[:10], "significant": r.significant,
                    "top": [{"unit": u, "mean": float(r.estimate.mean[e.units.index(u)]),
                             "low": float(r.estimate.low[e.units.index(u)]),
                             "high": float(r.estimate.high[e.units.index(u)])} for u in r.order[:5]],
                    "separated": r.separated[:5]} for d, r in ranks.items()}

    chosen: dict[str, str] = {}
    selection: dict[str, dict[str, float]] = {}
    for name in args.concepts:
        for layer in args.layers:
            width = len(effects_by_layer[layer][name].units)
            n = max(1, round(0.06 * width))
            pixels = ablation_pixels(generator, segmenter, layer, [rankings[name, layer]["removal"][:n]],
                                     samples=args.select_samples, seed=5, batch_size=8, progress=False,
                                     concepts=[name])
            curve = pixels.curve(name, rankings[name, layer]["removal"], [n], "removal")
            selection.setdefault(name, {})[layer] = curve.removed[0]
        chosen[name] = max(args.layers, key=lambda layer, name=name: selection[name][layer])
    results["selection"], results["chosen"] = selection, chosen
    log(f"layers chosen on seed 5: {chosen}")

    curves: dict[str, dict] = {}
    for layer in args.layers:
        wanted = {name: rankings[name, layer] for name in args.concepts}
        began = time.time()
        found = ablation_curves_multi(generator, segmenter, layer, wanted, counts=args.counts,
                                      samples=args.curve_samples, seed=4, random_draws=args.draws,
                                      progress=False)
        log(f"{layer}: curves of {len(wanted)} concepts on {args.curve_samples} samples: {time.time() - began:.1f} s")
        for name, named in found.items():
            curves[f"{name}/{layer}"] = {key: curve.to_json() for key, curve in named.items()}
            save_svg(args.out / f"curves_{name}_{layer}.svg",
                     curves_chart(named, f"Ablating {name} units at {layer} (held-out samples, seed 4)"))
    results["curves"] = curves

    contexts = {}
    for name in args.context:
        layer = "layer4"
        units = rank(effects_by_layer[layer][name], "insertion").significant[:20]
        if not units:
            log(f"context: {name} has no significant insertion unit at {layer}")
            continue
        context = insertion_context(generator, segmenter, layer, name, units, insertion_values(run, layer,
                                                                                               quantile=0.99),
                                    patch=2, margin=2, samples=args.context_samples, seed=6, progress=False)
        contexts[name] = context.to_json()
        save_svg(args.out / f"context_{name}_{layer}.svg",
                 context_chart(context, title=f"Inserting {len(units)} {name} units at {layer}"))
    results["context"] = contexts
    log("context done")
    (args.out / "results.json").write_text(json.dumps(results, indent=1, allow_nan=False, default=str))
    print_tables(results, args)
    return 0


def print_tables(results: dict, args: argparse.Namespace) -> None:
    """The Markdown tables of docs/causality-scenes64.md."""
    print("### Layer choice (seed 5): fraction removed by the top ~6% of the removal ranking\n")
    print("| concept | " + " | ".join(args.layers) + " | chosen |\n|---|" + "---:|" * len(args.layers) + "---|")
    for name, by_layer in results["selection"].items():
        print(f"| {name} | " + " | ".join(cell(by_layer[layer]) for layer in args.layers)
              + f" | {results['chosen'][name]} |")
    counts = [int(n) for n in args.counts.split(",")]
    print("\n### Fraction of the concept's pixels removed (seed 4), 95% intervals; random: mean [5-95% of draws]\n")
    print("| concept | layer | N | removal ranking | ACE ranking | IoU ranking | random units | removal: others kept |")
    print("|---|---|---:|---|---|---|---|---:|")
    for key, named in results["curves"].items():
        name, layer = key.split("/")
        mark = "*" if results["chosen"][name] == layer else ""
        for n in counts:
            if n not in named["removal"]["counts"]:
                continue
            kept = named["removal"]["others_kept"][named["removal"]["counts"].index(n)]
            print(f"| {name} | {layer}{mark} | {n} | {point(named['removal'], n)} | {point(named['ace'], n)} | "
                  f"{point(named['IoU'], n)} | {point(named['random'], n)} | {kept:.2f} |")
    print("\n### Top units per direction (seed 3), effect on the concept's share with 95% interval\n")
    print("| concept | layer | direction | significant | top 3 |\n|---|---|---|---:|---|")
    for layer, record in results["layers"].items():
        for name, by_direction in record["concepts"].items():
            for direction, r in by_direction.items():
                top = "; ".join(f"{t['unit']}: {t['mean']:+.4f} [{t['low']:+.4f}, {t['high']:+.4f}]"
                                for t in r["top"][:3])
                print(f"| {name} | {layer} | {direction} | {len(r['significant'])} | {top} |")
    print("\n### Context of insertion at layer4 (seed 6)\n")
    print("| inserted | before | locations | concept px gained | share with a gain | px changed |")
    print("|---|---|---:|---:|---:|---:|")
    for name, context in results["context"].items():
        changed = context.get("changed") or [None] * len(context["before"])
        rows = sorted(zip(context["before"], context["locations"], context["gained"], context["appeared"], changed,
                          strict=True), key=lambda row: -row[1])
        for before, locations, gained, appeared, moved in rows[:7]:
            if locations:
                print(f"| {name} | {before} | {locations} | {gained:.2f} | {appeared:.2f} | "
                      f"{'n/a' if moved is None else f'{moved:.1f}'} |")


if __name__ == "__main__":
    sys.exit(main())
