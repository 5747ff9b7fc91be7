"""torch.distributed scale-out: two ranks give exactly the results of one process, also after a resume."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from gandissect.core.levels import LevelCounts
from gandissect.core.stats import ConditionalMean, Moments, TopK, UnitQuantiles
from gandissect.dissection import Dissector
from gandissect.engine.collectives import SingleProcess, TorchDistributed, init_from_env, session, shutdown
from gandissect.engine.storage import load_statistics, save_statistics

DRIVER = Path(__file__).with_name("distributed_driver.py")

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT", "TORCHELASTIC_RUN_ID")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _drive(out: Path, *args: str, ranks: int = 1, check: bool = True) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)] if ranks > 1 else []
    done = subprocess.run([sys.executable, *launcher, str(DRIVER), str(out), *args], env=_env(),
                          capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def _batches(done: subprocess.CompletedProcess) -> dict[int, int]:
    """Rank -> batches it ran, from the driver's last lines."""
    found = re.findall(r"dissected on rank (\d+) of world (\d+) in (\d+) batches", done.stdout)
    return {int(rank): int(count) for rank, _, count in found}


def _assert_same_results(one: Path, other: Path) -> None:
    assert json.loads((one / "dissect.json").read_text()) == json.loads((other / "dissect.json").read_text())
    assert (one / "dissect.csv").read_text() == (other / "dissect.csv").read_text()
    stats_one, meta_one = load_statistics(one / "statistics.safetensors")
    stats_other, meta_other = load_statistics(other / "statistics.safetensors")
    assert meta_one == meta_other
    assert stats_one.keys() == stats_other.keys()
    _assert_same_statistics(stats_one, stats_other)
    assert not (other / ".partial").exists(), "checkpoints are removed once results are written"


def dissect_on_two_ranks_like_one(tmp_path: Path, mode: str, what: str) -> dict:
    """Run the driver's `mode` dissection in one process and under torchrun with 2, check that both ranks ran
    (the driver prints "dissected the <what> on rank R of world 2") and that the results are the same; returns
    the single-process dissect.json."""
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    one, two = tmp_path / "one", tmp_path / "two"
    _drive(one, mode)
    done = _drive(two, mode, ranks=2)
    assert sorted(re.findall(rf"dissected the {what} on rank (\d) of world 2", done.stdout)) == ["0", "1"]
    _assert_same_results(one, two)  # dissect.json, dissect.csv, every statistic (float sums to 1e-12)
    return json.loads((one / "dissect.json").read_text())


def _assert_same_statistics(stats_one: dict, stats_other: dict) -> None:
    """Counts, extremes and top-k are bit-identical; float sums (moments, conditional means) merge in another
    order, so they agree to rounding."""
    assert stats_one.keys() == stats_other.keys()
    for name, stat in stats_one.items():
        assert type(stat) is type(stats_other[name])
        for field, tensor in stat.state_dict().items():
            theirs = stats_other[name].state_dict()[field]
            assert tensor.dtype == theirs.dtype, f"{name}/{field} dtype differs"
            if isinstance(stat, (Moments, ConditionalMean)):
                assert torch.allclose(tensor, theirs, rtol=1e-12, atol=1e-12), f"{name}/{field} differs"
            else:
                assert torch.equal(tensor, theirs), f"{name}/{field} differs"


@pytest.fixture(scope="module")
def single_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "one"
    assert _batches(_drive(out)) == {0: 10}  # 5 batches of 16 (the last of 8), two passes
    return out


