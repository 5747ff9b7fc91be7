"""`gandissect causal`: rank a layer's units by their causal effect on concepts, with the evidence for it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gandissect.cli.runs import commit_update, common_arguments, open_run, staged_update

VALUES = ("high", "concept")


def _samples(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--samples takes a number or 'auto', got {text!r}") from None


def _add_causal(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("causal", help="rank every unit of a layer by its causal effect on concepts (removal, "
                                      "insertion, ACE), with intervals and significance")
    common_arguments(p)
    p.add_argument("--concept", required=True,
                   help="a concept of the run's segmenter, several (tree,door), or 'all' (every concept seen)")
    p.add_argument("--samples", type=_samples, default="auto",
                   help="held-out samples: a number, or 'auto' (default): rounds of 32, 64, ... until the top "
                        "units are settled or --max-samples are used")
    p.add_argument("--max-samples", type=int, default=200, help="the budget of --samples auto (default 200)")
    p.add_argument("--top", type=int, default=3, help="how many top units must settle under auto (default 3)")
    p.add_argument("--seed", type=int, default=3, help="held-out sample set seed (default 3)")
    p.add_argument("--value", choices=VALUES, default="high",
                   help="value inserted: 'high' (default), each unit's --quantile, one value for every concept "
                        "(the images are shared); 'concept', its mean activation where the concept is (the "
                        "paper's ACE; measured per concept)")
    p.add_argument("--quantile", type=float, default=0.99, help="the quantile of --value high (default 0.99)")
    p.add_argument("--rank", choices=("removal", "insertion", "ace"), default="removal",
                   help="the ranking printed, written first and ablated by --curves (default removal)")
    p.add_argument("--batch-size", type=int, default=8, help="samples per batch (default 8)")
    p.add_argument("--set-samples", type=int, default=32,
                   help="held-out samples (seed 4) on which each concept's significant units are switched off "
                        "and on together, the figure the painter shows (default 32; 0: skip)")
    p.add_argument("--optimize", action="store_true",
                   help="also fit a strength alpha per unit by SGD (units.json; needs a segmenter with "
                        "concept_scores)")
    p.add_argument("--curves", action="store_true",
                   help="also ablate the top N units of each ranking and random units (curves.svg)")
    p.add_argument("--units", default=None,
                   help="the N of --curves: numbers or shares of the layer, e.g. 1,2,4,5%%,20 (default 1, 2, 4, "
                        "... and the layer's width)")
    p.add_argument("--random-draws", type=int, default=10, help="random unit sets per N of --curves (default 10)")
    p.add_argument("--context", action="store_true",
                   help="also insert the top 20 insertion units at every location (context.svg)")
    p.add_argument("--curve-samples", type=int, default=48, help="held-out samples for curves (default 48)")
    p.add_argument("--no-report", action="store_true", help="do not rewrite the run's report.html")
    p.set_defaults(handler=_run_causal)


def chosen_concepts(result: Any, text: str) -> list[str]:
    """The concepts named by --concept: one, a comma-separated list, or 'all' (every concept that appeared in
    the run's IoU samples); a one-line error naming the unknown ones."""
    from gandissect.causal.notebook import seen_concepts
    from gandissect.core.errors import ConfigError

    if text == "all":
        return seen_concepts(result)
    names = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in names if c not in result.concepts]
    if unknown or not names:
        raise ConfigError(f"--concept {text!r}: unknown {', '.join(unknown) or 'nothing given'}; the segmenter's "
                          f"concepts: {', '.join(result.concepts)} (or 'all')")
    if len(set(names)) != len(names):
        raise ConfigError(f"--concept {text!r} names a concept twice")
    return names


