"""What ablating artifact units does to the whole model: its Frechet distance to real images, with intervals.

`artifact_study` ablates the worst `count` units by each signal of a `UnitRealism` (see `causal.artifacts`)
and `count` random units (several draws), and measures the Frechet distance between features of held-out
generated samples and real features, riding the engine's sample pass (shards and merges under torchrun).

The Frechet distance between Gaussian fits is biased upward with few rows, and the bias falls as the counts
grow: on scenes64 (23 concept features) 32 samples give 254 against 16 real rows and 98 against 150, where
2,000 against 2,000 give 67. So `check_counts` refuses fewer rows than a Gaussian fit needs (more than the
feature dimension, else the covariance is singular) and warns under `ADVISED_ROWS`. Each distance and each
gain comes with a basic bootstrap interval (2 x estimate - the bootstrap quantiles: resampling inflates the
distance as few samples do, so reflecting corrects that bias to first order), with samples and real rows
resampled together for every edit (paired), so a gain's interval is that of the difference. On scenes64 the
95% interval from 100-300 samples and 100-300 real rows covered the 2,000-sample distance in 18 of 18
disjoint tries; the percentile interval, which sits above the biased estimate, in 2
(benchmarks/frechet_interval_scenes64.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gandissect.causal.artifacts import (
    DEFAULT_COUNT,
    HELD_OUT_SEED,
    UnitRealism,
    check_real,
    check_rows,
    layer_width,
)
from gandissect.causal.cut import Cut
from gandissect.causal.realism import Features
from gandissect.core.errors import ConfigError
from gandissect.core.frechet import feature_frechet, frechet_distance, gaussian_fit
from gandissect.core.stats import SampleTable, Statistic
from gandissect.engine.collectives import Collective
from gandissect.engine.samplepass import Batch, SamplePass

ADVISED_ROWS = 100
"""Fewer generated samples or real rows than this draw a warning: the distance is then visibly inflated."""
BOOTSTRAP = 200
LEVEL = 0.95


def check_counts(samples: int, real_rows: int, dim: int) -> list[str]:
    """Refuse counts a Gaussian fit of `dim` features cannot use (at most `dim` rows: a singular covariance);
    return a warning for each count under `ADVISED_ROWS`."""
    for what, count in (("generated samples", samples), ("real feature rows", real_rows)):
        if count <= dim:
            raise ConfigError(f"{count} {what} cannot fit a Gaussian in {dim} feature dimensions (its covariance "
                              f"is singular): use more than {dim}, and at least {ADVISED_ROWS}")
    return [f"only {count} {what}: the Frechet distance is inflated below {ADVISED_ROWS} (compare distances only "
            "at equal counts)" for what, count in (("generated samples", samples), ("real feature rows", real_rows))
            if count < ADVISED_ROWS]


@dataclass
class ArtifactStudy:
    """The whole model's Frechet distance to real features on held-out samples: `before` any edit, `after`
    ablating the worst `count` units by each signal (`ablated`), and after ablating `count` random units
    (`random_after`, one per draw of `random_units`). `reference`: the distance of a second set of real
    features to the real ones (sampling noise alone), when given. `intervals`: for "before", "after/<signal>",
    "random_mean", "gain/<signal>" and "random_gain", the (low, high) basic bootstrap interval at `level`."""

    layer: str
    count: int
    samples: int
    seed: int
    before: float
    after: dict[str, float]
    ablated: dict[str, list[int]]
    random_after: list[float]
    random_units: list[list[int]]
    reference: float | None = None
    real_rows: int = 0
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    level: float = LEVEL
    bootstrap: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def random_mean(self) -> float:
        return sum(self.random_after) / len(self.random_after) if self.random_after else float("nan")

    @property
    def random_sd(self) -> float:
        n = len(self.random_after)
        if n < 2:
            return 0.0
        mean = self.random_mean
        return math.sqrt(sum((v - mean) ** 2 for v in self.random_after) / (n - 1))

    def gain(self, signal: str) -> float:
        """How much ablating the signal's worst units lowered the distance (positive = closer to real)."""
        if signal not in self.after:
            raise ConfigError(f"no signal {signal!r} in this study; signals: {', '.join(self.after)}")
        return self.before - self.after[signal]

    @property
    def random_gain(self) -> float:
        return self.before - self.random_mean

    @property
    def best_signal(self) -> str | None:
        """The signal whose ablation lowered the distance most (None without signals)."""
        return max(self.after, key=lambda s: (self.gain(s), -list(self.after).index(s))) if self.after else None

    def to_json(self) -> dict[str, Any]:
        return {"layer": self.layer, "count": self.count, "samples": self.samples, "seed": self.seed,
                "real_rows": self.real_rows, "before": self.before, "after": dict(self.after),
                "gain": {s: self.gain(s) for s in self.after},
                "ablated": {s: list(u) for s, u in self.ablated.items()},
                "random": {"after": list(self.random_after), "units": [list(u) for u in self.random_units],
                           "mean": self.random_mean, "sd": self.random_sd, "gain": self.random_gain},
                "reference": self.reference, "best_signal": self.best_signal,
                "intervals": {"level": self.level, "bootstrap": self.bootstrap,
                              "method": "basic bootstrap, samples and real rows resampled, paired across edits",
                              **{k: list(v) for k, v in self.intervals.items()}},
                "warnings": list(self.warnings)}


