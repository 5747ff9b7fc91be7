"""Optimised unit sets: a strength alpha per unit that makes the units, together, cause a concept.

The paper (Bau et al., ICLR 2019, section 3.2) finds the set by SGD on

    alpha* = argmin_alpha ( -ACE(alpha) + lambda * ||alpha||_2 ),   alpha in [0, 1]^U,

where the edit r <- r * (1 - alpha) + k * alpha ablates (k = 0) or inserts (k = each unit's insertion value).
The ACE is made differentiable with the segmenter's soft `concept_scores` and measured locally, one pair of
locations per fit sample, chosen from the segmentation of the unedited image pooled to the layer's grid:

    loss = mean soft score of the concept at an ablation location (a cell the concept covers mostly),
           after ablating a patch of cells around it
         - mean soft score at an insertion location (a cell where the concept is absent),
           after inserting a patch around *that* location
         + lambda * ||alpha||_2.

The soft score at a location is the mean concept score over the image pixels of that feature cell (the
insertion term is measured at the insertion's own cell: the old code measured it at the ablation's). Adam
takes the steps; alpha is clamped to [0, 1] after each one. The optimised alpha is then judged on a held-out
sample set (another seed) by the usual whole-map ACE: the concept's share of the image after inserting
minus after ablating with strength alpha everywhere, soft (mean concept score) and hard (pixel share of the
segmenter's labels).

    result = optimize_units(generator, segmenter, "layer3", "tree", values, init=dissection)
    result.units[:20]; result.heldout.ace_hard; json.dump(result.to_json(), file)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from tqdm import tqdm

from gandissect.causal.ace import concept_share
from gandissect.causal.cut import Cut
from gandissect.core.errors import ConfigError
from gandissect.core.features import overlap_matrix
from gandissect.core.hooks import UnknownLayerError
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import Segmenter, check_labels
from gandissect.dissection.results import Dissection

FIT_SEED = 4
EVAL_SEED = 5
CUTOFF = 0.01
"""Units with alpha above this belong to the optimised set."""
MOSTLY = 0.5
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
        return {**asdict(self), "ace_soft": self.ace_soft, "ace_hard": self.ace_hard, "removed": self.removed}


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
        held = {k: document["heldout"][k] for k in HeldOut.__dataclass_fields__}
        return cls(document["layer"], document["concept"], torch.tensor(document["alpha"]),
                   torch.tensor(document["gain"]), [Epoch(**e) for e in document["epochs"]], HeldOut(**held),
                   dict(document.get("settings", {})), float(document.get("cutoff", CUTOFF)))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> OptimizedUnits:
        return cls.from_json(json.loads(Path(path).read_text()))


class Loss(NamedTuple):
    """The loss (a scalar with its graph) and its terms, detached."""

    total: torch.Tensor
    ablated: float
    inserted: float
    penalty: float


# ---------------------------------------------------------------------------------------------- pieces


def cell_means(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, H, W) -> (N, h, w): the mean of each feature cell's pixels (exact area weights when the grids do
    not divide), differentiable."""
    (height, width), (h, w) = maps.shape[-2:], size
    rows = overlap_matrix(height, h).to(maps.device, maps.dtype)
    cols = overlap_matrix(width, w).to(maps.device, maps.dtype)
    rows, cols = rows / rows.sum(1, keepdim=True), cols / cols.sum(1, keepdim=True)
    return rows @ maps @ cols.t()


def concept_coverage_grid(segmenter: Segmenter, images: torch.Tensor, concept: int,
                          size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) fraction of each feature cell's pixels that the segmenter labels `concept` (any channel)."""
    with torch.no_grad():
        labels = check_labels(segmenter.segment(images), images, len(segmenter.concepts), type(segmenter).__name__)
    present = ((labels == concept).any(1) & (labels != -2).all(1)).double()
    return cell_means(present, size)


