"""`gandissect edit`: ablate or insert units of a dissected run by hand and picture the result."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from gandissect.cli.runs import common_arguments, open_run

MAX_COUNT = 256


def _units(text: str) -> list[int]:
    try:
        units = [int(u) for u in text.split(",") if u.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--units takes comma-separated unit numbers, got {text!r}") from None
    if not units:
        raise argparse.ArgumentTypeError(f"--units names no unit ({text!r}): give comma-separated unit numbers")
    return units


def _box(text: str) -> tuple[int, int, int, int]:
    try:
        x0, y0, x1, y1 = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--box takes x0,y0,x1,y1 in image pixels, got {text!r}") from None
    return x0, y0, x1, y1


def _add_edit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("edit", help="ablate or insert units and write originals and edited images side by side")
    common_arguments(p)
    p.add_argument("--units", type=_units, required=True, help="comma-separated unit numbers of --layer")
    p.add_argument("--mode", default="ablate", help="ablate (write 0) or insert (write each unit's value)")
    p.add_argument("--concept", default=None,
                   help="insert each unit's mean activation where this concept is; also shown before/after")
    p.add_argument("--quantile", type=float, default=None, help="insert this quantile of each unit instead")
    p.add_argument("--alpha", type=float, default=1.0, help="strength in [0, 1] (default 1)")
    p.add_argument("--box", type=_box, default=None, help="edit only inside x0,y0,x1,y1 (image pixels)")
    p.add_argument("--mask", default=None, help="edit only inside a mask: .png or .npy at image or feature size")
    p.add_argument("--seed", type=int, default=0, help="sample set seed (default 0)")
    p.add_argument("--count", type=int, default=8, help=f"number of samples (default 8, at most {MAX_COUNT})")
    p.add_argument("--out", required=True, help="folder for edit.png and edit.json")
    p.set_defaults(handler=_run_edit)


def load_region(args: argparse.Namespace, image_size: tuple[int, int],
                grid_size: tuple[int, int]) -> torch.Tensor | None:
    """The edit region from --box or --mask, checked against the image and feature sizes."""
    import numpy as np

    from gandissect.core.errors import ConfigError
    from gandissect.engine.storage import read_picture

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
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
            array = np.asarray(array, dtype=np.float32)
        except (OSError, ValueError, TypeError) as error:
            raise ConfigError(f"--mask {path}: not an array of numbers ({error})") from None
    else:
        array = read_picture(path, "L", "--mask") / np.float32(255.0)
    if not np.isfinite(array).all():
        raise ConfigError(f"--mask {path} holds NaN or infinite values")
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

    if not 1 <= args.count <= MAX_COUNT:
        raise ConfigError(f"--count must lie in 1..{MAX_COUNT} (edit.png shows every sample); got {args.count}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: edit.png and edit.json go into a folder")
    run = open_run(args)
    layer = args.layer or run.result.config.layers[0]
    width = check_layer(run.result, layer)
    units = check_units(args.units, width, layer)
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
    save_png(out / "edit.png", edit_figure(before, after, *present, region=region, concept=args.concept), scale=2)
    write_json_atomic(out / "edit.json", record)
    summary = ""
    if concept is not None:
        summary = (f"; {args.concept} covers {float(shares[0].mean()):.1%} of the pixels before and "
                   f"{float(shares[1].mean()):.1%} after")
    print(f"{args.mode} units {units} of {layer}{summary}: {out / 'edit.png'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    _add_edit(sub)
