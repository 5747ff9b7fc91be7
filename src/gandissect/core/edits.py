"""Unit edits: ablate or insert chosen units of one layer, optionally only inside a region.

    edit = UnitEdit.ablate([12, 40], region=box)            # box: a (64, 64) mask at image size
    with Trace(generator, edit={"layer4": edit}):
        image = generator(z)

On the chosen channels the layer output r becomes r + alpha * m * (k - r), where k is the inserted value
(0 ablates), alpha the strength in [0, 1] and m the region resized to the layer's grid (1 everywhere when
there is no region). It is computed with `torch.lerp`, which is exact at both ends: where alpha * m is 0 the
output is bit-exact, where it is 1 it is exactly k; every other channel is left bit-exact too. The edit is out
of place and differentiable, so gradients reach `alpha` and `value` (to optimise an edit by SGD).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from gandissect.core.errors import ConfigError, ShapeError
from gandissect.core.features import as_region, resize_region

Units = Sequence[int] | torch.Tensor


def _as_units(units: Units | int) -> torch.Tensor:
    """Unit indices as a 1-D long tensor on the CPU; refuses non-integers, negatives and repeats."""
    tensor = torch.as_tensor(units).reshape(-1) if isinstance(units, int) else torch.as_tensor(units)
    if tensor.numel() == 0 and tensor.dim() == 1:
        return torch.zeros(0, dtype=torch.long)
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise ConfigError(f"units must be integer channel indices, got dtype {tensor.dtype}")
    if tensor.dim() != 1:
        raise ConfigError(f"units must be a sequence or 1-D tensor of channel indices, got shape {tuple(tensor.shape)}")
    tensor = tensor.long().cpu()
    if tensor.numel() and int(tensor.min()) < 0:
        raise ConfigError(f"units must be non-negative channel indices, got {int(tensor.min())}")
    if tensor.unique().numel() != tensor.numel():
        raise ConfigError(f"units must be unique, got {tensor.tolist()}")
    return tensor


def _check_alpha(alpha: float | torch.Tensor, count: int) -> None:
    if isinstance(alpha, torch.Tensor):
        if alpha.dim() > 1 or alpha.numel() not in (1, count):
            raise ShapeError(f"alpha must be a scalar or have shape ({count},), one per unit, got {tuple(alpha.shape)}")
        if not alpha.is_floating_point():
            raise ConfigError(f"alpha must hold floats in [0, 1], got dtype {alpha.dtype}")
        with torch.no_grad():
            bad = alpha[(alpha < 0) | (alpha > 1) | alpha.isnan()]
        if bad.numel():
            raise ConfigError(f"alpha must lie in [0, 1], got {bad.reshape(-1)[0].item()}")
    elif not (isinstance(alpha, int | float) and 0.0 <= alpha <= 1.0) or math.isnan(alpha):
        raise ConfigError(f"alpha must be a float in [0, 1], got {alpha!r}")


def _per_unit(tensor: torch.Tensor, like: torch.Tensor, count: int) -> torch.Tensor:
    """`tensor` on `like`'s device and dtype; a 1-D tensor of one entry per unit is shaped (1, U, 1, ...)."""
    tensor = tensor.to(device=like.device, dtype=like.dtype)
    if tensor.dim() == 1 and tensor.numel() == count:
        return tensor.reshape(1, count, *[1] * (like.dim() - 2))
    return tensor


