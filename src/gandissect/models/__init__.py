"""Models by name (the registry: shipped and registered specs) and user models from `file.py:factory`
or `package.module:factory`.

`registry.get("scenes64")` gives the model's `ModelSpec`; its parts are built and loaded one at a time
(`spec.segmenter(device)` builds no generator) and every weight file's sha256 is checked first.
`load("scenes64")` still returns the whole `ModelBundle`. Shipped models live in `WEIGHTS/<name>/`.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gandissect.core.errors import ConfigError
from gandissect.models import loaders, registry
from gandissect.models.registry import (
    ModelSpec,
    UnknownModelError,
    WeightFile,
    WeightFileError,
    load_weights,
    middle_layers,
)

WEIGHTS = Path(__file__).parent / "weights"
SPEC_FORMS = ("a shipped model name (`gandissect models` lists them); a checkpoint read as data by a loader: "
              "progan:FILE or stylegan2:FILE for a generator, ade20k:NAME for a segmenter (options after commas, "
              "e.g. stylegan2:FILE,truncation=0.7; a known name such as progan:churchoutdoor is looked for in the "
              "cache folder); 'color' for a segmenter (join segmenters with '+'); or your own code, imported and "
              "run: file.py:factory or package.module:callable")
"""The forms of a `--model` / `--segmenter` spec, for command-line help and error messages."""

__all__ = [
    "SPEC_FORMS", "WEIGHTS", "ModelBundle", "ModelSpec", "UnknownModelError", "WeightFile", "WeightFileError",
    "available", "default_layers_for", "default_segmenter_for", "load", "load_weights", "loaders", "registry",
    "resolve_generator", "resolve_segmenter",
]


@dataclass
class ModelBundle:
    name: str
    generator: nn.Module
    discriminator: nn.Module | None
    segmenter: Any
    metadata: dict[str, Any] = field(default_factory=dict)
    spec: ModelSpec | None = None


def available() -> list[str]:
    """Names of the models loadable by name: shipped and registered."""
    return registry.names()


def load(name: str, device: str | torch.device = "cpu") -> ModelBundle:
    """Every part of model `name` (see `available()`), in eval mode on `device`."""
    spec = registry.get(name)
    return ModelBundle(
        name,
        spec.generator(device),
        spec.discriminator(device) if spec.has("discriminator") else None,
        spec.segmenter(device) if spec.has("segmenter") else None,
        dict(spec.metadata),
        spec,
    )


def _load_factory(spec: str) -> Any:
    target, _, attribute = spec.rpartition(":")
    if not target or not attribute:
        raise ConfigError(f"{spec!r} is neither a known model ({', '.join(available()) or 'none'}), nor a loader "
                          f"spec ({', '.join(f + ':FILE' for f in loaders.families())}), nor 'file.py:factory' "
                          "nor 'package.module:factory'")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ConfigError(f"{spec!r}: there is no file {path}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as error:
            if error.name and target.startswith(error.name):
                raise ConfigError(f"{spec!r}: no module named {error.name!r} (is it installed, or on PYTHONPATH?)"
                                  ) from None
            raise
    if not hasattr(module, attribute):
        raise ConfigError(f"{spec!r}: {target} has no attribute {attribute!r}")
    factory = getattr(module, attribute)
    return factory() if callable(factory) and not isinstance(factory, nn.Module) else factory


def _load_named(spec: str, part: str, device: str | torch.device) -> Any:
    """What a loader spec (`family:source,...`) loads, refused if that family loads another part."""
    loader = loaders.get_loader(spec.partition(":")[0])
    if loader.part != part:
        raise ConfigError(f"{spec!r}: the {loader.family} loader loads a {loader.part}, not a {part}")
    return loaders.load_spec(spec, device)


def resolve_generator(spec: str, device: str | torch.device = "cpu") -> nn.Module:
    """A generator from a model name, a loader spec (`progan:FILE`) or a factory spec, in eval mode on
    `device`; builds nothing else."""
    if spec in available():
        generator = registry.get(spec).generator(device)
    elif loaders.is_loader_spec(spec):
        generator = _load_named(spec, "generator", device)
    else:
        generator = _load_factory(spec)
    if not isinstance(generator, nn.Module):
        raise ConfigError(f"{spec!r} gave {type(generator).__name__}, not a torch.nn.Module")
    return generator.to(device).eval()


def resolve_segmenter(spec: str, device: str | torch.device = "cpu") -> Any:
    """A segmenter from a model name, 'color', or a factory spec; '+' merges several ('scenes64+color').

    A model name builds only that model's segmenter, never its generator."""
    from gandissect.core.segmenters import ColorSegmenter, MergedSegmenter, Segmenter

    names = available()
    parts = []
    for piece in spec.split("+"):
        if piece == "color":
            part: Any = ColorSegmenter()
        elif piece in names:
            part = registry.get(piece).segmenter(device)
        elif loaders.is_loader_spec(piece):
            part = _load_named(piece, "segmenter", device)
        else:
            part = _load_factory(piece)
        if not isinstance(part, Segmenter):
            raise ConfigError(f"{piece!r} gave {type(part).__name__}, which lacks `concepts`, `categories` or "
                              "`segment` (see the segmenter protocol in the README)")
        if isinstance(part, nn.Module):
            part = part.to(device).eval()
        parts.append(part)
    return parts[0] if len(parts) == 1 else MergedSegmenter(*parts)


def recorded_spec(document: dict[str, Any], key: str, given: str | None, flag: str) -> str | None:
    """The generator (`key` "model") or segmenter spec to use for a run folder: `given` on the command line
    when there is one, else the one the run recorded, which is untrusted input. A recorded spec may name
    only shipped models, 'color' and loader specs (`family:FILE`, which read weights as data); a factory
    (`file.py:make`, `module:callable`) would import and run code, so it is refused in one line asking for
    it on the command line."""
    if given:
        return given
    spec = document.get(key)
    if spec is None:
        return None
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"the run records a {key} spec that is not a name ({spec!r}): pass {flag}")
    shipped = set(available()) | {"color"}
    for piece in spec.split("+") if key == "segmenter" else [spec]:
        if piece not in shipped and not loaders.is_loader_spec(piece):
            raise ConfigError(f"the run records the {key} {spec!r}, which would import and run code: a run folder "
                              f"never runs code, so give it on the command line ({flag} {spec}) if you trust it")
    return spec


def default_layers_for(generator_spec: str, generator: nn.Module) -> list[str]:
    """Layers to dissect when none are given: the model's own choice for a named model, else the generator's
    `default_layers` (loaded checkpoints declare theirs), else the paper's rule on a generator that names its
    layers layer1..layerN (an error says to pass --layers otherwise)."""
    if generator_spec in available():
        chosen = list(registry.get(generator_spec).default_layers)
        if chosen:
            return chosen
    if getattr(generator, "default_layers", None):
        return list(generator.default_layers)
    return middle_layers(list(getattr(generator, "layer_names", [])))


def default_segmenter_for(generator_spec: str) -> str | None:
    """The segmenter spec to dissect a named model with; None for a loaded or factory model (pass --segmenter)."""
    return registry.get(generator_spec).default_segmenter if generator_spec in available() else None
