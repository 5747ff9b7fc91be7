"""Batches computed ahead by worker threads: the same batches, in order, and the same dissection."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest
import torch

from gandissect.core.segmenters import ColorSegmenter
from gandissect.core.stats import Moments, TopK
from gandissect.dissection import DissectConfig, Dissector
from gandissect.engine.samplepass import SamplePass
from gandissect.engine.workers import Workers, model_copies, worker_count
from planted import PlantedGenerator


class Model:
    """Refuses to be used by two threads at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __deepcopy__(self, memo: dict) -> Model:
        return Model()

    def run(self, item: int) -> tuple[int, int]:
        assert self.lock.acquire(blocking=False), "a model copy was used by two workers at once"
        try:
            time.sleep(random.Random(item).uniform(0, 0.01))  # finish out of order
            return item, id(self)
        finally:
            self.lock.release()


def test_results_come_in_order_and_each_copy_serves_one_worker_at_a_time():
    copies = model_copies(Model(), 3)
    assert copies is not None and len({id(c) for c in copies}) == 3
    with Workers(copies) as workers:
        results = list(workers.ordered(lambda model, item: model.run(item), range(40)))
    assert [item for item, _ in results] == list(range(40))
    assert len({owner for _, owner in results}) > 1


def test_an_error_in_a_worker_reaches_the_consumer_and_later_items_are_dropped():
    started = []

    def compute(model, item):
        started.append(item)
        if item == 2:
            raise ValueError("batch 2 failed")
        return item

    with pytest.raises(ValueError, match="batch 2 failed"), Workers([object(), object()]) as workers:
        assert list(workers.ordered(compute, range(100)))
    assert max(started) < 10  # at most a few batches ahead, not the whole set


def test_uncopyable_models_and_other_devices_use_no_workers():
    class Uncopyable:
        def __deepcopy__(self, memo):
            raise TypeError("no")

    assert model_copies(Uncopyable(), 2) is None
    assert worker_count(torch.device("cuda")) == 1
    assert worker_count(torch.device("cpu"), 3) == 3
    assert 1 <= worker_count(torch.device("cpu")) <= 4


@pytest.mark.parametrize("workers", [2, 3])
def test_sample_pass_statistics_equal_those_of_one_batch_at_a_time(workers):
    def run(count, start=0, stats=None):
        sample_pass = SamplePass(PlantedGenerator(), seed=4, samples=70, batch_size=8, layers=["features"],
                                 segmenter=ColorSegmenter(), progress=False, workers=count)
        stats = stats or {"moments": Moments(5), "topk": TopK(5, 3), "seen": []}

        def update(batch, stats):
            stats["moments"].add(batch.features["features"])
            stats["topk"].add(batch.features["features"].flatten(2).amax(2), batch.indices)
            stats["seen"].append((batch.position, batch.start, int(batch.labels.sum())))

        return sample_pass.run(stats, update, start=start, merge=False)

    plain, ahead = run(1), run(workers)
    assert ahead["seen"] == plain["seen"]  # every batch, in order, with the same labels
    for name in Moments.fields:
        assert torch.equal(getattr(ahead["moments"], name), getattr(plain["moments"], name)), name
    assert torch.equal(ahead["topk"].indices, plain["topk"].indices)
    resumed = run(workers, start=4, stats={"moments": Moments(5), "topk": TopK(5, 3), "seen": []})
    assert resumed["seen"] == plain["seen"][4:]


def test_dissection_with_workers_equals_one_batch_at_a_time(tmp_path):
    config = DissectConfig(layers=["features"], samples=96, batch_size=16, quantile=0.15, passes="one")
    documents = []
    for workers in (1, 3):
        dissector = Dissector(PlantedGenerator(), ColorSegmenter(), config, tmp_path / str(workers), progress=False,
                              workers=workers)
        documents.append(dissector.finish(dissector.run()))
    assert json.dumps(documents[0], sort_keys=True) == json.dumps(documents[1], sort_keys=True)


@pytest.mark.parametrize("workers", [0, -2])
def test_a_worker_count_below_one_is_refused_in_one_line(tmp_path, capsys, workers):
    from gandissect.cli import main

    code = main(["dissect", "--model", "scenes64", "--layers", "layer4", "--samples", "8", "--workers", str(workers),
                 "--out", str(tmp_path / "run"), "--no-report"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    expected = "--workers must be a positive whole number (1: no worker threads)"
    assert err[-1] == f"gandissect dissect: error: {expected}; got {workers}"
    assert not (tmp_path / "run").exists()
