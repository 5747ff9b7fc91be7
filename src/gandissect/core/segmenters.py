"""Segmenters: images in, per-pixel concept labels out.

The protocol (see the README) is small. A segmenter has
- `concepts`: concept names, and `categories`: the category of each (object, part, material, color, ...);
- `segment(images)`: images (N, 3, H, W) float in [-1, 1] -> labels (N, K, H', W') integer, where each of
  the K label channels holds a concept index or -1 for "nothing"; several channels let concepts of different
  categories overlap (a window pixel is also a building pixel, and also blue);
- optionally `concept_scores(images)`: a differentiable (N, C, H', W') score in [0, 1] per concept, used by
  the causal tools.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from gandissect.core.errors import GandissectError


@runtime_checkable
class Segmenter(Protocol):
    concepts: Sequence[str]
    categories: Sequence[str]

    def segment(self, images: torch.Tensor) -> torch.Tensor: ...


class SegmenterOutputError(GandissectError, ValueError):
    """A segmenter returned labels of the wrong shape, dtype or range."""


def check_labels(labels: object, images: torch.Tensor, num_concepts: int, name: str = "segmenter") -> torch.Tensor:
    """Validate a segmenter's output against the protocol and return it as int64 (N, K, H, W)."""
    n = images.shape[0]
    expected = (f"an integer tensor of shape (N={n}, K, H, W) with values in [-1, {num_concepts - 1}] "
                "(or -2 for unknown)")
    if not isinstance(labels, torch.Tensor):
        raise SegmenterOutputError(f"{name}.segment returned {type(labels).__name__}; expected {expected}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.dtype.is_complex:
        raise SegmenterOutputError(f"{name}.segment returned dtype {labels.dtype}; expected {expected}")
    if labels.dim() == 3:
        labels = labels[:, None]
    if labels.dim() != 4 or labels.shape[0] != n:
        raise SegmenterOutputError(f"{name}.segment returned shape {tuple(labels.shape)}; expected {expected}")
    if labels.numel():
        low, high = int(labels.min()), int(labels.max())
        if low < -2 or high >= num_concepts:
            raise SegmenterOutputError(
                f"{name}.segment returned labels in [{low}, {high}]; expected {expected} "
                f"(it declares {num_concepts} concepts)"
            )
    return labels.long()


def check_segmenter(segmenter: object) -> tuple[list[str], list[str]]:
    """The segmenter's concepts and categories, refused in one line if they do not follow the protocol."""
    name = type(segmenter).__name__
    for attribute in ("concepts", "categories", "segment"):
        if not hasattr(segmenter, attribute):
            raise SegmenterOutputError(f"{name} has no `{attribute}`: see the segmenter protocol in the README")
    concepts, categories = list(segmenter.concepts), list(segmenter.categories)  # type: ignore[attr-defined]
    if len(concepts) != len(categories):
        raise SegmenterOutputError(f"{name} declares {len(concepts)} concepts but {len(categories)} categories")
    repeated = sorted({c for c in concepts if concepts.count(c) > 1})
    if repeated:
        raise SegmenterOutputError(f"{name} declares the concepts {repeated} more than once")
    if not concepts:
        raise SegmenterOutputError(f"{name} declares no concepts")
    return concepts, categories


class ModuleSegmenter(nn.Module):
    """Wraps a network that returns per-concept logits (N, C, H, W) as a one-channel segmenter."""

    def __init__(self, network: nn.Module, concepts: Sequence[str], categories: Sequence[str]) -> None:
        super().__init__()
        if len(concepts) != len(categories):
            raise ValueError(f"{len(concepts)} concepts but {len(categories)} categories")
        self.network = network.eval()
        self.concepts = list(concepts)
        self.categories = list(categories)

    def concept_scores(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images).softmax(1)

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images).argmax(1, keepdim=True)


