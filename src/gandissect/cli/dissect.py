"""Commands for dissection: run it, and rewrite the report of a finished run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gandissect.cli.runs import spec_help


def _add_dissect(sub: argparse._SubParsersAction) -> None:
    from gandissect.dissection import RULES, DissectConfig

    defaults = DissectConfig(layers=["layer1"])
    p = sub.add_parser("dissect", help="match every unit of the chosen layers to a concept and write the report",
                       description="Runs under torchrun too: samples are sharded by rank and merged.")
    p.add_argument("--model", default="scenes64", help=spec_help("generator", "scenes64"))
    p.add_argument("--segmenter", default=None, help=spec_help("segmenter", "the model's own, e.g. scenes64+color"))
    p.add_argument("--layers", default=None, help="comma-separated layer names (default: the model's middle layers)")
    p.add_argument("--out", required=True, help="run folder for dissect.json, dissect.csv and report.html")
    p.add_argument("--samples", type=int, default=defaults.samples, help=f"samples per set ({defaults.samples})")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help=f"({defaults.batch_size})")
    p.add_argument("--quantile", type=float, default=defaults.quantile,
                   help=f"top fraction of upsampled activations that sets each unit's threshold ({defaults.quantile})")
    p.add_argument("--threshold-seed", type=int, default=defaults.threshold_seed, help="seed of the threshold set")
    p.add_argument("--iou-seed", type=int, default=defaults.iou_seed, help="seed of the IoU set")
    p.add_argument("--seg-size", type=int, default=None,
                   help="size at which statistics are taken (default: the smaller of the image and segmentation)")
    p.add_argument("--topk", type=int, default=defaults.topk, help=f"top samples kept per unit ({defaults.topk})")
    p.add_argument("--min-iou", type=float, default=defaults.min_iou,
                   help=f"interpretable: IoU above ({defaults.min_iou})")
    p.add_argument("--min-iqr", type=float, default=defaults.min_iqr, help=f"... and IQR above ({defaults.min_iqr})")
    p.add_argument("--label-method", default=defaults.label_method,
                   help=f"the labelling rule: {', '.join(RULES)}; every rule is recorded per unit "
                        f"({defaults.label_method})")
    p.add_argument("--passes", default="auto", choices=("auto", "one", "two"),
                   help="one pass over the IoU set, or thresholds from the threshold set first (auto, the default: "
                        "one pass when its histograms fit in a quarter of the free memory)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--workers", type=int, default=None,
                   help="on a CPU, threads that compute batches ahead, each with its own copy of the models and "
                        "one share of torch's threads (default: torch's thread count, at most 4; 1: one batch at "
                        "a time on all threads); the results are the same")
    p.add_argument("--resume", action="store_true", help="continue the unfinished run in --out")
    p.add_argument("--force", action="store_true", help="replace the run in --out (its results stay until the new "
                                                        "ones are complete)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.set_defaults(handler=_run_dissect)


def _run_dissect(args: argparse.Namespace) -> int:
    from gandissect.core.errors import ConfigError
    from gandissect.dissection import DissectConfig, Dissector
    from gandissect.engine import collectives
    from gandissect.engine.samplepass import RANGE, check_device
    from gandissect.engine.speed import keep_freed_memory
    from gandissect.models import default_layers_for, default_segmenter_for, resolve_generator, resolve_segmenter
    from gandissect.viz import report

    device = collectives.local_device(check_device(args.device))
    keep_freed_memory()
    generator = resolve_generator(args.model, device)
    segmenter_spec = args.segmenter or default_segmenter_for(args.model)
    if segmenter_spec is None:
        raise ConfigError(f"--segmenter is required for {args.model!r}: give a segmenter spec, or 'color'")
    layers = args.layers.split(",") if args.layers else default_layers_for(args.model, generator)
    config = DissectConfig(layers=layers, samples=args.samples, batch_size=args.batch_size, quantile=args.quantile,
                           threshold_seed=args.threshold_seed, iou_seed=args.iou_seed, seg_size=args.seg_size,
                           topk=args.topk, min_iou=args.min_iou, min_iqr=args.min_iqr, label_method=args.label_method,
                           passes=args.passes)
    segmenter = resolve_segmenter(segmenter_spec, device)
    collective = collectives.init_from_env(args.device)
    dissector = Dissector(generator, segmenter, config, args.out, device=device, resume=args.resume,
                          force=args.force, collective=collective, workers=args.workers)
    resumed = dissector.prepare()
    assert dissector.size is not None
    if args.resume and not resumed and collective.rank == 0:
        print(f"nothing to resume in {args.out}: starting a new run", file=sys.stderr)
    if collective.rank == 0:
        print(f"dissecting {', '.join(config.layers)} of {args.model} with {segmenter_spec}: {config.samples} samples "
              f"per set, statistics at {dissector.size[0]}x{dissector.size[1]}", file=sys.stderr)
    result = dissector.run()

    def write_report(document: dict, staging: Path) -> None:
        if not args.no_report:
            report.write_report(document, generator, staging, device=device)

    provenance = {"model": args.model, "segmenter": segmenter_spec}
    segmenter_records = [getattr(part, "checkpoint", None) for part in [segmenter, *getattr(segmenter, "parts", [])]]
    segmenter_records = [record for record in segmenter_records if record is not None]
    if getattr(generator, "checkpoint", None) is not None:
        provenance["model_checkpoint"] = generator.checkpoint
    if segmenter_records:
        provenance["segmenter_checkpoint"] = segmenter_records[0] if len(segmenter_records) == 1 else segmenter_records
    document = dissector.finish(result, provenance, write_report)
    if document is not None:
        print(dissect_summary(document, config.label_method))
        clipped = result.statistics.get(RANGE)
        if clipped is not None and int(clipped.values):  # type: ignore[attr-defined]
            print(f"note: {clipped.describe()}", file=sys.stderr)  # type: ignore[attr-defined]
        print(f"results: {Path(args.out).resolve()}" + ("" if args.no_report else "/report.html"))
    collectives.shutdown(collective)
    return 0


def dissect_summary(document: dict, rule: str) -> str:
    """Interpretable units per concept (rows, most first) and layer (columns), with each layer's total."""
    from gandissect.cli.tables import text_table

    layers = document["layers"]
    totals: dict[str, int] = {}
    for layer in layers.values():
        for concept, count in layer["interpretable_by_concept"].items():
            totals[concept] = totals.get(concept, 0) + count
    concepts = sorted(totals, key=lambda c: (-totals[c], c))
    rows = [[c, *(layer["interpretable_by_concept"].get(c, 0) for layer in layers.values())] for c in concepts]
    rows.append(["all", *(f"{layer['interpretable_units']} of {layer['shape'][0]}" for layer in layers.values())])
    return f"interpretable units ({rule} rule):\n" + text_table(["concept", *layers], rows)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="(re)write report.html of a finished dissection run")
    p.add_argument("run", help="run folder holding dissect.json")
    p.add_argument("--model", default=None, help=spec_help("generator", "the one the run recorded"))
    p.add_argument("--device", default="cpu")
    p.set_defaults(handler=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from gandissect.cli.runs import HELD
    from gandissect.core.errors import ConfigError
    from gandissect.dissection.document import check_document
    from gandissect.engine.runfiles import Snapshot, read_json_file
    from gandissect.engine.runfolder import RunFolder
    from gandissect.models import recorded_spec, resolve_generator
    from gandissect.viz import report

    with Snapshot(args.run) as files:
        document = read_json_file(files, "dissect.json")
    check_document(document)
    spec = recorded_spec(document, "model", args.model, "--model")
    if not spec:
        raise ConfigError(f"{args.run}/dissect.json records no model: pass --model")
    generator = resolve_generator(spec, args.device)
    holder = RunFolder(args.run, ()).hold(generator)
    HELD.append(holder)
    update = holder.update(["report.html"])
    report.write_report(document, generator, update.staging, args.device, files=update)
    update.commit()
    print(f"report: {Path(args.run) / 'report.html'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    _add_dissect(sub)
    _add_report(sub)
