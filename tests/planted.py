"""A planted generator whose units provably draw known concepts, for dissection tests.

`features` has 5 units on an 8x8 grid. Units 0, 1, 2 mark the regions that the painter colours red,
green and blue (ColorSegmenter's prototypes) on a grey ground; units 3 and 4 are noise drawn from a
separate half of z, independent of the picture. Editing unit u's features edits the picture.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gandissect.core.segmenters import COLOR_PROTOTYPES

PLANTED = {0: "red", 1: "green", 2: "blue"}
DISTRACTORS = (3, 4)


class Painter(nn.Module):
    """Features (N, 5, 8, 8) -> image (N, 3, 32, 32) in [-1, 1]: unit u > 0.5 paints its colour."""

    def __init__(self) -> None:
        super().__init__()
        colours = torch.tensor([COLOR_PROTOTYPES[PLANTED[u]] for u in range(3)])
        self.register_buffer("colours", colours)
        self.register_buffer("ground", torch.tensor(COLOR_PROTOTYPES["grey"]))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        masks = F.interpolate((features[:, :3] > 0.5).float(), scale_factor=4, mode="nearest")
        image = self.ground[None, :, None, None].expand(features.shape[0], 3, 32, 32).clone()
        for u in range(3):
            image = torch.where(masks[:, u:u + 1] > 0, self.colours[u][None, :, None, None], image)
        return image * 2 - 1


class PlantedGenerator(nn.Module):
    z_dim = 16

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("region_weights", torch.randn(8, 4 * 16, generator=g))
        self.register_buffer("texture_weights", torch.randn(8, 3 * 64, generator=g))
        self.register_buffer("noise_weights", torch.randn(8, 2 * 64, generator=g))
        self.features = nn.Identity()
        self.output = Painter()

    def planted(self, z: torch.Tensor) -> torch.Tensor:
        """Units 0, 1, 2 (N, 3, 8, 8): textured regions that partition part of the grid."""
        n = z.shape[0]
        fields = (z[:, :8] @ self.region_weights).view(n, 4, 4, 4)
        owner = F.interpolate(fields, scale_factor=2, mode="nearest").argmax(1)
        texture = 1 + 0.2 * torch.tanh(z[:, :8] @ self.texture_weights).view(n, 3, 8, 8)
        return torch.stack([(owner == u).float() for u in range(3)], 1) * texture

    def noise(self, z: torch.Tensor) -> torch.Tensor:
        """Units 3, 4 (N, 2, 8, 8): noise from the other half of z."""
        return torch.relu(z[:, 8:16] @ self.noise_weights).view(z.shape[0], 2, 8, 8)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.output(self.features(torch.cat([self.planted(z), self.noise(z)], 1)))
