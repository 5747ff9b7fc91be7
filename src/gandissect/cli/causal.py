"""Commands for interventions on a dissected run: edit images by hand, rank units by causal effect."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class OpenRun:
    """A finished dissection with the generator and segmenter it was made with."""

    folder: Path
    result: Any
    generator: torch.nn.Module
    segmenter: Any
    device: torch.device


def open_run(args: argparse.Namespace) -> OpenRun:
    """Load RUN's dissection, and its generator and segmenter (from the specs it recorded, or --model and
    --segmenter)."""
    from gandissect.core.errors import ConfigError
    from gandissect.dissection import Dissection
    from gandissect.engine.samplepass import check_device
    from gandissect.engine.speed import channels_last
    from gandissect.engine.storage import read_json
    from gandissect.models import resolve_generator, resolve_segmenter

    folder = Path(args.run)
    document = read_json(folder / "dissect.json") if (folder / "dissect.json").exists() else {}
    result = Dissection.load(folder)
    model, segmenter = args.model or document.get("model"), args.segmenter or document.get("segmenter")
    if not model or not segmenter:
        raise ConfigError(f"{folder} records no model or segmenter: pass --model and --segmenter")
    device = check_device(args.device)
    generator, segmenter = resolve_generator(model, device), resolve_segmenter(segmenter, device)
    channels_last(generator, segmenter)
    return OpenRun(folder, result, generator, segmenter, device)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a finished dissection run folder")
    p.add_argument("--layer", default=None, help="a dissected layer (default: the run's first)")
    p.add_argument("--model", default=None, help="generator spec (default: the one the run recorded)")
    p.add_argument("--segmenter", default=None, help="segmenter spec (default: the one the run recorded)")
    p.add_argument("--device", default="cpu")


def _units(text: str) -> list[int]:
    try:
        return [int(u) for u in text.split(",") if u.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--units takes comma-separated unit numbers, got {text!r}") from None


def _box(text: str) -> tuple[int, int, int, int]:
    try:
        x0, y0, x1, y1 = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--box takes x0,y0,x1,y1 in image pixels, got {text!r}") from None
    return x0, y0, x1, y1


def _add_edit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("edit", help="ablate or insert units and write originals and edited images side by side")
    _common(p)
    p.add_argument("--units", type=_units, required=True, help="comma-separated unit numbers of --layer")
    p.add_argument("--mode", default="ablate", help="ablate (write 0) or insert (write each unit's value)")
    p.add_argument("--concept", default=None,
                   help="insert each unit's mean activation where this concept is; also shown before/after")
    p.add_argument("--quantile", type=float, default=None, help="insert this quantile of each unit instead")
    p.add_argument("--alpha", type=float, default=1.0, help="strength in [0, 1] (default 1)")
    p.add_argument("--box", type=_box, default=None, help="edit only inside x0,y0,x1,y1 (image pixels)")
    p.add_argument("--mask", default=None, help="edit only inside a mask: .png or .npy at image or feature size")
    p.add_argument("--seed", type=int, default=0, help="sample set seed (default 0)")
    p.add_argument("--count", type=int, default=8, help="number of samples (default 8)")
    p.add_argument("--out", required=True, help="folder for edit.png and edit.json")
    p.set_defaults(handler=_run_edit)


def load_region(args: argparse.Namespace, image_size: tuple[int, int],
                grid_size: tuple[int, int]) -> torch.Tensor | None:
    """The edit region from --box or --mask, checked against the image and feature sizes."""
    import numpy as np
    from PIL import Image

    from gandissect.core.errors import ConfigError

    if args.box is not None and args.mask is not None:
        raise ConfigError("give --box or --mask, not both")
    if args.box is not None:
        x0, y0, x1, y1 = args.box
        height, width = image_size
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise ConfigError(f"--box {x0},{y0},{x1},{y1} must lie inside the {width}x{height} image with x0 < x1 "
                              "and y0 < y1")
        region = torch.zeros(image_size)
        region[y0:y1, x0:x1] = 1
        return region
    if args.mask is None:
        return None
    path = Path(args.mask)
    if not path.is_file():
        raise ConfigError(f"--mask {path}: no such file")
    try:
        array = np.load(path) if path.suffix == ".npy" else np.asarray(Image.open(path).convert("L")) / 255.0
    except (OSError, ValueError) as error:
        raise ConfigError(f"--mask {path}: cannot read it ({error})") from None
    region = torch.as_tensor(np.asarray(array, dtype=np.float32))
    if tuple(region.shape) not in (tuple(image_size), tuple(grid_size)):
        raise ConfigError(f"--mask {path} is {tuple(region.shape)}; expected the image size {tuple(image_size)} "
                          f"or the layer's grid {tuple(grid_size)}")
    return region.clamp(0, 1)


def _run_edit(args: argparse.Namespace) -> int:
    from gandissect.causal.ace import concept_share
    from gandissect.causal.interventions import check_layer, check_units, concept_index, insertion_values, unit_edit
    from gandissect.core.errors import ConfigError
    from gandissect.core.hooks import Trace
    from gandissect.core.sampling import sample_z
    from gandissect.engine.storage import save_png, write_json_atomic
    from gandissect.viz.edits import edit_figure

    run = open_run(args)
    layer = args.layer or run.result.config.layers[0]
    width = check_layer(run.result, layer)
    units = check_units(args.units, width, layer)
    if args.count < 1:
        raise ConfigError(f"--count must be at least 1; got {args.count}")
    concept = concept_index(run.result, args.concept) if args.concept else None
    values = None
    if args.mode == "insert":
        values = insertion_values(run.result, layer, args.concept, args.quantile)
    z = sample_z(run.generator, args.seed, range(args.count)).to(run.device)
    with torch.no_grad(), Trace(run.generator, [layer]) as trace:
        before = run.generator(z)
    region = load_region(args, tuple(before.shape[-2:]), tuple(trace[layer].shape[-2:]))
    edit = unit_edit(args.mode, units, values, args.alpha, region)
    with torch.no_grad(), Trace(run.generator, edit={layer: edit}):
        after = run.generator(z)
    record: dict[str, Any] = {"layer": layer, "units": units, "mode": args.mode, "alpha": args.alpha,
                              "seed": args.seed, "count": args.count,
                              "values": None if values is None else values[units].tolist()}
    present = (None, None)
    if concept is not None:
        shares = [concept_share(run.segmenter, images, concept) for images in (before, after)]
        record.update(concept=args.concept, share_before=shares[0].tolist(), share_after=shares[1].tolist())
        with torch.no_grad():
            present = tuple((run.segmenter.segment(images) == concept).any(1) for images in (before, after))
    out = Path(args.out)
    save_png(out / "edit.png", edit_figure(before, after, *present), scale=2)
    write_json_atomic(out / "edit.json", record)
    summary = ""
    if concept is not None:
        summary = (f"; {args.concept} covers {float(shares[0].mean()):.1%} of the pixels before and "
                   f"{float(shares[1].mean()):.1%} after")
    print(f"{args.mode} units {units} of {layer}{summary}: {out / 'edit.png'}")
    return 0


def _add_causal(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("causal", help="rank every unit of a layer by its average causal effect on a concept")
    _common(p)
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


def _write_curves(run: OpenRun, layer: str, args: argparse.Namespace, rankings: dict[str, list[int]],
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


def _write_context(run: OpenRun, layer: str, args: argparse.Namespace, units: list[int], collective: Any,
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


def _add_causal_labels(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("causal-labels", help="find the concept each unit draws by intervening, and how often "
                                             "each labelling rule agrees")
    _common(p)
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


def _add_artifacts(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("artifacts", help="score units by how unreal their top images are, and ablate the worst")
    _common(p)
    p.add_argument("--real", required=True,
                   help="real images: a folder of .png/.jpg files, or 'world' (the procedural world of scenes64)")
    p.add_argument("--real-count", type=int, default=300, help="real images used (default 300)")
    p.add_argument("--count", type=int, default=20, help="units ablated (default 20)")
    p.add_argument("--samples", type=int, default=300, help="held-out generated samples (default 300)")
    p.add_argument("--draws", type=int, default=5, help="random draws of --count units (default 5)")
    p.set_defaults(handler=_run_artifacts)


def real_images(spec: str, count: int, size: tuple[int, int]) -> torch.Tensor:
    """(N, 3, H, W) real images in [-1, 1]: rendered scenes of the procedural world, or a folder's pictures."""
    import numpy as np
    from PIL import Image

    from gandissect.core.errors import ConfigError
    from gandissect.core.images import from_uint8

    if spec == "world":
        from gandissect.scenes import world
        from gandissect.scenes.metrics import REAL_SEED_OFFSET
        from gandissect.scenes.training import HELD_OUT_SEEDS

        first = HELD_OUT_SEEDS + REAL_SEED_OFFSET
        return from_uint8(world.render_batch(range(first, first + count), size[0])[0])
    folder = Path(spec)
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:count]
    if not files:
        raise ConfigError(f"--real {spec}: neither 'world' nor a folder holding .png or .jpg images")
    pictures = [np.asarray(Image.open(p).convert("RGB").resize((size[1], size[0]), Image.BILINEAR)) for p in files]
    return from_uint8(np.stack(pictures))


