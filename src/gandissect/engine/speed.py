"""Faster inference without changing a model's function.

Convolutions on a CPU run several times faster in channels-last (NHWC) memory format, where PyTorch uses
oneDNN: on scenes64, the segmenter 2.3x and the generator's upper layers 4.5x (batch 128). Outputs equal the
default format's up to float rounding (about 1e-5), so tools that run a model thousands of times
(interventions, the dissection) opt in.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def channels_last(*modules: Any) -> None:
    """Store the 4-D weights of every `nn.Module` among `modules` (and their parts) channels-last, in place;
    other ranks (StyleGAN2's 5-D modulated weights) stay as they are."""
    for module in modules:
        if isinstance(module, nn.Module):
            for tensor in [*module.parameters(), *module.buffers()]:
                if tensor.dim() == 4:
                    tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
