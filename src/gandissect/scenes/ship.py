"""Package trained scene models into gandissect as a shipped model (weights, metadata, checksums)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from gandissect import models
from gandissect.core.hooks import layer_shapes
from gandissect.engine.storage import save_safetensors_atomic, write_json_atomic
from gandissect.models.registry import sha256_file
from gandissect.models.scenegan import GeneratorConfig, SceneGenerator
from gandissect.models.unet import SegmenterConfig
from gandissect.scenes import world


def ship(name: str, gan_run: str | Path, segmenter_run: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Copy trained weights from two training run folders into the package as shipped model `name`.

    Reads each run's latest checkpoint, so a run can be shipped while it is still training. model.json
    records each weight file's sha256 and size, which loading checks; `extra` adds or overrides fields
    (e.g. "description", "default_layers", "default_segmenter").
    """

    gan_run, segmenter_run = Path(gan_run), Path(segmenter_run)
    gan_train = json.loads((gan_run / "train_config.json").read_text())
    seg_train = json.loads((segmenter_run / "train_config.json").read_text())
    gan_config = GeneratorConfig(gan_train["z_dim"], tuple(gan_train["channels"]), tuple(gan_train["disc_channels"]))
    seg_config = SegmenterConfig(len(world.CONCEPTS), tuple(seg_train["widths"]))
    gan_state = torch.load(gan_run / "checkpoint.pt", map_location="cpu", weights_only=False)
    seg_state = torch.load(segmenter_run / "checkpoint.pt", map_location="cpu", weights_only=False)
    generator = SceneGenerator(gan_config)
    generator.load_state_dict(gan_state["generator"])
    folder = models.WEIGHTS / name
    states = {"generator": gan_state["generator"], "discriminator": gan_state["discriminator"],
              "segmenter": seg_state["model"]}
    weights = {}
    for part, state in states.items():
        path = folder / f"{part}.safetensors"
        save_safetensors_atomic(path, state)
        weights[part] = {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}
    shapes = layer_shapes(generator.eval(), torch.zeros(1, gan_config.z_dim))
    meta = {
        "name": name,
        "family": "scenegan",
        "description": f"Scene GAN ({gan_config.image_size}x{gan_config.image_size}) with its discriminator and "
                       "segmenter, trained on gandissect's procedural world",
        "concepts": list(world.CONCEPTS),
        "categories": [world.CATEGORIES[c] for c in world.CONCEPTS],
        "hosts": dict(world.HOSTS),
        "z_dim": gan_config.z_dim,
        "image_size": gan_config.image_size,
        "layers": {layer: list(shapes[layer]) for layer in generator.layer_names},
        "generator_config": gan_config.to_dict(),
        "segmenter_config": seg_config.to_dict(),
        "weights": weights,
        "training": {
            "gan": {**gan_train, "iterations_done": int(gan_state["iteration"])},
            "segmenter": {**seg_train, "iterations_done": int(seg_state["iteration"])},
        },
        **(extra or {}),
    }
    write_json_atomic(folder / "model.json", meta)
    return folder
