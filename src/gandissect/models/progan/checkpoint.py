"""ProGAN checkpoints read into `ProGANGenerator`, with every size read from the file.

Accepted by `load_progan` / `convert_state_dict`: a state dict of tensors (.pth, or .safetensors), optionally
wrapped as {"state_dict": ...} and/or with every key prefixed by "module.", in either key layout
`netdissect/proggan.py` reads:

  * published layout: `layer{i}.conv.weight`, `layer{i}.wscale.b` for i = 1..N (N even, N >= 2), and
    `output_{R}x{R}.conv.weight`, `output_{R}x{R}.wscale.b` with R = 4 * 2 ** (N / 2 - 1);
  * older layout: `features.{i-1}.conv.weight`, `features.{i-1}.wscale.b` (numbered from 0) for the N
    conv blocks, and the head as `output.conv.weight`, `output.wscale.b` (or already `output_{R}x{R}.*`);
  * in either, `*.wscale.scale` entries (older files stored the He constant) are checked against the
    constant computed here and dropped.

The sizes come from the file as netdissect's `sizes_from_state_dict` reads them: the resolution R from the head's
name (or the number of conv blocks), z_dim from layer1's input channels, and the channels at each resolution
from the output channels of that resolution's first conv (layer1, layer3, layer5, ...). Anything else is
refused with a ConfigError naming the missing and unexpected keys, and naming the loader to use when the file
is another family's.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gandissect.core.errors import ConfigError
from gandissect.models.files import family_hint, read_state_file
from gandissect.models.progan.modeling import (
    ProGANGenerator,
    WScale,
    _check_resolution,
    default_channels,
    resolution_for_layers,
    resolutions,
)

OPTION_BUFFERS = ("clamp_images",)
"""Buffers of a ProGANGenerator that hold its options, not weights: ignored in a file, set by the loader."""

_LAYER_KEY = re.compile(r"layer(\d+)\.(conv\.weight|wscale\.b|wscale\.scale)")
_OLD_LAYER_KEY = re.compile(r"features\.(\d+)\.(conv\.weight|wscale\.b|wscale\.scale)")
_HEAD_KEY = re.compile(r"output_(\d+)x(\d+)\.(conv\.weight|wscale\.b|wscale\.scale)")
_OLD_HEAD_KEY = re.compile(r"output\.(conv\.weight|wscale\.b|wscale\.scale)")


def _describe(state: Mapping[str, Any], limit: int = 6) -> str:
    """A short account of what a state dict holds: its size and first few keys with shapes."""
    items = []
    for key, value in list(state.items())[:limit]:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        items.append(f"{key} {shape}")
    more = f", ... ({len(state)} entries in all)" if len(state) > limit else ""
    return f"it holds {len(state)} entries: {', '.join(items)}{more}" if state else "it is empty"


def _list(keys: list[Any], limit: int = 20) -> str:
    shown = ", ".join(map(str, keys[:limit]))
    return (shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")) if keys else "none"


def _unwrap(state: Any) -> dict[str, Any]:
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ConfigError(f"a ProGAN checkpoint must be a state dict (a mapping of names to tensors); "
                          f"got {type(state).__name__}")
    state = dict(state)
    if state and all(isinstance(key, str) and key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    return state


def _layer_count(state: Mapping[str, Any]) -> int:
    """N: the number of consecutive layer{i}.conv.weight keys from layer1."""
    count = 0
    while f"layer{count + 1}.conv.weight" in state:
        count += 1
    return count


def convert_state_dict(old: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint in any accepted layout (see the module docstring) renamed to the published layout:
    `features.{i}.*` -> `layer{i+1}.*`, `output.*` -> `output_{R}x{R}.*`, "module." prefixes and a
    {"state_dict": ...} wrapper removed. Keys it does not recognise are kept as they are (the loader
    reports them); `wscale.scale` entries are kept too (the loader checks and drops them)."""
    state = _unwrap(old)
    renamed: dict[str, Any] = {}
    for key, value in state.items():
        match = _OLD_LAYER_KEY.fullmatch(key) if isinstance(key, str) else None
        new = f"layer{int(match.group(1)) + 1}.{match.group(2)}" if match else key
        if new in renamed:
            raise ConfigError(f"the checkpoint names {new!r} twice (once in the older 'features.' layout)")
        renamed[new] = value
    old_head = [key for key in renamed if isinstance(key, str) and _OLD_HEAD_KEY.fullmatch(key)]
    if old_head:
        count = _layer_count(renamed)
        if count < 2:
            return renamed  # no conv blocks to size the head from: the loader reports what is missing
        size = resolution_for_layers(count)
        for key in old_head:
            new = f"output_{size}x{size}.{_OLD_HEAD_KEY.fullmatch(key).group(1)}"
            if new in renamed:
                raise ConfigError(f"the checkpoint has both {key!r} and {new!r}")
            renamed[new] = renamed.pop(key)
    return renamed


def _recognised(key: Any) -> bool:
    return isinstance(key, str) and any(pattern.fullmatch(key) for pattern in (_LAYER_KEY, _HEAD_KEY))