def check_flags(args: argparse.Namespace, run: Any, layer: str, width: int) -> list[int]:
    """Everything that can be refused before the long work; returns the curve counts."""
    from gandissect.core.errors import ConfigError

    budget = args.max_samples if args.samples == "auto" else args.samples
    checks = [(budget >= 2, f"the number of samples must be at least 2 (intervals need two); got {budget}"),
              (args.batch_size >= 1, f"--batch-size must be positive; got {args.batch_size}"),
              (1 <= args.top < width, f"--top must lie in 1..{width - 1} for layer {layer!r}; got {args.top}"),
              (0 < args.quantile < 1, f"--quantile must lie in (0, 1); got {args.quantile}"),
              (args.set_samples == 0 or args.set_samples >= 2, f"--set-samples must be 0 or at least 2; got "
                                                                f"{args.set_samples}"),
              (args.curve_samples >= 2, f"--curve-samples must be at least 2; got {args.curve_samples}"),
              (args.random_draws >= 0, f"--random-draws must be 0 or more; got {args.random_draws}")]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if args.optimize and not callable(getattr(run.segmenter, "concept_scores", None)):
        raise ConfigError(f"--optimize needs a segmenter with differentiable concept_scores(images); "
                          f"{type(run.segmenter).__name__} has none")
    if not args.curves:
        return []
    from gandissect.causal.curves import parse_counts, unit_counts

    if args.units is None:
        return unit_counts(width)
    try:
        return parse_counts(args.units, width)
    except ConfigError as error:
        raise ConfigError(f"--units {args.units}: {error}") from None


def _run_causal(args: argparse.Namespace) -> int:
    from gandissect.causal.ace import measure_effects
    from gandissect.causal.evidence import settle_effects
    from gandissect.causal.interventions import check_layer, insertion_values
    from gandissect.causal.outputs import write_effects
    from gandissect.engine import collectives
    from gandissect.engine.speed import keep_freed_memory

    run = open_run(args)
    keep_freed_memory(huge_blocks=True)
    layer = args.layer or run.result.config.layers[0]
    width = check_layer(run.result, layer)
    concepts = chosen_concepts(run.result, args.concept)
    counts = check_flags(args, run, layer, width)
    if args.value == "concept":
        import torch

        values = torch.stack([insertion_values(run.result, layer, c) for c in concepts])
        rule = "each unit's mean activation where the concept is (coverage-weighted), per concept"
    else:
        values = insertion_values(run.result, layer, quantile=args.quantile)
        rule = f"each unit's {args.quantile:g} quantile of upsampled activations, the same for every concept"
    collective = collectives.init_from_env(args.device)
    rank0 = collective.rank == 0

    def measure(first: int, samples: int) -> dict:
        return measure_effects(run.generator, run.segmenter, layer, concepts, values, samples=samples,
                               seed=args.seed, first=first, batch_size=args.batch_size, device=run.device,
                               collective=collective)

    adaptive = args.samples == "auto"
    effects, stopping = settle_effects(measure, args.max_samples if adaptive else args.samples, args.top,
                                       adaptive=adaptive, report=(lambda line: print(line, file=sys.stderr))
                                       if rank0 else None)
    sets = _significant_sets(run, layer, effects, args, collective)
    update = staged_update(run, args, [f"causal/{layer}/{concept}" for concept in concepts]) if rank0 else None
    folders = {}
    for concept, e in effects.items():
        if update is not None:
            measured = sets.get(concept, {}) if args.set_samples else None
            folders[concept] = write_effects(update.staging, e, run.result, rule, args.rank, stopping, measured)
    if rank0:
        print(effects_table(effects, args.rank, sets), file=sys.stderr)
        print("(* significant, Holm over the layer's units; > distinguishable from the next unit)", file=sys.stderr)
        print(f"{stopping.summary()}; insertion value: {rule}", file=sys.stderr)
    for concept, e in effects.items():
        rankings = {"removal": e.ranking("removal"), "ace": e.ranking("ace")}
        if args.optimize:
            from gandissect.causal.optimize import optimize_units

            optimized = optimize_units(run.generator, run.segmenter, layer, concept,
                                       insertion_values(run.result, layer, concept), init=run.result,
                                       device=run.device)
            rankings["alpha"] = optimized.ranking()
            if rank0:
                optimized.save(folders[concept] / "units.json")
        if args.curves:
            _write_curves(run, layer, concept, args, rankings, counts, collective, folders.get(concept))
        if args.context:
            _write_context(run, layer, concept, e.ranking("insertion")[:20], collective, folders.get(concept))
    if update is not None:
        commit_update(run, update)
        print(f"results: {run.folder / 'causal' / layer}")
    collectives.shutdown(collective)
    return 0


