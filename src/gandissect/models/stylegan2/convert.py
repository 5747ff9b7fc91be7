"""StyleGAN2 checkpoints in the layout of rosinality's stylegan2-pytorch, read into `StyleGAN2Generator`.

Accepted files (torch.save'd, read with weights_only=True; argparse.Namespace, which training checkpoints
keep as "args", is allowed): a training checkpoint {"g", "d", "g_ema", "g_optim", "d_optim", "args", ...}
or a converted one {"g_ema", "latent_avg", ...}, of which `g_ema` is used; or a bare `g_ema` state dict
(also as .safetensors); keys prefixed "module." are accepted. The published keys and the names here:

    style.{i}.weight / .bias        mapping.fc{i}.*           (i = 1 .. n_mlp; style.0 is the pixel norm)
    input.input                     const.input
    conv1.*                         layer1.*                  (conv.weight, conv.modulation.*, noise.weight,
    convs.{j}.*                     layer{j + 2}.*             activate.bias, conv.blur.kernel)
    noises.noise_{j}                layer{j + 1}.noise.fixed
    to_rgb1.*                       rgb4.*
    to_rgbs.{j}.*                   rgb{2 ** (j + 3)}.*       (conv.*, bias, upsample.kernel)
    latent_avg (beside g_ema)       truncate.w_avg            (else estimated from 4096 seeded z)

The resolution comes from the number of to_rgbs, n_mlp from the style.{i} layers, style_dim and the channels
from the weights' shapes. Anything else is refused with a ConfigError naming missing and unexpected keys.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gandissect.core.errors import ConfigError
from gandissect.models.files import family_hint, read_state_file
from gandissect.models.stylegan2.modeling import StyleGAN2Generator, check_size

OPTION_BUFFERS = ("truncate.psi", "truncate.w_avg", "noise_mode", "w_input", "clamp_images")
"""Buffers of a StyleGAN2Generator that hold its options, not weights of the published layout."""

LAYOUT = ("style.1.weight, ..., input.input, conv1.conv.weight, convs.0.conv.weight, ..., to_rgb1.conv.weight, "
          "to_rgbs.0.conv.weight, ..., noises.noise_0, ...")
_RENAMES = [(re.compile(r"style\.(\d+)\.(.+)"), lambda m: f"mapping.fc{m[1]}.{m[2]}"),
            (re.compile(r"input\.input"), lambda m: "const.input"),
            (re.compile(r"conv1\.(.+)"), lambda m: f"layer1.{m[1]}"),
            (re.compile(r"convs\.(\d+)\.(.+)"), lambda m: f"layer{int(m[1]) + 2}.{m[2]}"),
            (re.compile(r"noises\.noise_(\d+)"), lambda m: f"layer{int(m[1]) + 1}.noise.fixed"),
            (re.compile(r"to_rgb1\.(.+)"), lambda m: f"rgb4.{m[1]}"),
            (re.compile(r"to_rgbs\.(\d+)\.(.+)"), lambda m: f"rgb{2 ** (int(m[1]) + 3)}.{m[2]}")]
_BACK = [(re.compile(r"mapping\.fc(\d+)\.(.+)"), lambda m: f"style.{m[1]}.{m[2]}"),
         (re.compile(r"const\.input"), lambda m: "input.input"),
         (re.compile(r"layer(\d+)\.noise\.fixed"), lambda m: f"noises.noise_{int(m[1]) - 1}"),
         (re.compile(r"layer1\.(.+)"), lambda m: f"conv1.{m[1]}"),
         (re.compile(r"layer(\d+)\.(.+)"), lambda m: f"convs.{int(m[1]) - 2}.{m[2]}"),
         (re.compile(r"rgb4\.(.+)"), lambda m: f"to_rgb1.{m[1]}"),
         (re.compile(r"rgb(\d+)\.(.+)"), lambda m: f"to_rgbs.{int(m[1]).bit_length() - 4}.{m[2]}")]


def _rename(key: Any, rules: list) -> Any:
    for pattern, new in rules:
        match = pattern.fullmatch(key) if isinstance(key, str) else None
        if match:
            return new(match)
    return key


def from_published(state: Mapping[str, Any]) -> dict[str, Any]:
    """A `g_ema` state dict renamed to this package's names (module docstring); unknown keys kept as they are."""
    return {_rename(key, _RENAMES): value for key, value in state.items()}


def to_published(generator: StyleGAN2Generator) -> dict[str, torch.Tensor]:
    """The generator's weights as a `g_ema` state dict in the port's layout (options and w_avg left out)."""
    return {_rename(key, _BACK): value for key, value in generator.state_dict().items() if key not in OPTION_BUFFERS}


def published_checkpoint(generator: StyleGAN2Generator, args: argparse.Namespace | None = None) -> dict[str, Any]:
    """{"g_ema": ..., "latent_avg": w_avg, "args": args}, as the port's convert_weight.py and train.py write."""
    checkpoint: dict[str, Any] = {"g_ema": to_published(generator), "latent_avg": generator.truncate.w_avg.clone()}
    if args is not None:
        checkpoint["args"] = args
    return checkpoint


def describe(raw: Any, limit: int = 6) -> str:
    """What a loaded file holds, in a phrase: a dict's top-level keys, or a state dict's first entries."""
    if not isinstance(raw, Mapping):
        return f"it holds a {type(raw).__name__}"
    if raw and not all(isinstance(v, torch.Tensor) for v in raw.values()):
        return f"it is a dict with keys {', '.join(map(str, raw))}"
    items = [f"{key} {tuple(value.shape)}" for key, value in list(raw.items())[:limit]]
    more = f", ... ({len(raw)} entries in all)" if len(raw) > limit else ""
    return f"it holds {len(raw)} tensors: {', '.join(items)}{more}" if raw else "it is empty"


