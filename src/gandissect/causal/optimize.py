"""Optimised unit sets: a strength alpha per unit that makes the units, together, cause a concept.

The paper finds alpha* = argmin ( -ACE(alpha) + lambda * ||alpha||_2 ), alpha in [0, 1]^U, by SGD, with the
edit r <- r * (1 - alpha) + k * alpha. The ACE is made differentiable with the segmenter's soft
`concept_scores` and measured locally (see `locations`): per fit sample, the soft score after ablating a
patch around a cell the concept mostly covers, minus the score after inserting a patch around a cell it
does not touch, measured at the insertion's own cell (the old code measured it at the ablation's). Adam
takes the steps; alpha is clamped to [0, 1] after each. The result is judged on a held-out sample set by
the whole-map ACE with strength alpha, soft (mean concept score) and hard (pixel share of the labels).
Defaults (512 fit pairs, 2 epochs of 8, lr 0.01, lambda 0.005, init IoU / max IoU from a Dissection) fit one
concept of scenes64 layer3 in under a minute (benchmarks/bench_optimize.py).

    result = optimize_units(generator, segmenter, "layer3", "tree", values, init=dissection)
    result.units[:20]; result.heldout.ace_hard; result.save(path)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from gandissect.causal.ace import concept_share
from gandissect.causal.cut import Cut
from gandissect.causal.locations import ace_loss, choose_locations, concept_coverage_grid
from gandissect.core.errors import ConfigError
from gandissect.core.hooks import UnknownLayerError
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import Segmenter
from gandissect.dissection.results import Dissection
from gandissect.engine.storage import write_json_atomic

FIT_SEED = 4
EVAL_SEED = 5
CUTOFF = 0.01
"""Units with alpha above this belong to the optimised set."""
"""An ablation location is a feature cell the concept covers more than this fraction of."""


@dataclass
class HeldOut:
    """Whole-map effects of inserting and of ablating with strength alpha, on a held-out sample set:
    the concept's mean share of the image, soft (mean concept score) and hard (pixel share of its labels)."""

    samples: int
    seed: int
    baseline_soft: float
    baseline_hard: float
    inserted_soft: float
    inserted_hard: float
    ablated_soft: float
    ablated_hard: float

    @property
    def ace_soft(self) -> float:
        return self.inserted_soft - self.ablated_soft

    @property
    def ace_hard(self) -> float:
        return self.inserted_hard - self.ablated_hard

    @property
    def removed(self) -> float:
        """The fraction of the concept's pixels that ablation removes (NaN if the concept never appears)."""
        return (self.baseline_hard - self.ablated_hard) / self.baseline_hard if self.baseline_hard else math.nan

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, NaN written as null."""
        document = {**asdict(self), "ace_soft": self.ace_soft, "ace_hard": self.ace_hard, "removed": self.removed}
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in document.items()}


@dataclass
class Epoch:
    """Means over one epoch's steps: the loss, its two terms and the penalty (loss = ablated - inserted +
    penalty)."""

    loss: float
    ablated: float
    inserted: float
    penalty: float


@dataclass
class OptimizedUnits:
    """The optimised alpha (U,) of `layer` for `concept`, the units it picks, the fit's history and the
    held-out effects."""

    layer: str
    concept: str
    alpha: torch.Tensor
    gain: torch.Tensor
    """(U,) mean of -d(loss)/d(alpha) over the last epoch: orders units of equal alpha (e.g. all at 1)."""
    epochs: list[Epoch]
    heldout: HeldOut
    settings: dict[str, Any] = field(default_factory=dict)
    cutoff: float = CUTOFF

    @property
    def losses(self) -> list[float]:
        """The mean loss of each epoch."""
        return [epoch.loss for epoch in self.epochs]

    def ranking(self) -> list[int]:
        """Every unit by alpha, highest first; ties by gain, then by unit number."""
        order = sorted(range(self.alpha.numel()), key=lambda u: (-float(self.alpha[u]), -float(self.gain[u]), u))
        return order

    @property
    def units(self) -> list[int]:
        """The optimised unit set: units with alpha above the cutoff, highest alpha first."""
        return [u for u in self.ranking() if float(self.alpha[u]) > self.cutoff]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready document (`from_json` reads it back)."""
        return {
            "layer": self.layer,
            "concept": self.concept,
            "units": self.units,
            "ranking": self.ranking(),
            "alpha": [float(a) for a in self.alpha.tolist()],
            "gain": [float(g) for g in self.gain.tolist()],
            "cutoff": self.cutoff,
            "epochs": [asdict(epoch) for epoch in self.epochs],
            "heldout": self.heldout.to_json(),
            "settings": dict(self.settings),
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> OptimizedUnits:
        held = {k: math.nan if document["heldout"][k] is None else document["heldout"][k]
                for k in HeldOut.__dataclass_fields__}
        return cls(document["layer"], document["concept"], torch.tensor(document["alpha"]),
                   torch.tensor(document["gain"]), [Epoch(**e) for e in document["epochs"]], HeldOut(**held),
                   dict(document.get("settings", {})), float(document.get("cutoff", CUTOFF)))

    def save(self, path: str | Path) -> Path:
        """Write the JSON record atomically."""
        write_json_atomic(path, self.to_json())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> OptimizedUnits:
        return cls.from_json(json.loads(Path(path).read_text()))


def _dtype(module: nn.Module) -> torch.dtype:
    for tensor in chain(module.parameters(), module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


@contextmanager
def _frozen(*modules: object) -> Iterator[None]:
    """Parameters of the modules stop requiring grad while inside (only alpha is optimised)."""
    params = [p for m in modules if isinstance(m, nn.Module) for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _check_concept(segmenter: Segmenter, concept: str) -> int:
    concepts = list(segmenter.concepts)
    if concept not in concepts:
        raise ConfigError(f"the segmenter knows no concept {concept!r}; its concepts: {', '.join(concepts)}")
    return concepts.index(concept)


def _cut(generator: nn.Module, layer: str) -> Cut:
    try:
        return Cut(generator, layer)
    except UnknownLayerError as error:
        raise ConfigError(str(error)) from None


def _check_values(values: object, width: int, layer: str) -> torch.Tensor:
    if not isinstance(values, torch.Tensor) or values.dim() != 1 or values.shape[0] != width:
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ConfigError(f"values must hold one insertion value per unit of layer {layer!r}, shape ({width},); "
                          f"got {shape}")
    if not values.is_floating_point() or not bool(torch.isfinite(values).all()):
        raise ConfigError(f"values must be finite floats; got dtype {values.dtype} with non-finite entries or ints")
    return values


def _check_alpha(alpha: object, width: int, layer: str) -> torch.Tensor:
    if not isinstance(alpha, torch.Tensor) or alpha.dim() != 1 or alpha.shape[0] != width:
        shape = tuple(alpha.shape) if isinstance(alpha, torch.Tensor) else type(alpha).__name__
        raise ConfigError(f"alpha must hold one strength per unit of layer {layer!r}, shape ({width},); got {shape}")
    if not bool(((alpha >= 0) & (alpha <= 1)).all()):
        raise ConfigError("alpha must lie in [0, 1] for every unit")
    return alpha.detach().float()


def _initial(init: Dissection | torch.Tensor | None, layer: str, concept: str, width: int) -> tuple[torch.Tensor, str]:
    if init is None:
        return torch.full((width,), 0.5), "uniform 0.5"
    if isinstance(init, Dissection):
        if layer not in init.layers:
            raise ConfigError(f"layer {layer!r} was not dissected in the init run; its layers: "
                              f"{', '.join(init.layers)}")
        if concept not in init.concepts:
            raise ConfigError(f"the init run knows no concept {concept!r}; its concepts: {', '.join(init.concepts)}")
        iou = init.layers[layer].iou[:, init.concepts.index(concept)].double().nan_to_num(0.0).clamp(min=0)
        if iou.shape[0] != width:
            raise ConfigError(f"the init run's layer {layer!r} has {iou.shape[0]} units, the generator's {width}")
        if float(iou.max()) <= 0:
            return torch.full((width,), 0.5), "uniform 0.5 (no unit has IoU > 0)"
        return (iou / iou.max()).float(), "IoU / max IoU"
    return _check_alpha(init, width, layer).clone(), "given"


def _check_settings(segmenter: Segmenter, **settings: float) -> None:
    if not callable(getattr(segmenter, "concept_scores", None)):
        raise ConfigError(f"{type(segmenter).__name__} offers no differentiable concept_scores(images), which "
                          "optimising a unit set needs: use a segmenter that has one")
    if settings["weight"] < 0 or math.isnan(settings["weight"]):
        raise ConfigError(f"weight (lambda) must be >= 0; got {settings['weight']}")
    if not settings["lr"] > 0:
        raise ConfigError(f"lr must be > 0; got {settings['lr']}")
    for name in ("samples", "epochs", "batch_size", "eval_samples", "patch"):
        value = settings[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a positive integer; got {value!r}")
    if settings["patch"] % 2 == 0:
        raise ConfigError(f"patch must be odd (a square of cells centred on a location); got {settings['patch']}")


# ---------------------------------------------------------------------------------------------- evaluation


def _prepare(generator: nn.Module, segmenter: Segmenter, layer: str, concept: str, values: torch.Tensor, seed: int,
             device: str | torch.device) -> tuple[int, Cut, torch.device, torch.dtype, torch.Tensor]:
    """Check the concept, layer and values; the concept's index, the cut, device, dtype and one sample's features."""
    c = _check_concept(segmenter, concept)
    cut = _cut(generator, layer)
    device = torch.device(device)
    dtype = _dtype(generator)
    with torch.no_grad():
        probe = cut.head(sample_z(generator, seed, range(1)).to(device, dtype))
    _check_values(values, probe.shape[1], layer)
    return c, cut, device, dtype, probe


def evaluate_alphas(generator: nn.Module, segmenter: Segmenter, layer: str, concept: str, values: torch.Tensor,
                    alphas: Sequence[torch.Tensor], *, samples: int = 200, seed: int = EVAL_SEED, batch_size: int = 16,
                    soft: bool = True, device: str | torch.device = "cpu", progress: bool = False) -> list[HeldOut]:
    """Whole-map effects on `concept` of each strength alpha (U,) in [0, 1] (a unit set: 1 on its units, 0
    elsewhere), on `samples` samples of sample set `seed` (the unedited baseline computed once): baseline,
    inserted and ablated shares, soft and hard (soft=False, or a segmenter without concept_scores, leaves the
    soft shares NaN and saves their cost)."""
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ConfigError(f"samples must be a positive integer; got {samples!r}")
    c, cut, device, dtype, probe = _prepare(generator, segmenter, layer, concept, values, seed, device)
    width = probe.shape[1]
    weights = [_check_alpha(a, width, layer).to(device, probe.dtype).reshape(1, -1, 1, 1) for a in alphas]
    target = values.to(device, probe.dtype).reshape(1, -1, 1, 1)
    scored = soft and callable(getattr(segmenter, "concept_scores", None))
    # rows: baseline, inserted per alpha, ablated per alpha; columns: soft, hard
    sums = torch.zeros(1 + 2 * len(weights), 2, dtype=torch.float64)
    with torch.no_grad():
        for start in tqdm(range(0, samples, batch_size), desc=f"held-out {layer} -> {concept}", disable=not progress):
            z = sample_z(generator, seed, range(start, min(start + batch_size, samples))).to(device, dtype)
            features = cut.head(z)
            edits = [features, *(torch.lerp(features, target.expand_as(features), w) for w in weights),
                     *(torch.lerp(features, torch.zeros_like(features), w) for w in weights)]
            for row, edited in enumerate(edits):
                images = cut.tail(edited, z)
                sums[row, 1] += concept_share(segmenter, images, c).sum()
                if scored:
                    sums[row, 0] += segmenter.concept_scores(images)[:, c].double().mean((1, 2)).sum()  # type: ignore[attr-defined]
    means = (sums / samples).tolist()
    if not scored:
        for row in means:
            row[0] = math.nan
    count = len(weights)
    return [HeldOut(samples, seed, *means[0], *means[1 + i], *means[1 + count + i]) for i in range(count)]


def evaluate_alpha(generator: nn.Module, segmenter: Segmenter, layer: str, concept: str, values: torch.Tensor,
                   alpha: torch.Tensor, **options: Any) -> HeldOut:
    """`evaluate_alphas` for one alpha (same options)."""
    return evaluate_alphas(generator, segmenter, layer, concept, values, [alpha], **options)[0]


def units_alpha(units: Sequence[int], width: int) -> torch.Tensor:
    """The alpha of a unit set: 1 on `units`, 0 elsewhere, (width,)."""
    alpha = torch.zeros(width)
    alpha[list(units)] = 1.0
    return alpha


# ---------------------------------------------------------------------------------------------- fit


@dataclass
class FitSet:
    """The fit samples' latents and their chosen ablation and insertion cells (N, 2), -1 for none."""

    z: torch.Tensor
    ablate_at: torch.Tensor
    insert_at: torch.Tensor
    width: int
    size: tuple[int, int]


def fit_set(cut: Cut, segmenter: Segmenter, concept: int, samples: int, seed: int, batch_size: int,
            device: torch.device, dtype: torch.dtype) -> FitSet:
    """Sample set `seed`'s latents with one ablation and one insertion location each, from the unedited
    images' segmentation pooled to the layer's grid; locations drawn with a generator seeded by `seed`."""
    z = sample_z(cut.generator, seed, range(samples)).to(device, dtype)
    coverage = []
    width, size = 0, (0, 0)
    with torch.no_grad():
        for start in range(0, samples, batch_size):
            batch = z[start:start + batch_size]
            features = cut.head(batch)
            width, size = features.shape[1], tuple(features.shape[-2:])
            coverage.append(concept_coverage_grid(segmenter, cut.tail(features, batch), concept, size))
    ablate_at, insert_at = choose_locations(torch.cat(coverage), torch.Generator().manual_seed(seed))
    return FitSet(z, ablate_at.to(device), insert_at.to(device), width, size)  # type: ignore[arg-type]


def optimize_units(generator: nn.Module, segmenter: Segmenter, layer: str, concept: str, values: torch.Tensor, *,
                   fit_seed: int = FIT_SEED, eval_seed: int = EVAL_SEED, samples: int = 512, epochs: int = 2,
                   lr: float = 0.01, weight: float = 0.005, batch_size: int = 8, patch: int = 3,
                   init: Dissection | torch.Tensor | None = None, eval_samples: int = 200, cutoff: float = CUTOFF,
                   device: str | torch.device = "cpu", progress: bool = True) -> OptimizedUnits:
    """Optimise alpha (U,) in [0, 1] for `concept` at `layer` by Adam on the local ACE loss (module docstring)
    over `samples` fit pairs (sample set `fit_seed`) for `epochs` epochs of `batch_size` pairs, inserting
    `values` (U,); then measure the whole-map ACE of alpha on `eval_samples` samples of set `eval_seed`.

    init: None (uniform 0.5), a Dissection (each unit's IoU for the concept at the layer / the highest), or a
    tensor (U,) in [0, 1]. weight is lambda of the penalty lambda * ||alpha||_2; patch the side, in cells, of
    the square edited around each location (the score is measured at its centre cell)."""
    _check_settings(segmenter, weight=weight, lr=lr, samples=samples, epochs=epochs, batch_size=batch_size,
                    eval_samples=eval_samples, patch=patch)
    c, cut, device, dtype, probe = _prepare(generator, segmenter, layer, concept, values, fit_seed, device)
    width = probe.shape[1]
    start, init_kind = _initial(init, layer, concept, width)

    data = fit_set(cut, segmenter, c, samples, fit_seed, batch_size, device, dtype)
    pairs = int((data.ablate_at[:, 0] >= 0).sum()), int((data.insert_at[:, 0] >= 0).sum())
    if pairs[0] == 0:
        raise ConfigError(f"{concept!r} never covers most of a feature cell of {layer!r} in {samples} fit samples "
                          f"(seed {fit_seed}): there is nothing to ablate; use more samples or another concept")
    alpha = start.to(device, dtype).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([alpha], lr=lr)
    shuffle = torch.Generator().manual_seed(fit_seed)
    history: list[Epoch] = []
    gain = torch.zeros(width, dtype=torch.float64)
    steps = -(-samples // batch_size)
    bar = tqdm(total=epochs * steps, desc=f"optimise {layer} -> {concept}", disable=not progress, unit="step")
    with _frozen(generator, segmenter):
        for _ in range(epochs):
            order = torch.randperm(samples, generator=shuffle).to(device)
            totals = torch.zeros(4, dtype=torch.float64)
            gain.zero_()
            for step in range(steps):
                index = order[step * batch_size:(step + 1) * batch_size]
                z = data.z[index]
                with torch.no_grad():
                    features = cut.head(z)
                loss = ace_loss(cut, segmenter, c, values, alpha, features, z, data.ablate_at[index],
                                data.insert_at[index], patch=patch, weight=weight)
                optimizer.zero_grad()
                loss.total.backward()
                gain -= alpha.grad.detach().double().cpu()  # type: ignore[union-attr]
                optimizer.step()
                with torch.no_grad():
                    alpha.clamp_(0.0, 1.0)
                total = float(loss.total.detach())
                totals += torch.tensor([total, loss.ablated, loss.inserted, loss.penalty], dtype=torch.float64)
                bar.update(1)
                bar.set_postfix(loss=f"{total:.4f}")
            history.append(Epoch(*(float(t) / steps for t in totals)))
    bar.close()
    gain /= steps
    final = alpha.detach().float().cpu()
    heldout = evaluate_alpha(generator, segmenter, layer, concept, values, final, samples=eval_samples,
                             seed=eval_seed, batch_size=2 * batch_size, device=device, progress=progress)
    settings = {"fit_seed": fit_seed, "eval_seed": eval_seed, "samples": samples, "epochs": epochs, "lr": lr,
                "weight": weight, "penalty": "weight * ||alpha||_2", "batch_size": batch_size, "patch": patch,
                "init": init_kind, "eval_samples": eval_samples, "ablation_pairs": pairs[0],
                "insertion_pairs": pairs[1], "values": [float(v) for v in values.tolist()]}
    return OptimizedUnits(layer, concept, final, gain.float(), history, heldout, settings, cutoff)
