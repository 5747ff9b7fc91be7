"""`gandissect causal-labels`: the concept each unit draws, found by interventions."""

from __future__ import annotations

import argparse

from gandissect.cli.runs import commit_update, common_arguments, open_run, staged_update

DEFINITIONS = ("share", "relative", "lift")  # causal.labels.DEFINITIONS, not imported at start-up (tested)


def _add_causal_labels(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("causal-labels", help="find the concept each unit draws by intervening, and how often "
                                             "each labelling rule agrees")
    common_arguments(p)
    p.add_argument("--layers", default=None, help="comma-separated dissected layers (default: --layer, or all of "
                                                  "the run's)")
    p.add_argument("--samples", type=int, default=32, help="held-out samples, at least 2 (default 32)")
    p.add_argument("--seed", type=int, default=3, help="held-out sample set seed (default 3)")
    p.add_argument("--batch-size", type=int, default=8, help="samples per batch (default 8)")
    p.add_argument("--definition", choices=DEFINITIONS, default="share",
                   help="the definition whose labels the report shows (all are measured and recorded; default "
                        "share: the concept of largest significant ACE)")
    p.add_argument("--no-report", action="store_true", help="do not rewrite the run's report.html")
    p.set_defaults(handler=_run_causal_labels)


def chosen_layers(args: argparse.Namespace) -> list[str] | None:
    """The layers named by --layer or --layers (None: all of the run's), refused in one line when both are
    given, a name is empty or repeated, or --samples or --batch-size is too small."""
    from gandissect.core.errors import ConfigError

    if args.samples < 2:
        raise ConfigError(f"--samples must be at least 2 (a paired test needs two samples); got {args.samples}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1; got {args.batch_size}")
    if args.layer and args.layers:
        raise ConfigError("give --layer or --layers, not both")
    if not (args.layer or args.layers):
        return None
    layers = (args.layers or args.layer).split(",")
    if not all(layers):
        raise ConfigError(f"--layers {args.layers or args.layer!r} has an empty layer name")
    repeated = sorted({layer for layer in layers if layers.count(layer) > 1})
    if repeated:
        raise ConfigError(f"--layers names {', '.join(repeated)} more than once")
    return layers


def _run_causal_labels(args: argparse.Namespace) -> int:
    from gandissect.causal.interventions import check_layer
    from gandissect.causal.labels import agreement_table, causal_labels, rule_agreement, summary_table
    from gandissect.engine import collectives
    from gandissect.engine.speed import keep_freed_memory
    from gandissect.engine.storage import write_json_atomic

    layers = chosen_layers(args)
    run = open_run(args)
    keep_freed_memory(huge_blocks=True)
    layers = layers or list(run.result.config.layers)
    for layer in layers:
        check_layer(run.result, layer)
    collective = collectives.init_from_env(args.device)
    agreements: dict[str, dict] = {name: {} for name in DEFINITIONS}
    labels, records = {}, {}
    for layer in layers:
        labels[layer] = causal_labels(run.generator, run.segmenter, run.result, layer, samples=args.samples,
                                      seed=args.seed, batch_size=args.batch_size, device=run.device,
                                      collective=collective)
        for name in DEFINITIONS:
            agreements[name][layer] = rule_agreement(run.result, labels[layer], definition=name)
        if collective.rank == 0:
            record = labels[layer].to_json({name: agreements[name][layer] for name in DEFINITIONS},
                                           definition=args.definition)
            records[layer] = record
    if collective.rank == 0:
        update = staged_update(run, args, [f"causal/{layer}/labels.json" for layer in layers])
        for layer, record in records.items():
            write_json_atomic(update.path(f"causal/{layer}/labels.json"), record)
        commit_update(run, update)
        print(agreement_table(agreements))
        print()
        print(summary_table(labels))
        print(f"results: {run.folder / 'causal'}")
    collectives.shutdown(collective)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    _add_causal_labels(sub)
