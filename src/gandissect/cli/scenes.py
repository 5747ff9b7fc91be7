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
    p.add_argument("--out", default=None, help="also write the results to this JSON file")
    p.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    import json

    from gandissect.engine.storage import write_json_atomic
    from gandissect.models import load
    from gandissect.scenes.metrics import frechet_segmentation_distance, segmenter_iou

    bundle = load(args.model, args.device)
    size = int(bundle.metadata.get("image_size", 64))
    iou = segmenter_iou(bundle.segmenter, args.samples, size, args.batch_size)
    fsd = frechet_segmentation_distance(bundle.generator, bundle.segmenter, args.samples, args.batch_size)
    result = {"model": args.model, "segmenter_iou": iou, "fsd": fsd}
    print(json.dumps(result, indent=1))
    if args.out:
        write_json_atomic(args.out, result)
        print(f"written to {args.out}")
    return 0


def _add_ship(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ship", help="copy trained weights into the package as a named shipped model")
    p.add_argument("--name", required=True, help="model name, e.g. scenes64")
    p.add_argument("--gan", required=True, help="GAN training run folder")
    p.add_argument("--segmenter", required=True, help="segmenter training run folder")
    p.set_defaults(handler=_run_ship)


def _run_ship(args: argparse.Namespace) -> int:
    from gandissect.scenes.ship import ship

    print(f"shipped to {ship(args.name, args.gan, args.segmenter)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    _add_train(sub)
    _add_ship(sub)
    _add_evaluate(sub)
