"""Quality metrics: segmenter accuracy on held-out scenes and the Fréchet Segmentation Distance of a generator.

- `segmenter_iou` renders held-out scenes of the procedural world, whose every pixel's concept is known, and
  reports the segmenter's per-concept intersection over union, summed over all pixels.
- `frechet_segmentation_distance` (FSD, as in the GAN Dissection paper) segments generated images and held-out
  rendered scenes with the same segmenter, fits a Gaussian to each set's per-image concept-area histograms and
  reports the Fréchet distance between the two Gaussians. Concept areas are in percent of the image (0-100),
  so the distance is on a readable scale: an FSD of 10 is roughly a few percent of the image per concept.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from gandissect.core.frechet import frechet_distance, gaussian_fit
from gandissect.core.images import from_uint8
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import Segmenter, check_labels
from gandissect.scenes import world

# Real scenes for the FSD are drawn from seeds HELD_OUT_SEEDS + REAL_SEED_OFFSET + i, apart from the
# scenes that `segmenter_iou` uses (HELD_OUT_SEEDS + i).
REAL_SEED_OFFSET = 100_000


def confusion_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class pixel counts (intersection, union), int64 of shape (num_classes,).

    Values of `pred` or `target` outside [0, num_classes) belong to no class (a pixel whose target is class c
    but whose prediction is out of range still counts in c's union).
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred has shape {tuple(pred.shape)} but target has shape {tuple(target.shape)}")
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    pred_ok = (pred >= 0) & (pred < num_classes)
    target_ok = (target >= 0) & (target < num_classes)
    area_pred = torch.bincount(pred[pred_ok], minlength=num_classes)
    area_target = torch.bincount(target[target_ok], minlength=num_classes)
    hit = target_ok & (pred == target)
    intersection = torch.bincount(target[hit], minlength=num_classes)
    return intersection, area_pred + area_target - intersection


def confusion_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class IoU over all pixels of integer label tensors: float64 (num_classes,), NaN where the union is 0."""
    intersection, union = confusion_counts(pred, target, num_classes)
    return _iou(intersection, union)


def _iou(intersection: torch.Tensor, union: torch.Tensor) -> torch.Tensor:
    iou = intersection.double() / union.double().clamp(min=1)
    return torch.where(union > 0, iou, torch.full_like(iou, float("nan")))


def _device_of(module: object) -> torch.device:
    if isinstance(module, nn.Module):
        for tensor in (*module.parameters(), *module.buffers()):
            return tensor.device
    return torch.device("cpu")


def _segment(segmenter: Segmenter, images: torch.Tensor) -> torch.Tensor:
    """Validated labels (N, K, H, W) int64 on the CPU at the images' size."""
    with torch.no_grad():
        labels = check_labels(segmenter.segment(images.to(_device_of(segmenter))), images, len(segmenter.concepts),
                              type(segmenter).__name__).cpu()
    if labels.shape[-2:] != images.shape[-2:]:
        labels = nn.functional.interpolate(labels.float(), size=images.shape[-2:], mode="nearest").long()
    return labels


def segmenter_iou(segmenter: Segmenter, count: int = 2000, size: int = 64, batch_size: int = 100) -> dict[str, Any]:
    """IoU of `segmenter` on `count` held-out rendered scenes (seeds `HELD_OUT_SEEDS + i`).

    The segmenter's first label channel is compared with the ground truth; its concepts are matched to the
    world's concepts by name (others count as wrong). Returns {"per_concept": {name: iou or None},
    "mean_iou": mean over concepts that occur, "count": count}.
    """
    from gandissect.scenes.training import HELD_OUT_SEEDS

    num = len(world.CONCEPTS)
    lookup = torch.tensor([world.CONCEPT_INDEX.get(name, -1) for name in segmenter.concepts] + [-1])
    intersection = torch.zeros(num, dtype=torch.long)
    union = torch.zeros(num, dtype=torch.long)
    with tqdm(total=count, desc="segmenter iou", unit="img") as bar:
        for start in range(0, count, batch_size):
            stop = min(start + batch_size, count)
            pictures, labels = world.render_batch(range(HELD_OUT_SEEDS + start, HELD_OUT_SEEDS + stop), size)
            pred = _segment(segmenter, from_uint8(pictures))[:, 0]
            pred = lookup[torch.where(pred >= 0, pred, len(segmenter.concepts))]
            i, u = confusion_counts(pred, torch.from_numpy(labels).long(), num)
            intersection += i
            union += u
            bar.update(stop - start)
    iou = _iou(intersection, union)
    per_concept = {name: (None if np.isnan(v) else float(v)) for name, v in zip(world.CONCEPTS, iou.tolist(),
                                                                                 strict=True)}
    present = iou[~iou.isnan()]
    return {"per_concept": per_concept, "mean_iou": float(present.mean()) if len(present) else float("nan"),
            "count": count}


