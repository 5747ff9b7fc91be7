"""The `gandissect` command line: train, ship, sample, list layers, dissect."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import torch


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _add_train(sub: argparse._SubParsersAction) -> None:
    from gandissect.training import GanTrainConfig, SegmenterTrainConfig

    train = sub.add_parser("train", help="train the shipped scene models on the procedural world")
    kinds = train.add_subparsers(dest="kind", required=True)
    for kind, config in (("gan", GanTrainConfig), ("segmenter", SegmenterTrainConfig)):
        p = kinds.add_parser(kind, help=f"train a scene {kind}; resumes from the checkpoint in --out")
        p.add_argument("--out", required=True, help="run folder (checkpoints, samples, weights)")
        for name, field in config.__dataclass_fields__.items():
            if name in ("out", "extra"):
                continue
            flag = "--" + name.replace("_", "-")
            if isinstance(field.default, tuple):
                p.add_argument(flag, type=_ints, default=field.default, help=f"comma-separated (default {field.default})")
            else:
                p.add_argument(flag, type=type(field.default), default=field.default, help=f"(default {field.default})")
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
        p.set_defaults(handler=_run_train, config_class=config)


def _run_train(args: argparse.Namespace) -> int:
    from gandissect.training import train_gan, train_segmenter

    if args.threads:
        torch.set_num_threads(args.threads)
    config_class = args.config_class
    values = {name: getattr(args, name) for name in config_class.__dataclass_fields__ if name != "extra"}
    config = config_class(**values)
    out = (train_gan if args.kind == "gan" else train_segmenter)(config)
    print(f"weights written to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gandissect", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
