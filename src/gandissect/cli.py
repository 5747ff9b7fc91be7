"""The `gandissect` command line: dissect, report, list models and layers, sample, train and ship.

Errors a user can fix (`GandissectError`) print one line and exit 2; Ctrl-C and environment failures (disk
full, a read-only folder) print one line and keep the last checkpoint; anything else is a bug and keeps its
traceback."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


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


def _add_layers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("layers", help="list a generator's layers with their output shapes")
    p.add_argument("--model", required=True, help="shipped name, file.py:factory or package.module:factory")
    p.add_argument("--all", action="store_true", help="list every module, nested ones included")
    p.set_defaults(handler=_run_layers)


def _run_layers(args: argparse.Namespace) -> int:
    from gandissect.core.hooks import display_layers, layer_names, layer_shapes
    from gandissect.core.sampling import sample_z
    from gandissect.models import resolve_generator

    generator = resolve_generator(args.model)
    shapes = layer_shapes(generator, sample_z(generator, 0, range(1)))
    modules = dict(generator.named_modules())
    wanted = layer_names(generator) if args.all else display_layers(generator)
    ran = [name for name in shapes if name in wanted]  # in the order they ran; then those that did not
    print(f"{'layer':<32} {'module':<20} output shape")
    for name in ran + [name for name in wanted if name not in shapes]:
        print(f"{name:<32} {type(modules[name]).__name__:<20} {shapes.get(name, '-')}")
    return 0


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="generate images, segment them, and save both as grids")
    p.add_argument("--model", default="scenes64", help="shipped model name (default scenes64)")
    p.add_argument("--count", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--seed", type=int, default=0, help="sample set seed (default 0)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(handler=_run_sample)


def _run_sample(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gandissect.core.images import grid, label_colours, to_uint8
    from gandissect.core.sampling import sample_z
    from gandissect.engine.storage import save_png
    from gandissect.models import load

    bundle = load(args.model)
    with torch.no_grad():
        images = bundle.generator(sample_z(bundle.generator, args.seed, range(args.count)))
        labels = bundle.segmenter.segment(images)[:, 0]
    out = Path(args.out)
    save_png(out / "samples.png", grid(to_uint8(images), 8), scale=2)
    save_png(out / "segmentation.png", grid(label_colours(labels), 8), scale=2)
    print(f"wrote {out / 'samples.png'} and {out / 'segmentation.png'}")
    return 0


def _add_dissect(sub: argparse._SubParsersAction) -> None:
    from gandissect.dissection import RULES, DissectConfig

    defaults = DissectConfig(layers=["layer1"])
    p = sub.add_parser("dissect", help="match every unit of the chosen layers to a concept and write the report",
                       description="Runs under torchrun too: samples are sharded by rank and merged.")
    p.add_argument("--model", default="scenes64", help="model name (gandissect models), file.py:factory or "
                                                       "package.module:factory")
    p.add_argument("--segmenter", default=None,
                   help="model name, 'color', a factory spec, or several joined by '+' "
                        "(default: the model's own, e.g. scenes64+color)")
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
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--resume", action="store_true", help="continue the unfinished run in --out")
    p.add_argument("--force", action="store_true", help="replace the run in --out (its results stay until the new "
                                                        "ones are complete)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.set_defaults(handler=_run_dissect)


def _run_dissect(args: argparse.Namespace) -> int:
    from gandissect.core.errors import ConfigError
    from gandissect.dissection import DissectConfig, Dissector
    from gandissect.engine import collectives
    from gandissect.engine.samplepass import check_device
    from gandissect.models import default_layers_for, default_segmenter_for, resolve_generator, resolve_segmenter
    from gandissect.viz import report

    device = collectives.local_device(check_device(args.device))
    generator = resolve_generator(args.model, device)
    segmenter_spec = args.segmenter or default_segmenter_for(args.model)
    if segmenter_spec is None:
        raise ConfigError(f"--segmenter is required for {args.model!r}: give a segmenter spec, or 'color'")
    layers = args.layers.split(",") if args.layers else default_layers_for(args.model, generator)
    config = DissectConfig(layers=layers, samples=args.samples, batch_size=args.batch_size, quantile=args.quantile,
                           threshold_seed=args.threshold_seed, iou_seed=args.iou_seed, seg_size=args.seg_size,
                           topk=args.topk, min_iou=args.min_iou, min_iqr=args.min_iqr, label_method=args.label_method)
    segmenter = resolve_segmenter(segmenter_spec, device)
    collective = collectives.init_from_env(args.device)
    dissector = Dissector(generator, segmenter, config, args.out, device=device, resume=args.resume,
                          force=args.force, collective=collective)
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

    document = dissector.finish(result, {"model": args.model, "segmenter": segmenter_spec}, write_report)
    if document is not None:
        for name, layer in document["layers"].items():
            print(f"{name}: {layer['interpretable_units']} of {layer['shape'][0]} units interpretable "
                  f"({config.label_method} rule): {layer['interpretable_by_concept']}")
        print(f"results: {Path(args.out).resolve()}" + ("" if args.no_report else "/report.html"))
    collectives.shutdown(collective)
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="(re)write report.html of a finished dissection run")
    p.add_argument("run", help="run folder holding dissect.json")
    p.add_argument("--model", default=None, help="generator spec (default: the one the run recorded)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(handler=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from gandissect.core.errors import ConfigError
    from gandissect.engine.storage import read_json
    from gandissect.models import resolve_generator
    from gandissect.viz import report

    path = Path(args.run) / "dissect.json"
    if not path.exists():
        raise ConfigError(f"{path} does not exist: run `gandissect dissect --out {args.run}` first")
    document = read_json(path)
    spec = args.model or document.get("model")
    if not spec:
        raise ConfigError(f"{path} records no model: pass --model")
    print(f"report: {report.write_report(document, resolve_generator(spec, args.device), args.run, args.device)}")
    return 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the models loadable by name, their defaults and weight files")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(handler=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    import json

    from gandissect.models import registry

    own = ("your own generator: gandissect dissect --model path/to/file.py:factory --segmenter color --out runs/mine "
           "(the factory returns a torch.nn.Module with a z_dim; add --layers unless it names layers layer1..layerN)")
    described = [registry.describe(registry.get(name)) for name in registry.names()]
    if args.json:
        print(json.dumps({"models": described, "own_generator": own}, indent=1))
        return 0
    for model in described:
        print(f"{model['name']}: {model['description']}")
        print(f"  image size {model['image_size']}, z shape {tuple(model['z_shape'])}, "
              f"output range {tuple(model['output_range'])}, parts: {', '.join(model['parts'])}")
        print(f"  default layers: {', '.join(model['default_layers']) or 'none'}; "
              f"default segmenter: {model['default_segmenter'] or 'none'}")
        for file in model["weights"]:
            size = "size unknown" if file["bytes"] is None else f"{file['bytes'] / 2 ** 10:,.0f} KiB"
            checksum = f"sha256 {file['sha256'][:12]}" if file["sha256"] else "no checksum"
            print(f"  {file['part']:<14} {file['path']}  {size}  {checksum}  "
                  f"{'present' if file['present'] else 'MISSING'}")
        print(f"  dissect: {model['dissect']}")
    if not described:
        print("no models are registered or shipped")
    print(own)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gandissect", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_ship(sub)
    _add_evaluate(sub)
    _add_sample(sub)
    _add_layers(sub)
    _add_dissect(sub)
    _add_report(sub)
    _add_models(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from gandissect.core.errors import GandissectError

    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    prefix = f"gandissect {args.command}"
    try:
        return handler(args)
    except GandissectError as error:
        if os.environ.get("GANDISSECT_DEBUG"):
            raise
        print(f"{prefix}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted; finished batches are kept in a checkpoint: rerun with --resume to continue",
              file=sys.stderr)
        return 130
    except OSError as error:
        if error.errno not in ENVIRONMENT_ERRNOS or os.environ.get("GANDISSECT_DEBUG"):
            raise
        where = f" ({error.filename})" if error.filename else ""
        print(f"{prefix}: error: {error.strerror}{where}; the last checkpoint is kept: free the problem and rerun "
              "with --resume", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
