"""Labelling rules: which concept a unit is named after, at which threshold, and how honest its IoU is.

Every rule gives, per (unit, concept), a threshold, the IoU and information-quality ratio (IQR) there,
a cross-fitted IoU, and a score that ranks concepts for the unit:
- `quantile`: one threshold per unit, its top-`quantile` activations (chosen on the threshold set); score IoU.
- `iqr`: per (unit, concept), the level maximising I(A;S)/H(A,S) (the paper's formula); score IQR (the
  paper's code labels by the highest IQR).
- `iqr-iou`: the same thresholds; score IoU.
- `-top-half` variants: only levels keeping at most half of the unit's pixels (as the paper's code reports).
- `-precise` variants: only levels whose mask lies mostly (at least half its pixels) inside the concept.
No rule uses a level whose mask keeps every pixel (that is no threshold), nor one whose mask is negatively
associated with the concept: I(A;S) is symmetric, so a unit that fires everywhere *but* the sky scores as high
an IQR with sky as a sky unit does (on scenes64, rule `iqr` named such ground units "sky" before this check).

Cross-fitting: the IoU sample set is split into folds by sample index. A per-(unit, concept) threshold is
chosen on one fold and its intersection and union are counted on the others, both ways; the cross-fitted
IoU is the summed intersections over the summed unions. For `quantile`, whose threshold does not depend on
the IoU set, it equals the in-sample IoU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gandissect.core.levels import LevelCounts, information_quality_ratio, iou_of

RULES: dict[str, str] = {
    "quantile": "highest IoU at the unit's top-quantile threshold (one threshold per unit, from the threshold set)",
    "iqr": "highest information-quality ratio, each concept at its own IQR-optimal threshold (the paper's code)",
    "iqr-iou": "highest IoU at per-(unit, concept) IQR-optimal thresholds (the paper's formula)",
    "iqr-top-half": "as iqr, thresholds restricted to those keeping at most half of the unit's pixels",
    "iqr-iou-top-half": "as iqr-iou, thresholds restricted to those keeping at most half of the unit's pixels",
    "iqr-precise": "as iqr, thresholds restricted to masks of which most pixels lie in the concept",
    "iqr-iou-precise": "as iqr-iou, thresholds restricted to masks of which most pixels lie in the concept",
}
RESTRICTIONS = {"": "none", "-top-half": "top-half", "-precise": "precise"}

Tables = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class RuleResult:
    """Per (unit, concept) (U, C): the chosen level, its threshold value, IoU, cross-fitted IoU, IQR, score."""

    level_index: torch.Tensor
    threshold: torch.Tensor
    iou: torch.Tensor
    crossfit_iou: torch.Tensor
    iqr: torch.Tensor
    score: torch.Tensor

    def labels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each unit's best score and concept (ties go to the lower concept index)."""
        return self.score.max(1)


def allowed_levels(tables: Tables, restriction: str) -> torch.Tensor:
    """(U, C, L) bool: the levels a rule may choose under `restriction` ('none', 'top-half', 'precise')."""
    n11, n10, n01, n00 = tables
    kept = n11 + n10
    total = kept + n01 + n00
    positive = n11 * total > kept * (n11 + n01)  # P(concept | mask) above P(concept): the IQR is blind to sign
    allowed = (kept < total) & (kept > 0) & positive
    if restriction == "top-half":
        allowed &= kept <= total / 2
    elif restriction == "precise":
        allowed &= n11 >= kept / 2
    elif restriction != "none":
        raise ValueError(f"unknown restriction {restriction!r}")
    return allowed


def best_levels(tables: Tables, iqr: torch.Tensor, restriction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (unit, concept): the allowed level of highest IQR, and whether any level was allowed."""
    allowed = allowed_levels(tables, restriction)
    best = torch.where(allowed, iqr, -1.0).argmax(-1)
    return best, allowed.any(-1)


def _pick(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return tensor.gather(-1, index[..., None])[..., 0]


def crossfit_iou(total: Tables, folds: list[tuple[Tables, torch.Tensor]], restriction: str) -> torch.Tensor:
    """IoU (U, C) of thresholds chosen on each fold (its tables and IQR) and counted on the other folds,
    pooled over folds."""
    intersection = torch.zeros_like(total[0][..., 0])
    union = torch.zeros_like(intersection)
    for mine, iqr in folds:
        best, valid = best_levels(mine, iqr, restriction)
        rest = [t - m for t, m in zip(total, mine, strict=True)]
        intersection += torch.where(valid, _pick(rest[0], best), 0.0)
        union += torch.where(valid, _pick(rest[0] + rest[1] + rest[2], best), 0.0)
    return torch.where(union > 0, intersection / union.clamp(min=1), 0.0)


def apply_rules(counts: LevelCounts, quantile_level: torch.Tensor) -> dict[str, RuleResult]:
    """Every rule of RULES on one layer's counts; `quantile_level` (U,) is the index of each unit's
    top-quantile threshold among its levels."""
    tables = counts.tables()
    iou, iqr = iou_of(*tables), information_quality_ratio(*tables)
    folds = [(t, information_quality_ratio(*t)) for t in (counts.tables(f) for f in range(counts.folds))]
    levels = counts.levels[:, None, :].expand_as(iou)
    results = {}
    index = quantile_level.to(iou.device)[:, None].expand(iou.shape[:2]).contiguous()
    quantile_iou = _pick(iou, index)
    results["quantile"] = RuleResult(index, _pick(levels, index), quantile_iou, quantile_iou, _pick(iqr, index),
                                     quantile_iou)
    for suffix, restriction in RESTRICTIONS.items():
        best, valid = best_levels(tables, iqr, restriction)
        chosen_iou = torch.where(valid, _pick(iou, best), 0.0)
        chosen_iqr = torch.where(valid, _pick(iqr, best), 0.0)
        fitted = crossfit_iou(tables, folds, restriction) if counts.folds > 1 else chosen_iou
        threshold = _pick(levels, best)
        results[f"iqr{suffix}"] = RuleResult(best, threshold, chosen_iou, fitted, chosen_iqr, chosen_iqr)
        results[f"iqr-iou{suffix}"] = RuleResult(best, threshold, chosen_iou, fitted, chosen_iqr, chosen_iou)
    return results


def baseline_iou(counts: LevelCounts) -> torch.Tensor:
    """(C,) IoU of a mask covering the whole image with each concept: the concept's share of the pixels.
    A unit is interpretable for a concept only if it beats this."""
    return counts.concept_area.sum(0).double() / counts.pixels.sum().double().clamp(min=1)
