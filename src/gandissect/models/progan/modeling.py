"""ProGAN generators (Karras et al. 2018) in the layout of GAN Dissection's released LSUN checkpoints.

The architecture is the one of the PyTorch conversions distributed with the paper's code
(`netdissect/proggan.py`): z of `z_dim` (512), normalised by pixel norm, then

    layer1          4x4 "dense" layer from z: a Conv2d(512, 512, kernel 4, padding 3) applied to z as a 1x1 map
                    (the same as a conv-transpose from z to 512 x 4x4, with the kernel flipped)
    layer2          3x3 conv at 4x4
    layer3, layer4  nearest upsample x2 + 3x3 conv, then 3x3 conv, at 8x8 (512 channels: the paper's layer4)
    ...             one such pair per doubling, up to `resolution`
    output_RxR      1x1 to-RGB conv (no activation; the image is not clamped, nominally in [-1, 1])

with channels min(512, 16384 / r) at resolution r (512 up to 32x32, then 256, 128, 64 at 64, 128, 256;
the LSUN models' fmap_base 8192), so a 256x256 model has layer1 ... layer14 and output_256x256.

Every conv has an equalised learning rate as those files expect it: the state dict stores the unscaled
weight (`<block>.conv.weight`, no bias) and the bias apart (`<block>.wscale.b`); at run time the conv's
output is multiplied by the He constant sqrt(2 / fan_in), fan_in = in_channels * kernel_size ** 2
(for layer1, 512 * 4 * 4, as in ProGAN's dense layer with gain sqrt(2) / 4), then the bias is added.
The to-RGB head uses gain 1, as in ProGAN: 1 / sqrt(in_channels). Every conv block applies leaky ReLU 0.2.

Pixel norm (x / sqrt(mean over channels of x ** 2 + 1e-8)) sits, by default (`pixel_norm="before"`), at
the start of each block, head included, exactly as in `netdissect/proggan.py`: a layer's output is then the
un-normalised activation after the leaky ReLU, the map the paper dissected. With `pixel_norm="after"` it
sits at the end of each conv block (and on z at the start of layer1), so every layerN output has mean
square 1 over channels, as in ProGAN's TensorFlow graph. Both give the same images from the same weights.

Checkpoints accepted by `load_progan` / `convert_state_dict` (a state dict of tensors, .pth or .safetensors,
optionally wrapped as {"state_dict": ...} and/or with every key prefixed by "module."):

  * published layout: `layer{i}.conv.weight`, `layer{i}.wscale.b` for i = 1..N (N even, N >= 2), and
    `output_{R}x{R}.conv.weight`, `output_{R}x{R}.wscale.b` with R = 4 * 2 ** (N / 2 - 1);
  * older layout: `features.{i-1}.conv.weight`, `features.{i-1}.wscale.b` (numbered from 0) for the N
    conv blocks, and the head as `output.conv.weight`, `output.wscale.b` (or already `output_{R}x{R}.*`);
  * in either, `*.wscale.scale` entries (older files stored the He constant) are checked against the
    constant computed here and dropped.

Anything else is refused with a ConfigError naming the missing and unexpected keys.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gandissect.core.errors import ConfigError
from gandissect.models.loaders import read_state_file

PIXEL_NORM_EPS = 1e-8
PIXEL_NORM_PLACES = ("after", "before")


def progan_channels(resolution: int) -> int:
    """Feature channels of ProGAN's LSUN / CelebA-HQ models at `resolution` (fmap_base 8192, fmap_max 512)."""
    return min(512, 16384 // resolution)


def _check_resolution(resolution: Any) -> int:
    if not isinstance(resolution, int) or resolution < 4 or resolution > 1024 or resolution & (resolution - 1):
        raise ConfigError(f"a ProGAN resolution is a power of two from 4 to 1024; got {resolution!r}")
    return resolution


def resolution_for_layers(count: int) -> int:
    """The output resolution of a ProGAN with `count` conv blocks (2 at 4x4, then 2 per doubling)."""
    return 4 * 2 ** (count // 2 - 1)


class PixelNorm(nn.Module):
    """Each position's feature vector divided by its root mean square over channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + PIXEL_NORM_EPS)


class Upsample2x(nn.Module):
    """Nearest-neighbour upsampling by 2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")


class WScale(nn.Module):
    """The run-time half of the equalised learning rate: x * scale + b (per channel)."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.b = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.b.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"channels={self.b.numel()}, scale={self.scale:.6g}"


class ProGANBlock(nn.Module):
    """[pixel norm] [upsample] conv (unscaled weight, no bias) -> wscale -> [leaky ReLU 0.2] [pixel norm]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int, *, gain: float,
                 upsample: bool = False, activation: bool = True, norm_in: bool = False,
                 norm_out: bool = False) -> None:
        super().__init__()
        if norm_in:
            self.norm_in = PixelNorm()
        if upsample:
            self.up = Upsample2x()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, 1, padding, bias=False)
        nn.init.normal_(self.conv.weight)
        self.wscale = WScale(out_channels, gain / math.sqrt(in_channels * kernel_size ** 2))
        if activation:
            self.relu = nn.LeakyReLU(0.2)
        if norm_out:
            self.norm = PixelNorm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.children():
            x = module(x)
        return x


