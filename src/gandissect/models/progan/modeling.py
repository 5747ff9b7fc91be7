"""ProGAN generators (Karras et al. 2018) in the layout of GAN Dissection's released LSUN checkpoints.

The architecture is the one of the PyTorch conversions distributed with the paper's code
(`netdissect/proggan.py`): z of `z_dim` (512), normalised by pixel norm, then

    layer1          4x4 "dense" layer from z: a Conv2d(z_dim, c4, kernel 4, padding 3) applied to z as a 1x1 map
                    (the same as a conv-transpose from z to c4 x 4x4, with the kernel flipped)
    layer2          3x3 conv at 4x4
    layer3, layer4  nearest upsample x2 + 3x3 conv, then 3x3 conv, at 8x8 (the paper's layer4: 512 x 8x8)
    ...             one such pair per doubling, up to `resolution`
    output_RxR      1x1 to-RGB conv (no activation), then clamped to [-1, 1] unless `clamp=False`

so a 256x256 model has layer1 ... layer14 and output_256x256. The channels `channels[r]` at each resolution r
are whatever the checkpoint holds: the loader reads them from the weights' shapes (see `checkpoint`). A
generator built without them takes netdissect's defaults: 512 through 16x16, then 256, 128, 64, 32 at 32, 64,
128, 256 (ProGAN's fmap_base 4096, the LSUN models the paper dissected: its scripts list layer7 with 256 units
and layer10 with 128); above 256, fmap_base 8192 (512 through 32x32, as netdissect's 1024 default).

Every conv has an equalised learning rate as those files expect it: the state dict stores the unscaled
weight (`<block>.conv.weight`, no bias) and the bias apart (`<block>.wscale.b`); at run time the conv's
output is multiplied by the He constant sqrt(2 / fan_in), fan_in = in_channels * kernel_size ** 2
(for layer1, z_dim * 4 * 4, as in ProGAN's dense layer with gain sqrt(2) / 4), then the bias is added.
The to-RGB head uses gain 1, as in ProGAN: 1 / sqrt(in_channels). Every conv block applies leaky ReLU 0.2.

Pixel norm (x / sqrt(mean over channels of x ** 2 + 1e-8)) sits, by default (`pixel_norm="before"`), at
the start of each block, head included, exactly as in `netdissect/proggan.py`: a layer's output is then the
un-normalised activation after the leaky ReLU, the map the paper dissected. With `pixel_norm="after"` it
sits at the end of each conv block (and on z at the start of layer1), so every layerN output has mean
square 1 over channels, as in ProGAN's TensorFlow graph. Both give the same images from the same weights.

`clamp` (default True) clamps images to [-1, 1]. ProGAN's to-RGB layer is linear, so a trained generator's
raw images stray beyond [-1, 1] here and there; every image writer (ProGAN's, netdissect's) clips them when it
saves a picture, and clamping makes the segmenter see that picture and keeps the dissection's range check
from stopping a run. `clamp=False` gives netdissect's raw output (its `output_tanh=False`). The setting is a
buffer (`clamp_images`), so a run's fingerprint tells the two apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gandissect.core.errors import ConfigError

PIXEL_NORM_EPS = 1e-8
PIXEL_NORM_PLACES = ("after", "before")


def progan_channels(resolution: int, fmap_base: int = 4096, fmap_max: int = 512) -> int:
    """ProGAN's feature channels at `resolution`: min(fmap_max, 2 * fmap_base / resolution) (fmap_base 4096:
    the LSUN models GAN Dissection released; 8192: CelebA-HQ)."""
    return min(fmap_max, 2 * fmap_base // resolution)


def default_channels(resolution: int) -> dict[int, int]:
    """Channels at 4, 8, ..., `resolution` of netdissect's default architectures (module docstring)."""
    base = 4096 if resolution <= 256 else 8192
    return {r: progan_channels(r, base) for r in resolutions(resolution)}


def resolutions(resolution: int) -> list[int]:
    """4, 8, ..., resolution."""
    return [2 ** k for k in range(2, resolution.bit_length())]


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


def _clamp_is_optional(module: nn.Module, incompatible: Any) -> None:
    """Let `load_state_dict` take netdissect's files, which have no `clamp_images`: the option keeps its value."""
    incompatible.missing_keys[:] = [key for key in incompatible.missing_keys if not key.endswith("clamp_images")]