def _list(keys: list[Any], limit: int = 12) -> str:
    shown = ", ".join(map(str, keys[:limit]))
    return (shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")) if keys else "none"


def unwrap(raw: Any) -> tuple[dict[str, Any], Any]:
    """(the g_ema state dict, the stored latent_avg or None) of a loaded checkpoint."""
    latent_avg = None
    if isinstance(raw, Mapping) and "g_ema" in raw:
        latent_avg = raw.get("latent_avg")
        state = raw["g_ema"]
    else:
        state = raw
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        has_g = " (it has 'g' but no 'g_ema')" if isinstance(raw, Mapping) and "g" in raw else ""
        raise ConfigError(f"a StyleGAN2 checkpoint is a state dict of tensors or a dict holding one as 'g_ema'{has_g}; "
                          f"{describe(raw)}")
    state = dict(state)
    if state and all(isinstance(key, str) and key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    return state, latent_avg


def _count(state: Mapping[str, Any], template: str, start: int) -> int:
    count = 0
    while template.format(start + count) in state:
        count += 1
    return count


def infer_architecture(state: Mapping[str, Any]) -> dict[str, Any]:
    """size, style_dim, n_mlp and channels of a `g_ema` state dict in the port's layout."""
    needed = ["style.1.weight", "input.input", "conv1.conv.weight", "to_rgb1.conv.weight", "to_rgbs.0.conv.weight"]
    missing = [key for key in needed if key not in state]
    if missing:
        unexpected = [str(key) for key in state if _rename(key, _RENAMES) == key]
        hint = family_hint(state, "stylegan2")
        raise ConfigError(f"the checkpoint is not a StyleGAN2 generator in the layout of rosinality's "
                          f"stylegan2-pytorch ({LAYOUT}): missing keys {_list(missing)}; unexpected keys "
                          f"{_list(unexpected)}; {describe(state)}{hint}")
    blocks = _count(state, "to_rgbs.{}.conv.weight", 0)
    size = check_size(4 * 2 ** blocks)
    channels = {4: _size(state, "input.input", 4, 1)}
    for block in range(blocks):
        key = f"convs.{2 * block}.conv.weight"
        channels[8 * 2 ** block] = _size(state, key, 5, 1) if key in state else 1  # missing: reported by the fit
    return {"size": size, "style_dim": _size(state, "style.1.weight", 2, 1),
            "n_mlp": _count(state, "style.{}.weight", 1), "channels": channels}


def _size(state: Mapping[str, Any], key: str, dims: int, axis: int) -> int:
    """Dimension `axis` of tensor `key`, which must have `dims` dimensions."""
    tensor = state[key]
    if tensor.dim() != dims:
        raise ConfigError(f"the checkpoint's {key} has shape {tuple(tensor.shape)}; in a StyleGAN2 generator it has "
                          f"{dims} dimensions")
    return int(tensor.shape[axis])


def read_checkpoint(path: str | Path) -> Any:
    """A checkpoint file as torch.load (weights only, argparse.Namespace allowed) or safetensors reads it."""
    return read_state_file(path, "StyleGAN2", (argparse.Namespace,))


def _check_fit(source: str, model: StyleGAN2Generator, state: Mapping[str, Any]) -> None:
    expected = {key: value for key, value in model.state_dict().items() if key not in OPTION_BUFFERS}
    missing = [_rename(key, _BACK) for key in expected if key not in state]  # named as in the file
    unexpected = [_rename(key, _BACK) for key in state if key not in expected]
    size = model.size
    if missing or unexpected:
        raise ConfigError(f"{source} does not fit a {size}x{size} StyleGAN2 generator (n_mlp {model.n_mlp}, "
                          f"style_dim {model.style_dim}): missing keys {_list(missing)}; unexpected keys "
                          f"{_list(unexpected)}")
    wrong = [f"{_rename(key, _BACK)} {tuple(value.shape)} (expected {tuple(expected[key].shape)})"
             for key, value in state.items() if value.shape != expected[key].shape]
    if wrong:
        raise ConfigError(f"{source} has tensors of the wrong shape for a {size}x{size} StyleGAN2 with channels "
                          f"{model.channels}: {_list(wrong)}")


def load_stylegan2(source: str | Path | Mapping[str, Any], device: str | torch.device = "cpu",
                   resolution: int | None = None, **options: Any) -> StyleGAN2Generator:
    """A StyleGAN2Generator (eval mode, on `device`) with the weights of a checkpoint file or of a loaded
    checkpoint / `g_ema` state dict; `options` (truncation, noise, space, clamp) as for the generator. A
    checkpoint of another resolution than `resolution` (when given) is refused."""
    if isinstance(source, str | Path):
        name, raw = str(source), read_checkpoint(source)
    else:
        name, raw = "the state dict", source
    state, latent_avg = unwrap(raw)
    found = infer_architecture(state)
    size = found["size"]
    if resolution is not None and resolution != size:
        raise ConfigError(f"{name} holds a {size}x{size} StyleGAN2, not the {resolution}x{resolution} asked for")
    model = StyleGAN2Generator(**found)
    renamed = from_published(state)
    _check_fit(name, model, renamed)
    model.load_state_dict(renamed, strict=False)
    if latent_avg is None:
        model.estimate_w_avg()
    else:
        latent_avg = torch.as_tensor(latent_avg)
        if latent_avg.numel() != model.style_dim:
            raise ConfigError(f"{name}: latent_avg has shape {tuple(latent_avg.shape)}, not ({model.style_dim},)")
        model.truncate.w_avg.copy_(latent_avg.reshape(-1))
        model.w_avg_source = "the checkpoint's latent_avg"
    model.configure(**options)
    return model.to(device).eval()
