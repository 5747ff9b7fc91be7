"""Package trained scene models as a shipped model (weights, metadata, checksums), loadable by name.

A user's model goes to their models folder (`registry.user_models_folder()`, i.e. ~/.cache/gandissect/models)
or a folder of their choosing, never into the installed package unless that folder is named. An existing name
is refused unless `replace` is given, and a name taken by a model in another folder (the packaged scenes64
included) is always refused: two models of one name would hide one another.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gandissect import models
from gandissect.core.errors import ConfigError
from gandissect.core.hooks import layer_shapes
from gandissect.engine.storage import save_safetensors_atomic, write_json_atomic
from gandissect.models import registry
from gandissect.models.registry import sha256_file
from gandissect.models.scenegan import GeneratorConfig, SceneGenerator
from gandissect.models.unet import SegmenterConfig
from gandissect.scenes import world

DEFAULT_MODEL = "scenes64"
SHORT_TRAINING = 0.25
"""A part trained on less than this fraction of the images the packaged model's part saw draws a warning."""


@dataclass(frozen=True)
class Shipped:
    """Where a model was shipped, whether `models.load(name)` finds it there, and warnings for the user."""

    folder: Path
    by_name: bool
    warnings: list[str] = field(default_factory=list)


def check_name(name: str) -> None:
    """Refuse a model name the registry could not look up, or one that is a path."""
    if not name or name in (".", "..") or name == "color" or any(c in name for c in ":+/\\"):
        raise ConfigError(f"model name {name!r} must be non-empty, not 'color', '.' or '..', and hold no ':', '+' "
                          "or slash")


def destination(name: str, into: str | Path | None = None, replace: bool = False) -> Path:
    """The folder model `name` will be shipped to (`into/name`, default the user's models folder), after
    refusing a name already used by another folder's model, or this folder's unless `replace`."""
    check_name(name)
    folder = Path(into) / name if into is not None else registry.user_models_folder() / name
    existing = registry.shipped_folder(name)
    if existing is not None and existing.resolve() != folder.resolve():
        where = "packaged with gandissect" if existing.parent.resolve() == Path(models.WEIGHTS).resolve() else ""
        raise ConfigError(f"a model named {name!r} already exists in {existing}{f' ({where})' if where else ''}: "
                          "choose another --name (two models of one name would hide one another)")
    if existing is None and name in registry.names():
        raise ConfigError(f"a model named {name!r} is registered in this session: choose another --name")
    if (folder / "model.json").exists() and not replace:
        raise ConfigError(f"{folder} already holds model {name!r}: pass --replace to replace it, or choose another "
                          "--name")
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file, not a model folder")
    return folder


def _run(path: Path, kind: str, keys: tuple[str, ...]) -> tuple[dict[str, Any], Path]:
    """A training run folder's train_config.json and checkpoint path, checked to be a `kind` run."""
    config_path, checkpoint = path / "train_config.json", path / "checkpoint.pt"
    if not config_path.is_file() or not checkpoint.is_file():
        raise ConfigError(f"--{kind} {path} is not a {kind} training run folder (it needs train_config.json and "
                          f"checkpoint.pt): train one with `gandissect train {kind} --out {path}`")
    config = json.loads(config_path.read_text())
    missing = [key for key in keys if key not in config]
    if missing:
        raise ConfigError(f"--{kind} {path}: its train_config.json lacks {', '.join(missing)}; is it a {kind} run?")
    return config, checkpoint


def short_training(training: dict[str, Any], reference: dict[str, Any], fraction: float = SHORT_TRAINING) -> list[str]:
    """One warning per part (gan, segmenter) trained on under `fraction` of the images (iterations done x batch
    size) that the same part of `reference` (a model.json "training" record) was trained on."""
    warnings = []
    for part in ("gan", "segmenter"):
        mine, theirs = training.get(part, {}), reference.get(part, {})
        try:
            seen = int(mine["iterations_done"]) * int(mine["batch_size"])
            wanted = int(theirs["iterations_done"]) * int(theirs["batch_size"])
        except (KeyError, TypeError, ValueError):
            continue
        if seen < fraction * wanted:
            warnings.append(f"the {part} was trained on {seen:,} images ({mine['iterations_done']} iterations), "
                            f"{seen / wanted:.1%} of the {wanted:,} that {DEFAULT_MODEL}'s {part} saw: expect a "
                            "weaker model")
    return warnings


def _reference_training() -> dict[str, Any]:
    path = Path(models.WEIGHTS) / DEFAULT_MODEL / "model.json"
    try:
        return json.loads(path.read_text()).get("training", {})
    except (OSError, ValueError, AttributeError):
        return {}


def ship(name: str, gan_run: str | Path, segmenter_run: str | Path, extra: dict[str, Any] | None = None, *,
         into: str | Path | None = None, replace: bool = False) -> Shipped:
    """Copy trained weights from two training run folders into `into/name` (default: the user's models folder,
    where `models.load(name)` finds it) as shipped model `name`.

    Reads each run's latest checkpoint, so a run can be shipped while it is still training. model.json
    records each weight file's sha256 and size, which loading checks; `extra` adds or overrides fields
    (e.g. "description", "default_layers", "default_segmenter"). Refusals (see `destination`) come before
    anything is read or written.
    """
    folder = destination(name, into, replace)
    reference = _reference_training()  # read before writing: `into` may be the package's own folder
    notes = []
    if (folder / "model.json").exists():
        packaged = folder.parent.resolve() == Path(models.WEIGHTS).resolve()
        notes.append(f"replacing {'the packaged model' if packaged else 'model'} {name!r} in {folder}")
    gan_train, gan_checkpoint = _run(Path(gan_run), "gan", ("z_dim", "channels", "disc_channels"))
    seg_train, seg_checkpoint = _run(Path(segmenter_run), "segmenter", ("widths",))
    gan_config = GeneratorConfig(gan_train["z_dim"], tuple(gan_train["channels"]), tuple(gan_train["disc_channels"]))
    seg_config = SegmenterConfig(len(world.CONCEPTS), tuple(seg_train["widths"]))
    gan_state = torch.load(gan_checkpoint, map_location="cpu", weights_only=False)
    seg_state = torch.load(seg_checkpoint, map_location="cpu", weights_only=False)
    generator = SceneGenerator(gan_config)
    generator.load_state_dict(gan_state["generator"])
    states = {"generator": gan_state["generator"], "discriminator": gan_state["discriminator"],
              "segmenter": seg_state["model"]}
    weights = {}
    for part, state in states.items():
        path = folder / f"{part}.safetensors"
        save_safetensors_atomic(path, state)
        weights[part] = {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}
    shapes = layer_shapes(generator.eval(), torch.zeros(1, gan_config.z_dim))
    training = {
        "gan": {**gan_train, "iterations_done": int(gan_state["iteration"])},
        "segmenter": {**seg_train, "iterations_done": int(seg_state["iteration"])},
    }
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
        "training": training,
        **(extra or {}),
    }
    write_json_atomic(folder / "model.json", meta)
    found = registry.shipped_folder(name)
    by_name = found is not None and found.resolve() == folder.resolve()
    return Shipped(folder, by_name, notes + short_training(training, reference))