class ProGANGenerator(nn.Module):
    """A ProGAN generator with random weights (N(0, 1), zero biases, as ProGAN initialises them).

    `forward(z)` takes z of shape (batch, z_dim) (or (batch, z_dim, 1, 1)) and returns (batch, 3, R, R).
    `channels` maps every resolution 4 .. R to its channel count (default: `default_channels(R)`).
    """

    output_range = (-1, 1)

    def __init__(self, resolution: int = 256, z_dim: int = 512, pixel_norm: str = "before",
                 channels: Mapping[int, int] | None = None, *, clamp: bool = True) -> None:
        super().__init__()
        self.resolution = _check_resolution(resolution)
        self.channels = dict(channels) if channels is not None else default_channels(resolution)
        if sorted(self.channels) != resolutions(resolution) or not all(
                isinstance(c, int) and c >= 1 for c in self.channels.values()):
            raise ConfigError(f"channels must give a positive whole number for every resolution "
                              f"{resolutions(resolution)}; got {self.channels}")
        if not isinstance(z_dim, int) or z_dim < 1:
            raise ConfigError(f"z_dim must be a positive whole number; got {z_dim!r}")
        if pixel_norm not in PIXEL_NORM_PLACES:
            raise ConfigError(f"pixel_norm must be one of {', '.join(PIXEL_NORM_PLACES)}; got {pixel_norm!r}")
        self.z_dim = z_dim
        self.pixel_norm = pixel_norm
        after = pixel_norm == "after"
        root2 = math.sqrt(2)
        width = self.channels[4]
        blocks = [ProGANBlock(z_dim, width, 4, 3, gain=root2, norm_in=True, norm_out=after),
                  ProGANBlock(width, width, 3, 1, gain=root2, norm_in=not after, norm_out=after)]
        size = 4
        while size < resolution:
            size *= 2
            wider, width = width, self.channels[size]
            blocks.append(ProGANBlock(wider, width, 3, 1, gain=root2, upsample=True, norm_in=not after,
                                      norm_out=after))
            blocks.append(ProGANBlock(width, width, 3, 1, gain=root2, norm_in=not after, norm_out=after))
        for index, block in enumerate(blocks):
            self.add_module(f"layer{index + 1}", block)
        self.head_name = f"output_{resolution}x{resolution}"
        self.add_module(self.head_name, ProGANBlock(width, 3, 1, 0, gain=1.0, activation=False, norm_in=not after))
        self.layer_names = [f"layer{index + 1}" for index in range(len(blocks))] + [self.head_name]
        self.register_buffer("clamp_images", torch.tensor(bool(clamp)))
        self.register_load_state_dict_post_hook(_clamp_is_optional)

    @property
    def clamp(self) -> bool:
        return bool(self.clamp_images)

    def configure(self, *, clamp: bool | None = None) -> ProGANGenerator:
        """Change the `clamp` option (module docstring); returns the generator."""
        if clamp is not None:
            self.clamp_images.fill_(bool(clamp))
        return self

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, z_dim={self.z_dim}, pixel_norm={self.pixel_norm}, clamp={self.clamp}"

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(-1, 1) if self.clamp else x

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() not in (2, 4) or z.shape[1] != self.z_dim or (z.dim() == 4 and z.shape[2:] != (1, 1)):
            raise ConfigError(f"z must have shape (batch, {self.z_dim}) or (batch, {self.z_dim}, 1, 1); "
                              f"got {tuple(z.shape)}")
        x = z.reshape(z.shape[0], self.z_dim, 1, 1)
        for name in self.layer_names:
            x = getattr(self, name)(x)
        return self._finish(x)

    def forward_from(self, layer: str, features: torch.Tensor) -> torch.Tensor:
        """The image computed from `layer`'s output on (the layers after `layer`)."""
        if layer not in self.layer_names:
            raise ConfigError(f"{layer!r} is not a layer of this ProGAN; its layers are {', '.join(self.layer_names)}")
        x = features
        for name in self.layer_names[self.layer_names.index(layer) + 1:]:
            x = getattr(self, name)(x)
        return self._finish(x)
