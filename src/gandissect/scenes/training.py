"""Training of the shipped scene GAN and scene segmenter on the procedural world.

Both loops are seeded per iteration (so a resumed run draws the same batches as an uninterrupted one),
checkpoint atomically every `checkpoint_every` iterations, resume from the last checkpoint in their
output folder, show a progress bar, and save sample grids as they go.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from gandissect.core.errors import ConfigError
from gandissect.core.images import from_uint8, grid, label_colours, to_uint8
from gandissect.engine.storage import (
    read_json,
    save_png,
    save_safetensors_atomic,
    save_torch_atomic,
    write_json_atomic,
)
from gandissect.models.scenegan import GeneratorConfig, SceneDiscriminator, SceneGenerator
from gandissect.models.unet import SegmenterConfig, UNetSegmenter
from gandissect.scenes import world

GAN_DATA_SEEDS = 0
SEGMENTER_DATA_SEEDS = 1_000_000
HELD_OUT_SEEDS = 50_000_000


@dataclass
class GanTrainConfig:
    out: str
    iterations: int = 6000
    batch_size: int = 32
    lr: float = 2e-4
    dataset_size: int = 20000
    image_size: int = 64
    z_dim: int = 128
    channels: tuple[int, ...] = (256, 128, 64, 32)
    disc_channels: tuple[int, ...] = (32, 64, 128, 256)
    seed: int = 0
    checkpoint_every: int = 200
    sample_every: int = 500
    device: str = "cpu"


@dataclass
class SegmenterTrainConfig:
    out: str
    iterations: int = 3000
    batch_size: int = 16
    lr: float = 2e-3
    image_size: int = 64
    widths: tuple[int, ...] = (16, 32, 64, 128)
    seed: int = 0
    checkpoint_every: int = 200
    sample_every: int = 500
    device: str = "cpu"


MODEL_FIELDS = ("z_dim", "channels", "disc_channels", "widths", "image_size")


def check_config(config: GanTrainConfig | SegmenterTrainConfig) -> None:
    """Refuse, in one line before any work, settings that cannot train (a batch of 0 trains on NaN), and a
    resumed run whose model differs from the one its checkpoint holds (the checkpoint could not be loaded)."""
    counts = {"iterations": config.iterations, "batch_size": config.batch_size,
              "checkpoint_every": config.checkpoint_every, "sample_every": config.sample_every}
    if isinstance(config, GanTrainConfig):
        counts["dataset_size"] = config.dataset_size
    for name, value in counts.items():
        if value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1; got {value}")
    if not (math.isfinite(config.lr) and config.lr > 0):
        raise ConfigError(f"--lr must be a positive number; got {config.lr}")
    stored_path = Path(config.out) / "train_config.json"
    if stored_path.is_file():
        stored = read_json(stored_path)
        current = asdict(config)
        changed = [f"{key}: {stored.get(key)} then, {current[key]} now" for key in MODEL_FIELDS
                   if key in current and key in stored and list(np.atleast_1d(stored[key])) !=
                   list(np.atleast_1d(current[key]))]
        if changed:
            raise ConfigError(f"{config.out} holds a training run of another model ({'; '.join(changed)}): "
                              "resume it with its own settings, or choose another --out")


def _iteration_generator(seed: int, iteration: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + iteration)


def _check_image_size(size: int, levels: int) -> None:
    if size != 4 * 2 ** levels:
        raise ValueError(f"image_size {size} needs {int(np.log2(size / 4))} generator channels, got {levels}")


def _load_checkpoint(path: Path, modules: dict[str, torch.nn.Module | torch.optim.Optimizer]) -> int:
    if not path.exists():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=False)
    for name, module in modules.items():
        module.load_state_dict(state[name])
    return int(state["iteration"])


def gan_dataset(out: Path, size: int, count: int) -> np.ndarray:
    """Rendered training scenes (count, size, size, 3) uint8, cached in `out`."""
    cache = out / f"dataset_{size}_{count}.npy"
    if cache.exists():
        return np.load(cache)
    images = np.empty((count, size, size, 3), np.uint8)
    for start in tqdm(range(0, count, 500), desc="render training scenes", unit="x500"):
        stop = min(start + 500, count)
        images[start:stop] = world.render_batch(range(GAN_DATA_SEEDS + start, GAN_DATA_SEEDS + stop), size)[0]
    tmp = cache.with_suffix(".tmp.npy")
    np.save(tmp, images)
    tmp.replace(cache)
    return images


def train_gan(config: GanTrainConfig) -> Path:
    """Train the scene GAN; returns the folder holding `generator.safetensors` and `discriminator.safetensors`."""
    check_config(config)
    _check_image_size(config.image_size, len(config.channels))
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "train_config.json", asdict(config))
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    model_config = GeneratorConfig(config.z_dim, tuple(config.channels), tuple(config.disc_channels))
    generator, discriminator = SceneGenerator(model_config).to(device), SceneDiscriminator(model_config).to(device)
    opt_g = torch.optim.Adam(generator.parameters(), config.lr, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(discriminator.parameters(), config.lr, betas=(0.0, 0.99))
    checkpoint = out / "checkpoint.pt"
    parts = {"generator": generator, "discriminator": discriminator, "opt_g": opt_g, "opt_d": opt_d}
    start = _load_checkpoint(checkpoint, parts)
    data = torch.from_numpy(gan_dataset(out, config.image_size, config.dataset_size))
    fixed_z = torch.randn(64, config.z_dim, generator=torch.Generator().manual_seed(12345)).to(device)
    elapsed = _previous_seconds(out)
    began = time.time()
    bar = tqdm(total=config.iterations, initial=start, desc="train gan", unit="it")
    for iteration in range(start, config.iterations):
        rng = _iteration_generator(config.seed, iteration)
        index = torch.randint(0, len(data), (config.batch_size,), generator=rng)
        real = from_uint8(data[index].numpy()).to(device)
        flip = torch.rand(config.batch_size, generator=rng) < 0.5
        real[flip.to(device)] = real[flip.to(device)].flip(-1)
        z = torch.randn(config.batch_size, config.z_dim, generator=rng).to(device)
        generator.train()
        fake = generator(z)
        loss_d = F.relu(1 - discriminator(real)).mean() + F.relu(1 + discriminator(fake.detach())).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = -discriminator(fake).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        bar.update(1)
        bar.set_postfix(loss_d=f"{loss_d.item():.3f}", loss_g=f"{loss_g.item():.3f}")
        done = iteration + 1
        if done % config.sample_every == 0 or done == config.iterations:
            generator.eval()
            with torch.no_grad():
                save_png(out / f"samples_{done:06d}.png", grid(to_uint8(generator(fixed_z)), 8), scale=2)
        if done % config.checkpoint_every == 0 or done == config.iterations:
            state = {name: module.state_dict() for name, module in parts.items()}
            save_torch_atomic(checkpoint, {**state, "iteration": done})
            _record_progress(out, done, elapsed + time.time() - began)
    bar.close()
    generator.eval()
    meta = {"config": json.dumps(model_config.to_dict())}
    save_safetensors_atomic(out / "generator.safetensors", generator.state_dict(), meta)
    save_safetensors_atomic(out / "discriminator.safetensors", discriminator.state_dict(), meta)
    return out


def _previous_seconds(out: Path) -> float:
    path = out / "progress.json"
    return float(json.loads(path.read_text())["seconds"]) if path.exists() else 0.0


def _record_progress(out: Path, iteration: int, seconds: float) -> None:
    write_json_atomic(out / "progress.json", {"iteration": iteration, "seconds": round(seconds, 1)})


def augment(images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Corrupt images in [-1, 1] the way GAN samples differ from renders: noise, blur, colour shifts."""
    n = images.shape[0]
    x = images
    sigma = torch.rand(n, generator=rng) * 1.2
    blur_taps = torch.exp(-torch.arange(-1, 2).float()[None] ** 2 / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    blur_taps = blur_taps / blur_taps.sum(1, keepdim=True)
    kernel = (blur_taps[:, :, None] * blur_taps[:, None, :]).repeat_interleave(3, 0)[:, None]
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate").reshape(1, n * 3, x.shape[-2] + 2, x.shape[-1] + 2)
    x = F.conv2d(padded, kernel, groups=n * 3).reshape_as(images)
    gain = 1 + (torch.rand(n, 3, 1, 1, generator=rng) - 0.5) * 0.3
    offset = (torch.rand(n, 1, 1, 1, generator=rng) - 0.5) * 0.3
    x = x * gain + offset
    noise = torch.randn(x.shape, generator=rng) * torch.rand(n, 1, 1, 1, generator=rng) * 0.12
    return (x + noise).clamp(-1, 1)


def _save_segmentation_grid(model: UNetSegmenter, path: Path, size: int) -> None:
    """Held-out scenes, their ground truth and the model's prediction, row by row."""
    pictures, labels = world.render_batch(range(HELD_OUT_SEEDS, HELD_OUT_SEEDS + 8), size)
    model.eval()
    with torch.no_grad():
        predicted = model(from_uint8(pictures).to(next(model.parameters()).device)).argmax(1).cpu()
    rows = [pictures, label_colours(torch.from_numpy(labels).long()), label_colours(predicted)]
    save_png(path, grid(np.concatenate(rows), 8), scale=2)


def train_segmenter(config: SegmenterTrainConfig) -> Path:
    """Train the scene segmenter on freshly rendered, augmented scenes; returns the output folder."""
    check_config(config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    model_config = SegmenterConfig(len(world.CONCEPTS), tuple(config.widths))
    model = UNetSegmenter(model_config).to(device)
    opt = torch.optim.AdamW(model.parameters(), config.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=config.iterations, pct_start=0.1)
    checkpoint = out / "checkpoint.pt"
    parts = {"model": model, "opt": opt, "sched": sched}
    start = _load_checkpoint(checkpoint, parts)
    if start and sched.total_steps != config.iterations:
        raise ValueError(f"{checkpoint} follows a one-cycle learning-rate schedule of {sched.total_steps} "
                         f"iterations; resume it with --iterations {sched.total_steps}, "
                         f"or train {config.iterations} iterations in a new --out folder")
    write_json_atomic(out / "train_config.json", asdict(config))
    elapsed = _previous_seconds(out)
    began = time.time()
    bar = tqdm(total=config.iterations, initial=start, desc="train segmenter", unit="it")
    model.train()
    for iteration in range(start, config.iterations):
        rng = _iteration_generator(config.seed, iteration)
        first = SEGMENTER_DATA_SEEDS + iteration * config.batch_size
        pictures, labels = world.render_batch(range(first, first + config.batch_size), config.image_size)
        images = augment(from_uint8(pictures), rng).to(device)
        target = torch.from_numpy(labels).long().to(device)
        loss = F.cross_entropy(model(images), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        done = iteration + 1
        if done % config.sample_every == 0 or done == config.iterations:
            _save_segmentation_grid(model, out / f"samples_{done:06d}.png", config.image_size)
            model.train()
        if done % config.checkpoint_every == 0 or done == config.iterations:
            save_torch_atomic(checkpoint, {**{k: v.state_dict() for k, v in parts.items()}, "iteration": done})
            _record_progress(out, done, elapsed + time.time() - began)
    bar.close()
    model.eval()
    meta = {"config": json.dumps(model_config.to_dict()), "concepts": json.dumps(list(world.CONCEPTS))}
    save_safetensors_atomic(out / "segmenter.safetensors", model.state_dict(), meta)
    return out