def infer_resolution(state: Mapping[str, Any]) -> int:
    """The output resolution of a state dict in the published layout: from its output_RxR head's name, or
    without one from the number of consecutive layer{i} conv weights."""
    heads = sorted({(int(m.group(1)), int(m.group(2))) for key in state if isinstance(key, str)
                    for m in [_HEAD_KEY.fullmatch(key)] if m})
    if len(heads) > 1:
        named = ", ".join(f"output_{h}x{w}" for h, w in heads)
        raise ConfigError(f"the checkpoint has several output heads ({named}); a ProGAN generator has one")
    if heads:
        height, width = heads[0]
        if height != width:
            raise ConfigError(f"the checkpoint's head output_{height}x{width} is not square")
        return _check_resolution(height)
    count = _layer_count(state)
    if count >= 2 and count % 2 == 0:
        return resolution_for_layers(count)
    missing = [f"layer{i}.{p}" for i in range(1, max(count, 2) + 1) for p in ("conv.weight", "wscale.b")
               if f"layer{i}.{p}" not in state] + ["output_RxR.conv.weight", "output_RxR.wscale.b"]
    unexpected = [str(key) for key in state if not _recognised(key)]
    shown = ", ".join(unexpected[:12]) + (f", ... ({len(unexpected)} in all)" if len(unexpected) > 12 else "")
    raise ConfigError(f"the checkpoint is not a ProGAN generator in the layout of GAN Dissection's checkpoints "
                      f"(layer1.conv.weight, ..., output_RxR.conv.weight, or features.0.conv.weight, ..., "
                      f"output.conv.weight): missing keys {', '.join(missing)}; unexpected keys {shown or 'none'}; "
                      f"{_describe(state)}{family_hint(state, 'progan')}")


def infer_sizes(state: Mapping[str, Any], resolution: int) -> tuple[int, dict[int, int]]:
    """(z_dim, channels at each resolution) of a state dict in the published layout, as netdissect reads them:
    z_dim is layer1's input channels, the channels at a resolution its first conv's output channels (its
    second conv's when the first is missing or misshapen, netdissect's default when both are: the fit
    check then names the tensor)."""
    def conv(index: int) -> torch.Tensor | None:
        weight = state.get(f"layer{index}.conv.weight")
        return weight if isinstance(weight, torch.Tensor) and weight.dim() == 4 else None

    defaults = default_channels(resolution)
    channels = {}
    for block, size in enumerate(resolutions(resolution)):
        known = [w for w in (conv(2 * block + 1), conv(2 * block + 2)) if w is not None]
        channels[size] = int(known[0].shape[0]) if known else defaults[size]
    first = conv(1)
    return (int(first.shape[1]) if first is not None else 512), channels


def _check_scales(model: ProGANGenerator, state: dict[str, Any]) -> None:
    for key in [key for key in state if isinstance(key, str) and key.endswith(".wscale.scale")]:
        value = state.pop(key)
        module = dict(model.named_modules()).get(key[: -len(".scale")])
        if not isinstance(module, WScale):
            state[key] = value  # reported as unexpected
            continue
        stored = float(torch.as_tensor(value).float().reshape(-1)[0])
        if not math.isclose(stored, module.scale, rel_tol=1e-4):
            raise ConfigError(f"the checkpoint's {key} is {stored:.6g}, but this ProGAN's equalised-learning-rate "
                              f"constant there is {module.scale:.6g}: the file follows another convention")


def load_progan(path_or_state_dict: str | Path | Mapping[str, Any], device: str | torch.device = "cpu",
                resolution: int | None = None, pixel_norm: str = "before", clamp: bool = True) -> ProGANGenerator:
    """A ProGANGenerator (in eval mode, on `device`) with the weights of a checkpoint in one of the layouts
    accepted (module docstring), its sizes read from the file; when `resolution` is given, a checkpoint of
    another resolution is refused. `clamp` as for the generator."""
    if isinstance(path_or_state_dict, str | Path):
        source = str(path_or_state_dict)
        # argparse.Namespace is allowed so that a StyleGAN2 training checkpoint is read and named as one
        raw = read_state_file(path_or_state_dict, "ProGAN", (argparse.Namespace,))
    else:
        source, raw = "the state dict", path_or_state_dict
    state = {key: value for key, value in convert_state_dict(raw).items() if key not in OPTION_BUFFERS}
    found = infer_resolution(state)
    if resolution is not None and _check_resolution(resolution) != found:
        raise ConfigError(f"{source} holds a {found}x{found} ProGAN, not the {resolution}x{resolution} asked for")
    z_dim, channels = infer_sizes(state, found)
    model = ProGANGenerator(found, z_dim=z_dim, pixel_norm=pixel_norm, channels=channels, clamp=clamp)
    _check_scales(model, state)
    expected = {key: value for key, value in model.state_dict().items() if key not in OPTION_BUFFERS}
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        raise ConfigError(f"{source} does not fit a {found}x{found} ProGAN generator: "
                          f"missing keys {_list(missing)}; unexpected keys {_list(unexpected)}"
                          + (f"; {_describe(state)}" if unexpected else ""))
    wrong = [f"{key} {tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__} "
             f"(expected {tuple(expected[key].shape)})" for key, value in state.items()
             if not isinstance(value, torch.Tensor) or value.shape != expected[key].shape]
    if wrong:
        raise ConfigError(f"{source} has tensors of the wrong shape for a {found}x{found} ProGAN with channels "
                          f"{channels} (read from each resolution's first conv): {', '.join(wrong)}")
    model.load_state_dict(state, strict=False)
    return model.to(device).eval()