def test_two_ranks_match_one_process(single_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "two"
    done = _drive(out, ranks=2)
    assert _batches(done) == {0: 6, 1: 4}  # batches 0, 2, 4 and 1, 3, in each pass
    _assert_same_results(single_run, out)


def test_two_ranks_resume_after_a_failure(single_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    failed = _drive(out, "--fail-after", "1", ranks=2, check=False)
    assert failed.returncode != 0
    assert not (out / "dissect.json").exists()
    metas = {}
    for rank in (0, 1):
        _, metas[rank] = load_statistics(out / ".partial" / f"checkpoint-rank{rank}.safetensors")
    assert metas[1] == {"pass": "iou", "next": 1, "world": 2}
    assert metas[0]["pass"] == "iou"
    done = _drive(out, "--resume", ranks=2)
    assert _batches(done)[1] == 1  # rank 1 picks up at its second IoU batch
    _assert_same_results(single_run, out)


def test_merge_broadcast_and_barrier_with_one_rank(tmp_path: Path) -> None:
    assert isinstance(init_from_env("cpu"), SingleProcess)  # not launched by torchrun
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        collective = TorchDistributed("cpu")
        assert (collective.rank, collective.world) == (0, 1)
        collective.barrier()
        grids = {"a": torch.arange(6, dtype=torch.float64).view(2, 3), "b": torch.tensor([True, False])}
        sent = collective.broadcast(grids)
        assert sent.keys() == grids.keys() and all(torch.equal(sent[k], grids[k]) for k in grids)

        torch.manual_seed(0)
        acts, labels = torch.randn(2, 3, 4, 4), torch.randint(-1, 5, (2, 1, 4, 4))
        quantiles = UnitQuantiles.calibrate(acts, bins=16)
        quantiles.add(acts)
        counts = LevelCounts(quantiles.low, quantiles.high, 16, torch.randint(0, 17, (3, 4)), 5, folds=2)
        counts.add(acts, labels, torch.tensor([0, 1]))
        top = TopK(3, 2)
        top.add(acts.flatten(2).amax(2), torch.arange(2))
        stats = {"q": quantiles, "levels": counts, "top": top}
        merged = collective.merge(stats)
        assert merged.keys() == stats.keys()
        for name, stat in stats.items():
            assert type(merged[name]) is type(stat) and merged[name] is not stat
            for field, tensor in stat.state_dict().items():
                assert torch.equal(merged[name].state_dict()[field], tensor)
    finally:
        shutdown()
    assert not dist.is_initialized()


def test_session_without_torchrun_is_single_process() -> None:
    with session("cpu") as collective:
        assert isinstance(collective, SingleProcess)
        collective.barrier()
    shutdown(collective)  # a no-op for SingleProcess


class _Rank(SingleProcess):
    """Rank `rank` of a pretend world of two, for checks that need no other process."""

    def __init__(self, rank: int) -> None:
        self.rank, self.world = rank, 2


def test_ranks_resume_only_together(tmp_path: Path) -> None:
    sys.path.insert(0, str(DRIVER.parent))
    try:
        from distributed_driver import config, tiny_generator
    finally:
        sys.path.remove(str(DRIVER.parent))
    from gandissect.core.segmenters import ColorSegmenter

    dissector = Dissector(tiny_generator(), ColorSegmenter(), config(), tmp_path, collective=_Rank(1), progress=False)
    assert dissector.folder.checkpoint_path().name == "checkpoint-rank1.safetensors"
    stats = {"top": TopK(2, 1)}

    def checkpoint(rank: int, **meta: object) -> None:
        save_statistics(dissector.folder.checkpoint_path(rank), stats, meta)

    checkpoint(1, **{"pass": "iou", "next": 1, "world": 2})
    assert dissector._load_checkpoint() == ({}, {})  # rank 0 has none: everyone starts over
    checkpoint(0, **{"pass": "thresholds", "next": 2, "world": 2})
    assert dissector._load_checkpoint() == ({}, {})  # different passes: their collectives would not pair up
    checkpoint(0, **{"pass": "iou", "next": 1, "world": 3})
    assert dissector._load_checkpoint() == ({}, {})  # written by three ranks: other shards
    checkpoint(0, **{"pass": "iou", "next": 2, "world": 2})
    loaded, meta = dissector._load_checkpoint()
    assert meta == {"pass": "iou", "next": 1, "world": 2} and list(loaded) == ["top"]


def test_a_statistic_riding_the_sample_pass_under_torchrun_equals_one_process(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    _drive(one, "--moments")
    done = _drive(two, "--moments", ranks=2)
    assert len(re.findall(r"rode the sample pass on rank \d of world 2", done.stdout)) == 2
    stats_one, _ = load_statistics(one / "moments.safetensors")
    stats_two, _ = load_statistics(two / "moments.safetensors")
    _assert_same_statistics(stats_one, stats_two)
    assert float(stats_one["moments"].count) == 72 * 16 * 16


def test_single_unit_ace_under_torchrun_equals_one_process(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    _drive(one, "--ace")
    done = _drive(two, "--ace", ranks=2)
    assert len(re.findall(r"measured effects on rank \d of world 2", done.stdout)) == 2
    single, double = torch.load(one / "ace.pt"), torch.load(two / "ace.pt")
    for name in ("inserted", "ablated", "baseline", "ablated_samples", "inserted_samples", "removal_low"):
        assert torch.allclose(single[name], double[name], rtol=0, atol=1e-12, equal_nan=True), name
    assert not torch.isnan(double["ablated_samples"]).any()  # every rank's rows arrived
    assert bool((single["inserted"] != single["ablated"]).any())  # the interventions changed something
