"""Network dissection of a generator: match every unit of the chosen layers to the concept it draws.

Two passes over two seeded sample sets, as in the paper:
1. threshold set (seed `threshold_seed`): the generator runs only up to the deepest chosen layer; each
   unit's upsampled activations fill a `UnitQuantiles` histogram -> the unit's threshold (top
   `quantile` fraction) and `iqr_levels` candidate levels (top 0.1% ... 100%, log-spaced);
2. IoU set (seed `iou_seed`): generator and segmenter run; `LevelCounts` counts, exactly, each unit's
   pixels above each level against each concept, and `TopK` keeps each unit's top samples.
From these come IoU per (unit, concept) at the unit's threshold, and the paper's per-(unit, concept)
threshold that maximises the information-quality ratio, with the IoU there.

Partial statistics are checkpointed atomically every `checkpoint_every` batches; a resumed run gives
exactly the results of an uninterrupted one. Samples are sharded in fixed batches by rank, so a
distributed run (see `distributed`) gives exactly the results of a single process.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from gandissect.core.features import upsample
from gandissect.core.hooks import Trace, get_layer
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import Segmenter, check_labels
from gandissect.core.stats import LevelCounts, Statistic, TopK, UnitQuantiles
from gandissect.engine.collectives import Collective, SingleProcess
from gandissect.engine.storage import load_statistics, save_statistics, write_json_atomic, write_text_atomic

RESULT_FILES = ("dissect.json", "dissect.csv", "statistics.safetensors", "report.html")
SCHEMA_VERSION = 1


@dataclass
class DissectConfig:
    """Everything that determines a dissection's numbers (the run folder stores it)."""

    layers: list[str]
    samples: int = 1000
    batch_size: int = 32
    quantile: float = 0.01
    threshold_seed: int = 2
    iou_seed: int = 1
    iqr_levels: int = 100
    bins: int = 4096
    topk: int = 12
    seg_size: int | None = None
    min_iou: float = 0.05
    min_iqr: float = 0.01
    label_method: str = "quantile"
    checkpoint_every: int = 8

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("choose at least one layer to dissect")
        if not 0 < self.quantile < 1:
            raise ValueError(f"quantile is the top fraction of activations, in (0, 1); got {self.quantile}")
        if self.samples < 1 or self.batch_size < 1:
            raise ValueError("samples and batch_size must be positive")
        if self.label_method not in ("iqr", "quantile"):
            raise ValueError(f"label_method is 'iqr' or 'quantile', got {self.label_method!r}")
        if self.threshold_seed == self.iou_seed:
            raise ValueError("threshold_seed and iou_seed must differ: thresholds and IoU use separate samples")

    def numbers_key(self) -> dict[str, Any]:
        """The fields that determine the statistics (a resumed run must match them)."""
        key = asdict(self)
        key.pop("checkpoint_every")
        key.pop("min_iou")
        key.pop("min_iqr")
        key.pop("label_method")
        return key


class RunFolderError(RuntimeError):
    """The output folder holds another run's results."""


class NonFiniteActivationError(FloatingPointError):
    """A layer produced NaN or infinite activations."""


@dataclass
class LayerResult:
    """Per-layer outcome: thresholds, IoU per (unit, concept), IQR optimum per (unit, concept)."""

    name: str
    shape: tuple[int, ...]
    thresholds: torch.Tensor
    iou: torch.Tensor
    iqr: dict[str, torch.Tensor]
    top_indices: torch.Tensor
    top_values: torch.Tensor


@dataclass
class Dissection:
    config: DissectConfig
    concepts: list[str]
    categories: list[str]
    size: tuple[int, int]
    layers: dict[str, LayerResult] = field(default_factory=dict)


def log_levels(count: int) -> torch.Tensor:
    """Quantiles 1 - f for top fractions f log-spaced from 0.1% to 100%, ascending."""
    return (1.0 - torch.logspace(-3, 0, count, dtype=torch.float64)).flip(0)