def choose_locations(coverage: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample of coverage (N, h, w): an ablation cell (covered more than MOSTLY) and an insertion cell
    (not covered at all), each drawn uniformly among the candidates; (N, 2) long (row, column), -1 for none."""
    n, h, w = coverage.shape
    flat = coverage.reshape(n, h * w).cpu()
    out = []
    for candidates in (flat > MOSTLY, flat == 0):
        weights = candidates.double()
        has = candidates.any(1)
        weights[~has] = 1.0  # drawn, then discarded
        cell = torch.multinomial(weights, 1, generator=generator)[:, 0]
        where = torch.stack([cell // w, cell % w], 1)
        where[~has] = -1
        out.append(where)
    return out[0], out[1]


def patch_mask(locations: torch.Tensor, size: tuple[int, int], patch: int) -> torch.Tensor:
    """(N, 1, h, w) 1 on the `patch` x `patch` cells centred on each location (clipped at the border), 0
    elsewhere and for rows without a location (-1)."""
    h, w = size
    rows = torch.arange(h, device=locations.device)
    cols = torch.arange(w, device=locations.device)
    reach = patch // 2
    near_row = (rows[None, :] - locations[:, :1]).abs() <= reach
    near_col = (cols[None, :] - locations[:, 1:]).abs() <= reach
    mask = near_row[:, :, None] & near_col[:, None, :] & (locations[:, 0] >= 0)[:, None, None]
    return mask[:, None].float()


def _score_at(cells: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
    """(N,) the cell values (N, h, w) at locations (N, 2)."""
    rows = torch.arange(cells.shape[0], device=cells.device)
    return cells[rows, locations[:, 0], locations[:, 1]]


def penalty(alpha: torch.Tensor, weight: float) -> torch.Tensor:
    """lambda * ||alpha||_2 (the paper's regulariser)."""
    return weight * torch.linalg.vector_norm(alpha)


def ace_loss(cut: Cut, segmenter: Segmenter, concept: int, values: torch.Tensor, alpha: torch.Tensor,
             features: torch.Tensor, z: torch.Tensor, ablate_at: torch.Tensor, insert_at: torch.Tensor, *,
             patch: int = 3, weight: float = 0.0) -> Loss:
    """The local ACE loss on one batch: features (B, U, h, w) = cut.head(z); ablate_at, insert_at (B, 2)
    feature cells (-1: none for that sample). Differentiable in alpha (U,)."""
    size = tuple(features.shape[-2:])
    shape = (1, -1, 1, 1)
    weights = alpha.to(features.dtype).reshape(shape)
    terms, parts = [], []
    for where, target in ((ablate_at, torch.zeros((), dtype=features.dtype, device=features.device)),
                          (insert_at, values.to(features.device, features.dtype).reshape(shape))):
        keep = where[:, 0] >= 0
        terms.append(keep)
        if keep.any():
            mask = patch_mask(where[keep], size, patch).to(features.dtype)
            parts.append((features[keep], z[keep], torch.lerp(features[keep], target.expand_as(features[keep]),
                                                             weights * mask), where[keep]))
    if not parts:
        zero = penalty(alpha, weight)
        return Loss(zero, 0.0, 0.0, float(zero))
    edited = torch.cat([p[2] for p in parts])
    images = cut.tail(edited, torch.cat([p[1] for p in parts]))
    scores = segmenter.concept_scores(images)[:, concept]  # type: ignore[attr-defined]
    cells = cell_means(scores.to(features.dtype), size)
    measured = _score_at(cells, torch.cat([p[3] for p in parts]))
    counts = [int(keep.sum()) for keep in terms]
    ablated_scores, inserted_scores = measured.split(counts)
    ablated = ablated_scores.mean() if counts[0] else measured.new_zeros(())
    inserted = inserted_scores.mean() if counts[1] else measured.new_zeros(())
    cost = penalty(alpha, weight)
    return Loss(ablated - inserted + cost, float(ablated.detach()), float(inserted.detach()), float(cost.detach()))


# ---------------------------------------------------------------------------------------------- checks


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


def evaluate_alpha(generator: nn.Module, segmenter: Segmenter, layer: str, concept: str, values: torch.Tensor,
                   alpha: torch.Tensor, *, samples: int = 200, seed: int = EVAL_SEED, batch_size: int = 20,
                   device: str | torch.device = "cpu", progress: bool = False) -> HeldOut:
    """Whole-map effects of strength alpha (U,) in [0, 1] (a unit set: 1 on its units, 0 elsewhere) on
    `concept`, on `samples` samples of sample set `seed`: baseline, inserted and ablated shares, soft and hard."""
    if not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"samples must be a positive integer; got {samples!r}")
    c = _check_concept(segmenter, concept)
    cut = _cut(generator, layer)
    device = torch.device(device)
    dtype = _dtype(generator)
    with torch.no_grad():
        probe = cut.head(sample_z(generator, seed, range(1)).to(device, dtype))
    width = probe.shape[1]
    _check_values(values, width, layer)
    weights = _check_alpha(alpha, width, layer).to(device, probe.dtype).reshape(1, -1, 1, 1)
    target = values.to(device, probe.dtype).reshape(1, -1, 1, 1)
    scored = callable(getattr(segmenter, "concept_scores", None))
    sums = dict.fromkeys(("baseline", "inserted", "ablated"), (0.0, 0.0))
    with torch.no_grad():
        for start in tqdm(range(0, samples, batch_size), desc=f"held-out {layer} -> {concept}", disable=not progress):
            z = sample_z(generator, seed, range(start, min(start + batch_size, samples))).to(device, dtype)
            features = cut.head(z)
            edits = {"baseline": features, "inserted": torch.lerp(features, target.expand_as(features), weights),
                     "ablated": torch.lerp(features, torch.zeros_like(features), weights)}
            for name, edited in edits.items():
                images = cut.tail(edited, z)
                hard = float(concept_share(segmenter, images, c).sum())
                soft = float(segmenter.concept_scores(images)[:, c].double().mean((1, 2)).sum()) if scored else math.nan
                sums[name] = (sums[name][0] + soft, sums[name][1] + hard)
    mean = {name: (soft / samples, hard / samples) for name, (soft, hard) in sums.items()}
    return HeldOut(samples, seed, mean["baseline"][0], mean["baseline"][1], mean["inserted"][0], mean["inserted"][1],
                   mean["ablated"][0], mean["ablated"][1])


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
                   fit_seed: int = FIT_SEED, eval_seed: int = EVAL_SEED, samples: int = 320, epochs: int = 5,
                   lr: float = 0.01, weight: float = 0.005, batch_size: int = 20, patch: int = 3,
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
    c = _check_concept(segmenter, concept)
    cut = _cut(generator, layer)
    device = torch.device(device)
    dtype = _dtype(generator)
    with torch.no_grad():
        probe = cut.head(sample_z(generator, fit_seed, range(1)).to(device, dtype))
    width = probe.shape[1]
    _check_values(values, width, layer)
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
                totals += torch.tensor([float(loss.total.detach()), loss.ablated, loss.inserted, loss.penalty],
                                       dtype=torch.float64)
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.total):.4f}")
            history.append(Epoch(*(float(t) / steps for t in totals)))
    bar.close()
    gain /= steps
    final = alpha.detach().float().cpu()
    heldout = evaluate_alpha(generator, segmenter, layer, concept, values, final, samples=eval_samples,
                             seed=eval_seed, batch_size=batch_size, device=device, progress=progress)
    settings = {"fit_seed": fit_seed, "eval_seed": eval_seed, "samples": samples, "epochs": epochs, "lr": lr,
                "weight": weight, "penalty": "weight * ||alpha||_2", "batch_size": batch_size, "patch": patch,
                "init": init_kind, "eval_samples": eval_samples, "ablation_pairs": pairs[0],
                "insertion_pairs": pairs[1], "values": [float(v) for v in values.tolist()]}
    return OptimizedUnits(layer, concept, final, gain.float(), history, heldout, settings, cutoff)
