"""Commands for the procedural world's models: train, ship, evaluate, sample."""

from __future__ import annotations

import argparse

import torch


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _add_train(sub: argparse._SubParsersAction) -> None:
    from gandissect.scenes.training import GanTrainConfig, SegmenterTrainConfig

    train = sub.add_parser("train", help="train the shipped scene models on the procedural world")
    kinds = train.add_subparsers(dest="kind", required=True)
    for kind, config in (("gan", GanTrainConfig), ("segmenter", SegmenterTrainConfig)):
        p = kinds.add_parser(kind, help=f"train a scene {kind}; resumes from the checkpoint in --out")
        p.add_argument("--out", required=True, help="run folder (checkpoints, samples, weights)")
        for name, field in config.__dataclass_fields__.items():
            if name == "out":
                continue
            flag = "--" + name.replace("_", "-")
            if isinstance(field.default, tuple):
                p.add_argument(flag, type=_ints, default=field.default, help=f"comma-separated ({field.default})")
            else:
                p.add_argument(flag, type=type(field.default), default=field.default, help=f"({field.default})")
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
        p.set_defaults(handler=_run_train, config_class=config)


def _run_train(args: argparse.Namespace) -> int:
    from gandissect.scenes.training import train_gan, train_segmenter

    if args.threads:
        torch.set_num_threads(args.threads)
    config_class = args.config_class
    values = {name: getattr(args, name) for name in config_class.__dataclass_fields__}
    config = config_class(**values)
    out = (train_gan if args.kind == "gan" else train_segmenter)(config)
    print(f"weights written to {out}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="segmenter IoU on held-out scenes and the generator's FSD")
    p.add_argument("--model", required=True, help="shipped model name (see `gandissect.models.available()`)")
    p.add_argument("--samples", type=int, default=2000, help="images per metric (default 2000)")
    p.add_argument("--batch-size", type=int, default=100, help="images per batch (default 100)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--out", default=None, help="JSON file for the full results (default runs/evaluate-MODEL.json)")
    p.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gandissect.core.errors import ConfigError
    from gandissect.engine.storage import write_json_atomic
    from gandissect.models import load
    from gandissect.scenes.metrics import frechet_segmentation_distance, segmenter_iou

    out = Path(args.out or f"runs/evaluate-{args.model}.json")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder: give the JSON file to write")
    bundle = load(args.model, args.device)
    size = int(bundle.metadata.get("image_size", 64))
    iou = segmenter_iou(bundle.segmenter, args.samples, size, args.batch_size)
    fsd = frechet_segmentation_distance(bundle.generator, bundle.segmenter, args.samples, args.batch_size)
    result = {"model": args.model, "segmenter_iou": iou, "fsd": fsd}
    write_json_atomic(out, result)
    print(evaluation_table(result))
    print(f"full results: {out}")
    return 0


def evaluation_table(result: dict) -> str:
    """The evaluation as a per-concept table (segmenter IoU; generated and real pixel shares) and two totals."""
    from gandissect.cli.tables import text_table

    iou, fsd = result["segmenter_iou"], result["fsd"]

    def cell(value: float | None, form: str) -> str:
        return "-" if value is None else format(value, form)

    rows = []
    for concept, value in iou["per_concept"].items():
        share = fsd["per_concept"].get(concept, {})
        rows.append([concept, cell(value, ".3f"), cell(share.get("generated_percent"), ".2f"),
                     cell(share.get("real_percent"), ".2f"), cell(share.get("relative_difference"), "+.1%")])
    table = text_table(["concept", "segmenter IoU", "generated %", "real %", "relative difference"], rows)
    return (f"{table}\nmean segmenter IoU {iou['mean_iou']:.3f} on {iou['count']} held-out scenes; "
            f"FSD {fsd['fsd']:.2f} on {fsd['count']} samples (two real sets: {fsd['fsd_real_reference']:.2f})")


def _add_ship(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ship", help="package trained weights as a named model, loadable by name",
                       description="Writes the model to your models folder ($GANDISSECT_CACHE/models, else "
                                   "~/.cache/gandissect/models) or to --into, never into the installed package "
                                   "unless --into names it.")
    p.add_argument("--name", required=True, help="model name, e.g. my-scenes (an existing name is refused)")
    p.add_argument("--gan", required=True, help="GAN training run folder")
    p.add_argument("--segmenter", required=True, help="segmenter training run folder")
    p.add_argument("--into", default=None, help="folder to ship into (default: your models folder); load by name "
                                                "from it with GANDISSECT_MODELS=FOLDER")
    p.add_argument("--replace", action="store_true", help="replace the model of this name in that folder")
    p.set_defaults(handler=_run_ship)


def _run_ship(args: argparse.Namespace) -> int:
    import sys

    from gandissect.scenes.ship import ship

    shipped = ship(args.name, args.gan, args.segmenter, into=args.into, replace=args.replace)
    for warning in shipped.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"shipped to {shipped.folder}")
    if shipped.by_name:
        print(f"load it by name: gandissect dissect --model {args.name} --out runs/{args.name}")
    else:
        print(f"to load it by name, set GANDISSECT_MODELS={shipped.folder.parent.resolve()}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    _add_train(sub)
    _add_ship(sub)
    _add_evaluate(sub)
