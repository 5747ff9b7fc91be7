"""The Python API for notebooks and scripts: one call to dissect, one to load a run, results as tables and
as pictures inline in Jupyter.

    import gandissect
    d = gandissect.dissect("scenes64", layers=["layer4"], samples=200)   # or your own nn.Module + segmenter
    d                                  # in Jupyter: interpretable units per concept and layer
    d.units("layer4")                  # a DataFrame (pandas installed) or a Table: one row per unit
    d.unit("layer4", 3)                # its top images, the region above its threshold outlined
    d.concept("tree")                  # the units that match tree best, each drawn at its tree threshold
    d.effects("layer4", ["tree"])      # causal effects of every unit, with intervals (gandissect.causal.effects)
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gandissect.api.views import Dissection
from gandissect.core.errors import ConfigError
from gandissect.dissection.config import DissectConfig
from gandissect.dissection.dissector import Dissector
from gandissect.dissection.results import Dissection as Results
from gandissect.engine.runfiles import Snapshot, read_json_file
from gandissect.models import (
    default_layers_for,
    default_segmenter_for,
    recorded_spec,
    resolve_generator,
    resolve_segmenter,
)

__all__ = ["Dissection", "dissect", "load"]


def _generator(generator: nn.Module | str, device: torch.device | str) -> tuple[nn.Module, str | None]:
    if isinstance(generator, str):
        return resolve_generator(generator, device), generator
    if not isinstance(generator, nn.Module):
        raise ConfigError(f"generator must be an nn.Module or a model spec; got {type(generator).__name__}")
    return generator.to(device).eval(), None


def _segmenter(segmenter: Any, spec: str | None, device: torch.device | str) -> tuple[Any, str | None]:
    if segmenter is None:
        default = default_segmenter_for(spec) if spec else None
        if default is None:
            raise ConfigError("give a segmenter (an object with concepts and segment(images), or a spec such as "
                              "'color')")
        segmenter = default
    if isinstance(segmenter, str):
        return resolve_segmenter(segmenter, device), segmenter
    return segmenter, None


def dissect(generator: nn.Module | str, segmenter: Any = None, layers: Sequence[str] | None = None,
            samples: int = 1000, out: str | Path | None = None, device: str | torch.device = "cpu",
            force: bool = False, resume: bool = False, report: bool | None = None, progress: bool = True,
            **settings: Any) -> Dissection:
    """Dissect `layers` of `generator` (an nn.Module with `z_dim`, or a model spec such as "scenes64") with
    `segmenter` (default: the shipped model's), on `samples` samples per set; `settings` are DissectConfig's
    (quantile, batch_size, label_method, passes: "auto" by default, as on the command line, ...). With
    `out`, the run folder is kept there (with report.html unless report=False; `force`/`resume` as on the
    command line); without it, a temporary folder is used and removed. Returns the results, able to draw
    themselves."""
    model, spec = _generator(generator, device)
    built, segmenter_spec = _segmenter(segmenter, spec, device)
    chosen = list(layers) if layers is not None else default_layers_for(spec or "", model)
    config = DissectConfig(layers=chosen, samples=samples, **{"passes": "auto", **settings})  # as the command line
    with tempfile.TemporaryDirectory(prefix="gandissect-") as scratch:
        folder = Path(out) if out is not None else Path(scratch) / "run"
        dissector = Dissector(model, built, config, folder, device=device, resume=resume, force=force,
                              progress=progress)
        result = dissector.run()
        write = report if report is not None else out is not None

        def write_report(document: dict[str, Any], staging: Path) -> None:
            if write:
                from gandissect.viz.report import write_report as render

                render(document, model, staging, device=device)

        provenance = {key: value for key, value in (("model", spec), ("segmenter", segmenter_spec)) if value}
        dissector.finish(result, provenance, write_report)
    return Dissection.wrap(result, model, built, Path(out) if out is not None else None, device)


def load(run: str | Path, generator: nn.Module | str | None = None, segmenter: Any = None,
         device: str | torch.device = "cpu") -> Dissection:
    """The finished dissection in run folder `run` (checked against its run.json), with its generator and
    segmenter: the ones it recorded when they are shipped models or loader specs, else give them."""
    with Snapshot(run) as files:
        document = read_json_file(files, "dissect.json")
        result = Results.load(files, device)
    model_spec = recorded_spec(document, "model", generator if isinstance(generator, str) else None, "generator=")
    if isinstance(generator, nn.Module):
        model = generator.to(device).eval()
    elif model_spec:
        model = resolve_generator(model_spec, device)
    else:
        raise ConfigError(f"{run} records no model this API may build: pass generator=")
    if segmenter is None or isinstance(segmenter, str):
        try:
            spec = recorded_spec(document, "segmenter", segmenter, "segmenter=")
        except ConfigError:
            spec = None  # a recorded factory is never run: effects() asks for the segmenter
        segmenter = resolve_segmenter(spec, device) if spec else None
    return Dissection.wrap(result, model, segmenter, Path(run), device)