def _significant_sets(run: Any, layer: str, effects: dict, args: argparse.Namespace, collective: Any) -> dict:
    """Per concept and direction, the top 1, 2, 4, ... of its significant units (and all of them) switched
    together on held-out samples (the set seed): concept -> direction -> [SetEffect by strength]."""
    from gandissect.causal.evidence import rank
    from gandissect.causal.sets import UnitSet, set_effects, strengths

    if not args.set_samples:
        return {}
    wanted = []
    for concept, e in effects.items():
        for direction in ("removal", "insertion"):
            units = rank(e, direction).significant
            for n in strengths(len(units)):
                values = tuple(float(e.values[e.units.index(u)]) for u in units[:n]) if direction == "insertion" \
                    else ()
                wanted.append(UnitSet(concept, direction, tuple(units[:n]), values))
    if not wanted:
        return {}
    measured = set_effects(run.generator, run.segmenter, layer, wanted, samples=args.set_samples,
                           batch_size=args.batch_size, device=run.device, collective=collective)
    out: dict[str, dict] = {}
    for effect in measured:
        out.setdefault(effect.unit_set.concept, {}).setdefault(effect.unit_set.direction, []).append(effect)
    return out


def effects_table(effects: dict, rank_by: str, sets: dict, top: int = 3) -> str:
    """Per concept and direction: how many units are significant, the top units with effect and 95% interval
    (* significant, > separated from the next), and the largest significant set's held-out figure."""
    from gandissect.causal.evidence import rank

    lines = []
    for concept, e in effects.items():
        lines.append(f"{e.layer} -> {concept} ({e.samples} samples):")
        for direction in dict.fromkeys((rank_by, "removal", "insertion")):
            r = rank(e, direction)
            cells = []
            for k, unit in enumerate(r.order[:top]):
                i = e.units.index(unit)
                mark = ("*" if unit in r.significant else "") + (">" if k < len(r.separated) and r.separated[k]
                                                               else "")
                cells.append(f"{unit} {float(r.estimate.mean[i]):+.4f} [{float(r.estimate.low[i]):+.4f}, "
                             f"{float(r.estimate.high[i]):+.4f}]{mark}")
            held = [f for f in sets.get(concept, {}).get(direction, []) if f.significant]
            best = f"; held out, {len(held[-1].unit_set.units)} together: {held[-1].describe()}" if held else ""
            lines.append(f"  {direction:9s} {len(r.significant):2d} significant: {'; '.join(cells)}{best}")
    return "\n".join(lines)


def _write_curves(run: Any, layer: str, concept: str, args: argparse.Namespace, rankings: dict[str, list[int]],
                  counts: list[int], collective: Any, folder: Path | None) -> None:
    """Ablation curves for every ranking, the IoU ranking and random units, their chart, and a strip."""
    from gandissect.causal.curves import ablation_curves, ablation_images, iou_ranking
    from gandissect.engine.storage import write_json_atomic
    from gandissect.viz.plots import curves_chart, save_strip, save_svg

    rankings = {**rankings, "IoU": iou_ranking(run.result, layer, concept)}
    curves = ablation_curves(run.generator, run.segmenter, layer, concept, rankings, counts=counts,
                             samples=args.curve_samples, random_draws=args.random_draws, device=run.device,
                             collective=collective)
    if folder is None:
        return
    write_json_atomic(folder / "curves.json", {name: curve.to_json() for name, curve in curves.items()})
    save_svg(folder / "curves.svg", curves_chart(curves, f"Ablating {concept} units at {layer}"))
    strip_counts = [n for n in counts if n <= len(rankings["removal"])]
    images = ablation_images(run.generator, layer, rankings["removal"], strip_counts, samples=6, device=run.device)
    save_strip(folder / "ablation-strip.png", images, [f"N={n}" for n in strip_counts])


def _write_context(run: Any, layer: str, concept: str, units: list[int], collective: Any,
                   folder: Path | None) -> None:
    """Insert the units (at their 99th percentile) at every location; chart the gain by what was there."""
    from gandissect.causal.context import insertion_context
    from gandissect.causal.interventions import insertion_values
    from gandissect.engine.storage import write_json_atomic
    from gandissect.viz.plots import context_chart, save_svg

    values = insertion_values(run.result, layer, quantile=0.99)
    context = insertion_context(run.generator, run.segmenter, layer, concept, units, values, patch=2,
                                margin=2, samples=4, device=run.device, collective=collective)
    if folder is not None:
        write_json_atomic(folder / "context.json", context.to_json())
        save_svg(folder / "context.svg", context_chart(context, title=f"Inserting {concept} units at {layer}"))


def register(sub: argparse._SubParsersAction) -> None:
    _add_causal(sub)
