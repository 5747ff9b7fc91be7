"""Dissect a tiny fixed generator into OUT, as one process or as one rank of a torchrun job.

    python tests/distributed_driver.py OUT
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/distributed_driver.py OUT

Used by tests/test_distributed.py (not collected by pytest itself). Options: --fail-after N makes the
last rank raise after its Nth IoU batch, once every rank has checkpointed its IoU pass, --resume continues such a
run; --moments runs a bare sample pass with Moments and ConditionalMean statistics and saves them to OUT/moments;
--progan dissects layer4 of a small random ProGAN (32x32) on 16 samples in batches of 4; --stylegan2 dissects
layer5 of a small random StyleGAN2 (32x32) in w space with truncation 0.7 and per-sample random noise, likewise.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from safetensors import SafetensorError

from gandissect.causal.ace import unit_effects
from gandissect.core.segmenters import ColorSegmenter
from gandissect.core.stats import ConditionalMean, Moments
from gandissect.dissection import DissectConfig, Dissector
from gandissect.engine.collectives import session
from gandissect.engine.samplepass import SamplePass
from gandissect.engine.storage import load_statistics, save_statistics
from gandissect.models.progan import ProGANGenerator, load_progan
from gandissect.models.scenegan import GeneratorConfig, SceneGenerator
from gandissect.models.stylegan2 import StyleGAN2Generator, load_stylegan2, to_published


def tiny_generator() -> SceneGenerator:
    torch.manual_seed(0)
    return SceneGenerator(GeneratorConfig(z_dim=16, channels=(16, 8, 8, 8), disc_channels=(8, 8, 8, 8)))


def config() -> DissectConfig:
    return DissectConfig(layers=["layer3", "layer4"], samples=72, batch_size=16, topk=5, checkpoint_every=1)


def tiny_progan() -> ProGANGenerator:
    """A 32x32 ProGAN with seeded random weights and biases (the same in every process), its to-RGB weights
    scaled by 0.2 and its to-RGB bias zeroed so that the images stay within [-1, 1] (as tests/test_progan.py)."""
    torch.manual_seed(0)
    generator = ProGANGenerator(32).eval()
    with torch.no_grad():
        for name, parameter in generator.named_parameters():
            if name.endswith("wscale.b"):
                parameter.normal_(0, 0.5)
    state = dict(generator.state_dict())
    state["output_32x32.conv.weight"] = state["output_32x32.conv.weight"] * 0.2
    state["output_32x32.wscale.b"] = torch.zeros(3)
    return load_progan(state)


def dissect_progan(out: Path, collective) -> None:
    """Layer4 of the tiny ProGAN, 16 samples per set in batches of 4, split over the ranks."""
    config = DissectConfig(layers=["layer4"], samples=16, batch_size=4)
    dissector = Dissector(tiny_progan(), ColorSegmenter(), config, out, collective=collective, progress=False)
    dissector.finish(dissector.run())
    print(f"dissected the ProGAN on rank {collective.rank} of world {collective.world}", flush=True)


def tiny_stylegan2() -> StyleGAN2Generator:
    """A 32x32 StyleGAN2 (style_dim 64, 2 mapping layers, 32 then 16 channels) with seeded random weights, its
    biases and noise strengths random too, reloaded from the port's g_ema layout (w_avg estimated) in w space
    with truncation 0.7 and random noise (seeded per sample), so that every process draws the same samples."""
    torch.manual_seed(0)
    generator = StyleGAN2Generator(32, style_dim=64, n_mlp=2, channels={4: 32, 8: 32, 16: 16, 32: 16})
    with torch.no_grad():
        for name, parameter in generator.named_parameters():
            if name.startswith("rgb") and name.endswith(".conv.weight"):
                parameter.mul_(0.1)
            elif name.endswith(("activate.bias", "noise.weight")):
                parameter.normal_(0, 0.3)
    return load_stylegan2(to_published(generator), truncation=0.7, noise="random", space="w")


def dissect_stylegan2(out: Path, collective) -> None:
    """Layer5 (16x16) of the tiny StyleGAN2, 16 samples per set in batches of 4, split over the ranks."""
    config = DissectConfig(layers=["layer5"], samples=16, batch_size=4)
    dissector = Dissector(tiny_stylegan2(), ColorSegmenter(), config, out, collective=collective, progress=False)
    dissector.finish(dissector.run())
    print(f"dissected the StyleGAN2 on rank {collective.rank} of world {collective.world}", flush=True)


def _wait_for_iou_checkpoints(out: Path, world: int, timeout: float = 60.0) -> None:
    """Let every rank checkpoint the start of its IoU pass, so that the failure leaves a resumable run."""
    deadline = time.monotonic() + timeout
    paths = [out / ".partial" / (f"checkpoint-rank{r}.safetensors" if world > 1 else "checkpoint.safetensors")
             for r in range(world)]
    while time.monotonic() < deadline:
        try:
            if all(load_statistics(path)[1].get("pass") == "iou" for path in paths):
                return
        except (FileNotFoundError, OSError, SafetensorError):
            pass
        time.sleep(0.05)


def ride_sample_pass(out: Path, collective) -> None:
    """Mean, variance and concept-conditional means of layer3 over 72 samples, merged over the ranks."""
    generator, segmenter = tiny_generator(), ColorSegmenter()
    sample_pass = SamplePass(generator, seed=4, samples=72, batch_size=16, layers=["layer3"], segmenter=segmenter,
                             collective=collective, progress=False)
    units = 8

    def update(batch, stats):
        stats["moments"].add(batch.features["layer3"])
        stats["condmean"].add(batch.features["layer3"], batch.labels)

    stats = sample_pass.run({"moments": Moments(units), "condmean": ConditionalMean(units, len(segmenter.concepts))},
                            update)
    if collective.rank == 0:
        save_statistics(out / "moments.safetensors", stats)
    print(f"rode the sample pass on rank {collective.rank} of world {collective.world}", flush=True)


def single_unit_effects(out: Path, collective) -> None:
    """Single-unit ACE of layer3's units on 'green' over 12 held-out samples, merged over the ranks."""
    generator, segmenter = tiny_generator(), ColorSegmenter()
    values = torch.linspace(0.5, 2.0, 8)
    effects = unit_effects(generator, segmenter, "layer3", segmenter.concepts.index("green"), "green", values,
                           samples=12, batch_size=4, group=3, collective=collective, progress=False)
    if collective.rank == 0:
        torch.save({"inserted": effects.inserted, "ablated": effects.ablated, "baseline": effects.baseline,
                    "ablated_samples": effects.ablated_samples, "inserted_samples": effects.inserted_samples,
                    "removal_low": effects.estimate("removal").low}, out / "ace.pt")
    print(f"measured effects on rank {collective.rank} of world {collective.world}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--fail-after", type=int, default=0)
    parser.add_argument("--moments", action="store_true")
    parser.add_argument("--ace", action="store_true")
    parser.add_argument("--progan", action="store_true")
    parser.add_argument("--stylegan2", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    batches = 0
    modes = {"moments": ride_sample_pass, "ace": single_unit_effects, "progan": dissect_progan,
             "stylegan2": dissect_stylegan2}
    with session("cpu") as collective:
        chosen = [run for mode, run in modes.items() if getattr(args, mode)]
        if chosen:
            chosen[0](Path(args.out), collective)
            return

        def on_batch(phase: str, done: int) -> None:
            nonlocal batches
            batches += 1
            last = collective.rank == collective.world - 1
            if args.fail_after and phase == "iou" and done >= args.fail_after and last:
                _wait_for_iou_checkpoints(Path(args.out), collective.world)
                raise RuntimeError(f"planned failure on rank {collective.rank}")

        dissector = Dissector(tiny_generator(), ColorSegmenter(), config(), args.out, collective=collective,
                              progress=False, resume=args.resume, on_batch=on_batch)
        dissector.finish(dissector.run())
        print(f"dissected on rank {collective.rank} of world {collective.world} in {batches} batches", flush=True)


if __name__ == "__main__":
    main()
