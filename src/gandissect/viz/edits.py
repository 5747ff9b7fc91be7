"""Pictures of interventions: originals and edited images side by side, with a concept's pixels before and
after the edit, each row named and the edited region outlined."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from gandissect.core.images import grid, label_rows, to_uint8

CONCEPT_COLOUR = (255, 230, 40)
REGION_COLOUR = (0, 255, 255)


def concept_overlay(images: torch.Tensor, present: torch.Tensor) -> np.ndarray:
    """Images (N, 3, H, W) darkened, with a concept's pixels (N, H', W' bool) painted bright on top."""
    pictures = (to_uint8(images).astype(np.float32) * 0.35).astype(np.uint8)
    if tuple(present.shape[-2:]) != tuple(images.shape[-2:]):
        present = F.interpolate(present[:, None].float(), size=images.shape[-2:], mode="nearest")[:, 0].bool()
    pictures[present.cpu().numpy()] = CONCEPT_COLOUR
    return pictures


def region_outline(region: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """The boundary (H, W bool) of where `region` (at image or feature-grid size) is above 0, at image `size`:
    region pixels with a 4-neighbour outside the region or on the image's edge."""
    inside = F.interpolate(region.float()[None, None], size=size, mode="nearest")[0, 0] > 0
    padded = F.pad(inside[None, None].float(), (1, 1, 1, 1))[0, 0] > 0
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return (inside & ~interior).cpu().numpy()


def edit_figure(before: torch.Tensor, after: torch.Tensor, present_before: torch.Tensor | None = None,
                present_after: torch.Tensor | None = None, region: torch.Tensor | None = None,
                concept: str | None = None) -> np.ndarray:
    """Rows, named on the left: the original images, the edited images, and (with a concept) its pixels before
    and after; the edited `region` (a --box or --mask) is outlined on every image."""
    rows, names = [to_uint8(before), to_uint8(after)], ["original", "edited"]
    if present_before is not None and present_after is not None:
        rows += [concept_overlay(before, present_before), concept_overlay(after, present_after)]
        names += [f"{concept or 'concept'} before", f"{concept or 'concept'} after"]
    pictures = np.concatenate(rows)
    if region is not None:
        pictures[:, region_outline(region, tuple(before.shape[-2:]))] = REGION_COLOUR
    return label_rows(grid(pictures, columns=before.shape[0]), names, before.shape[-2])
