"""The building blocks of a StyleGAN2 generator, in plain PyTorch (no custom CUDA ops).

Every weight is stored unscaled and multiplied at run time by its equalised-learning-rate constant, as in
the checkpoints of rosinality's stylegan2-pytorch: a linear layer by lr_mul / sqrt(fan_in) (its bias by
lr_mul), a modulated conv by 1 / sqrt(in_channels * kernel ** 2). The parameter and buffer names inside each
block are the ones of those checkpoints, so that converting a checkpoint only renames the blocks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2)
LEAKY_SLOPE = 0.2
DEMOD_EPS = 1e-8
PIXEL_NORM_EPS = 1e-8
BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)


def blur_kernel(gain: float = 1.0) -> torch.Tensor:
    """The 4x4 binomial kernel (outer product of [1, 3, 3, 1]) normalised to sum `gain`."""
    taps = torch.tensor(BLUR_TAPS)
    kernel = taps[:, None] * taps[None, :]
    return kernel / kernel.sum() * gain


def upfirdn(x: torch.Tensor, kernel: torch.Tensor, up: int, pad: tuple[int, int]) -> torch.Tensor:
    """Upsample by inserting up - 1 zeros after every pixel, pad by pad[0] before and pad[1] after on both
    axes, then convolve every channel with `kernel` (a true convolution: the kernel is flipped)."""
    batch, channels, height, width = x.shape
    if up > 1:
        spread = x.new_zeros(batch, channels, height * up, width * up)
        spread[:, :, ::up, ::up] = x
        x = spread
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    weight = kernel.flip(0, 1).to(x.dtype)[None, None].repeat(channels, 1, 1, 1)
    return F.conv2d(x, weight, groups=channels)


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """leaky_relu(x + bias, 0.2) * sqrt(2), the bias broadcast over the channel dimension (dim 1)."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return F.leaky_relu(x + bias.view(shape), LEAKY_SLOPE) * SQRT2


def pixel_norm(x: torch.Tensor) -> torch.Tensor:
    """Each row divided by its root mean square over dim 1."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + PIXEL_NORM_EPS)


class EqualLinear(nn.Module):
    """y = x (W lr_mul / sqrt(fan_in))^T + b lr_mul, then optionally the fused leaky ReLU."""

    def __init__(self, in_dim: int, out_dim: int, lr_mul: float = 1.0, bias_init: float = 0.0,
                 activate: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.lr_mul, self.activate = lr_mul, activate
        self.scale = lr_mul / math.sqrt(in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activate:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]} -> {self.weight.shape[0]}, lr_mul={self.lr_mul:g}, activate={self.activate}"


class Blur(nn.Module):
    """`upfirdn` with a stored kernel (buffer `kernel`, summing to `gain`) and fixed padding; `up` > 1
    upsamples first."""

    def __init__(self, pad: tuple[int, int], up: int = 1, gain: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("kernel", blur_kernel(gain))
        self.pad, self.up = pad, up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn(x, self.kernel, self.up, self.pad)

    def extra_repr(self) -> str:
        return f"up={self.up}, pad={self.pad}"


class ModulatedConv2d(nn.Module):
    """A conv whose input channels are scaled per sample by the style s = modulation(w), then (demodulate)
    whose output channels are divided by the norm of the modulated weight: rsqrt(sum (W s)^2 + 1e-8).
    With `upsample`, a stride-2 transposed conv followed by a blur (output size 2H), as StyleGAN2's."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)
        if upsample:
            self.blur = Blur(pad=(1, 1), gain=4.0)  # gain 2 ** 2: the transposed conv upsampled by 2
        self.scale = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.demodulate, self.upsample = demodulate, upsample

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        style = self.modulation(w)
        weight = self.weight[0] * self.scale
        x = x * style[:, :, None, None]
        if self.upsample:
            out = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2))
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            norms = style.pow(2) @ weight.pow(2).sum((2, 3)).t()
            out = out * torch.rsqrt(norms + DEMOD_EPS)[:, :, None, None]
        return out

    def extra_repr(self) -> str:
        _, out_channels, in_channels, kernel, _ = self.weight.shape
        return (f"{in_channels} -> {out_channels}, kernel {kernel}, demodulate={self.demodulate}, "
                f"upsample={self.upsample}")


class NoiseInjection(nn.Module):
    """x + weight * noise; `fixed` (a buffer) is the stored noise map used with noise="fixed"."""

    def __init__(self, resolution: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.register_buffer("fixed", torch.randn(1, 1, resolution, resolution))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        return x if noise is None else x + self.weight * noise


class FusedLeakyReLU(nn.Module):
    """leaky_relu(x + bias, 0.2) * sqrt(2) with a learnt per-channel bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class StyledConv(nn.Module):
    """Modulated 3x3 conv (optionally upsampling), noise, bias and leaky ReLU: one synthesis layer. Its
    output is the layer's feature map."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, resolution: int,
                 upsample: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection(resolution)
        self.activate = FusedLeakyReLU(out_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, w), noise))


class ToRGB(nn.Module):
    """Modulated 1x1 conv to 3 channels (no demodulation) plus bias, added to the upsampled RGB skip of the
    resolution below (if any): its output is the image accumulated up to its resolution."""

    def __init__(self, in_channels: int, style_dim: int, upsample: bool = True) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        if upsample:
            self.upsample = Blur(pad=(2, 1), up=2, gain=4.0)

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, w) + self.bias
        return out if skip is None else out + self.upsample(skip)


class MappingNetwork(nn.Module):
    """z -> w: pixel norm, then `n_mlp` EqualLinear layers (lr_mul 0.01) with the fused leaky ReLU."""

    def __init__(self, style_dim: int, n_mlp: int, lr_mul: float = 0.01) -> None:
        super().__init__()
        for index in range(1, n_mlp + 1):
            self.add_module(f"fc{index}", EqualLinear(style_dim, style_dim, lr_mul=lr_mul, activate=True))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(z)
        for layer in self.children():
            x = layer(x)
        return x


class Truncation(nn.Module):
    """w -> w_avg + psi (w - w_avg); w itself when psi is 1. Both are buffers (`psi`, `w_avg`), so that a
    run's fingerprint tells truncations apart."""

    def __init__(self, style_dim: int) -> None:
        super().__init__()
        self.register_buffer("psi", torch.tensor(1.0, dtype=torch.float64))
        self.register_buffer("w_avg", torch.zeros(style_dim))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if float(self.psi) == 1.0:
            return w
        return self.w_avg + self.psi * (w - self.w_avg)

    def extra_repr(self) -> str:
        return f"psi={float(self.psi):g}"


class ConstantInput(nn.Module):
    """The learnt 4x4 input (parameter `input`), repeated over the batch of the w it is given."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, 4, 4))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.input.repeat(w.shape[0], 1, 1, 1)
