"""The settings of a dissection: everything that determines its numbers, checked before any work."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from gandissect.core.errors import ConfigError
from gandissect.dissection.labels import RULES

# Settings that change how results are read, not the statistics: a run may be resumed with other values.
PRESENTATION_FIELDS = ("checkpoint_every", "min_iou", "min_iqr", "label_method")
PASSES = {
    "auto": "one pass when its slot histograms fit in a quarter of the free memory, else two",
    "one": "thresholds, levels and IoU from one pass over the IoU set (slot histograms per unit and concept)",
    "two": "thresholds and levels from the threshold set, IoU from a second pass over the IoU set",
}


@dataclass
class DissectConfig:
    """A dissection's settings; the run folder records them and refuses to resume with others."""

    layers: list[str]
    samples: int = 1000
    batch_size: int = 32
    quantile: float = 0.01
    threshold_seed: int = 2
    iou_seed: int = 1
    levels: int = 256
    bins: int = 4096
    folds: int = 2
    topk: int = 12
    seg_size: int | None = None
    min_iou: float = 0.05
    min_iqr: float = 0.01
    label_method: str = "quantile"
    checkpoint_every: int = 8
    passes: str = "two"
    """'auto', 'one' or 'two' (PASSES). The API keeps two passes unless asked, so that scripts keep their
    numbers; `gandissect dissect` runs 'auto'."""

    def __post_init__(self) -> None:
        self.layers = list(self.layers)
        if not self.layers:
            raise ConfigError("choose at least one layer to dissect (--layers)")
        repeated = sorted({name for name in self.layers if self.layers.count(name) > 1})
        if repeated:
            raise ConfigError(f"--layers names {', '.join(repeated)} more than once")
        if not 0 < self.quantile < 1:
            raise ConfigError(f"--quantile is the top fraction of activations, in (0, 1); got {self.quantile}")
        for flag, value in (("--samples", self.samples), ("--batch-size", self.batch_size), ("--topk", self.topk),
                            ("checkpoint_every", self.checkpoint_every)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{flag} must be a positive whole number; got {value}")
        if self.seg_size is not None and self.seg_size < 1:
            raise ConfigError(f"--seg-size must be a positive number of pixels; got {self.seg_size}")
        for flag, value in (("--min-iou", self.min_iou), ("--min-iqr", self.min_iqr)):
            if not 0 <= value <= 1:
                raise ConfigError(f"{flag} is a ratio in [0, 1]; got {value}")
        if self.label_method not in RULES:
            raise ConfigError(f"--label-method must be one of {', '.join(RULES)}; got {self.label_method!r}")
        if self.passes not in PASSES:
            raise ConfigError(f"--passes must be one of {', '.join(PASSES)}; got {self.passes!r}")
        if self.threshold_seed == self.iou_seed:
            raise ConfigError("--threshold-seed and --iou-seed must differ: thresholds and IoU use separate samples")
        if self.levels < 2 or self.bins < 16 or self.folds < 1:
            raise ConfigError("levels must be at least 2, bins at least 16 and folds at least 1")

    def numbers_key(self) -> dict[str, Any]:
        """The fields that determine the statistics (a resumed run must match them)."""
        key = asdict(self)
        for name in PRESENTATION_FIELDS:
            key.pop(name)
        return key
