"""Network dissection of a generator: two uses of the sample pass.

1. Threshold set (seed `threshold_seed`): the generator runs only up to the deepest chosen layer; each unit's
   upsampled activations fill a `UnitQuantiles` histogram. Its edges give each unit's top-`quantile`
   threshold and `levels` candidate levels (top 0.1% ... 100%, log-spaced).
2. IoU set (seed `iou_seed`): generator and segmenter run; `LevelCounts` counts, exactly and per fold of
   samples, each unit's pixels above each level against each concept; `TopK` keeps each unit's top samples;
   `Moments` and `ConditionalMean` keep what insertion values need.
The labelling rules (`labels`) then read thresholds, IoU, IQR and cross-fitted IoU off the counts.

Constructing a `Dissector` touches nothing; `check()` validates the models on one sample; `run()` takes the
run folder (see `engine.runfolder`), checkpoints every few batches and resumes exactly; `finish()` writes
the results and commits them to the folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gandissect.core.errors import ConfigError
from gandissect.core.hooks import get_layer
from gandissect.core.levels import LevelCounts
from gandissect.core.segmenters import Segmenter, check_segmenter
from gandissect.core.stats import ConditionalMean, Moments, Statistic, TopK, UnitQuantiles
from gandissect.dissection.config import DissectConfig
from gandissect.dissection.results import Dissection, quantile_edges, to_csv, to_json
from gandissect.engine.collectives import Collective, SingleProcess
from gandissect.engine.runfolder import RunFolder, fingerprint
from gandissect.engine.samplepass import Batch, SamplePass, check_device, check_image_range
from gandissect.engine.storage import (
    load_statistics,
    read_checkpoint_meta,
    save_statistics,
    write_json_atomic,
    write_text_atomic,
)

RESULT_FILES = ("dissect.json", "dissect.csv", "statistics.safetensors", "report.html", "causal")
"""What a dissection run folder holds; `causal/` (written later by the causal tools) belongs to the dissection
it was measured on, so a forced new run removes it when it commits."""
MEMORY_SHARE = 0.5


def log_fractions(count: int) -> torch.Tensor:
    """Top fractions log-spaced from 0.1% to 100%, descending (so levels ascend)."""
    return torch.logspace(-3, 0, count, dtype=torch.float64).flip(0)


class Dissector:
    """Runs a dissection into a run folder; `run()` returns a `Dissection`, `finish()` writes it."""

    def __init__(self, generator: nn.Module, segmenter: Segmenter, config: DissectConfig, out: str | Path,
                 device: str | torch.device = "cpu", resume: bool = False, force: bool = False,
                 collective: Collective | None = None, progress: bool = True,
                 on_batch: Callable[[str, int], None] | None = None, identity: dict[str, Any] | None = None) -> None:
        self.generator = generator
        self.segmenter = segmenter
        self.config = config
        self.out = Path(out)
        self.device: Any = device
        self.resume, self.force = resume, force
        self.collective = collective or SingleProcess()
        self.progress = progress
        self.on_batch = on_batch
        self.identity_extra = dict(identity or {})
        self.folder = RunFolder(self.out, RESULT_FILES, self.collective.rank, self.collective.world)
        self.size: tuple[int, int] | None = None
        self._resumed: bool | None = None
        self.shapes: dict[str, tuple[int, ...]] = {}

    # ------------------------------------------------------------------------------------------ checks

    def check(self) -> None:
        """Validate settings, models and folder on one sample, before any long work; learn sizes and shapes."""
        if self.size is not None:
            return
        self.device = check_device(self.device)
        self.generator.to(self.device).eval()
        for layer in self.config.layers:
            get_layer(self.generator, layer)
        self.concepts, self.categories = check_segmenter(self.segmenter)
        self.folder.check_writable()
        probe = self._pass(self.config.iou_seed, with_labels=True, description="probe")
        batch = probe.batch(0, 1)
        assert batch.images is not None and batch.labels is not None
        check_image_range(self.generator, batch.images)
        image_size = tuple(batch.images.shape[-2:])
        label_size = tuple(batch.labels.shape[-2:])
        if self.config.seg_size is None:
            self.size = label_size if label_size[0] * label_size[1] <= image_size[0] * image_size[1] else image_size
        else:
            self.size = (self.config.seg_size, self.config.seg_size)
        self.shapes = {name: tuple(batch.features[name].shape[1:]) for name in self.config.layers}
        for name, shape in self.shapes.items():
            if len(shape) != 3:
                raise ConfigError(f"layer {name!r} outputs shape {shape} per sample; dissection needs (units, h, w)")
        self._check_memory()

    def _check_memory(self) -> None:
        units = sum(shape[0] for shape in self.shapes.values())
        assert self.size is not None
        need = self.config.batch_size * units * self.size[0] * self.size[1] * 4 * 6
        if self.device.type == "cpu":
            have = _physical_memory()
            if have and need > MEMORY_SHARE * have:
                raise ConfigError(
                    f"--batch-size {self.config.batch_size} with {units} units at {self.size[0]}x{self.size[1]} needs "
                    f"about {need / 2**30:.1f} GiB per batch, more than half of this machine's {have / 2**30:.1f} "
                    "GiB: lower --batch-size or --seg-size")

    def identity(self) -> dict[str, Any]:
        """What a resumed run must share with the run it continues."""
        return {"config": self.config.numbers_key(), "generator": fingerprint(self.generator),
                "segmenter": fingerprint(self.segmenter), "segmentation_size": list(self.size or ()),
                **self.identity_extra}

    # ------------------------------------------------------------------------------------------ passes

    def _pass(self, seed: int, with_labels: bool, description: str, checkpoint: Any = None) -> SamplePass:
        return SamplePass(self.generator, seed=seed, samples=self.config.samples, batch_size=self.config.batch_size,
                          layers=self.config.layers, segmenter=self.segmenter if with_labels else None,
                          seg_size=self.size[0] if with_labels and self.size else None, images=with_labels,
                          device=self.device, collective=self.collective, description=description,
                          progress=self.progress, checkpoint=checkpoint,
                          checkpoint_every=self.config.checkpoint_every,
                          on_batch=(lambda done: self.on_batch(description, done)) if self.on_batch else None)

    def prepare(self) -> bool:
        """`check()`, then take the run folder (rank 0; the others wait). Returns whether an unfinished run
        is resumed. Idempotent; `run()` calls it."""
        self.check()
        if self._resumed is None:
            resumed = False
            if self.collective.rank == 0:
                resumed = self.folder.open(self.identity(), resume=self.resume, force=self.force)
            self.collective.barrier()
            self._resumed = resumed
        return self._resumed

    def run(self) -> Dissection:
        """Both passes (resuming from a checkpoint where there is one); the merged results."""
        try:
            self.prepare()
            return self._run()
        except BaseException:
            self.folder.close()
            raise

    def _run(self) -> Dissection:
        stats, meta = self._load_checkpoint()
        phase = meta.get("pass", "thresholds")
        if phase == "thresholds":
            thresholds = self._pass(self.config.threshold_seed, False, "thresholds", self._checkpointer("thresholds"))
            if not stats:
                stats = self._calibrate(thresholds)
            stats = thresholds.run(stats, self._add_thresholds, start=meta.get("next", 0))
            self._save_checkpoint(stats, {"pass": "iou", "next": 0})  # the merged histograms alone
            meta = {"pass": "iou", "next": 0}
        if meta.get("next", 0) == 0:
            stats = self._start_iou_pass(stats)
        iou = self._pass(self.config.iou_seed, True, "iou", self._checkpointer("iou"))
        stats = iou.run(stats, self._add_counts, start=meta.get("next", 0), merge=False)
        iou_stats = {name: stat for name, stat in stats.items() if not name.startswith("quantiles/")}
        stats = {**stats, **self.collective.merge(iou_stats)}  # the quantiles were merged after their own pass
        assert self.size is not None
        return Dissection.from_statistics(self.config, self.concepts, self.categories, self.size, self.shapes, stats)

    def _calibrate(self, thresholds: SamplePass) -> dict[str, Statistic]:
        """Histogram ranges from the first batch, on rank 0, shared with every rank."""
        grids: dict[str, torch.Tensor] = {}
        if self.collective.rank == 0:
            start, stop = thresholds.batches()[0]
            batch = thresholds.batch(start, stop)
            thresholds.keep(batch)
            for name in self.config.layers:
                histogram = UnitQuantiles.calibrate(batch.features[name], self.config.bins)
                grids[f"{name}/low"], grids[f"{name}/high"] = histogram.low, histogram.high
        grids = self.collective.broadcast(grids)
        return {f"quantiles/{name}": UnitQuantiles(grids[f"{name}/low"].to(self.device),
                                                   grids[f"{name}/high"].to(self.device), self.config.bins)
                for name in self.config.layers}

    def _add_thresholds(self, batch: Batch, stats: dict[str, Statistic]) -> None:
        for name in self.config.layers:
            stats[f"quantiles/{name}"].add(batch.features[name], self.size)  # type: ignore[attr-defined]

    def _start_iou_pass(self, stats: dict[str, Statistic]) -> dict[str, Statistic]:
        """Candidate levels from the merged histograms: edges at log-spaced top fractions plus the quantile."""
        out: dict[str, Statistic] = dict(stats)
        fractions = log_fractions(self.config.levels)
        for name in self.config.layers:
            histogram = stats[f"quantiles/{name}"]
            assert isinstance(histogram, UnitQuantiles)
            edges = histogram.nearest_edges(histogram.quantiles(1.0 - fractions))
            edges = torch.cat([edges, quantile_edges(histogram, self.config.quantile)[:, None]], 1)
            units = edges.shape[0]
            out[f"levels/{name}"] = LevelCounts(histogram.low, histogram.high, histogram.bins, edges,
                                                len(self.concepts), self.config.folds)
            out[f"topk/{name}"] = TopK(units, self.config.topk, device=self.device)
            out[f"moments/{name}"] = Moments(units, device=self.device)
            out[f"condmean/{name}"] = ConditionalMean(units, len(self.concepts), device=self.device)
        return out

    def _add_counts(self, batch: Batch, stats: dict[str, Statistic]) -> None:
        assert batch.labels is not None
        folds = batch.indices % self.config.folds
        for name in self.config.layers:
            acts = batch.features[name]
            stats[f"levels/{name}"].add(acts, batch.labels, folds)  # type: ignore[attr-defined]
            stats[f"topk/{name}"].add(acts.flatten(2).amax(2), batch.indices)  # type: ignore[attr-defined]
            stats[f"moments/{name}"].add(acts)  # type: ignore[attr-defined]
            stats[f"condmean/{name}"].add(acts, batch.labels)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------------------------------ checkpoints

    def _checkpointer(self, phase: str) -> Callable[[dict[str, Statistic], int], None]:
        return lambda stats, done: self._save_checkpoint(stats, {"pass": phase, "next": done})

    def _save_checkpoint(self, stats: dict[str, Statistic], meta: dict[str, Any]) -> None:
        save_statistics(self.folder.checkpoint_path(), stats, {**meta, "world": self.collective.world})

    def _load_checkpoint(self) -> tuple[dict[str, Statistic], dict[str, Any]]:
        """This rank's checkpoint, if every rank has one of this world size in the same pass; else a fresh start."""
        metas = []
        for rank in range(self.collective.world):
            path = self.folder.checkpoint_path(rank)
            metas.append(read_checkpoint_meta(path) if path.exists() else None)
        self.collective.barrier()
        if any(m is None or m.get("world") != self.collective.world for m in metas):
            return {}, {}
        if len({m["pass"] for m in metas if m}) != 1:
            return {}, {}
        return load_statistics(self.folder.checkpoint_path(), self.device)

    # ------------------------------------------------------------------------------------------ results

    def finish(self, result: Dissection, extra: dict[str, Any] | None = None,
               before_commit: Callable[[dict[str, Any], Path], None] | None = None) -> dict[str, Any] | None:
        """On rank 0: stage dissect.json, dissect.csv and the statistics (and whatever `before_commit` writes
        into the staging folder, such as the report), then commit them to the run folder. Returns dissect.json."""
        document = None
        try:
            if self.collective.rank == 0:
                save_statistics(self.folder.stage("statistics.safetensors"), result.statistics, result.meta())
                document = to_json(result, extra)
                write_json_atomic(self.folder.stage("dissect.json"), document)
                write_text_atomic(self.folder.stage("dissect.csv"), to_csv(document))
                if before_commit is not None:
                    before_commit(document, self.folder.partial)
                self.folder.commit()
            self.collective.barrier()
        finally:
            self.folder.close()
        return document


def _physical_memory() -> int:
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0
