"""A dissection's results: built from its statistics, written as dissect.json / dissect.csv, read back.

`Dissection.load(run)` rebuilds the results of a finished run folder from its statistics.safetensors, so
later tools (interventions, the painter) get thresholds, labels, rankings and the statistics themselves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from gandissect.core.errors import GandissectError
from gandissect.core.levels import LevelCounts
from gandissect.core.ranges import RangeCounts
from gandissect.core.stats import Statistic, TopK, UnitQuantiles
from gandissect.dissection.config import DissectConfig
from gandissect.dissection.labels import RULES, RuleResult, apply_rules, baseline_iou
from gandissect.engine.runfiles import RunFiles, Snapshot
from gandissect.engine.samplepass import RANGE
from gandissect.engine.storage import statistics_from_bytes

SCHEMA_VERSION = 2
STATISTICS = "statistics.safetensors"
TOP_CONCEPTS = 5


@dataclass
class LayerResult:
    """One layer: each unit's top-quantile threshold, every labelling rule's outcome, top samples."""

    name: str
    shape: tuple[int, ...]
    thresholds: torch.Tensor
    rules: dict[str, RuleResult]
    baseline: torch.Tensor
    top_indices: torch.Tensor
    top_values: torch.Tensor

    @property
    def iou(self) -> torch.Tensor:
        """IoU (U, C) at each unit's top-quantile threshold."""
        return self.rules["quantile"].iou


@dataclass
class Dissection:
    """Results of a dissection, with the statistics they came from."""

    config: DissectConfig
    concepts: list[str]
    categories: list[str]
    size: tuple[int, int]
    layers: dict[str, LayerResult] = field(default_factory=dict)
    statistics: dict[str, Statistic] = field(default_factory=dict)

    @classmethod
    def from_statistics(cls, config: DissectConfig, concepts: list[str], categories: list[str],
                        size: tuple[int, int], shapes: dict[str, tuple[int, ...]],
                        statistics: dict[str, Statistic]) -> Dissection:
        result = cls(config, list(concepts), list(categories), tuple(size), statistics=statistics)  # type: ignore[arg-type]
        for name in config.layers:
            counts, topk = statistics[f"levels/{name}"], statistics[f"topk/{name}"]
            assert isinstance(counts, LevelCounts) and isinstance(topk, TopK)
            index = quantile_level_index(statistics[f"quantiles/{name}"], counts, config.quantile)
            thresholds = counts.levels.gather(1, index[:, None])[:, 0]
            result.layers[name] = LayerResult(name, tuple(shapes[name]), thresholds, apply_rules(counts, index),
                                              baseline_iou(counts), topk.indices, topk.values)
        return result

    @classmethod
    def load(cls, run: str | Path | RunFiles, device: str | torch.device = "cpu") -> Dissection:
        """The results of the finished dissection in run folder `run` (a path, or its files already open),
        checked against the run's manifest."""
        if not isinstance(run, (str, Path)):
            return cls._from_files(run, device)
        with Snapshot(run) as files:
            return cls._from_files(files, device)

    @classmethod
    def _from_files(cls, files: RunFiles, device: str | torch.device) -> Dissection:
        path = files.root / STATISTICS
        if STATISTICS not in files.names(STATISTICS):
            raise GandissectError(f"{files.root} holds no finished dissection (no {STATISTICS}): run "
                                  "`gandissect dissect` first")
        statistics, meta = statistics_from_bytes(files.read(STATISTICS), str(path), device)
        try:
            config = DissectConfig(**meta["config"])
            return cls.from_statistics(config, meta["concepts"], meta["categories"], tuple(meta["size"]),
                                       {k: tuple(v) for k, v in meta["shapes"].items()}, statistics)
        except (KeyError, TypeError) as error:
            raise GandissectError(f"{path} was written by another version of gandissect ({error})") from None

    def meta(self) -> dict[str, Any]:
        """What `load` needs beside the statistics."""
        return {"config": asdict(self.config), "concepts": self.concepts, "categories": self.categories,
                "size": list(self.size), "shapes": {name: list(layer.shape) for name, layer in self.layers.items()}}

    def label_rule(self, rule: str | None = None) -> str:
        rule = rule or self.config.label_method
        if rule not in RULES:
            raise GandissectError(f"no labelling rule {rule!r}; rules: {', '.join(RULES)}")
        return rule

    def interpretable(self, layer: str, rule: str | None = None) -> torch.Tensor:
        """(U, C) bool: IoU above min_iou, IQR above min_iqr, and IoU above the whole-image baseline."""
        outcome = self.layers[layer].rules[self.label_rule(rule)]
        baseline = self.layers[layer].baseline.to(outcome.iou.device)[None, :]
        return ((outcome.iou > self.config.min_iou) & (outcome.iqr > self.config.min_iqr)
                & (outcome.iou > baseline))


def quantile_edges(histogram: Statistic, quantile: float) -> torch.Tensor:
    """(U,) the histogram edge nearest each unit's top-`quantile` activation: the unit's threshold."""
    assert isinstance(histogram, UnitQuantiles)
    return histogram.nearest_edges(histogram.quantiles([1.0 - quantile]))[:, 0]


def quantile_level_index(histogram: Statistic, counts: LevelCounts, quantile: float) -> torch.Tensor:
    """(U,) the position of each unit's quantile threshold among its levels (it is always one of them)."""
    edge = quantile_edges(histogram, quantile).to(counts.edges.device)
    return (counts.edges == edge[:, None]).int().argmax(1)