@dataclass(frozen=True, eq=False)
class UnitEdit:
    """Move `units` of a layer's output towards `value` by `alpha`, inside `region` (None: everywhere).

    `value`: a float, one value per unit (U,), or any tensor broadcastable to (N, U, h, w).
    `alpha`: a float or a tensor, scalar or (U,), in [0, 1]; it may require grad.
    `region`: (H, W), (N, H, W) or (N, 1, H, W) in [0, 1] at any resolution, resized to the layer's grid
    when applied: soft gives each cell its covered fraction, hard rounds coverage at 0.5 to 0 or 1.
    """

    units: Units
    value: float | torch.Tensor = 0.0
    alpha: float | torch.Tensor = 1.0
    region: torch.Tensor | None = None
    soft: bool = True

    def __post_init__(self) -> None:
        units = _as_units(self.units)
        object.__setattr__(self, "units", units)
        _check_alpha(self.alpha, units.numel())
        if not isinstance(self.value, torch.Tensor | int | float) or isinstance(self.value, bool):
            raise ConfigError(f"value must be a float or a tensor, got {type(self.value).__name__}")
        if isinstance(self.value, torch.Tensor) and not self.value.is_floating_point():
            raise ConfigError(f"value must hold floats, got dtype {self.value.dtype}")
        if self.region is not None:
            as_region(self.region)

    @classmethod
    def ablate(cls, units: Units, region: torch.Tensor | None = None, alpha: float | torch.Tensor = 1.0, *,
               soft: bool = True) -> UnitEdit:
        """Switch `units` off (towards 0) inside `region`."""
        return cls(units, 0.0, alpha, region, soft)

    @classmethod
    def insert(cls, units: Units, value: float | torch.Tensor, region: torch.Tensor | None = None,
               alpha: float | torch.Tensor = 1.0, *, soft: bool = True) -> UnitEdit:
        """Switch `units` on (towards `value`, e.g. a high quantile of their activations) inside `region`."""
        return cls(units, value, alpha, region, soft)

    def apply(self, output: torch.Tensor, layer: str = "") -> torch.Tensor:
        """The edited copy of `output` (N, C, ...); `layer` names the layer in error messages."""
        where = f"layer {layer!r}" if layer else "the edited output"
        if not isinstance(output, torch.Tensor) or output.dim() < 2:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ShapeError(f"a unit edit needs an output (N, C, ...) with channels, but {where} gave {shape}")
        units = torch.as_tensor(self.units)
        channels = output.shape[1]
        if units.numel() == 0:
            return output
        if int(units.max()) >= channels:
            raise ShapeError(f"unit {int(units.max())} is out of range: {where} has {channels} channels "
                             f"(units 0 to {channels - 1})")
        index = units.to(output.device)
        selected = output.index_select(1, index)
        target = self._target(selected, where)
        weight = _per_unit(self.alpha, selected, units.numel()) if isinstance(self.alpha, torch.Tensor) else self.alpha
        if self.region is not None:
            weight = weight * self._mask(self.region, selected, where)
        return output.index_copy(1, index, torch.lerp(selected, target, weight))

    __call__ = apply

    def _target(self, selected: torch.Tensor, where: str) -> torch.Tensor:
        if not isinstance(self.value, torch.Tensor):
            return torch.tensor(float(self.value), dtype=selected.dtype, device=selected.device)
        value = _per_unit(self.value, selected, selected.shape[1])
        try:
            fits = torch.broadcast_shapes(value.shape, selected.shape) == selected.shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ShapeError(f"value of shape {tuple(self.value.shape)} does not fit the edited units of {where}: "
                             f"expected one value per unit ({selected.shape[1]},) or a tensor broadcastable to "
                             f"{tuple(selected.shape)}")
        return value

    def _mask(self, region: torch.Tensor, selected: torch.Tensor, where: str) -> torch.Tensor:
        if selected.dim() != 4:
            raise ShapeError(f"a region needs a feature map (N, C, h, w), but {where} gave {tuple(selected.shape)}")
        mask = resize_region(region, tuple(selected.shape[-2:]), self.soft)
        if mask.shape[0] not in (1, selected.shape[0]):
            raise ShapeError(f"region of shape {tuple(region.shape)} holds {mask.shape[0]} masks, but {where} "
                             f"has a batch of {selected.shape[0]}: give one mask (H, W) or one per sample")
        return mask.to(device=selected.device, dtype=selected.dtype)
