"""`gandissect causal-labels`: the concept each unit draws, found by interventions."""

from __future__ import annotations

import argparse

from gandissect.cli.runs import common_arguments, open_run, rewrite_report


def _add_causal_labels(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("causal-labels", help="find the concept each unit draws by intervening, and how often "
                                             "each labelling rule agrees")
    common_arguments(p)
    p.add_argument("--layers", default=None, help="comma-separated dissected layers (default: all of the run's)")
    p.add_argument("--samples", type=int, default=32, help="held-out samples (default 32)")
    p.add_argument("--seed", type=int, default=3, help="held-out sample set seed (default 3)")
    p.add_argument("--batch-size", type=int, default=8, help="samples per batch (default 8)")
    p.add_argument("--no-report", action="store_true", help="do not rewrite the run's report.html")
    p.set_defaults(handler=_run_causal_labels)


def _run_causal_labels(args: argparse.Namespace) -> int:
    from gandissect.causal.interventions import check_layer
    from gandissect.causal.labels import agreement_table, causal_labels, rule_agreement
    from gandissect.engine import collectives
    from gandissect.engine.storage import write_json_atomic

    run = open_run(args)
    layers = args.layers.split(",") if args.layers else list(run.result.config.layers)
    for layer in layers:
        check_layer(run.result, layer)
    collective = collectives.init_from_env(args.device)
    agreements = {}
    for layer in layers:
        labels = causal_labels(run.generator, run.segmenter, run.result, layer, samples=args.samples, seed=args.seed,
                               batch_size=args.batch_size, device=run.device, collective=collective)
        agreements[layer] = rule_agreement(run.result, labels)
        if collective.rank == 0:
            write_json_atomic(run.folder / "causal" / layer / "labels.json", labels.to_json(agreements[layer]))
    if collective.rank == 0:
        print(agreement_table(agreements))
        print(f"results: {run.folder / 'causal'}")
        rewrite_report(run, args)
    collectives.shutdown(collective)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    _add_causal_labels(sub)
