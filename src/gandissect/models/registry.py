"""The model registry: one `ModelSpec` per name, saying how to build, load and sample each model.

A spec builds each part (generator, segmenter, discriminator) only when asked, so resolving a segmenter
never builds a generator. Weight files are checked against their recorded sha256 before they are read.
Shipped models are specs built from `<folder>/<name>/model.json` (folders: `model_folders`) by their family's
loader (`gandissect.models.<family>.spec.spec_from_folder`), so a freshly shipped folder is picked up
without code changes; other specs are added with `register`.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from gandissect.core.errors import ConfigError, GandissectError
from gandissect.core.sampling import latent_shape, standard_normal

Builder = Callable[..., Any]
"""Makes one model part: called with the spec when it has a required argument, else with none."""
Sampler = Callable[[tuple[int, ...], int, torch.Tensor], torch.Tensor]
"""(z shape, seed, sample indices) -> z; must be prefix-stable (sample i independent of the count)."""

PARTS = ("generator", "segmenter", "discriminator")
FAMILIES = {"scenegan": "gandissect.models.scenegan.spec"}
"""Family name (model.json "family") -> module whose `spec_from_folder(folder, meta)` builds its spec."""


class WeightFileError(GandissectError, ValueError):
    """A weight file that is missing, corrupt or does not fit the architecture; says which file or tensor."""


class UnknownModelError(GandissectError, KeyError):
    """A model name that is neither registered nor shipped."""


@dataclass(frozen=True)
class WeightFile:
    """One part's weights: a safetensors file, its expected sha256 (None: unchecked), size in bytes,
    and the submodule of the built part that its tensors fit ("" for the part itself)."""

    path: Path
    sha256: str | None = None
    size: int | None = None
    into: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """Everything gandissect needs to know about a model, without building any of it."""

    name: str
    description: str
    build_generator: Builder
    build_segmenter: Builder | None = None
    build_discriminator: Builder | None = None
    weights: Mapping[str, WeightFile] = field(default_factory=dict, compare=False)
    z_shape: tuple[int, ...] = ()
    sampler: Sampler = standard_normal
    default_layers: tuple[str, ...] = ()
    default_segmenter: str | None = None
    output_range: tuple[float, float] = (-1.0, 1.0)
    image_size: int | None = None
    concepts: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    hosts: Mapping[str, str] = field(default_factory=dict, compare=False)
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def generator(self, device: str | torch.device = "cpu") -> nn.Module:
        """The generator alone, with checked weights, in eval mode on `device`, sampling z the spec's way."""
        generator = self.part("generator", device)
        if not isinstance(generator, nn.Module):
            raise ConfigError(f"model {self.name!r} built a {type(generator).__name__}, not a torch.nn.Module")
        if self.z_shape:
            try:
                declared = latent_shape(generator)
            except AttributeError:
                generator.z_shape = self.z_shape
                declared = self.z_shape
            if declared != self.z_shape:
                raise ConfigError(f"model {self.name!r} declares z shape {self.z_shape}, its generator {declared}")
        if self.sampler is not standard_normal:
            generator.sample_z = lambda seed, indices: self.sample_z(seed, indices)
        return generator

    def segmenter(self, device: str | torch.device = "cpu") -> Any:
        """The segmenter alone (the generator is not built), with checked weights, on `device`."""
        return self.part("segmenter", device)

    def discriminator(self, device: str | torch.device = "cpu") -> nn.Module:
        """The discriminator alone, with checked weights, in eval mode on `device`."""
        return self.part("discriminator", device)

    def has(self, part: str) -> bool:
        """Whether the spec can build `part`."""
        return getattr(self, f"build_{part}") is not None

    def part(self, part: str, device: str | torch.device = "cpu") -> Any:
        """Build `part`, load its weight file (checksum first) and move it to `device` in eval mode."""
        if part not in PARTS:
            raise ConfigError(f"unknown model part {part!r}; parts are {', '.join(PARTS)}")
        builder = getattr(self, f"build_{part}")
        if builder is None:
            raise ConfigError(f"model {self.name!r} has no {part}")
        built = builder(self) if _wants_spec(builder) else builder()
        weights = self.weights.get(part)
        if weights is not None:
            load_weights(built.get_submodule(weights.into), weights.path, weights.sha256)
        return built.to(device).eval() if isinstance(built, nn.Module) else built

    def sample_z(self, seed: int, indices: torch.Tensor | range) -> torch.Tensor:
        """Latents for samples `indices` of sample set `seed`, on the CPU."""
        indices = torch.as_tensor(list(indices) if isinstance(indices, range) else indices, dtype=torch.long)
        return self.sampler(self.z_shape, seed, indices)


def _wants_spec(builder: Builder) -> bool:
    try:
        parameters = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify_checksum(path: str | Path, sha256: str) -> None:
    """Raise WeightFileError unless the file at `path` exists and has this sha256."""
    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"weight file {path} is missing")
    actual = sha256_file(path)
    if actual != sha256.lower():
        raise WeightFileError(f"weight file {path} has sha256 {actual[:12]}…, but its model expects {sha256[:12]}… "
                              "(the file is corrupt or was replaced: ship or install it again)")


