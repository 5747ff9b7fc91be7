"""The `ade20k:` loader: a Hugging Face SegFormer or UperNet trained on ADE20K (150 classes) as a segmenter.

SOURCE is a model folder (config.json and weights, as `save_pretrained` or `hf download --local-dir` writes it),
a Hugging Face hub id already in the local Hugging Face cache (`nvidia/segformer-b4-finetuned-ade-512-512`), or
a known short name (`segformer-b4`), looked for in gandissect's cache folder and then in the Hugging Face cache.
Nothing is downloaded. Needs the optional extra: pip install 'gandissect[ade20k]'. Importing this module does
not import transformers; only loading does.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gandissect.core.errors import ConfigError
from gandissect.models.ade20k.classes import concepts_for
from gandissect.models.ade20k.segmenter import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PAPER_DOWNSAMPLE,
    PAPER_INPUT_SIZE,
    ADE20KSegmenter,
)
from gandissect.models.loaders import (
    KnownCheckpoint,
    Loader,
    cache_dir,
    checkpoint_record,
    find_checkpoint,
    require_extra,
)

SUPPORTED = ("segformer", "upernet")
"""config.json model types this loader builds (transformers' AutoModelForSemanticSegmentation)."""
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB = "https://huggingface.co"


def _int_option(options: Mapping[str, str], key: str, default: int, minimum: int, multiple: int = 1) -> int:
    """An integer option at least `minimum` and a multiple of `multiple`, refused in one line otherwise."""
    text = options.get(key, str(default))
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum or value % multiple:
        rule = f"an integer >= {minimum}" + (f" and a multiple of {multiple}" if multiple > 1 else "")
        raise ConfigError(f"ade20k option {key}={text!r}: expected {rule}")
    return value


def _dtype_option(options: Mapping[str, str]) -> torch.dtype:
    name = options.get("dtype", "float32")
    if name not in DTYPES:
        raise ConfigError(f"ade20k option dtype={name!r}: choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def _hub_snapshot(repo_id: str) -> Path | None:
    """The local Hugging Face cache's folder of `repo_id`, or None when it is not cached (never downloads)."""
    hub = require_extra("huggingface_hub", "ade20k")
    try:
        return Path(hub.snapshot_download(repo_id, local_files_only=True))
    except (OSError, ValueError):
        return None


def hub_cache() -> Path:
    """The Hugging Face hub cache folder, found as huggingface_hub finds it, without importing it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home) / "hub"


def is_cached(entry: KnownCheckpoint) -> bool:
    """Whether a known model is here: a folder in gandissect's cache, or a snapshot in the Hugging Face cache."""
    if (cache_dir() / entry.filename).is_dir():
        return True
    snapshots = hub_cache() / f"models--{HUB_IDS[entry.name].replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


def _not_cached(repo_id: str, where: str) -> ConfigError:
    """The one-line error for a hub model that is not cached locally, saying how to download it."""
    return ConfigError(f"{where}, and the hub model {repo_id!r} is not in the local Hugging Face cache; nothing is "
                       f"downloaded automatically: download it yourself with `hf download {repo_id}` "
                       f"(or `huggingface-cli download {repo_id}`), or save it to a folder and pass ade20k:FOLDER")


def model_folder(source: str) -> Path:
    """The local model folder `source` names: a folder, a known short name, or a cached hub id."""
    path = Path(source).expanduser()
    known = {k.name: k for k in LOADER.known} | {k.filename: k for k in LOADER.known}
    if not path.exists() and source in known:
        entry = known[source]
        if (cache_dir() / entry.filename).is_dir():
            return cache_dir() / entry.filename
        repo_id = HUB_IDS[entry.name]
        found = _hub_snapshot(repo_id)
        if found is None:
            raise _not_cached(repo_id, f"{source!r} is not in {cache_dir()} (as the folder {entry.filename})")
        return found
    if not path.exists() and HUB_ID.match(source):
        found = _hub_snapshot(source)
        if found is None:
            raise _not_cached(source, f"there is no folder {path}")
        return found
    folder = find_checkpoint(LOADER, source, folders_are_checkpoints=True)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is a file: the ade20k loader reads a Hugging Face model folder "
                          "(config.json and model.safetensors or pytorch_model.bin)")
    return folder


def _read_config(folder: Path) -> dict[str, Any]:
    """config.json of `folder`, refused unless it describes a supported semantic-segmentation model."""
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(f"{folder} is not a Hugging Face model folder: it has no config.json")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not valid JSON ({error})") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in SUPPORTED:
        raise ConfigError(f"{folder} holds a {model_type or 'model of no model_type'}: the ade20k loader builds "
                          f"{' or '.join(SUPPORTED)} semantic-segmentation models")
    return config


def _normalisation(folder: Path) -> dict[str, Any]:
    """mean, std and pixel_scale from preprocessor_config.json when present, else ImageNet's on [0, 1]."""
    path = folder / "preprocessor_config.json"
    settings = json.loads(path.read_text()) if path.is_file() else {}
    scale = 255.0 * float(settings.get("rescale_factor", 1 / 255)) if settings.get("do_rescale", True) else 255.0
    if not settings.get("do_normalize", True):
        return {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "pixel_scale": scale}
    mean = tuple(float(v) for v in settings.get("image_mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in settings.get("image_std", IMAGENET_STD))
    return {"mean": mean, "std": std, "pixel_scale": scale}


def _build_network(folder: Path, dtype: torch.dtype) -> torch.nn.Module:
    """The transformers model saved in `folder`, from local files only."""
    transformers = require_extra("transformers", "ade20k")
    try:
        network = transformers.AutoModelForSemanticSegmentation.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{folder} does not load as a Hugging Face segmentation model: {first}") from None
    return network.to(dtype)


def load(source: str, options: Mapping[str, str], device: str | torch.device = "cpu") -> ADE20KSegmenter:
    """An ADE20KSegmenter from the model `source` names; the folder's size and sha256 are printed and kept
    as `segmenter.checkpoint`."""
    require_extra("transformers", "ade20k")
    input_size = _int_option(options, "size", PAPER_INPUT_SIZE, minimum=32, multiple=32)
    downsample = _int_option(options, "downsample", PAPER_DOWNSAMPLE, minimum=1)
    dtype = _dtype_option(options)
    folder = model_folder(source)
    config = _read_config(folder)
    names = [str(config.get("id2label", {}).get(str(i), f"LABEL_{i}")) for i in range(_num_labels(config))]
    concepts, categories = concepts_for(names)
    network = _build_network(folder, dtype)
    segmenter = ADE20KSegmenter(network, concepts, categories, input_size=input_size, downsample=downsample,
                                **_normalisation(folder))
    record = checkpoint_record(folder)
    segmenter.checkpoint = record
    print(f"ade20k: {folder} ({config['model_type']}, {len(concepts)} classes, {record['bytes'] / 2 ** 20:.1f} MiB; "
          f"parsed at {input_size}x{input_size}, labels at 1/{downsample} of the image)", file=sys.stderr)
    return segmenter.to(device).eval()


def _num_labels(config: dict[str, Any]) -> int:
    """The number of classes config.json declares (id2label's size, else num_labels)."""
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        return len(id2label)
    if isinstance(config.get("num_labels"), int):
        return int(config["num_labels"])
    raise ConfigError("the model's config.json declares no classes (no id2label, no num_labels)")


HUB_IDS = {
    "segformer-b0": "nvidia/segformer-b0-finetuned-ade-512-512",
    "segformer-b2": "nvidia/segformer-b2-finetuned-ade-512-512",
    "segformer-b4": "nvidia/segformer-b4-finetuned-ade-512-512",
    "segformer-b5": "nvidia/segformer-b5-finetuned-ade-640-640",
    "upernet-convnext-small": "openmmlab/upernet-convnext-small",
}
"""Known short name -> Hugging Face hub id. They are whole folders, so they have no single download address
(`gandissect download` refuses them); `hf download ID` puts one in the Hugging Face cache, where it is found."""


def _known(name: str, note: str) -> KnownCheckpoint:
    repo_id = HUB_IDS[name]
    return KnownCheckpoint(name=name, filename=repo_id.split("/")[1], url=None,
                           note=f"{note}; Hugging Face hub model {repo_id} ({HUB}/{repo_id}): fetch it with "
                                f"`hf download {repo_id}`")


LOADER = Loader(
    family="ade20k",
    part="segmenter",
    description="ADE20K scene parsers from Hugging Face transformers (SegFormer, UperNet; 150 classes), "
                "parsed at 256x256 with labels at half the image size as GAN Dissection did; concepts are "
                "objects and parts (window, door, ...), with differentiable concept scores",
    expects="a Hugging Face model folder (config.json + weights) of a SegFormer or UperNet semantic-segmentation "
            "model trained on ADE20K, or a hub id already in the local Hugging Face cache",
    load=load,
    options={"size": f"side of the square the image is parsed at, a multiple of 32 (default {PAPER_INPUT_SIZE})",
             "downsample": f"labels at the image size divided by this (default {PAPER_DOWNSAMPLE})",
             "dtype": "the network's dtype: float32 (default), float16 or bfloat16 (for GPUs)"},
    known=(
        _known("segformer-b0", "SegFormer-B0 (3.8M parameters), trained at 512x512"),
        _known("segformer-b2", "SegFormer-B2, trained at 512x512"),
        _known("segformer-b4", "SegFormer-B4 (64M parameters), trained at 512x512"),
        _known("segformer-b5", "SegFormer-B5, trained at 640x640"),
        _known("upernet-convnext-small", "UperNet with a ConvNeXt-S backbone, trained at 512x512"),
    ),
    example="gandissect dissect --model progan:churchoutdoor_lsun.pth "
            "--segmenter ade20k:segformer-b4-finetuned-ade-512-512+color --out runs/church",
    extra="ade20k",
    is_cached=is_cached,
    tested="randomly initialised small SegFormer and UperNet configs saved with save_pretrained; never with the "
           "published checkpoints (none can be downloaded here)",
)
