"""Open a painter on a run folder: the dissection, and the generator and segmenter that dissect.json names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gandissect.core.errors import ConfigError
from gandissect.dissection.results import Dissection
from gandissect.engine.speed import channels_last
from gandissect.engine.storage import read_json
from gandissect.models import recorded_spec, resolve_generator, resolve_segmenter
from gandissect.viz.painter.engine import Limits, Painter


def open_painter(run: str | Path, model: str | None = None, segmenter: str | None = None,
                 device: str | torch.device = "cpu", limits: Limits | None = None) -> Painter:
    """A painter on the finished dissection in `run`, with its recorded generator (or `model`) and segmenter
    (or `segmenter`, built on first use). Models run channels-last (faster convolutions on a CPU)."""
    folder = Path(run)
    path = folder / "dissect.json"
    if not path.is_file():
        raise ConfigError(f"{folder} holds no dissect.json: run `gandissect dissect --out {folder}` first")
    document = read_json(path)
    spec = recorded_spec(document, "model", model, "--model")
    if not spec:
        raise ConfigError(f"{path} records no model: pass --model")
    segmenter_spec = recorded_spec(document, "segmenter", segmenter, "--segmenter")
    result = Dissection.load(folder)
    generator = resolve_generator(spec, device)
    channels_last(generator)

    def build_segmenter() -> Any:
        built = resolve_segmenter(segmenter_spec, device)
        channels_last(built)
        return built

    return Painter(generator, result, folder, model=spec, segmenter=build_segmenter if segmenter_spec else None,
                   device=device, limits=limits)
