"""Batches computed ahead by worker threads, each with its own copy of the models, handed out in order.

On a CPU, PyTorch's convolutions scale poorly over threads at the batch sizes a dissection uses: two workers
with one thread each run the scenes64 generator and segmenter about 1.3x faster than one worker with two
threads. Each worker owns a copy of the models, because hooks (a `Trace`) on a shared module would see every
worker's forward pass. The consumer sees the results in submission order, so statistics are added in the same
order, and give the same numbers, as without workers.
"""

from __future__ import annotations

import copy
import itertools
import queue
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import torch

MAX_WORKERS = 4
Item = TypeVar("Item")
Result = TypeVar("Result")


def worker_count(device: torch.device, requested: int | None = None) -> int:
    """Workers for a pass on `device`: `requested`, or on a CPU torch's thread count up to MAX_WORKERS;
    one (no worker threads) on other devices, where one stream of batches keeps the device busy."""
    if device.type != "cpu":
        return 1
    if requested is not None:
        return max(1, requested)
    return max(1, min(MAX_WORKERS, torch.get_num_threads()))


def model_copies(models: Any, count: int) -> list[Any] | None:
    """`models` and count - 1 deep copies of them (shared parts stay shared within each copy); None when
    they cannot be copied."""
    try:
        return [models, *(copy.deepcopy(models) for _ in range(count - 1))]
    except Exception:  # any model may refuse a deep copy; the pass then runs without workers
        return None


class Workers:
    """`count` threads, each running `compute(models, item)` with one of `copies` at a time and
    `threads_each` intra-op threads; `ordered` yields results in the items' order, at most count + 1 pending."""

    def __init__(self, copies: list[Any], threads_each: int = 1) -> None:
        self.count = len(copies)
        self.models: queue.Queue[Any] = queue.Queue()
        for models in copies:
            self.models.put(models)
        self.executor = ThreadPoolExecutor(self.count, thread_name_prefix="gandissect-batch",
                                           initializer=torch.set_num_threads, initargs=(threads_each,))

    def _with_models(self, compute: Callable[[Any, Item], Result], item: Item) -> Result:
        models = self.models.get()
        try:
            return compute(models, item)
        finally:
            self.models.put(models)

    def ordered(self, compute: Callable[[Any, Item], Result], items: Iterable[Item]) -> Iterator[Result]:
        """compute(models, item) for every item, in the items' order; a worker's error is raised here, at its
        item. Items are submitted only as results are taken, so a stopped consumer leaves little work behind."""
        pending: deque[Future[Result]] = deque()
        source = iter(items)
        for item in itertools.islice(source, self.count + 1):
            pending.append(self.executor.submit(self._with_models, compute, item))
        while pending:
            result = pending.popleft().result()
            for item in itertools.islice(source, 1):
                pending.append(self.executor.submit(self._with_models, compute, item))
            yield result

    def close(self) -> None:
        """Drop batches not started; wait for those running (at most one per worker)."""
        self.executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