def _run_artifacts(args: argparse.Namespace) -> int:
    from gandissect.causal.artifacts import artifact_study, dissection_top, unit_realism
    from gandissect.causal.interventions import check_layer
    from gandissect.causal.realism import concept_features, linear_head_patches
    from gandissect.core.errors import ConfigError
    from gandissect.core.sampling import sample_z
    from gandissect.engine.storage import read_json, write_json_atomic
    from gandissect.models import registry

    run = open_run(args)
    layer = args.layer or run.result.config.layers[0]
    width = check_layer(run.result, layer)
    if not 0 < args.count < width:
        raise ConfigError(f"--count must lie in 1..{width - 1} for layer {layer!r}; got {args.count}")
    with torch.no_grad():
        size = tuple(run.generator(sample_z(run.generator, 0, range(1)).to(run.device)).shape[-2:])
    features = concept_features(run.segmenter)
    real = torch.cat([features(batch) for batch in real_images(args.real, args.real_count, size).split(100)])
    half = len(real) // 2
    model = args.model or read_json(run.folder / "dissect.json").get("model")
    discriminator = None
    if model in registry.names() and registry.get(model).has("discriminator"):
        discriminator = registry.get(model).discriminator(run.device)

    def realism(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return discriminator(images)

    top, seed = dissection_top(run.result, layer)
    scores = unit_realism(run.generator, layer, top, seed, features=features, real_features=real[:half],
                          realism=realism if discriminator is not None else None,
                          patch_realism=linear_head_patches(discriminator) if discriminator is not None else None)
    study = artifact_study(run.generator, layer, scores, features, real[half:], count=args.count,
                           draws=args.draws, samples=args.samples)
    write_json_atomic(run.folder / "causal" / layer / "artifacts.json",
                      {"scores": scores.to_json(), "study": study.to_json(), "real": args.real})
    print(f"{layer}: model Frechet distance {study.before:.3f}; after ablating the worst {args.count} by "
          + ", ".join(f"{name} {value:.3f}" for name, value in study.after.items())
          + f"; after {args.count} random units {study.random_mean:.3f} (mean of {args.draws})")
    print(f"results: {run.folder / 'causal' / layer / 'artifacts.json'}")
    return 0


def rewrite_report(run: OpenRun, args: argparse.Namespace) -> None:
    """Rewrite the run's report.html with the causal results (when the run has a report)."""
    from gandissect.engine.storage import read_json
    from gandissect.viz import report

    if args.no_report or not (run.folder / "report.html").exists():
        return
    path = report.write_report(read_json(run.folder / "dissect.json"), run.generator, run.folder, device=run.device)
    print(f"report: {path}")


def register(sub: argparse._SubParsersAction) -> None:
    _add_edit(sub)
    _add_causal(sub)
    _add_causal_labels(sub)
    _add_artifacts(sub)
