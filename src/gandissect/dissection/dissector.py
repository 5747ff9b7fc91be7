"""Network dissection of a generator, in one pass over the IoU set or in two passes.

Two passes (`passes="two"`, the design of the paper's code run on separate sets):
1. Threshold set (seed `threshold_seed`): the generator runs only up to the deepest chosen layer; each unit's
   upsampled activations fill a `UnitQuantiles` histogram. Its edges give each unit's top-`quantile`
   threshold and `levels` candidate levels (top 0.1% ... 100%, log-spaced).
2. IoU set (seed `iou_seed`): generator and segmenter run; `LevelCounts` counts, exactly and per fold of
   samples, each unit's pixels above each level against each concept; `TopK` keeps each unit's top samples;
   `Moments` and `ConditionalMean` keep what insertion values need.

One pass (`passes="one"`): only the IoU set runs. Its `UnitQuantiles` histogram and, per fold, a joint
histogram of (unit, histogram slot, concept) (`LevelCounts.slot_histogram`) are filled together; after the
pass the thresholds and candidate levels come from the histogram exactly as in pass 1, and the slot counts
are summed into the counts at those levels (`at_levels`), equal to what pass 2 would count on the same set.
What changes is which samples choose the thresholds: the IoU set's own, not a separate set's. The quantile
threshold sees only activations, never labels, so it cannot be tuned to a concept; the IQR thresholds were
always chosen on the IoU set, and their cross-fitted IoU (chosen on one fold, counted on the others) stays
as honest as before. `passes="auto"` (the command line's default; the API's is "two") runs one pass when the
slot histograms fit in a quarter of the free memory (int32 counts when no cell can overflow), else two;
`Dissector.passes` and dissect.json's `config.passes` say which ran.

The labelling rules (`labels`) then read thresholds, IoU, IQR and cross-fitted IoU off the counts.

Constructing a `Dissector` touches nothing; `check()` validates the models on one sample and chooses the
passes; `run()` takes the run folder (see `engine.runfolder`), checkpoints every few batches and resumes
exactly; `finish()` writes the results and commits them to the folder.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gandissect.core.errors import ConfigError
from gandissect.core.hooks import get_layer
from gandissect.core.levels import LevelCounts
from gandissect.core.ranges import RangeCounts, declared_range
from gandissect.core.segmenters import Segmenter, check_segmenter
from gandissect.core.stats import ConditionalMean, Moments, Statistic, TopK, UnitQuantiles
from gandissect.dissection.config import DissectConfig
from gandissect.dissection.results import Dissection, output_range, quantile_edges, to_csv, to_json
from gandissect.engine.collectives import Collective, SingleProcess
from gandissect.engine.runfolder import RunFolder, fingerprint
from gandissect.engine.samplepass import RANGE, Batch, SamplePass, check_device
from gandissect.engine.speed import inference_copy
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
ONE_PASS_SHARE = 0.25
"""`passes="auto"` runs one pass when its slot histograms take at most this share of the free memory."""


def log_fractions(count: int) -> torch.Tensor:
    """Top fractions log-spaced from 0.1% to 100%, descending (so levels ascend)."""
    return torch.logspace(-3, 0, count, dtype=torch.float64).flip(0)


class Dissector:
    """Runs a dissection into a run folder; `run()` returns a `Dissection`, `finish()` writes it."""

    def __init__(self, generator: nn.Module, segmenter: Segmenter, config: DissectConfig, out: str | Path,
                 device: str | torch.device = "cpu", resume: bool = False, force: bool = False,
                 collective: Collective | None = None, progress: bool = True,
                 on_batch: Callable[[str, int], None] | None = None, identity: dict[str, Any] | None = None,
                 workers: int | None = None) -> None:
        self.generator = generator
        self.segmenter = segmenter
        self.config = config
        self.out = Path(out)
        self.device: Any = device
        self.resume, self.force = resume, force
        self.collective = collective or SingleProcess()
        self.progress = progress
        self.on_batch = on_batch
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ConfigError(f"--workers must be a positive whole number (1: no worker threads); got {workers}")
        self.workers = workers
        """Threads computing batches ahead on a CPU (`engine.workers`; None: torch's thread count, at most 4)."""
        self.identity_extra = dict(identity or {})
        self.folder = RunFolder(self.out, RESULT_FILES, self.collective.rank, self.collective.world)
        self.size: tuple[int, int] | None = None
        self._resumed: bool | None = None
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.passes = ""
        """'one' or 'two' once `check()` has chosen."""
        self._running: tuple[Any, Any] = (generator, segmenter)
        """The models the passes run: `check()` makes inference copies."""

    # ------------------------------------------------------------------------------------------ checks

    def check(self) -> None:
        """Validate settings, models and folder on one sample, before any long work; learn sizes and shapes."""
        if self.size is not None:
            return
        self.device = check_device(self.device)
        self.generator.to(self.device).eval()
        for layer in self.config.layers:
            get_layer(self.generator, layer)
        # the passes run on copies: batch norms folded, channels-last; same function (see engine.speed)
        self._running = (inference_copy(self.generator, keep=self.config.layers), inference_copy(self.segmenter))
        self.concepts, self.categories = check_segmenter(self.segmenter)
        self.folder.check_writable()
        probe = self._pass(self.config.iou_seed, with_labels=True, description="probe")
        batch = probe.batch(0, 1)
        assert batch.images is not None and batch.labels is not None  # checked: shape, finite, range (wild)
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
        self.passes, self._why = self._choose_passes()

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

    def _slot_histograms(self) -> tuple[int, torch.dtype]:
        """Bytes and count type of the one-pass slot histograms: int32 unless a cell could pass 2**31 - 1."""
        assert self.size is not None
        cells = -(-self.config.samples // self.config.folds) * self.size[0] * self.size[1]
        dtype = torch.int32 if cells < 2**31 else torch.long
        units = sum(shape[0] for shape in self.shapes.values())
        return LevelCounts.slot_histogram_bytes(units, self.config.bins, len(self.concepts), self.config.folds,
                                                dtype), dtype

    def _choose_passes(self) -> tuple[str, str]:
        """'one' or 'two' (the same on every rank: rank 0 decides), and why."""
        need, _ = self._slot_histograms()
        what = f"slot histograms of {need / 2**20:,.0f} MiB"
        if self.config.passes != "auto":
            if self.config.passes == "one" and self.device.type == "cpu":
                have = _physical_memory()
                if have and need > MEMORY_SHARE * have:
                    raise ConfigError(f"--passes one needs {what}, more than half of this machine's {have / 2**30:.1f} "
                                      "GiB: use --passes two, fewer --layers or a smaller --seg-size")
            return self.config.passes, f"chosen ({what} for one pass)"
        free = _free_memory(self.device)
        one = torch.tensor(int(free > 0 and need <= ONE_PASS_SHARE * free))
        one = self.collective.broadcast({"one": one})["one"]
        if bool(one):
            return "one", f"{what} fit in a quarter of the free {free / 2**30:.1f} GiB"
        return "two", f"{what} would not fit in a quarter of the free {free / 2**30:.1f} GiB"

    def identity(self) -> dict[str, Any]:
        """What a resumed run must share with the run it continues."""
        return {"config": self.config.numbers_key(), "generator": fingerprint(self.generator),
                "segmenter": fingerprint(self.segmenter), "segmentation_size": list(self.size or ()),
                "passes": self.passes, **self.identity_extra}

    # ------------------------------------------------------------------------------------------ passes

    def _pass(self, seed: int, with_labels: bool, description: str, checkpoint: Any = None) -> SamplePass:
        generator, segmenter = self._running
        return SamplePass(generator, seed=seed, samples=self.config.samples, batch_size=self.config.batch_size,
                          layers=self.config.layers, segmenter=segmenter if with_labels else None,
                          seg_size=self.size[0] if with_labels and self.size else None, images=with_labels,
                          device=self.device, collective=self.collective, description=description,
                          progress=self.progress, checkpoint=checkpoint,
                          checkpoint_every=self.config.checkpoint_every, inference=True, workers=self.workers,
                          on_batch=(lambda done: self.on_batch(description, done)) if self.on_batch else None)

    def prepare(self) -> bool:
        """`check()`, then take the run folder (rank 0; the others wait). Returns whether an unfinished run
        is resumed. Idempotent; `run()` calls it."""
        self.check()
        if self._resumed is None:
            resumed = False
            if self.collective.rank == 0:
                resumed = self.folder.open(self.identity(), resume=self.resume, force=self.force)
                if self.progress:  # said once the folder is taken: every refusal is one line before it
                    print(f"dissection in {self.passes} pass{'es' if self.passes == 'two' else ''}: {self._why}",
                          file=sys.stderr)
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
        stats = self._one_pass(stats, meta) if self.passes == "one" else self._two_passes(stats, meta)
        assert self.size is not None
        config = dataclasses.replace(self.config, passes=self.passes)  # the results record which ran
        return Dissection.from_statistics(config, self.concepts, self.categories, self.size, self.shapes, stats)

    def _two_passes(self, stats: dict[str, Statistic], meta: dict[str, Any]) -> dict[str, Statistic]:
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
        return {**stats, **self.collective.merge(iou_stats)}  # the quantiles were merged after their own pass

    def _one_pass(self, stats: dict[str, Statistic], meta: dict[str, Any]) -> dict[str, Statistic]:
        """Histograms and slot counts over the IoU set; then thresholds, levels and their counts from them."""
        iou = self._pass(self.config.iou_seed, True, "dissection", self._checkpointer("one"))
        if not stats:
            stats = self._start_one_pass(self._calibrate(iou))
        stats = iou.run(stats, self._add_one_pass, start=meta.get("next", 0))
        out = {name: stat for name, stat in stats.items() if not name.startswith("slots/")}
        for name in self.config.layers:
            slots = stats[f"slots/{name}"]
            assert isinstance(slots, LevelCounts)
            out[f"levels/{name}"] = slots.at_levels(self._candidate_edges(stats[f"quantiles/{name}"]))
        return out

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

    def _candidate_edges(self, histogram: Statistic) -> torch.Tensor:
        """Candidate levels (U, L + 1) from a merged histogram: edges at log-spaced top fractions plus the
        quantile threshold's edge."""
        assert isinstance(histogram, UnitQuantiles)
        edges = histogram.nearest_edges(histogram.quantiles(1.0 - log_fractions(self.config.levels)))
        return torch.cat([edges, quantile_edges(histogram, self.config.quantile)[:, None]], 1)

    def _start_iou_pass(self, stats: dict[str, Statistic]) -> dict[str, Statistic]:
        """Level counts at the candidate levels, and the other statistics of the IoU set."""
        out: dict[str, Statistic] = dict(stats)
        for name in self.config.layers:
            histogram = stats[f"quantiles/{name}"]
            assert isinstance(histogram, UnitQuantiles)
            out[f"levels/{name}"] = LevelCounts(histogram.low, histogram.high, histogram.bins,
                                                self._candidate_edges(histogram), len(self.concepts),
                                                self.config.folds)
            out.update(self._unit_statistics(name, histogram.low.shape[0]))
        return {**out, **self._image_statistics()}

    def _start_one_pass(self, stats: dict[str, Statistic]) -> dict[str, Statistic]:
        """Slot histograms per fold beside the calibrated quantile histograms, and the other statistics."""
        out: dict[str, Statistic] = dict(stats)
        _, dtype = self._slot_histograms()
        for name in self.config.layers:
            histogram = stats[f"quantiles/{name}"]
            assert isinstance(histogram, UnitQuantiles)
            out[f"slots/{name}"] = LevelCounts.slot_histogram(histogram.low, histogram.high, histogram.bins,
                                                              len(self.concepts), self.config.folds, dtype)
            out.update(self._unit_statistics(name, histogram.low.shape[0]))
        return {**out, **self._image_statistics()}

    def _image_statistics(self) -> dict[str, Statistic]:
        """How many image values the IoU set's images had outside the generator's range (clipped to it)."""
        return {RANGE: RangeCounts(*declared_range(self.generator), device=self.device)}

    def _unit_statistics(self, name: str, units: int) -> dict[str, Statistic]:
        return {f"topk/{name}": TopK(units, self.config.topk, device=self.device),
                f"moments/{name}": Moments(units, device=self.device),
                f"condmean/{name}": ConditionalMean(units, len(self.concepts), device=self.device)}

    def _add_counts(self, batch: Batch, stats: dict[str, Statistic], with_quantiles: bool = False) -> None:
        """The IoU set's statistics; `with_quantiles` (one pass) fills the quantile histograms in the same
        pass over the upsampled values as the slot counts, when both are at the labels' size."""
        assert batch.labels is not None
        counts = "slots" if self.passes == "one" else "levels"
        folds = batch.indices % self.config.folds
        together = with_quantiles and tuple(batch.labels.shape[-2:]) == self.size
        if with_quantiles and not together:
            self._add_thresholds(batch, stats)
        for name in self.config.layers:
            acts = batch.features[name]
            quantiles = stats[f"quantiles/{name}"] if together else None
            stats[f"{counts}/{name}"].add(acts, batch.labels, folds, quantiles=quantiles)  # type: ignore[attr-defined]
            stats[f"topk/{name}"].add(acts.flatten(2).amax(2), batch.indices)  # type: ignore[attr-defined]
            stats[f"moments/{name}"].add(acts)  # type: ignore[attr-defined]
            stats[f"condmean/{name}"].add(acts, batch.labels)  # type: ignore[attr-defined]

    def _add_one_pass(self, batch: Batch, stats: dict[str, Statistic]) -> None:
        self._add_counts(batch, stats, with_quantiles=True)

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
                self.folder.commit(output_range(result))
            self.collective.barrier()
        finally:
            self.folder.close()
        return document


def _free_memory(device: torch.device) -> int:
    """Bytes free for new tensors on `device`: the kernel's MemAvailable on a CPU (else all physical
    memory), what CUDA reports free on a GPU, 0 when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return _physical_memory()


def _physical_memory() -> int:
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0
