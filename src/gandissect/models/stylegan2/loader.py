"""The `stylegan2:` loader: `g_ema` weights of rosinality's stylegan2-pytorch checkpoints, by path or known name.

`--model stylegan2:stylegan2-church-config-f.pt,truncation=0.7` looks for that file in the cache folder (see
`models.loaders`), or reads the path given. Options (each kept in the generator's buffers, hence in the run's
fingerprint): truncation, noise, space, clamp, resolution (see `modeling`). The layers dissected by default
are the last convs at size / 16 and size / 8 (layer5 and layer7 at 256x256).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import torch
from torch import nn

from gandissect.core.errors import ConfigError
from gandissect.models.loaders import KnownCheckpoint, Loader, checkpoint_record, find_checkpoint, switch_option
from gandissect.models.stylegan2.convert import load_stylegan2
from gandissect.models.stylegan2.modeling import NOISE_MODES, SPACES

NVIDIA_NETWORKS = "https://nvlabs-fi-cdn.nvidia.com/stylegan2/networks"
CONVERTED = "make it from NVIDIA's TensorFlow " + NVIDIA_NETWORKS + "/{pkl} with the port's convert_weight.py"


def _number(options: Mapping[str, str], key: str, kind: type) -> float | int | None:
    if key not in options:
        return None
    try:
        return kind(options[key])
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise ConfigError(f"stylegan2 option {key}={options[key]!r} is not {expected}") from None


def _choice(options: Mapping[str, str], key: str, allowed: tuple[str, ...]) -> str | None:
    value = options.get(key)
    if value is not None and value not in allowed:
        raise ConfigError(f"stylegan2 option {key}={value!r}: choose one of {', '.join(allowed)}")
    return value


def parse_options(options: Mapping[str, str]) -> dict[str, object]:
    """The loader's string options as `load_stylegan2` keywords (only those given)."""
    parsed: dict[str, object] = {"resolution": _number(options, "resolution", int),
                                 "truncation": _number(options, "truncation", float),
                                 "noise": _choice(options, "noise", NOISE_MODES),
                                 "space": _choice(options, "space", SPACES),
                                 "clamp": switch_option(options, "clamp", "stylegan2")}
    return {key: value for key, value in parsed.items() if value is not None}


def load(source: str, options: Mapping[str, str], device: str | torch.device = "cpu") -> nn.Module:
    """A StyleGAN2Generator from the checkpoint `source` names; prints the file's sha256 and the mean w that
    truncation uses, and keeps both in `generator.checkpoint` (recorded in a run's dissect.json)."""
    keywords = parse_options(options)
    path = find_checkpoint(LOADER, source)
    record = checkpoint_record(path)
    print(f"stylegan2: {path} ({record['bytes'] / 2 ** 20:.1f} MiB, sha256 {record['sha256']})", file=sys.stderr)
    generator = load_stylegan2(path, device, **keywords)
    record["w_avg"] = generator.w_avg_source
    print(f"stylegan2: mean w for truncation: {generator.w_avg_source}", file=sys.stderr)
    generator.checkpoint = record
    return generator


LOADER = Loader(
    family="stylegan2",
    part="generator",
    description="StyleGAN2 generators (config F) as the g_ema weights of rosinality's stylegan2-pytorch "
                "(its own training checkpoints and its conversions of NVIDIA's FFHQ and LSUN models)",
    expects="a torch.save'd dict holding 'g_ema' (train.py or convert_weight.py output; 'latent_avg' is used for "
            "truncation when present), or a bare g_ema state dict; size, n_mlp, style_dim and channels are read "
            "from the keys",
    load=load,
    options={"truncation": "psi from 0 to 1 pulling w toward the average w (default 1: none)",
             "noise": "fixed (the stored noise maps; default), random (seeded per sample by its latent) or zero",
             "space": "z (default) or w: the latent dissected and edited is w, sampled as truncated mapped z",
             "clamp": "yes (default) clamps images to [-1, 1]; no leaves StyleGAN2's raw output",
             "resolution": "refuse a checkpoint of another resolution (e.g. 256)"},
    known=(
        KnownCheckpoint("ffhq", "stylegan2-ffhq-config-f.pt",
                        note="FFHQ faces, 1024x1024; " + CONVERTED.format(pkl="stylegan2-ffhq-config-f.pkl")),
        KnownCheckpoint("church", "stylegan2-church-config-f.pt",
                        note="LSUN church, 256x256; " + CONVERTED.format(pkl="stylegan2-church-config-f.pkl")),
        KnownCheckpoint("car", "stylegan2-car-config-f.pt",
                        note="LSUN car, 512x512; " + CONVERTED.format(pkl="stylegan2-car-config-f.pkl")),
        KnownCheckpoint("cat", "stylegan2-cat-config-f.pt",
                        note="LSUN cat, 256x256; " + CONVERTED.format(pkl="stylegan2-cat-config-f.pkl")),
        KnownCheckpoint("horse", "stylegan2-horse-config-f.pt",
                        note="LSUN horse, 256x256; " + CONVERTED.format(pkl="stylegan2-horse-config-f.pkl")),
    ),
    example="gandissect dissect --model stylegan2:stylegan2-church-config-f.pt --segmenter color --out runs/church",
)
