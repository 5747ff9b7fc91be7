"""The Frechet distance between Gaussian fits of two feature sets (FID, FSD and their kin)."""

from __future__ import annotations

import torch


def _sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """Frechet distance between N(mu1, cov1) and N(mu2, cov2), in float64:
    ||mu1 - mu2||^2 + tr(cov1) + tr(cov2) - 2 tr(sqrt(cov1^1/2 cov2 cov1^1/2)) (symmetric eigendecompositions,
    tiny negative eigenvalues clamped to 0)."""
    mu1, mu2 = torch.as_tensor(mu1).double().reshape(-1), torch.as_tensor(mu2).double().reshape(-1)
    cov1, cov2 = torch.as_tensor(cov1).double(), torch.as_tensor(cov2).double()
    d = mu1.numel()
    cov1, cov2 = cov1.reshape(d, d), cov2.reshape(d, d)
    root1 = _sqrtm_psd(cov1)
    middle = root1 @ cov2 @ root1
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    value = ((mu1 - mu2) ** 2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * cross
    return max(float(value), 0.0)


def gaussian_fit(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of the rows of `features` (N, D), float64 (zero covariance
    for a single row)."""
    features = torch.as_tensor(features).double()
    d = features.shape[1]
    if len(features) < 2:
        return features.mean(0), torch.zeros(d, d, dtype=torch.float64)
    return features.mean(0), torch.cov(features.T).reshape(d, d)


def feature_frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    """The Frechet distance between Gaussian fits of two feature sets (N, D) and (M, D)."""
    return frechet_distance(*gaussian_fit(a), *gaussian_fit(b))
