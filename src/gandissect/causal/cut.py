"""A generator cut at a layer: features r = head(z), image x = tail(r).

Interventions change r and look at tail(r). A generator may offer `forward_from(layer, features)` to run
only the layers above the cut (the shipped scene GAN does); otherwise the whole generator runs again with
the layer's output replaced, which gives the same images at the cost of the layers below.
"""

from __future__ import annotations

import torch
from torch import nn

from gandissect.core.hooks import Trace, get_layer


class Cut:
    """`head(z)` -> the layer's output; `tail(r, z)` -> the image generated from features r."""

    def __init__(self, generator: nn.Module, layer: str) -> None:
        get_layer(generator, layer)
        self.generator, self.layer = generator, layer
        self._from = getattr(generator, "forward_from", None)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        with Trace(self.generator, [self.layer], stop=True) as trace:
            self.generator(z)
        return trace[self.layer]

    def tail(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if callable(self._from):
            return self._from(self.layer, features)
        with Trace(self.generator, edit={self.layer: lambda _: features}):
            return self.generator(z)
