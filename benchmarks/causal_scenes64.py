"""Ablation curves (the paper's Figure 4) and the context of insertion on the shipped scenes64 GAN.

    .venv/bin/python benchmarks/causal_scenes64.py OUT_DIR [--run runs/demo] [--ace-samples 64] ...

For tree, building, window and door at layer3 and layer4: single-unit ACE of every unit on held-out samples
(seed 3, insertion values: each unit's coverage-weighted mean activation where the concept is, from the
dissection run), then the fraction of the concept's pixels removed by ablating the top N units ranked by ACE
and by IoU (the dissection's quantile rule), evaluated on other held-out samples (seed 4), with the share of
the other concepts' pixels kept. Per concept the layer where the top ACE units remove the most is chosen.
Then the context of insertion for doors and trees: the top ACE units inserted at every location of the chosen
layer (samples of seed 5), the concept's pixels gained grouped by what the segmenter saw there before.

Prints Markdown tables on stdout (progress and timings on stderr) and writes charts (SVG), strips of
ablated samples (PNG) and results.json to OUT_DIR. The dissection run is only read.

Single-unit ACE is computed here for all four concepts in one pass per layer (the ablated images are the
same for every concept), which gives exactly `gandissect.causal.ace.unit_effects`'s numbers (checked at the
start on a few units) at 5/8 of the cost of calling it once per concept. By default the segmenter's network
is frozen with TorchScript (conv and batch norm fused), about twice as fast on CPU; its labels differ from the
eager network's on a few pixels per million (float rounding at near ties); --exact-segmenter turns this off.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from gandissect.causal.ace import HELD_OUT_SEED, UnitEffects, unit_effects
from gandissect.causal.context import insertion_context
from gandissect.causal.curves import ablation_images, ablation_pixels, iou_ranking, segmenter_concept
from gandissect.causal.cut import Cut
from gandissect.causal.interventions import insertion_values
from gandissect.core.segmenters import Segmenter, check_labels
from gandissect.core.stats import Statistic, Tally
from gandissect.dissection import Dissection
from gandissect.engine.samplepass import Batch, SamplePass
from gandissect.models import registry
from gandissect.viz.plots import context_chart, curves_chart, save_strip, save_svg

PAPER = {"tree": 0.60, "door": 0.53, "window": 0.47}  # church generator, top 20 ACE units at layer 4
START = time.time()


def log(message: str) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"[{time.time() - START:6.1f}s wall, {usage.ru_utime + usage.ru_stime:6.1f}s cpu] {message}",
          file=sys.stderr, flush=True)


class FrozenSegmenter:
    """The same segmenter with its network frozen by TorchScript (conv + batch norm fused) for CPU speed."""

    def __init__(self, segmenter: Segmenter, example: torch.Tensor) -> None:
        self.concepts, self.categories = list(segmenter.concepts), list(segmenter.categories)
        network = segmenter.network.eval()  # type: ignore[attr-defined]
        with torch.no_grad():
            self.network = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(network, example)))

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images).argmax(1, keepdim=True)


def concept_shares(segmenter: Segmenter, images: torch.Tensor) -> torch.Tensor:
    """(N, C) each concept's share of each image's labelled pixels, as `ace.concept_share` counts it."""
    num = len(segmenter.concepts)
    with torch.no_grad():
        labels = check_labels(segmenter.segment(images), images, num, type(segmenter).__name__)
    known = (labels != -2).all(1)
    present = torch.zeros(labels.shape[0], num + 1, *labels.shape[-2:], dtype=torch.bool)
    for k in range(labels.shape[1]):
        present.scatter_(1, labels[:, k:k + 1].clamp(min=-1) + 1, True)
    counts = (present[:, 1:] & known[:, None]).flatten(2).sum(2).double()
    return counts / known.flatten(1).sum(1, keepdim=True).clamp(min=1).double()


def edited_pairs(features: torch.Tensor, samples: torch.Tensor, units: torch.Tensor,
                 targets: torch.Tensor) -> torch.Tensor:
    """One copy of features[samples[j]] per pair j, with unit units[j] set to targets[j] everywhere."""
    out = features[samples].clone()
    out[torch.arange(len(samples)), units] = targets.to(features.dtype)[:, None, None].expand(-1, *out.shape[-2:])
    return out


def concept_effects(generator: nn.Module, segmenter: Segmenter, layer: str, values: Mapping[str, torch.Tensor],
                    units: Sequence[int] | None = None, samples: int = 100, seed: int = HELD_OUT_SEED,
                    batch_size: int = 8, chunk: int = 64) -> dict[str, UnitEffects]:
    """`unit_effects` for several concepts at once (concept name -> insertion values (U,)): one set of ablated
    images for all (a unit that is zero everywhere leaves the image as it was), one of inserted images per
    concept; `chunk` (sample, unit) pairs per generator call."""
    cut = Cut(generator, layer)
    width = next(iter(values.values())).shape[0]
    chosen = list(range(width)) if units is None else [int(u) for u in units]
    index = {name: segmenter_concept(segmenter, name) for name in values}
    stats: dict[str, Statistic] = {f"{kind}/{name}": Tally(width) for name in values for kind in ("in", "ab")}

    def update(batch: Batch, stats: dict[str, Statistic]) -> None:
        with torch.no_grad():
            features = cut.head(batch.z)
            baseline = concept_shares(segmenter, cut.tail(features, batch.z))
            pair_samples = torch.arange(features.shape[0]).repeat(len(chosen))
            pair_units = torch.tensor(chosen).repeat_interleave(features.shape[0])
            active = features[pair_samples, pair_units].flatten(1).ne(0).any(1)
            jobs = [("ab", None, torch.zeros(len(pair_units)), active)]
            jobs += [("in", name, values[name][pair_units], torch.ones_like(active)) for name in values]
            for kind, only, targets, todo in jobs:
                for name, c in index.items():
                    if kind == "ab":
                        stats[f"ab/{name}"].add(baseline[pair_samples[~todo], c],  # type: ignore[attr-defined]
                                                pair_units[~todo])
                pending = todo.nonzero().flatten()
                for start in range(0, len(pending), chunk):
                    pick = pending[start:start + chunk]
                    edited = edited_pairs(features, pair_samples[pick], pair_units[pick], targets[pick])
                    shares = concept_shares(segmenter, cut.tail(edited, batch.z[pair_samples[pick]]))
                    for name, c in index.items():
                        if only is None or name == only:
                            stats[f"{kind}/{name}"].add(shares[:, c], pair_units[pick])  # type: ignore[attr-defined]

    merged = SamplePass(generator, seed=seed, samples=samples, batch_size=batch_size, generate=False,
                        description=f"ACE {layer}", progress=False).run(stats, update)
    pick = torch.tensor(chosen)
    return {name: UnitEffects(layer, name, chosen, merged[f"in/{name}"].mean()[pick].float(),  # type: ignore
                              merged[f"ab/{name}"].mean()[pick].float(), samples, seed)  # type: ignore
            for name in values}


def check_against_unit_effects(generator: nn.Module, segmenter: Segmenter, run: Dissection, layer: str,
                               concepts: Sequence[str]) -> float:
    """Largest difference between `concept_effects` and `unit_effects` on a few units and samples."""
    values = {name: insertion_values(run, layer, name) for name in concepts}
    units = [0, 5, 9]
    mine = concept_effects(generator, segmenter, layer, values, units, samples=3, batch_size=2, chunk=5)
    worst = 0.0
    for name in concepts:
        theirs = unit_effects(generator, segmenter, layer, segmenter_concept(segmenter, name), name, values[name],
                              units, samples=3, batch_size=2, group=2, progress=False)
        worst = max(worst, float((theirs.inserted - mine[name].inserted).abs().max()),
                    float((theirs.ablated - mine[name].ablated).abs().max()))
    return worst


def fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the charts, strips and results.json")
    parser.add_argument("--run", type=Path, default=Path("runs/demo"), help="finished dissection of scenes64")
    parser.add_argument("--concepts", nargs="+", default=["tree", "building", "window", "door"])
    parser.add_argument("--layers", nargs="+", default=["layer3", "layer4"])
    parser.add_argument("--top", type=int, default=20, help="units in the headline number and the insertion")
    parser.add_argument("--counts", type=int, nargs="+", default=[0, 1, 2, 4, 8, 12, 16, 20])
    parser.add_argument("--ace-samples", type=int, default=64, help="held-out samples (seed 3) for ACE")
    parser.add_argument("--eval-samples", type=int, default=48, help="held-out samples (seed 4) for the curves")
    parser.add_argument("--context", nargs="+", default=["door", "tree"], help="concepts to insert")
    parser.add_argument("--context-samples", type=int, default=3, help="samples (seed 5) for the context")
    parser.add_argument("--context-quantile", type=float, default=0.99,
                        help="insert each unit's quantile of activation (0: its mean where the concept is)")
    parser.add_argument("--strip-samples", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--exact-segmenter", action="store_true", help="run the segmenter's eager network")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    counts = sorted(set(args.counts) | {0, args.top})

    spec = registry.get("scenes64")
    generator = spec.generator().eval()
    segmenter = spec.segmenter()
    if not args.exact_segmenter:
        with torch.no_grad():
            segmenter = FrozenSegmenter(segmenter, generator(torch.randn(8, generator.z_dim)))
    run = Dissection.load(args.run)
    log(f"scenes64 loaded; dissection {args.run} with layers {list(run.layers)}")
    worst = check_against_unit_effects(generator, segmenter, run, args.layers[-1], args.concepts[-1:])
    log(f"multi-concept ACE vs unit_effects: largest difference {worst:.2e}")
    assert worst < 1e-6, worst

    results: dict = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                     "layers": {}}
    curves: dict[tuple[str, str], dict] = {}
    rankings: dict[tuple[str, str], dict[str, list[int]]] = {}
    values: dict[tuple[str, str], torch.Tensor] = {}
    for layer in args.layers:
        layer_values = {name: insertion_values(run, layer, name) for name in args.concepts}
        effects = concept_effects(generator, segmenter, layer, layer_values, samples=args.ace_samples)
        log(f"{layer}: single-unit ACE of {len(effects[args.concepts[0]].units)} units on {args.ace_samples} samples")
        sets = []
        for name in args.concepts:
            values[name, layer] = layer_values[name]
            ablated = effects[name].ablated.argsort(stable=True).tolist()  # own ablation removes most first
            rankings[name, layer] = {"ACE": effects[name].ranking(), "IoU": iou_ranking(run, layer, name),
                                     "single ablation": [effects[name].units[i] for i in ablated]}
            sets += [ranking[:n] for ranking in rankings[name, layer].values() for n in counts]
        pixels = ablation_pixels(generator, segmenter, layer, sets, samples=args.eval_samples, batch_size=8,
                                 progress=False)
        log(f"{layer}: {len(pixels.unit_sets)} ablations on {args.eval_samples} samples")
        results["layers"][layer] = {}
        for name in args.concepts:
            pair = {key: pixels.curve(name, ranking, counts, key) for key, ranking in rankings[name, layer].items()}
            curves[name, layer] = pair
            ace = effects[name]
            results["layers"][layer][name] = {
                "curves": {key: curve.to_json() for key, curve in pair.items()},
                "ace": {"units": ace.units, "ace": ace.ace.tolist(), "inserted": ace.inserted.tolist(),
                        "ablated": ace.ablated.tolist()}}

    chosen = {name: max(args.layers, key=lambda layer, name=name: curves[name, layer]["ACE"].at(args.top))
              for name in args.concepts}
    results["chosen"] = chosen
    for name in args.concepts:
        layer = chosen[name]
        save_svg(args.out / f"curves_{name}_{layer}.svg", curves_chart(curves[name, layer]))
        for key, ranking in list(rankings[name, layer].items())[:2]:
            images = ablation_images(generator, layer, ranking, counts, samples=args.strip_samples)
            slug = key.lower().replace(" ", "_")
            save_strip(args.out / f"strip_{name}_{layer}_{slug}.png", images, [f"N={n}" for n in counts], scale=2)
    log("charts and strips written")

    contexts = []
    for name in args.context:
        layer = chosen.get(name, args.layers[-1])
        if (name, layer) not in rankings:
            continue
        patch = max(1, Cut(generator, layer).head(torch.zeros(1, generator.z_dim)).shape[-1] // 16)
        units = rankings[name, layer]["ACE"][:args.top]
        inserted = (insertion_values(run, layer, quantile=args.context_quantile) if args.context_quantile
                    else values[name, layer])
        context = insertion_context(generator, segmenter, layer, name, units, inserted, patch=patch,
                                    stride=patch, margin=patch, samples=args.context_samples, batch_size=4,
                                    progress=False)
        contexts.append(context)
        save_svg(args.out / f"context_{name}_{layer}.svg", context_chart(context, min_locations=10))
        log(f"context of {name} at {layer}: {sum(context.locations)} locations")
    if contexts:
        save_svg(args.out / "context.svg", context_chart(contexts, min_locations=10))
    results["contexts"] = [context.to_json() for context in contexts]
    (args.out / "results.json").write_text(json.dumps(results, indent=1, allow_nan=False, default=str))

    print_tables(args, counts, curves, chosen, contexts)
    log("done")
    return 0


def print_tables(args: argparse.Namespace, counts: list[int], curves: dict, chosen: dict, contexts: list) -> None:
    top, single = args.top, "single ablation"
    print(f"### Top {top} units ablated: fraction of the concept's pixels removed (other concepts' pixels kept)\n")
    print(f"Rankings: ACE = single-unit ACE (insert minus ablate, {args.ace_samples} held-out samples, seed 3); "
          "IoU = the dissection's quantile-rule IoU; single ablation = the units whose ablation alone leaves the "
          f"least of the concept (the ACE run's ablation term). Curves on {args.eval_samples} other held-out "
          "samples (seed 4); `*` marks the layer chosen (most removed by the top ACE units).\n")
    print("| concept | layer | pixels before | ACE removed | IoU removed | single-ablation removed | ACE others kept "
          "| IoU others kept | paper (ACE, church) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.concepts:
        for layer in args.layers:
            pair = curves[name, layer]
            ace, iou, one = pair["ACE"], pair["IoU"], pair[single]
            i = ace.counts.index(top)
            mark = "*" if chosen[name] == layer else ""
            print(f"| {name} | {layer}{mark} | {ace.pixels_before:.0f} | {fmt(ace.removed[i])} | "
                  f"{fmt(iou.removed[i])} | {fmt(one.removed[i])} | {fmt(ace.others_kept[i])} | "
                  f"{fmt(iou.others_kept[i])} | {fmt(PAPER.get(name, float('nan')))} |")
    print("\n### Fraction removed against units ablated N, at the chosen layer: ACE vs IoU (`>` where ACE removes "
          "more), [single ablation]\n")
    header = " | ".join(f"N={n}" for n in counts[1:])
    print(f"| concept | layer | {header} |")
    print("|---|---|" + "---:|" * (len(counts) - 1))
    for name in args.concepts:
        layer = chosen[name]
        ace, iou, one = (curves[name, layer][key] for key in ("ACE", "IoU", single))
        cells = []
        for n in counts[1:]:
            a, b = ace.at(n), iou.at(n)
            sign = ">" if a > b else ("=" if a == b else "<")
            cells.append(f"{fmt(a)} {sign} {fmt(b)} [{fmt(one.at(n))}]")
        print(f"| {name} | {layer} | " + " | ".join(cells) + " |")
    points = [(name, n) for name in args.concepts for n in counts[1:]]
    wins = sum(curves[name, chosen[name]]["ACE"].at(n) > curves[name, chosen[name]]["IoU"].at(n) for name, n in points)
    print(f"\nACE ranking removes more than IoU ranking at {wins} of {len(points)} (concept, N) points.\n")
    if not contexts:
        return
    value = (f"each unit's {args.context_quantile:g} quantile" if args.context_quantile
             else "each unit's mean activation where the concept is")
    print(f"### Context of insertion: top {top} ACE units inserted ({value}) at one location at a time, "
          f"{args.context_samples} samples; concept pixels gained near the location, by the concept there before\n")
    names = list(contexts[0].before)
    rows = sorted((n for n in names if any(c.locations[c.before.index(n)] >= 10 for c in contexts)),
                  key=lambda n: -sum(c.locations[c.before.index(n)] for c in contexts))
    head = " | ".join(f"{c.concept} @{c.layer}: locations | mean pixels gained | share with a gain" for c in contexts)
    print(f"| before | {head} |")
    print("|---|" + "---:|---:|---:|" * len(contexts))
    for n in rows:
        cells = []
        for c in contexts:
            i = c.before.index(n)
            cells.append(f"{c.locations[i]} | {fmt(c.gained[i], 2)} | {fmt(c.appeared[i])}")
        print(f"| {n} | " + " | ".join(cells) + " |")
    window = "; ".join(f"{c.concept}: {c.patch}x{c.patch} cells of {c.layer} (4x4 pixels), gain counted in the "
                       f"patch widened by {c.margin} cells" for c in contexts)
    print(f"\n({window}; 'before' = the concept covering most of the patch's pixels.)")


if __name__ == "__main__":
    sys.exit(main())