def load_weights(module: nn.Module, path: str | Path, sha256: str | None = None) -> nn.Module:
    """Load a safetensors file into `module`, after checking its sha256 when given; names any missing,
    unexpected or misshapen tensor."""
    path = Path(path)
    if sha256 is not None:
        verify_checksum(path, sha256)
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


def middle_layers(layer_names: list[str] | tuple[str, ...]) -> list[str]:
    """The paper's default: the layers named layer1..layerN, without the first when there are more than two."""
    layers = [n for n in layer_names if n.startswith("layer")]
    if not layers:
        raise ConfigError("this generator names no layer1..layerN: choose layers with --layers")
    return layers[1:] if len(layers) > 2 else layers


_REGISTERED: dict[str, ModelSpec] = {}


def _weights_folder() -> Path:
    from gandissect import models  # read at call time so that tests can monkeypatch models.WEIGHTS

    return Path(models.WEIGHTS)


def user_models_folder() -> Path:
    """Where `gandissect ship` puts a user's models: $GANDISSECT_CACHE/models, else ~/.cache/gandissect/models."""
    from gandissect.models.loaders import cache_dir  # loaders imports this module

    return cache_dir() / "models"


def model_folders() -> list[Path]:
    """The folders searched for shipped models, first match wins: the package's weights (never shadowed),
    the folders in $GANDISSECT_MODELS (os.pathsep-separated), then the user's models folder (left out when the
    cache folder is unusable, which only the commands that need it report)."""
    extra = [Path(p) for p in os.environ.get("GANDISSECT_MODELS", "").split(os.pathsep) if p]
    try:
        user = [user_models_folder()]
    except ConfigError:
        user = []
    return [_weights_folder(), *extra, *user]


def shipped_folder(name: str) -> Path | None:
    """The folder of shipped model `name` (the first of `model_folders` holding `name/model.json`), or None."""
    return next((f / name for f in model_folders() if (f / name / "model.json").is_file()), None)


def shipped_names() -> list[str]:
    """Names of the model folders (holding a model.json) in every folder of `model_folders`."""
    return sorted({p.name for folder in model_folders() if folder.is_dir() for p in folder.iterdir()
                   if (p / "model.json").is_file()})


def shipped_spec(name: str) -> ModelSpec:
    """The spec of shipped model `name`, read from its model.json by its family's loader."""
    folder = shipped_folder(name) or _weights_folder() / name
    path = folder / "model.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path} cannot be read ({error}): reinstall gandissect or ship the model again") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{path} is not a JSON object: reinstall gandissect or ship the model again")
    family = meta.get("family", "scenegan")
    if family not in FAMILIES:
        raise ConfigError(f"{path} names family {family!r}; known families: {', '.join(FAMILIES)}")
    try:
        return importlib.import_module(FAMILIES[family]).spec_from_folder(folder, meta)
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"{path} is incomplete or malformed ({type(error).__name__}: {error}): reinstall "
                          "gandissect or ship the model again") from None


def register(spec: ModelSpec, replace: bool = False) -> ModelSpec:
    """Make `spec` loadable by its name everywhere a model name is accepted (CLI `--model` included)."""
    if not spec.name or any(c in spec.name for c in ":+/\\") or spec.name == "color":
        raise ConfigError(f"model name {spec.name!r} must be non-empty, not 'color', and hold no ':', '+' or slash")
    if not replace and spec.name in names():
        raise ConfigError(f"a model named {spec.name!r} already exists: pass replace=True to replace it")
    _REGISTERED[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Forget a spec added with `register` (shipped folders stay)."""
    _REGISTERED.pop(name, None)


def names() -> list[str]:
    """Every model name: registered and shipped."""
    return sorted(set(_REGISTERED) | set(shipped_names()))


def get(name: str) -> ModelSpec:
    """The spec named `name`; a registered spec wins over a shipped folder of the same name."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in shipped_names():
        return shipped_spec(name)
    known = ", ".join(names()) or "none"
    raise UnknownModelError(f"no model named {name!r}; known models: {known}")


def describe(spec: ModelSpec) -> dict[str, Any]:
    """A JSON-ready summary of `spec`, with each weight file's size and presence on disk."""
    files = []
    for part, weights in spec.weights.items():
        present = weights.path.is_file()
        size = weights.path.stat().st_size if present else weights.size
        files.append({"part": part, "path": str(weights.path), "bytes": size, "sha256": weights.sha256,
                      "present": present})
    return {
        "name": spec.name,
        "description": spec.description,
        "parts": [part for part in PARTS if spec.has(part)],
        "image_size": spec.image_size,
        "z_shape": list(spec.z_shape),
        "output_range": list(spec.output_range),
        "default_layers": list(spec.default_layers),
        "default_segmenter": spec.default_segmenter,
        "concepts": list(spec.concepts),
        "weights": files,
        "dissect": f"gandissect dissect --model {spec.name} --out runs/{spec.name}",
    }