# Prototype colours of Broden's colour category, in RGB [0, 1].
COLOR_PROTOTYPES: dict[str, tuple[float, float, float]] = {
    "red": (0.8, 0.1, 0.1),
    "orange": (0.95, 0.55, 0.1),
    "yellow": (0.95, 0.9, 0.2),
    "green": (0.2, 0.6, 0.2),
    "blue": (0.2, 0.4, 0.85),
    "purple": (0.5, 0.2, 0.65),
    "pink": (0.95, 0.6, 0.75),
    "brown": (0.45, 0.28, 0.12),
    "black": (0.05, 0.05, 0.05),
    "white": (0.95, 0.95, 0.95),
    "grey": (0.55, 0.55, 0.55),
}


def _opponent(rgb: torch.Tensor) -> torch.Tensor:
    """A cheap perceptual space: lightness and two opponent-colour axes, channel dimension 1."""
    r, g, b = rgb.unbind(1)
    lightness = 0.299 * r + 0.587 * g + 0.114 * b
    return torch.stack([lightness, (r - g) * 1.2, (r + g) / 2 - b], 1)


class ColorSegmenter(nn.Module):
    """Names each pixel's colour after the nearest of Broden's 11 colour prototypes; needs no model."""

    def __init__(self, temperature: float = 0.05) -> None:
        super().__init__()
        self.concepts = list(COLOR_PROTOTYPES)
        self.categories = ["color"] * len(self.concepts)
        self.temperature = temperature
        prototypes = torch.tensor(list(COLOR_PROTOTYPES.values()))
        self.register_buffer("prototypes", _opponent(prototypes[:, :, None, None])[:, :, 0, 0], persistent=False)

    def _distances(self, images: torch.Tensor) -> torch.Tensor:
        space = _opponent((images.float() + 1) / 2)
        return ((space[:, None] - self.prototypes[None, :, :, None, None]) ** 2).sum(2)

    def concept_scores(self, images: torch.Tensor) -> torch.Tensor:
        return (-self._distances(images) / self.temperature).softmax(1)

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> torch.Tensor:
        return self._distances(images).argmin(1, keepdim=True)


class MergedSegmenter(nn.Module):
    """Several segmenters side by side: concepts concatenated, label channels stacked."""

    def __init__(self, *parts: Segmenter) -> None:
        super().__init__()
        if not parts:
            raise ValueError("MergedSegmenter needs at least one segmenter")
        self.parts = list(parts)
        for i, part in enumerate(parts):
            if isinstance(part, nn.Module):
                self.add_module(f"part{i}", part)
        self.concepts: list[str] = []
        self.categories: list[str] = []
        self.offsets: list[int] = []
        for part in parts:
            clash = set(self.concepts) & set(part.concepts)
            if clash:
                raise SegmenterOutputError(f"merged segmenters name the concepts {sorted(clash)} more than once: merge "
                                           "segmenters with distinct concepts")
            self.offsets.append(len(self.concepts))
            self.concepts += list(part.concepts)
            self.categories += list(part.categories)

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> torch.Tensor:
        channels = []
        size = None
        for part, offset in zip(self.parts, self.offsets, strict=True):
            labels = check_labels(part.segment(images), images, len(part.concepts), type(part).__name__)
            if size is None:
                size = labels.shape[-2:]
            elif labels.shape[-2:] != size:
                labels = F.interpolate(labels.float(), size=size, mode="nearest").long()
            channels.append(torch.where(labels >= 0, labels + offset, labels))
        return torch.cat(channels, 1)

    def concept_scores(self, images: torch.Tensor) -> torch.Tensor:
        scores = []
        for part in self.parts:
            if not hasattr(part, "concept_scores"):
                raise TypeError(f"{type(part).__name__} offers no differentiable concept_scores")
            scores.append(part.concept_scores(images))
        size = scores[0].shape[-2:]
        return torch.cat([F.interpolate(s, size=size, mode="bilinear", align_corners=False)
                          if s.shape[-2:] != size else s for s in scores], 1)