def concept_area_histograms(labels: torch.Tensor, num_concepts: int) -> torch.Tensor:
    """Fraction (0-1) of each image's pixels labelled with each concept, float (N, num_concepts).

    `labels` is (N, K, H, W) (or (N, H, W)) integer; a pixel counts once per concept whatever channel names it;
    values outside [0, num_concepts), such as -1, count for no concept.
    """
    if labels.dim() == 3:
        labels = labels[:, None]
    n, _, h, w = labels.shape
    flat = labels.long().reshape(n, -1, h * w)
    present = torch.zeros(n, num_concepts + 1, h * w, dtype=torch.bool, device=labels.device)
    index = torch.where((flat >= 0) & (flat < num_concepts), flat, num_concepts)
    for k in range(flat.shape[1]):
        present.scatter_(1, index[:, k:k + 1], True)
    return present[:, :num_concepts].float().mean(2)


def _real_histograms(segmenter: Segmenter, first_seed: int, count: int, size: int, batch_size: int,
                     bar: tqdm) -> torch.Tensor:
    """Concept-area histograms (count, C) of rendered scenes of seeds first_seed, first_seed + 1, ..."""
    parts = []
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        pictures = world.render_batch(range(first_seed + start, first_seed + stop), size)[0]
        parts.append(concept_area_histograms(_segment(segmenter, from_uint8(pictures)), len(segmenter.concepts)))
        bar.update(stop - start)
    return torch.cat(parts)


def frechet_segmentation_distance(generator: nn.Module, segmenter: Segmenter, count: int = 2000,
                                  batch_size: int = 100, seed: int = 0) -> dict[str, Any]:
    """Fréchet Segmentation Distance between `count` generated images and `count` held-out rendered scenes.

    Generated images come from z = `sample_z(generator, seed, range(count))`; real ones are scenes of seeds
    `HELD_OUT_SEEDS + REAL_SEED_OFFSET + i`, rendered at the generator's output size. Both are segmented by
    `segmenter`, each image summarised by its concept areas in percent (0-100), and the distance is taken
    between Gaussian fits of the two sets of histograms. As a yardstick, `fsd_real_reference` is the same
    distance between two disjoint sets of `count` real scenes (sampling noise alone). Also reports
    per-concept mean areas (percent) and the relative difference (generated - real) / real (None where the
    concept never appears in real scenes).
    """
    from gandissect.scenes.training import HELD_OUT_SEEDS

    num = len(segmenter.concepts)
    device = _device_of(generator)
    generated = []
    first = HELD_OUT_SEEDS + REAL_SEED_OFFSET
    with tqdm(total=3 * count, desc="fsd", unit="img") as bar:
        size = 64
        for start in range(0, count, batch_size):
            stop = min(start + batch_size, count)
            z = sample_z(generator, seed, range(start, stop)).to(device)
            with torch.no_grad():
                images = generator(z).float().cpu()
            size = images.shape[-1]
            generated.append(concept_area_histograms(_segment(segmenter, images), num))
            bar.update(stop - start)
        real_hist = _real_histograms(segmenter, first, count, size, batch_size, bar) * 100
        other_hist = _real_histograms(segmenter, first + count, count, size, batch_size, bar) * 100
    gen_hist = torch.cat(generated) * 100
    mu_g, cov_g = gaussian_fit(gen_hist)
    mu_r, cov_r = gaussian_fit(real_hist)
    per_concept = {}
    for name, g, r in zip(segmenter.concepts, mu_g.tolist(), mu_r.tolist(), strict=True):
        per_concept[name] = {"generated_percent": g, "real_percent": r,
                             "relative_difference": (g - r) / r if r > 0 else None}
    return {"fsd": frechet_distance(mu_g, cov_g, mu_r, cov_r),
            "fsd_real_reference": frechet_distance(*gaussian_fit(other_hist), mu_r, cov_r),
            "count": count, "seed": seed, "units": "concept areas in percent of the image",
            "per_concept": per_concept}
