"""`gandissect causal`: rank a layer's units by their causal effect on concepts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gandissect.cli.runs import common_arguments, open_run, rewrite_report


def _add_causal(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("causal", help="rank every unit of a layer by its average causal effect on a concept")
    common_arguments(p)
    p.add_argument("--concept", required=True, help="a concept of the run's segmenter")
    p.add_argument("--samples", type=int, default=200, help="held-out samples (default 200)")
    p.add_argument("--seed", type=int, default=3, help="held-out sample set seed (default 3)")
    p.add_argument("--quantile", type=float, default=None,
                   help="insert this quantile of each unit (default: its mean activation where the concept is)")
    p.add_argument("--batch-size", type=int, default=8, help="samples per batch (default 8)")
    p.add_argument("--optimize", action="store_true",
                   help="also fit a strength alpha per unit by SGD (units.json, for the painter)")
    p.add_argument("--curves", action="store_true", help="also ablate the top units by ACE and by IoU (curves.svg)")
    p.add_argument("--context", action="store_true",
                   help="also insert the top 20 ACE units at every location (context.svg)")
    p.add_argument("--curve-samples", type=int, default=48, help="held-out samples for curves (default 48)")
    p.add_argument("--no-report", action="store_true", help="do not rewrite the run's report.html")
    p.set_defaults(handler=_run_causal)


def _run_causal(args: argparse.Namespace) -> int:
    from gandissect.causal.ace import unit_effects
    from gandissect.causal.interventions import check_layer, concept_index, insertion_values
    from gandissect.causal.outputs import write_effects
    from gandissect.core.errors import ConfigError
    from gandissect.engine import collectives

    run = open_run(args)
    layer = args.layer or run.result.config.layers[0]
    check_layer(run.result, layer)
    concept = concept_index(run.result, args.concept)
    if args.samples < 1 or args.batch_size < 1:
        raise ConfigError("--samples and --batch-size must be positive")
    values = insertion_values(run.result, layer, args.concept, args.quantile)
    collective = collectives.init_from_env(args.device)
    effects = unit_effects(run.generator, run.segmenter, layer, concept, args.concept, values,
                           samples=args.samples, seed=args.seed, batch_size=args.batch_size, device=run.device,
                           collective=collective)
    folder = write_effects(run.folder, effects, run.result, values) if collective.rank == 0 else None
    rankings = {"ACE": effects.ranking()}
    if args.optimize:
        from gandissect.causal.optimize import optimize_units

        optimized = optimize_units(run.generator, run.segmenter, layer, args.concept, values, init=run.result,
                                   device=run.device)
        rankings["alpha"] = optimized.ranking()
        if folder is not None:
            optimized.save(folder / "units.json")
    if args.curves:
        _write_curves(run, layer, args, rankings, collective, folder)
    if args.context:
        _write_context(run, layer, args, rankings["ACE"][:20], collective, folder)
    if folder is not None:
        top = ", ".join(f"{u} ({float(effects.ace[effects.units.index(u)]):+.2g})" for u in effects.ranking()[:10])
        print(f"{layer} -> {args.concept}: top units by ACE: {top}", file=sys.stderr)
        print(f"results: {folder}")
        rewrite_report(run, args)
    collectives.shutdown(collective)
    return 0


def _write_curves(run: Any, layer: str, args: argparse.Namespace, rankings: dict[str, list[int]],
                  collective: Any, folder: Path | None) -> None:
    """Ablation curves for every ranking and the IoU ranking, their chart, and a strip of samples."""
    from gandissect.causal.curves import ablation_curves, ablation_images, iou_ranking, unit_counts
    from gandissect.engine.storage import write_json_atomic
    from gandissect.viz.plots import curves_chart, save_strip, save_svg

    rankings = {**rankings, "IoU": iou_ranking(run.result, layer, args.concept)}
    curves = ablation_curves(run.generator, run.segmenter, layer, args.concept, rankings,
                             samples=args.curve_samples, device=run.device, collective=collective)
    if folder is None:
        return
    write_json_atomic(folder / "curves.json", {name: curve.to_json() for name, curve in curves.items()})
    save_svg(folder / "curves.svg", curves_chart(curves, f"Ablating {args.concept} units at {layer}"))
    counts = unit_counts(len(rankings["ACE"]))
    images = ablation_images(run.generator, layer, rankings["ACE"], counts, samples=6, device=run.device)
    save_strip(folder / "ablation-strip.png", images, [f"N={n}" for n in counts])


def _write_context(run: Any, layer: str, args: argparse.Namespace, units: list[int], collective: Any,
                   folder: Path | None) -> None:
    """Insert the units (at their 99th percentile) at every location; chart the gain by what was there."""
    from gandissect.causal.context import insertion_context
    from gandissect.causal.interventions import insertion_values
    from gandissect.engine.storage import write_json_atomic
    from gandissect.viz.plots import context_chart, save_svg

    values = insertion_values(run.result, layer, quantile=0.99)
    context = insertion_context(run.generator, run.segmenter, layer, args.concept, units, values, patch=2,
                                margin=2, samples=4, device=run.device, collective=collective)
    if folder is not None:
        write_json_atomic(folder / "context.json", context.to_json())
        save_svg(folder / "context.svg", context_chart(context, title=f"Inserting {args.concept} units at {layer}"))


def register(sub: argparse._SubParsersAction) -> None:
    _add_causal(sub)
