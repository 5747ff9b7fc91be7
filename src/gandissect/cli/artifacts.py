"""`gandissect artifacts`: units whose top images look unreal, and what ablating them does."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from gandissect.cli.runs import common_arguments, open_run


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
    from gandissect.causal.artifacts import artifact_study, dissection_top, unit_realism
    from gandissect.causal.interventions import check_layer
    from gandissect.causal.realism import concept_features, linear_head_patches
    from gandissect.core.errors import ConfigError
    from gandissect.core.sampling import sample_z
    from gandissect.engine.storage import read_json, write_json_atomic
    from gandissect.models import registry

    for flag, value, least in (("--real-count", args.real_count, 4), ("--samples", args.samples, 4),
                               ("--draws", args.draws, 1)):
        if value < least:  # a Frechet distance needs samples on both sides of its split; a mean needs a draw
            raise ConfigError(f"{flag} must be at least {least}; got {value}")
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


def register(sub: argparse._SubParsersAction) -> None:
    _add_artifacts(sub)
