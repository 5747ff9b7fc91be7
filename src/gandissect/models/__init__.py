"""Shipped models, loaded by name, and user models, loaded from `file.py:factory` or `module:factory`.

`load("scenes64")` returns a `ModelBundle` with the generator, its discriminator, the segmenter and their
metadata. Weights are safetensors files checked tensor by tensor against the architecture.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from gandissect.core.errors import GandissectError
from gandissect.core.segmenters import ModuleSegmenter
from gandissect.models.scenegan import GeneratorConfig, SceneDiscriminator, SceneGenerator
from gandissect.models.unet import SegmenterConfig, UNetSegmenter

WEIGHTS = Path(__file__).parent / "weights"


class WeightFileError(GandissectError, ValueError):
    """A weight file that is unreadable or does not fit the architecture; says which tensor."""


@dataclass
class ModelBundle:
    name: str
    generator: nn.Module
    discriminator: nn.Module | None
    segmenter: ModuleSegmenter
    metadata: dict[str, Any] = field(default_factory=dict)


def available() -> list[str]:
    """Names of the shipped models."""
    return sorted(p.name for p in WEIGHTS.iterdir() if (p / "model.json").exists()) if WEIGHTS.exists() else []


def load_weights(module: nn.Module, path: str | Path) -> nn.Module:
    """Load a safetensors file into `module`, naming any missing, unexpected or misshapen tensor."""
    path = Path(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightFileError(f"cannot read weight file {path}: {error}") from error
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise WeightFileError(
            f"{path} does not fit {type(module).__name__}: missing tensors {missing[:8]}, unexpected {unexpected[:8]}"
        )
    for key, tensor in tensors.items():
        if tensor.shape != expected[key].shape:
            raise WeightFileError(
                f"{path}: tensor {key!r} has shape {tuple(tensor.shape)}, "
                f"but {type(module).__name__} expects {tuple(expected[key].shape)}"
            )
    module.load_state_dict(tensors)
    return module


def load(name: str, device: str | torch.device = "cpu") -> ModelBundle:
    """Load the shipped model `name` (see `available()`), in eval mode on `device`."""
    folder = WEIGHTS / name
    if not (folder / "model.json").exists():
        known = ", ".join(available()) or "none"
        raise KeyError(f"no shipped model named {name!r}; shipped models: {known}")
    meta = json.loads((folder / "model.json").read_text())
    gan_config = GeneratorConfig.from_dict(meta["generator_config"])
    generator = load_weights(SceneGenerator(gan_config), folder / "generator.safetensors")
    discriminator = load_weights(SceneDiscriminator(gan_config), folder / "discriminator.safetensors")
    network = load_weights(UNetSegmenter(SegmenterConfig.from_dict(meta["segmenter_config"])),
                           folder / "segmenter.safetensors")
    segmenter = ModuleSegmenter(network, meta["concepts"], meta["categories"])
    for module in (generator, discriminator, segmenter):
        module.to(device).eval()
    return ModelBundle(name, generator, discriminator, segmenter, meta)


def _load_factory(spec: str) -> Any:
    target, _, attribute = spec.rpartition(":")
    if not target or not attribute:
        raise ValueError(f"{spec!r} is neither a shipped model ({', '.join(available())}) nor 'file.py:factory' "
                         "nor 'package.module:factory'")
    if target.endswith(".py"):
        path = Path(target)
        if not path.exists():
            raise FileNotFoundError(f"{spec!r}: no file {path}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    if not hasattr(module, attribute):
        raise AttributeError(f"{spec!r}: {target} has no attribute {attribute!r}")
    factory = getattr(module, attribute)
    return factory() if callable(factory) and not isinstance(factory, nn.Module) else factory


def resolve_generator(spec: str, device: str | torch.device = "cpu") -> nn.Module:
    """A generator from a shipped name or a factory spec, in eval mode on `device`."""
    generator = load(spec, device).generator if spec in available() else _load_factory(spec)
    if not isinstance(generator, nn.Module):
        raise TypeError(f"{spec!r} gave {type(generator).__name__}, not a torch.nn.Module")
    return generator.to(device).eval()


def resolve_segmenter(spec: str, device: str | torch.device = "cpu") -> Any:
    """A segmenter from a shipped name, 'color', or a factory spec; '+' merges several ('scenes64+color')."""
    from gandissect.core.segmenters import ColorSegmenter, MergedSegmenter, Segmenter

    parts = []
    for piece in spec.split("+"):
        if piece == "color":
            part: Any = ColorSegmenter()
        elif piece in available():
            part = load(piece, device).segmenter
        else:
            part = _load_factory(piece)
        if not isinstance(part, Segmenter):
            raise TypeError(f"{piece!r} gave {type(part).__name__}, which lacks `concepts`, `categories` or `segment`")
        if isinstance(part, nn.Module):
            part = part.to(device).eval()
        parts.append(part)
    return parts[0] if len(parts) == 1 else MergedSegmenter(*parts)
