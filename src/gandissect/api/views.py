"""A dissection that shows itself: tables of its units and concepts, and pictures inline in Jupyter."""

from __future__ import annotations

import dataclasses
import functools
import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gandissect.core.errors import ConfigError
from gandissect.core.hooks import Trace
from gandissect.core.images import data_uri, grid, to_uint8
from gandissect.core.sampling import sample_z
from gandissect.core.tables import table
from gandissect.dissection.results import Dissection as Results
from gandissect.dissection.results import to_json
from gandissect.viz.report.images import render_unit_images

UNIT_COLUMNS = ("unit", "concept", "category", "iou", "crossfit_iou", "iqr", "threshold", "interpretable")


@dataclass
class Picture:
    """A picture with a caption, drawn inline by Jupyter (`_repr_html_`) and as an array for code."""

    caption: str
    rows: list[tuple[str, np.ndarray]]

    def _repr_html_(self) -> str:
        body = "".join(f'<div><div style="font:12px sans-serif">{html.escape(label)}</div>'
                       f'<img src="{data_uri(picture, 90)}" style="image-rendering:pixelated;'
                       f'width:{picture.shape[1] * 2}px"></div>' for label, picture in self.rows)
        return f'<figure><figcaption>{html.escape(self.caption)}</figcaption>{body}</figure>'

    def __repr__(self) -> str:
        return f"<Picture: {self.caption}; {len(self.rows)} strip(s)>"


@dataclass
class Dissection(Results):
    """The results of a dissection (see `gandissect.dissection.Dissection`) with the generator and segmenter
    they came from, as tables and pictures."""

    generator: nn.Module | None = field(default=None, repr=False)
    segmenter: Any = field(default=None, repr=False)
    folder: Path | None = None
    device: Any = field(default="cpu", repr=False)

    @classmethod
    def wrap(cls, result: Results, generator: nn.Module | None, segmenter: Any, folder: Path | None,
             device: Any = "cpu") -> Dissection:
        values = {f.name: getattr(result, f.name) for f in dataclasses.fields(Results)}
        return cls(**values, generator=generator, segmenter=segmenter, folder=folder, device=device)

    @functools.cached_property
    def document(self) -> dict[str, Any]:
        """The dissect.json document of these results."""
        return to_json(self)

    def _layer(self, layer: str | None) -> str:
        if layer is None:
            return next(iter(self.layers))
        if layer not in self.layers:
            raise ConfigError(f"no dissected layer {layer!r}; the run's layers: {', '.join(self.layers)}")
        return layer

    def units(self, layer: str | None = None) -> Any:
        """One row per unit of `layer` (default the first): its label under the run's rule with IoU,
        cross-fitted IoU, IQR, threshold and whether it is interpretable."""
        records = self.document["layers"][self._layer(layer)]["units"]
        return table([{key: record[key] for key in UNIT_COLUMNS} for record in records], UNIT_COLUMNS)

    def _concept_rows(self) -> list[dict[str, Any]]:
        layers = self.document["layers"]
        names = sorted({c for layer in layers.values() for c in layer["interpretable_by_concept"]})
        return [{"concept": c, **{name: layer["interpretable_by_concept"].get(c, 0) for name, layer in layers.items()}}
                for c in names]

    def summary(self) -> Any:
        """Interpretable units per concept (rows) and layer (columns)."""
        return table(self._concept_rows(), ["concept", *self.layers])



    def _drawing(self) -> nn.Module:
        """The generator to draw with (one line when these results have none)."""
        if self.generator is None:
            raise ConfigError("these results have no generator to draw with: gandissect.load(run, generator=...)")
        return self.generator

    def _pictures(self, layer: str, thresholds: dict[int, float], count: int) -> dict[int, np.ndarray]:
        return render_unit_images(self._drawing(), self.document, layer, list(thresholds), count=count,
                                  device=self.device, thresholds=thresholds)

    def unit(self, layer: str, unit: int, count: int = 8) -> Picture:
        """The unit's top `count` images, outside the region above its threshold dimmed and outlined."""
        layer = self._layer(layer)
        records = self.document["layers"][layer]["units"]
        if not 0 <= unit < len(records):
            raise ConfigError(f"layer {layer} has units 0..{len(records) - 1}; got {unit}")
        record = records[unit]
        strip = self._pictures(layer, {unit: record["threshold"]}, count)[unit]
        caption = (f"{layer} unit {unit}: {record['concept']} (IoU {record['iou']:.3f}"
                   f"{', interpretable' if record['interpretable'] else ''})")
        return Picture(caption, [(f"top {count} images", strip)])

    def concept(self, name: str, layer: str | None = None, units: int = 4, count: int = 6) -> Picture:
        """The `units` units of `layer` that match concept `name` best, each drawn at its own threshold for it."""
        layer = self._layer(layer)
        rankings = self.document["layers"][layer]["concepts"]
        if name not in rankings:
            raise ConfigError(f"no concept {name!r}; the run's concepts: {', '.join(rankings)}")
        ranking = rankings[name]
        chosen = {int(u): float(t) for u, t in zip(ranking["units"][:units], ranking["thresholds"][:units],
                                                    strict=True)}
        strips = self._pictures(layer, chosen, count)
        rows = [(f"unit {u}: IoU {iou:.3f}", strips[u]) for u, iou in zip(chosen, ranking["iou"], strict=False)]
        return Picture(f"{name} at {layer}: its best {len(chosen)} units", rows)

    def generate(self, samples: Iterable[int] = range(6), edit: Mapping[str, Any] | None = None,
                 seed: int | None = None) -> Picture:
        """Images of `samples` (indices of sample set `seed`, default the IoU set) unedited and, with `edit`
        ({layer: UnitEdit or function}, as `Trace` takes), edited, one strip each."""
        generator = self._drawing()
        chosen = torch.tensor(list(samples))
        z = sample_z(generator, self.config.iou_seed if seed is None else seed, chosen).to(self.device)
        rows = []
        for label, edits in [("unedited", None), *([("edited", edit)] if edit else [])]:
            with torch.no_grad(), Trace(generator, edit=edits):
                rows.append((label, grid(to_uint8(generator(z)), columns=len(chosen))))
        return Picture(f"samples {chosen.tolist()}" + (f", edited at {', '.join(edit)}" if edit else ""), rows)

    def effects(self, layer: str, concepts: Any = "all", **options: Any) -> Any:
        """Causal effects of every unit of `layer` on `concepts` (see `gandissect.causal.effects`)."""
        from gandissect.causal.notebook import effects

        if self.generator is None or self.segmenter is None:
            raise ConfigError("effects need the generator and segmenter: gandissect.load(run, generator=..., "
                              "segmenter=...)")
        return effects(self.generator, self.segmenter, self, layer, concepts, device=self.device, **options)

    def _repr_html_(self) -> str:
        layers = ", ".join(f"{name} ({layer.thresholds.shape[0]} units)" for name, layer in self.layers.items())
        head = (f"<p>Dissection of {html.escape(layers)} on {self.config.samples} samples per set, labelled by the "
                f"{html.escape(self.config.label_method)} rule"
                + (f"; run folder {html.escape(str(self.folder))}" if self.folder else "") + "</p>")
        return head + table(self._concept_rows(), ["concept", *self.layers], pandas=False)._repr_html_()

    def __repr__(self) -> str:
        return (f"<Dissection of {', '.join(self.layers)}: {self.config.samples} samples per set, "
                f"{len(self.concepts)} concepts>")
