"""StyleGAN2 generators (Karras et al. 2020, config F) in pure PyTorch, for the `g_ema` weights of
rosinality's stylegan2-pytorch (the widely used PyTorch port and its conversions of NVIDIA's checkpoints).

z (style_dim, 512) -> mapping (pixel norm + n_mlp = 8 linear layers, lr_mul 0.01) -> w -> truncation
-> synthesis from a learnt 4x4 constant. The modules, by name, in the order they run:

    mapping        z -> w (batch, style_dim), before truncation
    truncate       w -> w_avg + psi (w - w_avg) (buffers `truncate.psi`, `truncate.w_avg`)
    const          the learnt 4x4 input, repeated over the batch
    layer1         modulated 3x3 conv at 4x4 (+ noise, bias, leaky ReLU 0.2 * sqrt 2)
    rgb4           to-RGB of layer1: the image accumulated at 4x4
    layer2         upsampling modulated conv to 8x8 (transposed conv, stride 2, then [1,3,3,1] blur)
    layer3         modulated 3x3 conv at 8x8
    rgb8           to-RGB of layer3 plus the upsampled rgb4: the image accumulated at 8x8
    ...            layer{2k}, layer{2k+1}, rgb{R} for every doubling R up to `size`

so layer{n} is StyleGAN2's n-th synthesis layer (it uses noise map n - 1 and style n - 1). A 256x256 model
with channel multiplier 2 has layer1 .. layer13 (512 channels up to 32x32, then 512, 256, 128 at 64, 128,
256) and its default layers (`default_layers`) are layer5 and layer7, the 16x16 and 32x32 convs; in general
the last conv at size / 16 and at size / 8 (at least 4 and 8). Each layer's output is its feature map, so
hooks and edits on it act on everything that follows, the to-RGB skip of its resolution included.

Options (constructor keywords and `configure`), all kept as buffers so that a run's fingerprint differs when
they do: `truncation` psi in [0, 1] (1: none); `noise` "fixed" (the stored maps `layer{n}.noise.fixed`, the
same for every sample), "random" (fresh maps per sample, seeded by a hash of that sample's latent, so a
sample draws the same noise in every batch, process and resumed run) or "zero"; `space` "z" (forward takes
z) or "w" (forward takes w, (batch, style_dim) or per layer (batch, n_latent, style_dim), used as given;
`sample_z` then maps seeded z through mapping and truncation); `clamp` (default True) clamps the image to
[-1, 1] as the port's image writer does, since StyleGAN2's raw images stray slightly beyond it.

With the same weights, unclamped images match the port's `Generator(...)(..., randomize_noise=False)` (run
with its CPU paths for upfirdn2d and the fused leaky ReLU) to a maximum absolute difference of 1.2e-6 on
64x64 and 256x256 models with random weights whose images span about [-1.8, 1.9] (truncation 0.7 and 1; per
layer w: at most 1.8e-5 on images ten times larger). Measured once in a scratch folder, not a test.

The mean w that truncation pulls toward is the checkpoint's `latent_avg` when it has one (files converted from
NVIDIA's pickles do: their `dlatent_avg`), else estimated from 4096 seeded z; `w_avg_source` says which.

Causal cuts: the layers above a cut depend on w and on the RGB skip accumulated below it, so there is no
`forward_from(layer, features)`: `causal.cut.Cut` reruns the whole generator with the layer's output
replaced, which is exact (tests check that it reproduces forward(z)) at the cost of the layers below the cut.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from gandissect.core.errors import ConfigError
from gandissect.core.sampling import CHUNK, standard_normal
from gandissect.models.stylegan2.layers import ConstantInput, MappingNetwork, StyledConv, ToRGB, Truncation

NOISE_MODES = ("fixed", "random", "zero")
SPACES = ("z", "w")
W_AVG_SAMPLES = 4096
W_AVG_SEED = 0


def stylegan2_channels(resolution: int, channel_multiplier: int = 2, max_channels: int = 512) -> int:
    """Feature channels at `resolution` in the port's config: 512 up to 32x32, then 16384 / r * multiplier."""
    return min(max_channels, 16384 // resolution * channel_multiplier)


def check_size(size: object) -> int:
    if not isinstance(size, int) or isinstance(size, bool) or size < 8 or size > 4096 or size & (size - 1):
        raise ConfigError(f"a StyleGAN2 resolution is a power of two from 8 to 4096; got {size!r}")
    return size


def resolutions(size: int) -> list[int]:
    """4, 8, ..., size."""
    return [2 ** k for k in range(2, int(math.log2(size)) + 1)]


class StyleGAN2Generator(nn.Module):
    """A StyleGAN2 generator with random weights; `forward(latent)` returns images (batch, 3, size, size).

    `channels` maps every resolution 4 .. size to its channel count (default: `stylegan2_channels`)."""

    output_range = (-1, 1)

    def __init__(self, size: int = 256, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 channels: Mapping[int, int] | None = None, *, truncation: float = 1.0, noise: str = "fixed",
                 space: str = "z", clamp: bool = True) -> None:
        super().__init__()
        self.size = check_size(size)
        if not all(isinstance(v, int) and v >= 1 for v in (style_dim, n_mlp, channel_multiplier)):
            raise ConfigError(f"style_dim, n_mlp and channel_multiplier must be positive whole numbers; "
                              f"got {style_dim!r}, {n_mlp!r}, {channel_multiplier!r}")
        widths = {r: stylegan2_channels(r, channel_multiplier) for r in resolutions(size)}
        self.channels = dict(channels) if channels is not None else widths
        if sorted(self.channels) != resolutions(size):
            raise ConfigError(f"channels must name every resolution {resolutions(size)}; got {sorted(self.channels)}")
        self.style_dim, self.n_mlp, self.z_dim = style_dim, n_mlp, style_dim
        self.mapping = MappingNetwork(style_dim, n_mlp)
        self.truncate = Truncation(style_dim)
        self.w_avg_source = "none yet: zero until a checkpoint's latent_avg or estimate_w_avg() sets it"
        self.const = ConstantInput(self.channels[4])
        self._build_synthesis()
        self.register_buffer("noise_mode", torch.tensor(0))
        self.register_buffer("w_input", torch.tensor(False))
        self.register_buffer("clamp_images", torch.tensor(True))
        self.configure(truncation=truncation, noise=noise, space=space, clamp=clamp)

    def _build_synthesis(self) -> None:
        """layer1 and rgb4, then for each doubling R: layer{2k} (upsampling), layer{2k+1}, rgb{R}."""
        self.layer_names: list[str] = []
        self.rgb_names: list[str] = []
        self.noise_sizes: list[int] = []
        width = self.channels[4]
        self._add_layer(StyledConv(width, width, self.style_dim, 4), 4)
        self._add_rgb(ToRGB(width, self.style_dim, upsample=False), 4)
        for resolution in resolutions(self.size)[1:]:
            wider, width = width, self.channels[resolution]
            self._add_layer(StyledConv(wider, width, self.style_dim, resolution, upsample=True), resolution)
            self._add_layer(StyledConv(width, width, self.style_dim, resolution), resolution)
            self._add_rgb(ToRGB(width, self.style_dim), resolution)
        self.n_latent = len(self.layer_names) + 1

    def _add_layer(self, module: StyledConv, resolution: int) -> None:
        self.layer_names.append(f"layer{len(self.layer_names) + 1}")
        self.noise_sizes.append(resolution)
        self.add_module(self.layer_names[-1], module)

    def _add_rgb(self, module: ToRGB, resolution: int) -> None:
        self.rgb_names.append(f"rgb{resolution}")
        self.add_module(self.rgb_names[-1], module)

    # --- options ------------------------------------------------------------------------------------------

    def configure(self, *, truncation: float | None = None, noise: str | None = None, space: str | None = None,
                  clamp: bool | None = None) -> StyleGAN2Generator:
        """Change any of the options (module docstring); returns the generator."""
        if truncation is not None:
            if not isinstance(truncation, int | float) or not 0 <= truncation <= 1:
                raise ConfigError(f"truncation psi must be a number from 0 to 1 (1: none); got {truncation!r}")
            self.truncate.psi.fill_(float(truncation))
        if noise is not None:
            if noise not in NOISE_MODES:
                raise ConfigError(f"noise must be one of {', '.join(NOISE_MODES)}; got {noise!r}")
            self.noise_mode.fill_(NOISE_MODES.index(noise))
        if space is not None:
            if space not in SPACES:
                raise ConfigError(f"space must be one of {', '.join(SPACES)}; got {space!r}")
            self.w_input.fill_(space == "w")
        if clamp is not None:
            self.clamp_images.fill_(bool(clamp))
        return self

    @property
    def truncation(self) -> float:
        return float(self.truncate.psi)

    @property
    def noise(self) -> str:
        return NOISE_MODES[int(self.noise_mode)]

    @property
    def space(self) -> str:
        return SPACES[int(self.w_input)]

    @property
    def clamp(self) -> bool:
        return bool(self.clamp_images)

    @property
    def default_layers(self) -> list[str]:
        """The last conv at size / 16 and at size / 8 (at least 4x4 and 8x8): layer5 and layer7 at 256."""
        high = max(8, self.size // 8)
        return [self.last_layer_at(max(4, high // 2)), self.last_layer_at(high)]

    def last_layer_at(self, resolution: int) -> str:
        """The name of the last synthesis layer at `resolution`."""
        return f"layer{2 * int(math.log2(resolution)) - 3}"

    def extra_repr(self) -> str:
        return (f"size={self.size}, style_dim={self.style_dim}, n_mlp={self.n_mlp}, truncation={self.truncation:g}, "
                f"noise={self.noise}, space={self.space}, clamp={self.clamp}")

    # --- latents ------------------------------------------------------------------------------------------

    def map_to_w(self, z: torch.Tensor) -> torch.Tensor:
        """Truncated w for z: the mapping network, then truncation."""
        return self.truncate(self.mapping(z))

    @torch.no_grad()
    def estimate_w_avg(self, samples: int = W_AVG_SAMPLES, seed: int = W_AVG_SEED) -> torch.Tensor:
        """Set `truncate.w_avg` to the mean w of `samples` seeded z (in float64, for checkpoints without a
        stored average) and say so in `w_avg_source`; returns it."""
        z = standard_normal((self.style_dim,), seed, torch.arange(samples)).double()
        mapping = self.mapping.to(torch.float64)
        try:
            mean = mapping(z.to(self.truncate.w_avg.device)).mean(0)
        finally:
            mapping.to(self.truncate.w_avg.dtype)
        self.truncate.w_avg.copy_(mean)
        self.w_avg_source = f"estimated: the mean w of {samples} z drawn with seed {seed} (the file has no latent_avg)"
        return self.truncate.w_avg

    @torch.no_grad()
    def sample_z(self, seed: int, indices: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Latents of samples `indices` of sample set `seed`, on the CPU: standard-normal z, or in w space the
        truncated w of those z (mapped a whole chunk of CHUNK samples at a time, so that a sample's w does not
        depend on which other samples are asked for)."""
        indices = torch.as_tensor(indices, dtype=torch.long).cpu()
        if self.space == "z":
            return standard_normal((self.style_dim,), seed, indices)
        out = torch.empty(len(indices), self.style_dim)
        chunks = torch.div(indices, CHUNK, rounding_mode="floor")
        device = self.truncate.w_avg.device
        for chunk in chunks.unique().tolist():
            z = standard_normal((self.style_dim,), seed, torch.arange(chunk * CHUNK, (chunk + 1) * CHUNK))
            w = self.map_to_w(z.to(device, self.truncate.w_avg.dtype)).float().cpu()
            where = chunks == chunk
            out[where] = w[indices[where] - chunk * CHUNK]
        return out

    def styles(self, latent: torch.Tensor) -> torch.Tensor:
        """The per-layer styles (batch, n_latent, style_dim) for a forward input (module docstring)."""
        dim = self.style_dim
        if latent.dim() == 4 and latent.shape[1:] == (dim, 1, 1):
            latent = latent.flatten(1)
        if latent.dim() == 2 and latent.shape[1] == dim:
            w = latent if self.space == "w" else self.map_to_w(latent)
            return w[:, None, :].expand(-1, self.n_latent, -1)
        if self.space == "w" and latent.dim() == 3 and latent.shape[1:] == (self.n_latent, dim):
            return latent
        per_layer = f" or w per layer ({self.n_latent}, {dim})" if self.space == "w" else ""
        raise ConfigError(f"the StyleGAN2 generator (space {self.space}) takes {self.space} of shape "
                          f"(batch, {dim}){per_layer}; got {tuple(latent.shape)}")

    def noise_inputs(self, latent: torch.Tensor) -> list[torch.Tensor | None]:
        """The noise map of each layer for this batch, by the `noise` option."""
        if self.noise == "zero":
            return [None] * len(self.layer_names)
        if self.noise == "fixed":
            return [getattr(self, name).noise.fixed for name in self.layer_names]
        rows = latent.detach().float().cpu().reshape(latent.shape[0], -1)
        drawn = [self._seeded_noise(row) for row in rows]
        return [torch.stack([maps[i] for maps in drawn]).to(latent.device, self.const.input.dtype)
                for i in range(len(self.layer_names))]

    def _seeded_noise(self, row: torch.Tensor) -> list[torch.Tensor]:
        """One sample's noise maps, drawn from a generator seeded by a hash of its latent's bytes."""
        digest = hashlib.blake2b(row.contiguous().numpy().tobytes(), digest_size=8).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2 ** 63 - 1))
        return [torch.randn(1, size, size, generator=generator) for size in self.noise_sizes]

    # --- synthesis ----------------------------------------------------------------------------------------

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        w = self.styles(latent)
        noises = self.noise_inputs(latent)
        x = self.layer1(self.const(w), w[:, 0], noises[0])
        skip = self.rgb4(x, w[:, 1])
        for block, name in enumerate(self.rgb_names[1:]):
            first = 2 * block + 1  # index of the block's upsampling layer: layer{first + 1}
            x = getattr(self, self.layer_names[first])(x, w[:, first], noises[first])
            x = getattr(self, self.layer_names[first + 1])(x, w[:, first + 1], noises[first + 1])
            skip = getattr(self, name)(x, w[:, first + 2], skip)
        return skip.clamp(-1, 1) if self.clamp else skip