def bootstrap_distances(tables: dict[str, torch.Tensor], real: torch.Tensor, draws: int,
                        seed: int = 0) -> dict[str, torch.Tensor]:
    """(draws,) Frechet distances per named feature table (N, D) to `real` (M, D), each draw resampling the
    N sample rows (the same rows for every table: paired) and the M real rows with replacement."""
    rng = torch.Generator().manual_seed(seed)
    n = len(next(iter(tables.values())))
    out: dict[str, list[float]] = {name: [] for name in tables}
    for _ in range(draws):
        rows = torch.randint(n, (n,), generator=rng)
        target = gaussian_fit(real[torch.randint(len(real), (len(real),), generator=rng)])
        for name, table in tables.items():
            out[name].append(frechet_distance(*gaussian_fit(table[rows]), *target))
    return {name: torch.tensor(values, dtype=torch.float64) for name, values in out.items()}


def basic_interval(draws: torch.Tensor, estimate: float, level: float,
                   floor: float = -math.inf) -> tuple[float, float]:
    """The basic bootstrap interval at `level`: (2 estimate - upper quantile, 2 estimate - lower quantile) of the
    bootstrap `draws`, its ends raised to `floor` (0 for a distance)."""
    tail = (1 - level) / 2
    low, high = torch.quantile(draws, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return max(2 * estimate - high, floor), max(2 * estimate - low, floor)


def artifact_study(generator: nn.Module, layer: str, scores: UnitRealism, features: Features,
                   real_features: torch.Tensor, *, count: int = DEFAULT_COUNT, signals: Sequence[str] | None = None,
                   draws: int = 5, random_seed: int = 0, samples: int = 500, seed: int = HELD_OUT_SEED,
                   reference_features: torch.Tensor | None = None, batch_size: int = 32,
                   device: str | torch.device = "cpu", collective: Collective | None = None,
                   progress: bool = True, bootstrap: int = BOOTSTRAP, level: float = LEVEL) -> ArtifactStudy:
    """Ablate the worst `count` units of `layer` by each of `signals` (default: every signal in `scores`) and
    `count` random units (`draws` draws, from `random_seed`), everywhere on the feature map, and measure the
    Frechet distance between `features` of `samples` generated images (seed `seed`, held out from the samples
    that chose the units) and `real_features` (M, D), each with a `bootstrap`-draw interval at `level`."""
    real = check_real(features, real_features, "the study")
    assert real is not None
    warnings = check_counts(samples, len(real), real.shape[1])
    if not 0 < level < 1 or bootstrap < 0:
        raise ConfigError(f"level must lie in (0, 1) and bootstrap be >= 0; got {level}, {bootstrap}")
    cut = Cut(generator, layer)
    width = layer_width(cut, generator, seed, device)
    if not 0 < count <= width:
        raise ConfigError(f"count must lie in 1..{width} (the units of layer {layer!r}); got {count}")
    if draws < 0:
        raise ConfigError(f"draws must be a number of random draws >= 0; got {draws}")
    signals = list(scores.scores) if signals is None else list(signals)
    for signal in signals:
        scores.check_signal(signal)
    ablated = {s: scores.worst(s, count) for s in signals}
    short = [s for s, u in ablated.items() if len(u) < count]
    if short:
        raise ConfigError(f"signals {short} scored fewer than count={count} units")
    rng = torch.Generator().manual_seed(random_seed)
    random_units = [sorted(torch.randperm(width, generator=rng)[:count].tolist()) for _ in range(draws)]
    # one edit per distinct set of units (signals often agree; "before" ablates nothing)
    key: dict[tuple[int, ...], str] = {}
    for units in [[], *ablated.values(), *random_units]:
        key.setdefault(tuple(sorted(units)), f"edit/{len(key)}")
    edits = {name: list(units) for units, name in key.items()}
    dim = real.shape[1]
    stats: dict[str, Statistic] = {name: SampleTable(samples, dim) for name in edits}

    def update(batch: Batch, stats: dict[str, Statistic]) -> None:
        with torch.no_grad():
            acts = cut.head(batch.z)
            for name, units in edits.items():
                edited = acts
                if units:
                    edited = acts.clone()
                    edited[:, units] = 0
                images = cut.tail(edited, batch.z)
                rows = check_rows("features", features(images), len(images), 2)
                if rows.shape[1] != dim:
                    raise ConfigError(f"features give {rows.shape[1]} dimensions but real features have {dim}: "
                                      "compute both with the same extractor")
                stats[name].add(batch.indices, rows)  # type: ignore[attr-defined]

    sample_pass = SamplePass(generator, seed=seed, samples=samples, batch_size=batch_size, generate=False,
                             device=device, collective=collective, description=f"artifact study {layer}",
                             progress=progress)
    merged = sample_pass.run(stats, update)
    tables = {name: merged[name].values for name in edits}  # type: ignore[attr-defined]
    target = gaussian_fit(real)

    def distance(units: list[int]) -> float:
        return frechet_distance(*gaussian_fit(tables[key[tuple(sorted(units))]]), *target)

    reference = None
    if reference_features is not None:
        other = torch.as_tensor(reference_features).double().cpu()
        if other.dim() != 2 or other.shape[1] != dim:
            raise ConfigError(f"reference features must be (M, {dim}) like the real features; got shape "
                              f"{tuple(other.shape)}")
        reference = feature_frechet(other, real)
    study = ArtifactStudy(layer, count, samples, seed, distance([]), {s: distance(u) for s, u in ablated.items()},
                          ablated, [distance(u) for u in random_units], random_units, reference, len(real),
                          level=level, bootstrap=bootstrap, warnings=warnings)
    if bootstrap:
        study.intervals = _intervals(study, bootstrap_distances(tables, real, bootstrap, random_seed), key)
    return study


def _intervals(study: ArtifactStudy, boot: dict[str, torch.Tensor], key: dict[tuple[int, ...], str],
               ) -> dict[str, tuple[float, float]]:
    """The bootstrap intervals of every distance and gain of a study, from its paired bootstrap draws."""
    def draws(units: list[int]) -> torch.Tensor:
        return boot[key[tuple(sorted(units))]]

    level, before = study.level, draws([])
    intervals = {"before": basic_interval(before, study.before, level, 0.0)}
    for signal, units in study.ablated.items():
        intervals[f"after/{signal}"] = basic_interval(draws(units), study.after[signal], level, 0.0)
        intervals[f"gain/{signal}"] = basic_interval(before - draws(units), study.gain(signal), level)
    if study.random_units:
        mean = torch.stack([draws(u) for u in study.random_units]).mean(0)
        intervals["random_mean"] = basic_interval(mean, study.random_mean, level, 0.0)
        intervals["random_gain"] = basic_interval(before - mean, study.random_gain, level)
    return intervals