def _concept_entry(result: Dissection, outcome: RuleResult, unit: int, concept: int) -> dict[str, Any]:
    return {
        "concept": result.concepts[concept],
        "category": result.categories[concept],
        "iou": float(outcome.iou[unit, concept]),
        "crossfit_iou": float(outcome.crossfit_iou[unit, concept]),
        "iqr": float(outcome.iqr[unit, concept]),
        "threshold": float(outcome.threshold[unit, concept]),
    }


def unit_records(result: Dissection, name: str) -> list[dict[str, Any]]:
    """One JSON-able record per unit of layer `name`: its label under the run's rule and under every rule."""
    layer = result.layers[name]
    rule = result.label_rule()
    labels = {r: outcome.labels()[1] for r, outcome in layer.rules.items()}
    interpretable = {r: result.interpretable(name, r) for r in layer.rules}
    order = layer.rules[rule].score.argsort(dim=1, descending=True, stable=True)[:, :TOP_CONCEPTS]
    records = []
    for unit in range(layer.thresholds.shape[0]):
        concept = int(labels[rule][unit])
        kept = layer.top_indices[unit] >= 0
        record = {"unit": unit, **_concept_entry(result, layer.rules[rule], unit, concept),
                  "baseline_iou": float(layer.baseline[concept]),
                  "interpretable": bool(interpretable[rule][unit, concept]),
                  "quantile_threshold": float(layer.thresholds[unit])}
        record["labels"] = {
            r: {**_concept_entry(result, outcome, unit, int(labels[r][unit])),
                "interpretable": bool(interpretable[r][unit, int(labels[r][unit])])}
            for r, outcome in layer.rules.items()
        }
        record["top_concepts"] = [_concept_entry(result, layer.rules[rule], unit, int(c)) for c in order[unit]]
        record["top_samples"] = layer.top_indices[unit][kept].tolist()
        record["top_values"] = layer.top_values[unit][kept].tolist()
        records.append(record)
    return records


def concept_rankings(result: Dissection, name: str) -> dict[str, dict[str, Any]]:
    """Per concept: units ranked by the rule's score for it (ties by unit number), each with its own threshold
    for that concept."""
    layer = result.layers[name]
    outcome = layer.rules[result.label_rule()]
    rankings = {}
    for c, concept in enumerate(result.concepts):
        order = outcome.score[:, c].argsort(descending=True, stable=True).tolist()
        rankings[concept] = {
            "category": result.categories[c],
            "baseline_iou": float(layer.baseline[c]),
            "units": order,
            "iou": [float(outcome.iou[u, c]) for u in order],
            "crossfit_iou": [float(outcome.crossfit_iou[u, c]) for u in order],
            "thresholds": [float(outcome.threshold[u, c]) for u in order],
        }
    return rankings


def output_range(result: Dissection) -> dict[str, Any]:
    """{"output_range": how many image values of the IoU set were clipped to the generator's range} when the
    run counted them (see core.ranges), else {}."""
    counts = result.statistics.get(RANGE)
    return {"output_range": counts.to_json()} if isinstance(counts, RangeCounts) else {}


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
    baseline = next(iter(result.layers.values())).baseline if result.layers else torch.zeros(len(result.concepts))
    config = result.config
    chosen_on = (f"the IoU set itself (seed {config.iou_seed}, one pass)" if config.passes == "one"
                 else f"the threshold set (seed {config.threshold_seed})")
    return {
        "schema": SCHEMA_VERSION,
        "config": asdict(config),
        "concepts": [{"name": n, "category": c, "baseline_iou": float(b)}
                     for n, c, b in zip(result.concepts, result.categories, baseline.tolist(), strict=True)],
        "segmentation_size": list(result.size),
        "label_method": config.label_method,
        "label_rules": dict(RULES),
        "threshold_method": (
            f"quantile: one level per unit, the top {config.quantile:g} of its upsampled activations on "
            f"{chosen_on}; iqr*: per (unit, concept), the level among {config.levels} "
            "candidates (top 0.1% to 100% of the same set, on histogram edges) maximising I(A;S)/H(A,S) on "
            f"the IoU set (seed {config.iou_seed}); crossfit_iou: that threshold chosen on one of {config.folds} "
            "folds of the IoU set and counted on the others; interpretable: IoU > min_iou, IQR > min_iqr and IoU "
            f"above the concept's whole-image IoU; units are labelled by the {config.label_method} rule"
        ),
        **output_range(result),
        **(extra or {}),
        "layers": layers,
    }


CSV_COLUMNS = ("layer", "unit", "concept", "category", "iou", "crossfit_iou", "iqr", "threshold", "interpretable",
               "baseline_iou")


def to_csv(document: dict[str, Any]) -> str:
    """One row per unit of every layer: CSV_COLUMNS, then `<rule>_concept` and `<rule>_iou` for every rule."""
    rules = list(document.get("label_rules", RULES))
    header = [*CSV_COLUMNS, *(f"{rule}_{what}" for rule in rules for what in ("concept", "iou"))]
    lines = [",".join(header)]
    for name, layer in document["layers"].items():
        for record in layer["units"]:
            row = {"layer": name, **record}
            for rule in rules:
                row[f"{rule}_concept"] = record["labels"][rule]["concept"]
                row[f"{rule}_iou"] = record["labels"][rule]["iou"]
            lines.append(",".join(f"{row[c]:.6g}" if isinstance(row[c], float) else str(row[c]) for c in header))
    return "\n".join(lines) + "\n"