def _check_finite(name: str, acts: torch.Tensor, first_sample: int) -> None:
    bad = ~torch.isfinite(acts)
    if bad.any():
        units = bad.flatten(2).any(2).any(0).nonzero().flatten().tolist()
        samples = (bad.flatten(1).any(1).nonzero().flatten() + first_sample).tolist()
        raise NonFiniteActivationError(
            f"layer {name!r} produced NaN or infinite activations in units {units[:20]} "
            f"(samples {samples[:10]} of this set)"
        )


class Dissector:
    """Runs a dissection into a run folder; `run()` returns a `Dissection`."""

    def __init__(self, generator: nn.Module, segmenter: Segmenter, config: DissectConfig, out: str | Path,
                 device: str | torch.device = "cpu", resume: bool = False, force: bool = False,
                 collective: Collective | None = None, progress: bool = True,
                 on_batch: Callable[[str, int], None] | None = None) -> None:
        self.generator = generator.to(device).eval()
        self.segmenter = segmenter
        self.config = config
        self.out = Path(out)
        self.device = torch.device(device)
        self.collective = collective or SingleProcess()
        self.progress = progress and self.collective.rank == 0
        self.on_batch = on_batch
        for layer in config.layers:
            get_layer(self.generator, layer)
        self.concepts = list(segmenter.concepts)
        self.categories = list(segmenter.categories)
        self._probe()
        self._prepare_folder(resume, force)

    @property
    def checkpoint_path(self) -> Path:
        suffix = f"-rank{self.collective.rank}" if self.collective.world > 1 else ""
        return self.out / f"checkpoint{suffix}.safetensors"

    def _prepare_folder(self, resume: bool, force: bool) -> None:
        config_path = self.out / "config.json"
        existing = [p.name for p in self.out.glob("*") if p.name in RESULT_FILES or p.name.startswith("checkpoint")]
        if config_path.exists():
            existing.append("config.json")
        if existing and not (resume or force):
            raise RunFolderError(
                f"{self.out} already holds a run ({', '.join(sorted(existing))}); "
                "pass --resume to continue it or --force to overwrite it"
            )
        if resume and config_path.exists():
            stored = json.loads(config_path.read_text())
            if stored != self.config.numbers_key():
                changed = sorted(k for k in stored if stored.get(k) != self.config.numbers_key().get(k))
                raise RunFolderError(f"cannot resume {self.out}: its run used other settings ({', '.join(changed)})")
            return
        # every rank has looked at the folder before rank 0 changes it, and sees it changed afterwards
        self.collective.barrier()
        if self.collective.rank == 0:
            if force:
                for name in existing:
                    target = self.out / name
                    shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
            write_json_atomic(config_path, self.config.numbers_key())
        self.collective.barrier()

    def _batches(self) -> list[tuple[int, int]]:
        size, total = self.config.batch_size, self.config.samples
        return [(start, min(start + size, total)) for start in range(0, total, size)]

    def _my_batches(self) -> list[int]:
        return [b for b in range(len(self._batches())) if b % self.collective.world == self.collective.rank]

    def _features(self, seed: int, start: int, stop: int, with_images: bool) -> tuple[dict, torch.Tensor | None]:
        z = sample_z(self.generator, seed, range(start, stop)).to(self.device)
        with torch.no_grad(), Trace(self.generator, self.config.layers, stop=not with_images) as trace:
            images = self.generator(z)
        for name in self.config.layers:
            _check_finite(name, trace[name], start)
        return dict(trace.outputs), (images if with_images else None)

    def _labels(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            raw = self.segmenter.segment(images)
        labels = check_labels(raw, images, len(self.concepts), type(self.segmenter).__name__)
        if self.config.seg_size and tuple(labels.shape[-2:]) != (self.config.seg_size,) * 2:
            labels = F.interpolate(labels.float(), size=(self.config.seg_size,) * 2, mode="nearest").long()
        return labels

    def _probe(self) -> None:
        """Run one sample through generator and segmenter: check the segmenter's output, learn the
        size at which statistics are taken and each layer's feature shape, before any long work."""
        features, images = self._features(self.config.iou_seed, 0, 1, with_images=True)
        assert images is not None
        self.size: tuple[int, int] = tuple(self._labels(images).shape[-2:])  # type: ignore[assignment]
        self.shapes = {name: tuple(features[name].shape[1:]) for name in self.config.layers}

    def run(self) -> Dissection:
        stats, meta = self._load_checkpoint()
        size = self.size
        batches = self._batches()
        mine = self._my_batches()
        total_steps = 2 * len(mine)
        bar = tqdm(total=total_steps, initial=meta.get("done", 0), unit="batch", desc="dissect",
                   disable=not self.progress, dynamic_ncols=True)
        if meta.get("phase", "thresholds") == "thresholds":
            stats = self._threshold_pass(stats, meta, size, batches, mine, bar)
            meta = {"phase": "iou", "next": 0, "done": len(mine)}
            stats = self._start_iou_pass(stats)
            self._save_checkpoint(stats, meta)
        if meta["phase"] == "iou":
            stats = self._iou_pass(stats, meta, size, batches, mine, bar)
        bar.close()
        merged = self.collective.merge({k: v for k, v in stats.items() if not k.startswith("quantiles/")})
        self.statistics = {**stats, **merged}
        return self._result(self.statistics)

    def _threshold_pass(self, stats: dict, meta: dict, size: tuple, batches: list, mine: list, bar: tqdm) -> dict:
        calibration = None
        if not stats:
            grids = {}
            if self.collective.rank == 0:
                start, stop = batches[0]
                calibration, _ = self._features(self.config.threshold_seed, start, stop, with_images=False)
                for name in self.config.layers:
                    quantiles = UnitQuantiles.calibrate(upsample(calibration[name], size), self.config.bins)
                    grids[f"{name}/low"], grids[f"{name}/high"] = quantiles.low, quantiles.high
            grids = self.collective.broadcast(grids)
            for name in self.config.layers:
                stats[f"quantiles/{name}"] = UnitQuantiles(grids[f"{name}/low"], grids[f"{name}/high"],
                                                           self.config.bins)
        for position in range(meta.get("next", 0), len(mine)):
            start, stop = batches[mine[position]]
            if mine[position] == 0 and calibration is not None:
                features = calibration
            else:
                features, _ = self._features(self.config.threshold_seed, start, stop, with_images=False)
            for name in self.config.layers:
                stats[f"quantiles/{name}"].add(upsample(features[name], size))
            self._after_batch(stats, "thresholds", position, len(mine), bar)
        return stats

    def _start_iou_pass(self, stats: dict) -> dict:
        quantiles = self.collective.merge({k: v for k, v in stats.items() if k.startswith("quantiles/")})
        levels_q = log_levels(self.config.iqr_levels)
        out: dict[str, Statistic] = dict(quantiles)
        for name in self.config.layers:
            hist = quantiles[f"quantiles/{name}"]
            assert isinstance(hist, UnitQuantiles)
            threshold = self._thresholds(quantiles, name)
            levels = torch.cat([hist.quantiles(levels_q).float(), threshold[:, None]], 1)
            out[f"levels/{name}"] = LevelCounts(levels.sort(1).values, len(self.concepts))
            out[f"topk/{name}"] = TopK(levels.shape[0], self.config.topk, device=levels.device)
        return out

    def _iou_pass(self, stats: dict, meta: dict, size: tuple, batches: list, mine: list, bar: tqdm) -> dict:
        for position in range(meta.get("next", 0), len(mine)):
            start, stop = batches[mine[position]]
            features, images = self._features(self.config.iou_seed, start, stop, with_images=True)
            assert images is not None
            labels = self._labels(images)
            for name in self.config.layers:
                acts = features[name]
                stats[f"levels/{name}"].add(upsample(acts, size), labels)
                stats[f"topk/{name}"].add(acts.flatten(2).amax(2), torch.arange(start, stop))
            self._after_batch(stats, "iou", position, len(mine), bar)
        return stats

    def _after_batch(self, stats: dict, phase: str, position: int, count: int, bar: tqdm) -> None:
        bar.update(1)
        done = position + 1
        if done % self.config.checkpoint_every == 0 and done < count:
            offset = 0 if phase == "thresholds" else count
            self._save_checkpoint(stats, {"phase": phase, "next": done, "done": offset + done})
        if self.on_batch is not None:
            self.on_batch(phase, done)

    def _save_checkpoint(self, stats: dict, meta: dict) -> None:
        save_statistics(self.checkpoint_path, stats, {**meta, "world": self.collective.world})

    def _load_checkpoint(self) -> tuple[dict, dict]:
        if self.collective.world > 1:
            # Ranks resume only together: each rank's checkpoint present, written by a run of this world
            # size, all in the same phase (else their collectives would not pair up); otherwise all start
            # over. Every rank reads the same files, then waits for the others before any rank writes.
            agree = self._checkpoints_agree()
            self.collective.barrier()
            if not agree:
                return {}, {}
        if not self.checkpoint_path.exists():
            return {}, {}
        stats, meta = load_statistics(self.checkpoint_path, self.device)
        return stats, meta

    def _checkpoints_agree(self) -> bool:
        from safetensors import safe_open

        phases = set()
        for rank in range(self.collective.world):
            path = self.out / f"checkpoint-rank{rank}.safetensors"
            if not path.exists():
                return False
            with safe_open(str(path), framework="pt") as handle:
                meta = json.loads((handle.metadata() or {}).get("meta", "{}"))
            if meta.get("world") != self.collective.world:
                return False
            phases.add(meta.get("phase"))
        return len(phases) == 1

    def _thresholds(self, stats: dict, name: str) -> torch.Tensor:
        return stats[f"quantiles/{name}"].quantiles([1.0 - self.config.quantile])[:, 0].float()

    def _result(self, stats: dict) -> Dissection:
        result = Dissection(self.config, self.concepts, self.categories, self.size)
        for name in self.config.layers:
            levels, topk = stats[f"levels/{name}"], stats[f"topk/{name}"]
            threshold = self._thresholds(stats, name)
            position = (levels.levels == threshold[:, None]).float().argmax(1)
            iou_all = levels.iou()
            iou = iou_all.gather(2, position[:, None, None].expand(-1, iou_all.shape[1], 1))[..., 0]
            result.layers[name] = LayerResult(name, self.shapes[name], threshold, iou, levels.best_levels(),
                                              topk.indices, topk.values)
        return result

    def finish(self, result: Dissection, extra: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """On rank 0: write results and final statistics, then drop the checkpoint. Returns dissect.json."""
        document = None
        if self.collective.rank == 0:
            save_statistics(self.out / "statistics.safetensors", self.statistics,
                            {"config": asdict(self.config), "concepts": self.concepts, "categories": self.categories})
            document = write_results(result, self.out, extra)
        self.collective.barrier()  # checkpoints go only once the results are on disk
        self.checkpoint_path.unlink(missing_ok=True)
        return document


def label_scores(result: Dissection, name: str) -> torch.Tensor:
    """IoU (U, C) that labels units: at each (unit, concept)'s IQR level ("iqr", the paper's choice) or at
    each unit's quantile threshold ("quantile")."""
    layer = result.layers[name]
    return layer.iqr["iou"] if result.config.label_method == "iqr" else layer.iou


def unit_records(result: Dissection, name: str) -> list[dict[str, Any]]:
    """One JSON-able record per unit of layer `name`, labelled by both threshold methods."""
    layer = result.layers[name]
    by_quantile_iou, by_quantile = layer.iou.max(1)
    by_iqr_iou, by_iqr = layer.iqr["iou"].max(1)
    use_iqr = result.config.label_method == "iqr"
    records = []
    for unit in range(layer.iou.shape[0]):
        q_concept, p_concept = int(by_quantile[unit]), int(by_iqr[unit])
        concept = p_concept if use_iqr else q_concept
        iou = float(by_iqr_iou[unit] if use_iqr else by_quantile_iou[unit])
        iqr = float(layer.iqr["iqr"][unit, concept])
        kept = layer.top_indices[unit] >= 0
        records.append({
            "unit": unit,
            "concept": result.concepts[concept],
            "category": result.categories[concept],
            "iou": iou,
            "iqr": iqr,
            "threshold": float(layer.iqr["threshold"][unit, concept] if use_iqr else layer.thresholds[unit]),
            "interpretable": bool(iou > result.config.min_iou and iqr > result.config.min_iqr),
            "quantile_threshold": float(layer.thresholds[unit]),
            "quantile_concept": result.concepts[q_concept],
            "quantile_iou": float(by_quantile_iou[unit]),
            "iqr_concept": result.concepts[p_concept],
            "iqr_threshold": float(layer.iqr["threshold"][unit, p_concept]),
            "iqr_iou": float(by_iqr_iou[unit]),
            "top_samples": layer.top_indices[unit][kept].tolist(),
            "top_values": layer.top_values[unit][kept].tolist(),
        })
    return records


def concept_rankings(result: Dissection, name: str) -> dict[str, dict[str, Any]]:
    """Per concept: units ranked by their labelling IoU for it (descending; ties by unit number)."""
    matrix = label_scores(result, name)
    rankings = {}
    for c, concept in enumerate(result.concepts):
        scores = matrix[:, c].tolist()
        order = sorted(range(len(scores)), key=lambda u: (-scores[u], u))
        rankings[concept] = {"category": result.categories[c], "units": order, "iou": [scores[u] for u in order]}
    return rankings


def to_json(result: Dissection, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The dissect.json document (schema in docs/dissect-schema.md)."""
    layers = {}
    for name, layer in result.layers.items():
        units = unit_records(result, name)
        counts: dict[str, int] = {}
        for record in units:
            if record["interpretable"]:
                counts[record["concept"]] = counts.get(record["concept"], 0) + 1
        layers[name] = {
            "shape": list(layer.shape),
            "interpretable_units": sum(counts.values()),
            "interpretable_by_concept": counts,
            "units": units,
            "concepts": concept_rankings(result, name),
        }
    return {
        "schema": SCHEMA_VERSION,
        "config": asdict(result.config),
        "concepts": [{"name": n, "category": c} for n, c in zip(result.concepts, result.categories, strict=True)],
        "segmentation_size": list(result.size),
        "label_method": result.config.label_method,
        "threshold_method": (
            f"quantile_*: one level per unit, the top {result.config.quantile:g} of its upsampled activations "
            f"(threshold set); iqr_*: per (unit, concept), the level among {result.config.iqr_levels} candidates "
            "(top 0.1% to 100% of the threshold set) maximising I(A;S)/H(A,S) on the IoU set, as in the paper; "
            f"units are labelled by the {result.config.label_method} method"
        ),
        **(extra or {}),
        "layers": layers,
    }


CSV_COLUMNS = ("layer", "unit", "concept", "category", "iou", "iqr", "threshold", "interpretable",
               "quantile_concept", "quantile_iou", "quantile_threshold", "iqr_concept", "iqr_iou", "iqr_threshold")


def to_csv(document: dict[str, Any]) -> str:
    """One row per unit of every layer, the columns of CSV_COLUMNS."""
    lines = [",".join(CSV_COLUMNS)]
    for name, layer in document["layers"].items():
        for record in layer["units"]:
            row = {"layer": name, **record}
            lines.append(",".join(f"{row[c]:.6g}" if isinstance(row[c], float) else str(row[c]) for c in CSV_COLUMNS))
    return "\n".join(lines) + "\n"


def write_results(result: Dissection, out: str | Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write dissect.json and dissect.csv atomically into `out`; returns the JSON document."""
    out = Path(out)
    document = to_json(result, extra)
    write_json_atomic(out / "dissect.json", document)
    write_text_atomic(out / "dissect.csv", to_csv(document))
    return document
