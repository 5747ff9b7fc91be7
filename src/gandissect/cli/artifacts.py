"""`gandissect artifacts`: units whose top images look unreal, and what ablating them does."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from gandissect.cli.runs import common_arguments, open_run

if TYPE_CHECKING:
    from gandissect.causal.artifactstudy import ArtifactStudy


def _add_artifacts(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("artifacts", help="score units by how unreal their top images are, and ablate the worst")
    common_arguments(p)
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
    from gandissect.engine.storage import read_picture

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
    pictures = [np.asarray(Image.fromarray(read_picture(p, "RGB", "--real")).resize((size[1], size[0]),
                                                                                   Image.BILINEAR)) for p in files]
    return from_uint8(np.stack(pictures))


def _run_artifacts(args: argparse.Namespace) -> int:
    from gandissect.causal.artifacts import dissection_top, unit_realism
    from gandissect.causal.artifactstudy import artifact_study, check_counts
    from gandissect.causal.interventions import check_layer
    from gandissect.causal.realism import concept_features, linear_head_patches
    from gandissect.core.errors import ConfigError
    from gandissect.core.sampling import sample_z
    from gandissect.engine.speed import keep_freed_memory
    from gandissect.engine.storage import write_json_atomic
    from gandissect.models import registry

    for flag, value, least in (("--real-count", args.real_count, 4), ("--samples", args.samples, 4),
                               ("--draws", args.draws, 1)):
        if value < least:  # a Frechet distance needs samples on both sides of its split; a mean needs a draw
            raise ConfigError(f"{flag} must be at least {least}; got {value}")
    run = open_run(args)
    keep_freed_memory(huge_blocks=True)
    layer = args.layer or run.result.config.layers[0]
    width = check_layer(run.result, layer)
    if not 0 < args.count < width:
        raise ConfigError(f"--count must lie in 1..{width - 1} for layer {layer!r}; got {args.count}")
    real_rows = args.real_count - args.real_count // 2  # the first half scores units, the second the study
    try:
        warnings = check_counts(args.samples, real_rows, len(run.segmenter.concepts))
    except ConfigError as error:
        raise ConfigError(f"--samples {args.samples} and --real-count {args.real_count} (half for the study): "
                          f"{error}") from None
    for warning in warnings:
        print(f"warning: {warning}; --samples {args.samples}, --real-count {args.real_count} (half of it for this "
              "distance)", file=sys.stderr)
    with torch.no_grad():
        size = tuple(run.generator(sample_z(run.generator, 0, range(1)).to(run.device)).shape[-2:])
    features = concept_features(run.segmenter)
    real = torch.cat([features(batch) for batch in real_images(args.real, args.real_count, size).split(100)])
    half = len(real) // 2
    model = args.model or run.document.get("model")
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
    update = run.holder.update([f"causal/{layer}/artifacts.json"])
    write_json_atomic(update.path(f"causal/{layer}/artifacts.json"),
                      {"scores": scores.to_json(), "study": study.to_json(), "real": args.real})
    update.commit()
    print(study_table(study))
    print(f"results: {run.folder / 'causal' / layer / 'artifacts.json'}")
    return 0


def study_table(study: ArtifactStudy) -> str:
    """The study as a table: the model's Frechet distance, then after each ablation, with the gains and their
    bootstrap intervals."""
    from gandissect.cli.tables import text_table

    def interval(name: str, sign: str = "") -> str:
        low, high = study.intervals.get(name, (math.nan, math.nan))
        return f"{low:{sign}.2f} to {high:{sign}.2f}"

    rows = [["none (the model)", f"{study.before:.2f}", interval("before"), "", ""]]
    for signal, after in study.after.items():
        rows.append([f"worst {study.count} by {signal}", f"{after:.2f}", interval(f"after/{signal}"),
                     f"{study.gain(signal):+.2f}", interval(f"gain/{signal}", "+")])
    if study.random_after:
        rows.append([f"{study.count} random (mean of {len(study.random_after)})", f"{study.random_mean:.2f}",
                     interval("random_mean"), f"{study.random_gain:+.2f}", interval("random_gain", "+")])
    level = f"{study.level:.0%}"
    head = (f"{study.layer}: Frechet distance to real images, {study.samples} generated samples against "
            f"{study.real_rows} real images; {level} basic bootstrap intervals ({study.bootstrap} draws, which "
            "correct the distance's upward bias at small counts to first order)")
    return head + "\n" + text_table(["units ablated", "distance", f"{level} interval", "gain", f"{level} interval"],
                                    rows)


def register(sub: argparse._SubParsersAction) -> None:
    _add_artifacts(sub)
