"""A generator's output range: what overshoots it is clipped and counted; only what is far outside is refused.

Segmenters and pictures assume images in the generator's declared `output_range` (default (-1, 1)). Real
generators overshoot it now and then (ProGAN's linear to-RGB layer does), and a long run must not stop
partway for it. So, for every batch of images:
- NaN or infinite values are not this module's: the sample pass stops at once, naming the samples;
- in the first STRICT_BATCHES batches of a pass, values more than WILD of the range's width outside it are
  refused with the figures: the generator is not in that range at all, or declares the wrong one;
- every value outside the range is clipped to it and counted (`RangeCounts`: values, samples, the largest
  overshoot), so a run says how much it clipped (dissect.json, run.json, the report).
"""

from __future__ import annotations

from typing import Any

import torch

from gandissect.core.errors import GandissectError
from gandissect.core.stats import Statistic, register_statistic

WILD = 0.5
STRICT_BATCHES = 2


class RangeError(GandissectError):
    """Images far outside the generator's declared output range."""


def declared_range(generator: Any) -> tuple[float, float]:
    low, high = (float(v) for v in getattr(generator, "output_range", (-1.0, 1.0)))
    return low, high


def check_wild(seen_low: float, seen_high: float, low: float, high: float) -> None:
    """Refuse images whose values span [seen_low, seen_high], more than WILD of the range's width outside
    [low, high], with the figures."""
    margin = WILD * (high - low)
    if seen_low < low - margin or seen_high > high + margin:
        raise RangeError(
            f"the generator's images lie in [{seen_low:.3g}, {seen_high:.3g}], outside its declared range "
            f"[{low:g}, {high:g}] by more than {WILD:g} of its width: rescale its output, or declare "
            "`output_range` on the generator (smaller overshoots are clipped and counted)")


def clip_to_range(images: torch.Tensor, low: float, high: float, strict: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(images clipped to [low, high], per sample the number of values that were outside, the largest
    distance of a value outside the range); with `strict`, wild values are refused first (`check_wild`).
    Images inside the range (the usual case) cost one min-max pass."""
    seen_low, seen_high = (float(v) for v in torch.aminmax(images))
    if strict:
        check_wild(seen_low, seen_high, low, high)
    if seen_low >= low and seen_high <= high:
        return images, torch.zeros(images.shape[0], dtype=torch.int64, device=images.device), 0.0
    per_sample = ((images < low) | (images > high)).flatten(1).sum(1)
    return images.clamp(low, high), per_sample, max(low - seen_low, seen_high - high, 0.0)


@register_statistic
class RangeCounts(Statistic):
    """How many image values and samples were clipped to the output range [low, high], of how many, and the
    largest overshoot; merges by sums (and the largest of the largest)."""

    fields = ("low", "high", "values", "samples", "seen", "total", "largest")

    def __init__(self, low: float, high: float, device: torch.device | str = "cpu") -> None:
        self.low = torch.tensor(low, dtype=torch.float64, device=device)
        self.high = torch.tensor(high, dtype=torch.float64, device=device)
        for name in ("values", "samples", "seen", "total"):
            setattr(self, name, torch.zeros((), dtype=torch.int64, device=device))
        self.largest = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, per_sample: torch.Tensor, values_per_sample: int, largest: float) -> None:
        per_sample = per_sample.to(self.values.device)
        self.values += per_sample.sum()
        self.samples += (per_sample > 0).sum()
        self.seen += per_sample.numel()
        self.total += per_sample.numel() * values_per_sample
        self.largest = torch.clamp(self.largest, min=largest)

    def merge(self, other: RangeCounts) -> None:
        self._check_mergeable(other, "low", "high")
        for name in ("values", "samples", "seen", "total"):
            setattr(self, name, getattr(self, name) + getattr(other, name).to(self.values.device))
        self.largest = torch.maximum(self.largest, other.largest.to(self.largest.device))

    def to_json(self) -> dict[str, Any]:
        return {"declared": [float(self.low), float(self.high)], "clipped_values": int(self.values),
                "of_values": int(self.total),
                "clipped_samples": int(self.samples), "of_samples": int(self.seen),
                "largest_overshoot": float(self.largest)}

    def describe(self) -> str:
        """One line: how much was clipped."""
        low, high = float(self.low), float(self.high)
        if int(self.values) == 0:
            return f"no image value outside [{low:g}, {high:g}] in {int(self.seen)} samples"
        return (f"{int(self.values)} of {int(self.total)} image values ({int(self.values) / int(self.total):.2%}) in "
                f"{int(self.samples)} of {int(self.seen)} samples were outside [{low:g}, {high:g}] and clipped to it "
                f"(largest overshoot {float(self.largest):.3g})")
