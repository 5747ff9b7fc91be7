"""Generator and discriminator of the shipped scene GAN.

The generator follows the paper's naming: `layer1` maps z to a 4x4 feature map, each further `layerN`
doubles the resolution, and `output` draws the RGB image. Hooking `layerN` gives its post-ReLU units.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class GeneratorConfig:
    """Shape of a scene GAN: z size, channels per layer (layer1 first) and discriminator widths."""

    z_dim: int = 128
    channels: tuple[int, ...] = (256, 128, 64, 32)
    disc_channels: tuple[int, ...] = (32, 64, 128, 256)

    @property
    def image_size(self) -> int:
        return 4 * 2 ** len(self.channels)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GeneratorConfig:
        return cls(
            z_dim=int(data["z_dim"]),
            channels=tuple(data["channels"]),
            disc_channels=tuple(data["disc_channels"]),
        )


def _upsample_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SceneGenerator(nn.Module):
    """z (N, z_dim) -> image (N, 3, S, S) in [-1, 1], with S = 4 * 2 ** len(channels)."""

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        super().__init__()
        self.config = config or GeneratorConfig()
        self.z_dim = self.config.z_dim
        chans = self.config.channels
        self.layer1 = nn.Sequential(
            nn.ConvTranspose2d(self.z_dim, chans[0], 4, bias=False),
            nn.BatchNorm2d(chans[0]),
            nn.ReLU(inplace=True),
        )
        for i in range(1, len(chans)):
            self.add_module(f"layer{i + 1}", _upsample_block(chans[i - 1], chans[i]))
        self.output = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(chans[-1], 3, 3, padding=1),
            nn.Tanh(),
        )

    @property
    def layer_names(self) -> list[str]:
        return [f"layer{i + 1}" for i in range(len(self.config.channels))] + ["output"]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z.reshape(z.shape[0], self.z_dim, 1, 1)
        for name in self.layer_names:
            x = getattr(self, name)(x)
        return x

    def forward_from(self, layer: str, features: torch.Tensor) -> torch.Tensor:
        """The image from `layer`'s output on: lets interventions skip the layers below the cut."""
        names = self.layer_names
        if layer not in names:
            raise KeyError(f"{layer!r} is not one of {names}")
        x = features
        for name in names[names.index(layer) + 1:]:
            x = getattr(self, name)(x)
        return x


class SceneDiscriminator(nn.Module):
    """image (N, 3, S, S) -> realism logit (N,); spectral-normalised strided convolutions."""

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        super().__init__()
        self.config = config or GeneratorConfig()
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in self.config.disc_channels:
            layers += [nn.utils.spectral_norm(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        side = self.config.image_size // 2 ** len(self.config.disc_channels)
        self.head = nn.utils.spectral_norm(nn.Linear(c_in * side * side, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image).flatten(1)).squeeze(1)
