"""Realism signals for generated images, offline: distances to real images in a feature space, and a
discriminator's score split over image patches. Used by `artifacts` to find units that draw unrealistic
things; a user may bring their own feature extractor."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gandissect.core.errors import ConfigError
from gandissect.core.segmenters import Segmenter, check_labels
from gandissect.core.stats import Moments, register_statistic

Features = Callable[[torch.Tensor], torch.Tensor]
"""images (N, 3, H, W) -> features (N, D)."""
Realism = Callable[[torch.Tensor], torch.Tensor]
"""images (N, 3, H, W) -> realism scores (N,), higher = more real."""
PatchRealism = Callable[[torch.Tensor], torch.Tensor]
"""images (N, 3, H, W) -> realism map (N, h, w), higher = more real."""


def neighbour_radii(real: torch.Tensor, k: int = 3, chunk: int = 1024) -> torch.Tensor:
    """(M,) each real feature row's distance to its k-th nearest other row."""
    real = torch.as_tensor(real).double()
    if not 0 < k < len(real):
        raise ConfigError(f"k must lie in 1..{len(real) - 1} (real rows - 1); got {k}")
    radii = [torch.cdist(real[i:i + chunk], real).topk(k + 1, dim=1, largest=False).values[:, k]
             for i in range(0, len(real), chunk)]
    return torch.cat(radii)


def nearest_real_ratio(features: torch.Tensor, real: torch.Tensor, radii: torch.Tensor | None = None, k: int = 3,
                       chunk: int = 1024) -> torch.Tensor:
    """(N,) min over real rows r of ||f - r|| / radius_r, radius_r = `neighbour_radii(real, k)` (radii below
    1e-12 count as 1e-12): at most 1 inside some real row's neighbourhood, large off the real manifold."""
    real = torch.as_tensor(real).double()
    radii = (neighbour_radii(real, k) if radii is None else radii).double().clamp(min=1e-12)
    features = torch.as_tensor(features).double()
    return torch.cat([(torch.cdist(features[i:i + chunk], real) / radii[None]).amin(1)
                      for i in range(0, len(features), chunk)])


@register_statistic
class FeatureMoments(Moments):
    """Count, mean (D,) and co-moment matrix (D, D) of feature rows, float64, merged with Chan's update."""

    def __init__(self, dim: int, device: torch.device | str = "cpu") -> None:
        super().__init__(dim, device)
        self.m2 = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def add(self, features: torch.Tensor) -> None:
        rows = features.detach().to(self.mean.device, torch.float64)
        if rows.dim() != 2 or rows.shape[1] != self.mean.shape[0]:
            raise ValueError(f"features must be (N, {self.mean.shape[0]}), got {tuple(rows.shape)}")
        if len(rows) == 0:
            return
        mean = rows.mean(0)
        centred = rows - mean
        self._combine(torch.tensor(float(len(rows)), dtype=torch.float64, device=self.mean.device), mean,
                      centred.T @ centred)

    @staticmethod
    def _spread(delta: torch.Tensor) -> torch.Tensor:
        return torch.outer(delta, delta)

    def gaussian(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and unbiased covariance of the rows added."""
        return self.mean, self.m2 / (self.count - 1).clamp(min=1)


# --- feature extractors and realism scorers -------------------------------------------------------------------------

def concept_features(segmenter: Segmenter, grid: int = 1) -> Features:
    """Per image, each concept's area in percent (0-100) in each cell of a grid x grid split of the image,
    (N, C * grid * grid): soft areas from the segmenter's `concept_scores` when it has them, else the share of
    pixels labelled with the concept (any label channel; what the Frechet Segmentation Distance uses)."""
    if grid < 1:
        raise ConfigError(f"grid must be a positive number of cells per side; got {grid}")
    num = len(segmenter.concepts)
    soft = callable(getattr(segmenter, "concept_scores", None))

    def extract(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if soft:
                maps = segmenter.concept_scores(images).float()  # type: ignore[attr-defined]
            else:
                labels = check_labels(segmenter.segment(images), images, num, type(segmenter).__name__)
                maps = torch.zeros(labels.shape[0], num + 1, *labels.shape[-2:], device=labels.device)
                for k in range(labels.shape[1]):
                    maps.scatter_(1, labels[:, k:k + 1].clamp(min=-1) + 1, 1.0)
                maps = maps[:, 1:]
            return F.adaptive_avg_pool2d(maps, grid).flatten(1) * 100

    return extract


def linear_head_patches(discriminator: nn.Module) -> PatchRealism:
    """The realism logit of a discriminator made of a convolutional trunk `features` and a linear `head` over
    its flattened (N, C, h, w) output, split over the trunk's h x w positions: map[n, i, j] = sum_c
    head.weight[c, i, j] * trunk[n, c, i, j], so that map.sum((1, 2)) + head.bias is the logit. Put the
    discriminator in eval mode first (a spectral norm in training mode would take a power step per call)."""
    trunk, head = getattr(discriminator, "features", None), getattr(discriminator, "head", None)
    if not isinstance(trunk, nn.Module) or not isinstance(head, nn.Linear) or head.out_features != 1:
        raise ConfigError(f"{type(discriminator).__name__} has no convolutional `features` trunk and linear `head` "
                          "with one output: give a patch realism function of your own")

    def patches(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            maps = trunk(images)
            head(maps.flatten(1)[:1])  # lets a spectral norm hook compute the weight it uses
            weight = head.weight.reshape(maps.shape[1:])
            return (maps * weight[None]).sum(1)

    return patches