class ProGANGenerator(nn.Module):
    """A ProGAN generator with random weights (N(0, 1), zero biases, as ProGAN initialises them).

    `forward(z)` takes z of shape (batch, z_dim) (or (batch, z_dim, 1, 1)) and returns (batch, 3, R, R).
    """

    output_range = (-1, 1)

    def __init__(self, resolution: int = 256, z_dim: int = 512, pixel_norm: str = "before") -> None:
        super().__init__()
        self.resolution = _check_resolution(resolution)
        if not isinstance(z_dim, int) or z_dim < 1:
            raise ConfigError(f"z_dim must be a positive whole number; got {z_dim!r}")
        if pixel_norm not in PIXEL_NORM_PLACES:
            raise ConfigError(f"pixel_norm must be one of {', '.join(PIXEL_NORM_PLACES)}; got {pixel_norm!r}")
        self.z_dim = z_dim
        self.pixel_norm = pixel_norm
        after = pixel_norm == "after"
        root2 = math.sqrt(2)
        width = progan_channels(4)
        blocks = [ProGANBlock(z_dim, width, 4, 3, gain=root2, norm_in=True, norm_out=after),
                  ProGANBlock(width, width, 3, 1, gain=root2, norm_in=not after, norm_out=after)]
        size = 4
        while size < resolution:
            size *= 2
            wider, width = width, progan_channels(size)
            blocks.append(ProGANBlock(wider, width, 3, 1, gain=root2, upsample=True, norm_in=not after,
                                      norm_out=after))
            blocks.append(ProGANBlock(width, width, 3, 1, gain=root2, norm_in=not after, norm_out=after))
        for index, block in enumerate(blocks):
            self.add_module(f"layer{index + 1}", block)
        self.head_name = f"output_{resolution}x{resolution}"
        self.add_module(self.head_name, ProGANBlock(width, 3, 1, 0, gain=1.0, activation=False, norm_in=not after))
        self.layer_names = [f"layer{index + 1}" for index in range(len(blocks))] + [self.head_name]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() not in (2, 4) or z.shape[1] != self.z_dim or (z.dim() == 4 and z.shape[2:] != (1, 1)):
            raise ConfigError(f"z must have shape (batch, {self.z_dim}) or (batch, {self.z_dim}, 1, 1); "
                              f"got {tuple(z.shape)}")
        x = z.reshape(z.shape[0], self.z_dim, 1, 1)
        for name in self.layer_names:
            x = getattr(self, name)(x)
        return x

    def forward_from(self, layer: str, features: torch.Tensor) -> torch.Tensor:
        """The image computed from `layer`'s output on (the layers after `layer`)."""
        if layer not in self.layer_names:
            raise ConfigError(f"{layer!r} is not a layer of this ProGAN; its layers are {', '.join(self.layer_names)}")
        x = features
        for name in self.layer_names[self.layer_names.index(layer) + 1:]:
            x = getattr(self, name)(x)
        return x


# --- checkpoints --------------------------------------------------------------------------------------------

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
                      f"{_describe(state)}")


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
                resolution: int | None = None, pixel_norm: str = "before") -> ProGANGenerator:
    """A ProGANGenerator (in eval mode, on `device`) with the weights of a checkpoint in one of the layouts
    accepted (module docstring). The resolution is read from the keys; when `resolution` is given, a
    checkpoint of another resolution is refused."""
    if isinstance(path_or_state_dict, str | Path):
        source = str(path_or_state_dict)
        raw = read_state_file(path_or_state_dict, "ProGAN")
    else:
        source, raw = "the state dict", path_or_state_dict
    state = convert_state_dict(raw)
    found = infer_resolution(state)
    if resolution is not None and _check_resolution(resolution) != found:
        raise ConfigError(f"{source} holds a {found}x{found} ProGAN, not the {resolution}x{resolution} asked for")
    z_weight = state["layer1.conv.weight"]
    z_dim = int(z_weight.shape[1]) if isinstance(z_weight, torch.Tensor) and z_weight.dim() == 4 else 512
    model = ProGANGenerator(found, z_dim=z_dim, pixel_norm=pixel_norm)
    _check_scales(model, state)
    expected = model.state_dict()
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
                          f"min(512, 16384 / resolution): {', '.join(wrong)}")
    model.load_state_dict(state)
    return model.to(device).eval()
