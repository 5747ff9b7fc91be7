"""Open a painter on a run folder: the dissection, and the generator and segmenter that dissect.json names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gandissect.core.errors import ConfigError
from gandissect.dissection.document import check_document
from gandissect.dissection.results import Dissection
from gandissect.engine.runfiles import Snapshot, read_json_file
from gandissect.engine.speed import channels_last
from gandissect.models import recorded_spec, resolve_generator, resolve_segmenter
from gandissect.viz.painter.engine import Limits, Painter
from gandissect.viz.painter.units import concept_units


def open_painter(run: str | Path, model: str | None = None, segmenter: str | None = None,
                 device: str | torch.device = "cpu", limits: Limits | None = None) -> Painter:
    """A painter on the finished dissection in `run`, with its recorded generator (or `model`) and segmenter
    (or `segmenter`, built on first use). Models run channels-last (faster convolutions on a CPU)."""
    folder = Path(run)
    with Snapshot(folder) as files:
        if "dissect.json" not in files.names():
            raise ConfigError(f"{folder} holds no dissect.json: run `gandissect dissect --out {folder}` first")
        document = read_json_file(files, "dissect.json")
        check_document(document)
        result = Dissection.load(files)
        concepts = concept_units(files, result)
    spec = recorded_spec(document, "model", model, "--model")
    if not spec:
        raise ConfigError(f"{folder}/dissect.json records no model: pass --model")
    segmenter_spec = recorded_spec(document, "segmenter", segmenter, "--segmenter")
    generator = resolve_generator(spec, device)
    channels_last(generator)

    def build_segmenter() -> Any:
        built = resolve_segmenter(segmenter_spec, device)
        channels_last(built)
        return built

    return Painter(generator, result, folder, model=spec, segmenter=build_segmenter if segmenter_spec else None,
                   device=device, limits=limits, concepts=concepts)
