"""Pictures of interventions: originals and edited images side by side, with a concept's pixels before and
after the edit."""

from __future__ import annotations

import numpy as np
import torch

from gandissect.core.images import grid, to_uint8

CONCEPT_COLOUR = (255, 230, 40)


def concept_overlay(images: torch.Tensor, present: torch.Tensor) -> np.ndarray:
    """Images (N, 3, H, W) darkened, with a concept's pixels (N, H', W' bool) painted bright on top."""
    pictures = (to_uint8(images).astype(np.float32) * 0.35).astype(np.uint8)
    if tuple(present.shape[-2:]) != tuple(images.shape[-2:]):
        present = torch.nn.functional.interpolate(present[:, None].float(), size=images.shape[-2:],
                                                  mode="nearest")[:, 0].bool()
    pictures[present.cpu().numpy()] = CONCEPT_COLOUR
    return pictures


def edit_figure(before: torch.Tensor, after: torch.Tensor, present_before: torch.Tensor | None = None,
                present_after: torch.Tensor | None = None) -> np.ndarray:
    """Rows: the original images, the edited images, and (with a concept) its pixels before and after."""
    rows = [to_uint8(before), to_uint8(after)]
    if present_before is not None and present_after is not None:
        rows += [concept_overlay(before, present_before), concept_overlay(after, present_after)]
    return grid(np.concatenate(rows), columns=before.shape[0])
