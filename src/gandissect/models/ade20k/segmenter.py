"""An ADE20K scene parser (a Hugging Face SegFormer or UperNet) as a gandissect segmenter.

The resolution follows GAN Dissection for its 256x256 generated images: its default segmenter
(`UnifiedParsingSegmenter(segsizes=[256], segdiv='quad')`, CSAILVision/gandissect netdissect/__main__.py and
dissection.py's GeneratorSegRunner) parses each image at 256x256 (`segsizes=[256]`) and is asked for labels at
half the image's size (`segment_batch(images, downsample=2)`: 128x128 labels for 256x256 images). Here
`input_size=256` and `downsample=2` are the defaults; the dissector upsamples unit activations to the label size.
Images are resized to the input size bilinearly (GAN Dissection average-pooled), and the network's logits
(SegFormer's come out at a quarter of the input size) are resized bilinearly to the label size before any argmax,
so labels and `concept_scores` agree pixel for pixel.

This module needs no `transformers`: it wraps any network called as `network(pixel_values=x).logits`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PAPER_INPUT_SIZE = 256
"""GAN Dissection's `segsizes=[256]`."""
PAPER_DOWNSAMPLE = 2
"""GAN Dissection's `segment_batch(..., downsample=2)`."""


class ADE20KSegmenter(nn.Module):
    """Images (N, 3, H, W) in [-1, 1] -> ADE20K labels at (H // downsample, W // downsample).

    Label channels: channel 0 holds each pixel's best *object* class (the argmax over the object classes only);
    when the model declares part classes, channel 1 holds the pixel's class where the overall argmax is a part
    (window, door, ...) and -1 elsewhere. So a window pixel on a building is labelled window (channel 1) and
    building, or whichever object scores best under it (channel 0). Without part classes there is one channel,
    the plain argmax. `concept_scores` is the softmax over all classes, differentiable in the images.
    """

    def __init__(self, network: nn.Module, concepts: Sequence[str], categories: Sequence[str], *,
                 input_size: int = PAPER_INPUT_SIZE, downsample: int = PAPER_DOWNSAMPLE,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 pixel_scale: float = 1.0) -> None:
        """`mean`, `std` and `pixel_scale` are the network's input normalisation: an image x in [0, 1] is fed
        as (x * pixel_scale - mean) / std (pixel_scale is 255 * rescale_factor for a Hugging Face processor)."""
        super().__init__()
        if len(concepts) != len(categories):
            raise ValueError(f"{len(concepts)} concepts but {len(categories)} categories")
        self.network = network.eval().requires_grad_(False)  # a fixed instrument: gradients reach images only
        self.concepts = list(concepts)
        self.categories = list(categories)
        self.input_size = int(input_size)
        self.downsample = int(downsample)
        self.pixel_scale = float(pixel_scale)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        parts = torch.tensor([c == "part" for c in self.categories])
        self.register_buffer("is_part", parts, persistent=False)
        self.has_parts = bool(parts.any())

    def label_size(self, images: torch.Tensor) -> tuple[int, int]:
        """The (height, width) of the labels and scores for `images`."""
        height, width = images.shape[-2:]
        return max(1, height // self.downsample), max(1, width // self.downsample)

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """The network's input: [-1, 1] -> [0, 1], resized to input_size square, normalised (differentiable)."""
        x = (images.float() + 1) / 2
        size = (self.input_size, self.input_size)
        if tuple(x.shape[-2:]) != size:
            shrinking = x.shape[-2] > size[0] or x.shape[-1] > size[1]
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrinking)
        x = (x * self.pixel_scale - self.mean) / self.std
        parameter = next(self.network.parameters(), None)
        return x if parameter is None else x.to(parameter.dtype)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Per-class logits (N, C, H', W') at the label size, float32."""
        logits = self.network(pixel_values=self.pixel_values(images)).logits.float()
        if logits.shape[1] != len(self.concepts):
            raise ValueError(f"the network gave {logits.shape[1]} classes; the segmenter names {len(self.concepts)}")
        size = self.label_size(images)
        if tuple(logits.shape[-2:]) != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits

    def concept_scores(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H', W') class probabilities in [0, 1], differentiable in `images`."""
        return self.logits(images).softmax(1)

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """(N, K, H', W') int64 labels: K = 2 (objects, parts) when there are part classes, else 1."""
        logits = self.logits(images)
        best = logits.argmax(1)
        if not self.has_parts:
            return best[:, None]
        objects = logits.masked_fill(self.is_part[None, :, None, None], float("-inf")).argmax(1)
        parts = torch.where(self.is_part[best], best, torch.full_like(best, -1))
        return torch.stack([objects, parts], 1)
