"""The `progan:` loader: GAN Dissection's released LSUN ProGAN checkpoints, by path or by scene name.

`--model progan:churchoutdoor` looks for churchoutdoor_lsun.pth in the cache folder (see `models.loaders`);
`--model progan:path/to/file.pth` reads that file. The layer dissected by default is `layer4`, the 8x8x512 map
the paper dissects. Options: resolution, pixel_norm, clamp (images clamped to [-1, 1] by default, as every
ProGAN image writer clips them; `clamp=no` for the raw output: see `modeling`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import torch
from torch import nn

from gandissect.core.errors import ConfigError
from gandissect.models.loaders import KnownCheckpoint, Loader, checkpoint_record, find_checkpoint, switch_option
from gandissect.models.progan.checkpoint import load_progan
from gandissect.models.progan.modeling import PIXEL_NORM_PLACES

SCENES = ("bedroom", "churchoutdoor", "conferenceroom", "diningroom", "kitchen", "livingroom", "restaurant")
PUBLISHED_AT = "http://netdissect.csail.mit.edu/data/ganmodel/karras"


def _int_option(options: Mapping[str, str], key: str) -> int | None:
    if key not in options:
        return None
    try:
        return int(options[key])
    except ValueError:
        raise ConfigError(f"progan option {key}={options[key]!r} is not an integer") from None


def load(source: str, options: Mapping[str, str], device: str | torch.device = "cpu") -> nn.Module:
    """A ProGANGenerator from the checkpoint `source` names; prints the file's sha256 and keeps it as
    `generator.checkpoint`."""
    pixel_norm = options.get("pixel_norm", "before")
    if pixel_norm not in PIXEL_NORM_PLACES:
        raise ConfigError(f"progan option pixel_norm={pixel_norm!r}: choose one of {', '.join(PIXEL_NORM_PLACES)}")
    clamp = switch_option(options, "clamp", "progan")
    resolution = _int_option(options, "resolution")
    path = find_checkpoint(LOADER, source)
    record = checkpoint_record(path)
    print(f"progan: {path} ({record['bytes'] / 2 ** 20:.1f} MiB, sha256 {record['sha256']})", file=sys.stderr)
    generator = load_progan(path, device, resolution=resolution, pixel_norm=pixel_norm,
                            clamp=True if clamp is None else clamp)
    generator.checkpoint = record
    generator.default_layers = ["layer4"]
    return generator


LOADER = Loader(
    family="progan",
    part="generator",
    description="Progressive GAN generators as released with GAN Dissection (LSUN scenes, 256x256, z of 512)",
    expects="a PyTorch state dict (.pth, or .safetensors) with layer1..layerN and output_RxR keys "
            "(or the older features.i / output names); the resolution, z size and channels are read from the file",
    load=load,
    options={"resolution": "refuse a checkpoint of another resolution (e.g. 256)",
             "pixel_norm": "where pixel norm sits: before (as the released code; default) or after each block",
             "clamp": "yes (default) clamps images to [-1, 1], as ProGAN's image writer clips them; no leaves the "
                      "raw output"},
    known=tuple(KnownCheckpoint(scene, f"{scene}_lsun.pth", f"{PUBLISHED_AT}/{scene}_lsun.pth",
                                note=f"LSUN {scene}, 256x256") for scene in SCENES),
    example="gandissect dissect --model progan:churchoutdoor --segmenter color --layers layer4 --out runs/church",
)
