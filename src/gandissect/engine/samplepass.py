"""The sample pass: one loop over a seeded sample set that any statistic can ride on.

    sample_pass = SamplePass(generator, seed=1, samples=1000, batch_size=32, layers=["layer3"], segmenter=seg)
    stats = sample_pass.run({"mean": Moments(64)}, lambda batch, stats: stats["mean"].add(batch.features["layer3"]))

The set is cut into fixed batches; under torchrun batch b goes to rank b % world, and at the end the
statistics are merged over the process group in rank order, so any number of processes gives the results
of one. Edits (see `core.edits`) apply while the generator runs. With a `checkpoint` the pass saves its
statistics atomically every `checkpoint_every` batches and on Ctrl-C, and `run(..., start=k)` resumes
after this rank's k-th batch with exactly the statistics of an uninterrupted pass. A due checkpoint is
skipped while saving has taken more than CHECKPOINT_SHARE of the pass's time so far, so that large
statistics (a one-pass dissection's slot histograms) cost at most about that share however fast the batches.
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from gandissect.core.errors import GandissectError
from gandissect.core.hooks import Trace
from gandissect.core.ranges import STRICT_BATCHES, clip_to_range, declared_range
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import Segmenter, check_labels
from gandissect.core.stats import Statistic
from gandissect.engine.collectives import Collective, SingleProcess
from gandissect.engine.workers import Workers, model_copies, worker_count

CHECKPOINT_SHARE = 0.05
RANGE = "range/images"  # a RangeCounts in a pass's statistics counts the image values clipped to the range


class NonFiniteError(GandissectError, FloatingPointError):
    """A generator produced NaN or infinite activations or images."""


@dataclass
class Batch:
    """One batch of a sample pass: which samples, their latents, retained features, images and labels."""

    position: int
    start: int
    stop: int
    z: torch.Tensor
    features: dict[str, torch.Tensor]
    images: torch.Tensor | None
    labels: torch.Tensor | None
    clipped: tuple[torch.Tensor, int, float] | None = None  # per sample the values clipped, values per sample, largest

    @property
    def indices(self) -> torch.Tensor:
        return torch.arange(self.start, self.stop)


class Batches:
    """The fixed batches of `samples` samples from index `first` on, in order, as (start, stop), without
    listing them all."""

    def __init__(self, samples: int, batch_size: int, first: int = 0) -> None:
        self.samples, self.batch_size, self.first = samples, batch_size, first

    def __len__(self) -> int:
        return -(-self.samples // self.batch_size)

    def __getitem__(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        start = self.first + index * self.batch_size
        return start, min(start + self.batch_size, self.first + self.samples)


class Checkpoint(Protocol):
    """Where a pass saves its partial statistics: `save(stats, next_position)`."""

    def __call__(self, stats: dict[str, Statistic], next_position: int) -> None: ...


def check_finite(what: str, tensor: torch.Tensor, first_sample: int, per_unit: bool = True) -> None:
    """Raise NonFiniteError naming `what`, the units (channels) and samples that hold NaN or infinity."""
    bad = ~torch.isfinite(tensor)
    if bad.any():
        samples = (bad.flatten(1).any(1).nonzero().flatten() + first_sample).tolist()
        units = bad.flatten(2).any(2).any(0).nonzero().flatten().tolist() if per_unit and tensor.dim() > 2 else []
        where = f" in units {units[:20]}" if units else ""
        raise NonFiniteError(f"{what} produced NaN or infinite values{where} (samples {samples[:10]} of this set)")


def check_device(device: str | torch.device) -> torch.device:
    """The device, or a one-line error saying why it cannot be used here."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise GandissectError(f"--device {device!r} is not a device torch knows ({error})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GandissectError(f"--device {device}: this machine has no CUDA GPU that torch can use")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise GandissectError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise GandissectError(f"--device {device}: MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise GandissectError(f"--device {device}: use cpu, cuda, cuda:N or mps")
    return device


def check_image_shape(generator: nn.Module, images: Any) -> None:
    """Refuse generator output that is not a batch of RGB images, (N, 3, H, W) floats, naming what it is."""
    shape = tuple(images.shape) if isinstance(images, torch.Tensor) else None
    if shape is None or len(shape) != 4 or shape[1] != 3 or not images.is_floating_point():
        what = f"a tensor of shape {shape} and dtype {images.dtype}" if shape is not None else type(images).__name__
        raise GandissectError(f"{type(generator).__name__} returned {what}; a generator must return RGB images "
                              "(N, 3, H, W) as floats")


class SamplePass:
    """Generator (and optionally segmenter) over the fixed batches of one seeded sample set; with
    generate=False only the latents, for tools that run the generator their own way (interventions). With
    `first`, the pass covers samples first..first + samples - 1 of the set (a later round of an adaptive pass)."""

    def __init__(self, generator: nn.Module, *, seed: int, samples: int, batch_size: int, first: int = 0,
                 layers: Sequence[str] = (), edits: Mapping[str, Any] | None = None,
                 segmenter: Segmenter | None = None, seg_size: int | None = None, images: bool = True,
                 generate: bool = True,
                 device: str | torch.device = "cpu", collective: Collective | None = None,
                 description: str = "pass", progress: bool = True, checkpoint: Checkpoint | None = None,
                 checkpoint_every: int = 8, on_batch: Callable[[int], None] | None = None,
                 inference: bool = False, workers: int | None = 1) -> None:
        self.generator = generator
        self.seed, self.samples, self.batch_size, self.first = seed, samples, batch_size, first
        self.layers = list(layers)
        self.edits = dict(edits or {})
        self.segmenter = segmenter
        self.seg_size = seg_size
        self.images = images or segmenter is not None
        self.generate = generate
        self.device = torch.device(device)
        self.collective = collective or SingleProcess()
        self.description = description
        self.progress = progress and self.collective.rank == 0
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.on_batch = on_batch
        self.inference = inference
        self.workers = workers
        """Threads computing batches ahead on a CPU (engine.workers): a number, or None for torch's thread count
        up to MAX_WORKERS."""

    def batches(self) -> Batches:
        """Every batch of the set as (start, stop) sample indices (computed on demand: any count fits)."""
        return Batches(self.samples, self.batch_size, self.first)

    def mine(self) -> range:
        """The batches this rank runs."""
        return range(self.collective.rank, len(self.batches()), self.collective.world)

    def keep(self, batch: Batch) -> None:
        """Reuse `batch` when the pass reaches it (a batch computed ahead, e.g. for calibration)."""
        self._kept = batch

    def batch(self, start: int, stop: int, position: int = 0) -> Batch:
        """Run generator (and segmenter) on samples start..stop-1, with the pass's hooks and edits."""
        kept = getattr(self, "_kept", None)
        if kept is not None and (kept.start, kept.stop) == (start, stop):
            self._kept = None
            kept.position = position
            return kept
        return self._compute((self.generator, self.segmenter), start, stop, position)

    def _compute(self, models: tuple[nn.Module, Segmenter | None], start: int, stop: int, position: int) -> Batch:
        generator, segmenter = models
        z = sample_z(generator, self.seed, range(start, stop)).to(self.device)
        if not self.generate:
            return Batch(position, start, stop, z, {}, None, None)
        with self._no_grad(), Trace(generator, self.layers, edit=self.edits,
                                    stop=not self.images and bool(self.layers)) as trace:
            images = generator(z)
        for name in self.layers:
            check_finite(f"layer {name!r}", trace[name], start)
        labels, clipped = None, None
        if self.images:
            check_image_shape(generator, images)
            check_finite("the generator's images", images, start, per_unit=False)
            low, high = declared_range(generator)
            images, outside, largest = clip_to_range(images, low, high, strict=position < STRICT_BATCHES)
            clipped = (outside, images[0].numel(), largest)
            if segmenter is not None:
                labels = self.segment(images, segmenter)
        return Batch(position, start, stop, z, dict(trace.outputs), images if self.images else None, labels, clipped)

    def _no_grad(self) -> Any:
        """inference_mode with `inference` (a little faster; its tensors refuse in-place changes and autograd
        afterwards, so only for passes whose statistics just read the batch), else no_grad."""
        return torch.inference_mode() if self.inference else torch.no_grad()

    def segment(self, images: torch.Tensor, segmenter: Segmenter | None = None) -> torch.Tensor:
        """The segmenter's (the pass's, or a worker's copy of it) labels, checked against the protocol, at
        `seg_size` when set."""
        segmenter = segmenter or self.segmenter
        assert segmenter is not None
        with self._no_grad():
            raw = segmenter.segment(images)
        labels = check_labels(raw, images, len(segmenter.concepts), type(segmenter).__name__)
        if self.seg_size and tuple(labels.shape[-2:]) != (self.seg_size, self.seg_size):
            labels = F.interpolate(labels.float(), size=(self.seg_size, self.seg_size), mode="nearest").long()
        return labels

    def run(self, stats: dict[str, Statistic], update: Callable[[Batch, dict[str, Statistic]], None],
            start: int = 0, merge: bool = True) -> dict[str, Statistic]:
        """Feed this rank's batches from position `start` on to `update`; return the statistics merged over
        the process group (or this rank's own with merge=False)."""
        mine = self.mine()
        bar = tqdm(total=len(mine), initial=start, unit="batch", desc=self.description, disable=not self.progress,
                   dynamic_ncols=True)
        began, saving = time.perf_counter(), 0.0
        with _deferred_interrupt() as interrupted, self._batches(range(start, len(mine))) as computed:
            for position, batch in zip(range(start, len(mine)), computed, strict=True):
                if RANGE in stats and batch.clipped is not None:
                    stats[RANGE].add(*batch.clipped)  # type: ignore[call-arg]
                update(batch, stats)
                bar.update(1)
                done = position + 1
                due = (done % self.checkpoint_every == 0 and done < len(mine)
                       and saving <= CHECKPOINT_SHARE * (time.perf_counter() - began))
                if self.checkpoint is not None and (interrupted() or due):
                    saved = time.perf_counter()
                    self.checkpoint(stats, done)
                    saving += time.perf_counter() - saved
                if self.on_batch is not None:
                    self.on_batch(done)
                if interrupted():
                    bar.close()
                    raise KeyboardInterrupt
        bar.close()
        return self.collective.merge(stats) if merge else stats

    @contextmanager
    def _batches(self, positions: range) -> Iterator[Iterator[Batch]]:
        """This rank's batches at `positions`, in order: computed here, or ahead by worker threads."""
        batches, mine = self.batches(), self.mine()
        count = worker_count(self.device, self.workers) if self.generate else 1
        copies = model_copies((self.generator, self.segmenter), count) if count > 1 and len(positions) > 1 else None
        if copies is None:
            yield (self.batch(*batches[mine[p]], p) for p in positions)
            return
        threads = torch.get_num_threads()
        each = max(1, threads // len(copies))
        kept = getattr(self, "_kept", None)
        first = batches[mine[positions[0]]]
        first_kept = kept is not None and (kept.start, kept.stop) == first  # computed here already: not ahead
        ahead = positions[1:] if first_kept else positions
        torch.set_num_threads(each)  # this thread's statistics share the cores with the workers
        try:
            with Workers(copies, each) as workers:
                computed = workers.ordered(lambda models, p: self._compute(models, *batches[mine[p]], p), ahead)
                yield itertools.chain([self.batch(*first, positions[0])] if first_kept else [], computed)
        finally:
            torch.set_num_threads(threads)


@contextmanager
def _deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """Let a first Ctrl-C finish the current batch (so a checkpoint holds whole batches); a second one
    interrupts at once. Only in the main thread, where Python delivers signals."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    flag = {"hit": False}
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if flag["hit"]:
            raise KeyboardInterrupt
        flag["hit"] = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: flag["hit"]
    finally:
        signal.signal(signal.SIGINT, previous)
