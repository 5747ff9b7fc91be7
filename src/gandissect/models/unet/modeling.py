"""UNet segmenter: image in [-1, 1] -> per-pixel concept logits at the image's size."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class SegmenterConfig:
    """Number of output classes and the channel widths of each resolution level (finest first)."""

    num_classes: int = 12
    widths: tuple[int, ...] = (24, 48, 96, 128)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SegmenterConfig:
        return cls(num_classes=int(data["num_classes"]), widths=tuple(data["widths"]))


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNetSegmenter(nn.Module):
    """Encoder-decoder with skip connections; the image side must be divisible by 2 ** (levels - 1)."""

    def __init__(self, config: SegmenterConfig | None = None) -> None:
        super().__init__()
        self.config = config or SegmenterConfig()
        widths = self.config.widths
        self.down = nn.ModuleList()
        c_in = 3
        for w in widths:
            self.down.append(_conv_block(c_in, w))
            c_in = w
        self.up = nn.ModuleList(
            _conv_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(len(widths) - 1))
        )
        self.head = nn.Conv2d(widths[0], self.config.num_classes, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        skips = []
        x = image
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([x, skip], 1))
        return self.head(x)
