"""Prefix-stable seeded latent samples: sample i of a seed is the same whatever the total count.

A generator declares its latent size with `z_dim` (int) or `z_shape` (tuple). It may define
`sample_z(seed, indices)` to sample in its own way (a truncated or non-Gaussian prior); otherwise
z is standard normal, drawn in fixed chunks of CHUNK samples, each from its own seeded generator.
"""

from __future__ import annotations

import torch
from torch import nn

from gandissect.core.errors import GandissectError


class LatentSizeError(GandissectError, AttributeError):
    """A generator that does not say how large its latent is."""

CHUNK = 64


def latent_shape(generator: nn.Module) -> tuple[int, ...]:
    """The shape of one z, from the generator's `z_shape` or `z_dim` attribute."""
    shape = getattr(generator, "z_shape", None)
    if shape is not None:
        return tuple(int(s) for s in shape)
    dim = getattr(generator, "z_dim", None)
    if dim is None:
        raise LatentSizeError(
            f"{type(generator).__name__} declares no latent size: "
            "give it a `z_dim` (int) or `z_shape` (tuple) attribute"
        )
    return (int(dim),)


def standard_normal(shape: tuple[int, ...], seed: int, indices: torch.Tensor) -> torch.Tensor:
    """Rows `indices` of the endless seeded sequence of standard-normal samples of `shape`."""
    indices = indices.long().cpu()
    out = torch.empty((len(indices), *shape))
    chunks = torch.div(indices, CHUNK, rounding_mode="floor")
    for chunk in chunks.unique().tolist():
        block = torch.randn((CHUNK, *shape), generator=torch.Generator().manual_seed(seed * 1_000_003 + chunk))
        where = chunks == chunk
        out[where] = block[indices[where] - chunk * CHUNK]
    return out


def sample_z(generator: nn.Module, seed: int, indices: torch.Tensor | range) -> torch.Tensor:
    """Latents for sample `indices` of sample set `seed`, on the CPU."""
    indices = torch.as_tensor(list(indices) if isinstance(indices, range) else indices, dtype=torch.long)
    custom = getattr(generator, "sample_z", None)
    if callable(custom):
        return custom(seed, indices)
    return standard_normal(latent_shape(generator), seed, indices)
