"""The painter's engine: one generator, a finished dissection, and strokes turned into unit edits.

    painter = Painter(generator, Dissection.load(run), run, model="scenes64")
    picture, records = painter.edit(seed=3, strokes=[Stroke("remove", [(10, 40), (30, 40)], 6, "tree")])

Every image is sample 0 of sample set `seed` (`core.sampling.sample_z(generator, seed, [0])`), so a request
carries everything it needs (seed and strokes) and the same request gives the same bytes. A stroke `remove`s
(ablates) or `add`s (inserts) the first `strength` significant units of its concept's removal or insertion
ranking at its layer (`units.py`), with strength `alpha`, inside its region; only a concept, layer and direction
with a significant unit set is painted with, and strength is at most its number of significant units. An `erase`
stroke multiplies the regions of the strokes before it by (1 - alpha * its region), so with alpha 1 it takes
their edits back where it passes. Strokes apply in order. Inserted values are those the causal ranking was
measured with (ace.json's per-unit `value`).
The generator runs from the lowest edited layer on (`Cut`), from features cached per seed; edits of higher
layers are hooked into that run. One request computes at a time (a lock), so one copy of the model serves
every client.
"""

from __future__ import annotations

import functools
import io
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from gandissect.causal.cut import Cut
from gandissect.causal.interventions import unit_edit
from gandissect.core.edits import UnitEdit
from gandissect.core.errors import GandissectError
from gandissect.core.hooks import Trace, layer_shapes
from gandissect.core.images import to_uint8
from gandissect.core.sampling import sample_z
from gandissect.dissection.results import Dissection
from gandissect.models.loaders import is_loader_spec
from gandissect.viz.painter.strokes import apply_erasers, stroke_mask
from gandissect.viz.painter.units import ACTIONS as RANKINGS
from gandissect.viz.painter.units import ConceptUnits, Direction, Tool, concept_units, default_tool

ACTIONS = ("add", "remove", "erase")
MODES = {"add": "insert", "remove": "ablate"}
MAX_SEED = 2**31 - 1
SEED_CACHE = 32
MASK_CACHE = 512


class PainterError(GandissectError):
    """A request the painter cannot carry out; the message says what to change."""


@dataclass(frozen=True)
class Limits:
    """The largest requests the painter takes."""

    max_strokes: int = 32
    max_points: int = 256
    max_radius: float = 32.0
    max_seed: int = MAX_SEED


@dataclass(frozen=True)
class Stroke:
    """One stroke: `points` (x, y) in image pixels, `radius` in pixels; concept and layer for add / remove
    (layer None: the direction's default layer; strength None: its default strength)."""

    action: str
    points: Sequence[Sequence[float]]
    radius: float
    concept: str | None = None
    layer: str | None = None
    strength: int | None = None
    alpha: float = 1.0


@dataclass
class Planned:
    """A checked stroke: the units it edits (none for an eraser) and its region at image size."""

    stroke: Stroke
    layer: str | None
    units: list[int]
    mask: torch.Tensor
    direction: Direction | None = None

    def record(self) -> dict[str, Any]:
        """What the response reports about the stroke: its layer, units and their source (the ranking)."""
        direction = self.direction
        return {"action": self.stroke.action, "concept": self.stroke.concept if self.layer else None,
                "layer": self.layer, "units": self.units, "alpha": float(self.stroke.alpha),
                "source": direction.source if direction else None,
                "ranking": RANKINGS[direction.action] if direction else None}


@dataclass
class SeedEntry:
    """What is cached per seed: z, the unedited image once asked for, and features at the layers edited so far."""

    z: torch.Tensor
    unedited: torch.Tensor | None = None
    features: dict[str, torch.Tensor] = field(default_factory=dict)


@functools.lru_cache(maxsize=MASK_CACHE)
def region_of(points: tuple[tuple[float, float], ...], radius: float, size: tuple[int, int]) -> torch.Tensor:
    """`stroke_mask`, remembered: a request repeats the strokes of the one before it. Never modify the result."""
    return stroke_mask(points, radius, size)


def png_bytes(picture: np.ndarray) -> bytes:
    """A (H, W, 3) uint8 picture as PNG, compressed fast (level 1)."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class Painter:
    """Edits images of `generator` with the units of the finished dissection `result` (run folder `run`).
    `segmenter`: a segmenter, or a function that builds one (called on first use), or None; `concepts`: the
    run's concept units when already read (else read from `run`)."""

    def __init__(self, generator: nn.Module, result: Dissection, run: str | Path, *, model: str,
                 segmenter: Any = None, device: str | torch.device = "cpu", limits: Limits | None = None,
                 concepts: dict[str, ConceptUnits] | None = None) -> None:
        self.generator, self.result, self.run, self.model = generator, result, Path(run), model
        self.device = torch.device(device)
        self.concepts: dict[str, ConceptUnits] = concept_units(run, result) if concepts is None else concepts
        self.default: Tool | None = default_tool(self.concepts)
        self._segmenter = segmenter
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, SeedEntry] = OrderedDict()
        self._values: dict[tuple[str, str], torch.Tensor] = {}
        with torch.inference_mode():
            shapes = layer_shapes(generator, sample_z(generator, 0, [0]).to(self.device))
        missing = [layer for layer in result.layers if layer not in shapes]
        if missing:
            raise PainterError(f"the generator has no layer {missing[0]!r} of the dissection: is it the model the "
                               "run was made with (--model)?")
        self.layers = [layer for layer in shapes if layer in result.layers]  # in the order they run
        self.image_size = tuple(int(s) for s in self._unedited(self._entry(0)).shape[-2:])
        side = max(self.image_size)
        self.limits = limits or Limits(max_radius=side / 2)
        self._cuts = {layer: Cut(generator, layer) for layer in self.layers}

    def info(self) -> dict[str, Any]:
        """The run's model, folder name, image size, layers and request limits."""
        report = (self.run / "report.html").is_file()
        return {"model": model_label(self.model), "run": self.run.resolve().name, "image_size": list(self.image_size),
                "layers": list(self.layers), "max_seed": self.limits.max_seed,
                "max_strokes": self.limits.max_strokes, "max_points": self.limits.max_points,
                "max_radius": self.limits.max_radius, "report": "/report/report.html" if report else None}

    def sample(self, seed: int) -> np.ndarray:
        """The unedited (H, W, 3) uint8 picture of `seed`."""
        return self.edit(seed, [])[0]

    def edit(self, seed: int, strokes: Sequence[Stroke]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """The (H, W, 3) uint8 picture of `seed` with `strokes` applied, and a record of each stroke."""
        planned = self.plan(seed, strokes)
        with self._lock, torch.inference_mode():
            image = self._render(seed, planned)
        return to_uint8(image)[0], [p.record() for p in planned]

    def concept_pixels(self, seed: int, strokes: Sequence[Stroke]) -> tuple[dict[str, float], dict[str, float]]:
        """The share of the image's pixels each concept covers, before and after the strokes, by the run's
        segmenter; concepts present in neither are left out."""
        planned = self.plan(seed, strokes)
        with self._lock, torch.inference_mode():
            segmenter = self._get_segmenter()
            before, after = self._unedited(self._entry(seed)), self._render(seed, planned)
            labels = segmenter.segment(torch.cat([before, after]))
        names = list(segmenter.concepts)
        shares = [concept_shares(labels[i:i + 1], len(names)) for i in range(2)]
        present = sorted(set(shares[0]) | set(shares[1]))
        return ({names[c]: shares[0].get(c, 0.0) for c in present}, {names[c]: shares[1].get(c, 0.0) for c in present})

    def plan(self, seed: int, strokes: Sequence[Stroke]) -> list[Planned]:
        """Check the request and turn each stroke into its units and region (erasers applied)."""
        if not 0 <= int(seed) <= self.limits.max_seed:
            raise PainterError(f"seed must lie in 0..{self.limits.max_seed}; got {seed}")
        if len(strokes) > self.limits.max_strokes:
            raise PainterError(f"at most {self.limits.max_strokes} strokes per request; got {len(strokes)}")
        planned = [self._plan_one(i, stroke) for i, stroke in enumerate(strokes)]
        masks = apply_erasers([p.mask for p in planned], [p.layer is None for p in planned],
                              [p.stroke.alpha for p in planned])
        for p, mask in zip(planned, masks, strict=True):
            p.mask = mask
        return planned

    def _plan_one(self, index: int, stroke: Stroke) -> Planned:
        where = f"stroke {index}"
        if stroke.action not in ACTIONS:
            raise PainterError(f"{where}: action must be one of {', '.join(ACTIONS)}; got {stroke.action!r}")
        points = self._check_points(where, stroke)
        mask = region_of(points, float(stroke.radius), self.image_size)
        if not 0 < stroke.alpha <= 1:
            raise PainterError(f"{where}: alpha must lie in (0, 1]; got {stroke.alpha}")
        if stroke.action == "erase":
            return Planned(stroke, None, [], mask)
        layer, direction = self.direction_of(where, stroke.action, stroke.concept, stroke.layer)
        strength = direction.default_strength if stroke.strength is None else int(stroke.strength)
        check_strength(where, f"{stroke.action} {stroke.concept} at {layer}", direction, strength)
        return Planned(stroke, layer, direction.top(strength or 0), mask, direction)

    def direction_of(self, where: str, action: str, concept: str | None,
                     layer: str | None) -> tuple[str, Direction]:
        """The layer and direction an add / remove stroke paints with; refused in one line (with the command
        that measures it) unless it has a significant unit set."""
        if concept not in self.concepts:
            known = ", ".join(name for name, c in self.concepts.items() if c.available) or "none"
            what = f"unknown concept {concept!r}" if concept else f"{action} needs a concept"
            raise PainterError(f"{where}: {what}; concepts with a significant unit set: {known}")
        entry = self.concepts[concept]
        if layer is None:
            layer = entry.default_layers.get(action)
            if layer is None:
                hint = entry.layers[entry.default_layer].direction(action)
                raise PainterError(f"{where}: {action} {concept} is offered at no layer: "
                                   f"{self.refusal_text(hint)}")
        if layer not in self.layers:
            raise PainterError(f"{where}: unknown layer {layer!r}; the run's layers: {', '.join(self.layers)}")
        if layer not in entry.layers:
            raise PainterError(f"{where}: {concept!r} has no units at {layer}; it has evidence at "
                               f"{', '.join(entry.layers)}")
        direction = entry.layers[layer].direction(action)
        if not direction.available:
            raise PainterError(f"{where}: {action} {concept} at {layer} is not offered: {self.refusal_text(direction)}")
        return layer, direction

    @staticmethod
    def refusal_text(direction: Direction) -> str:
        return (direction.reason or "") + (f"; measure it with `{direction.hint}`" if direction.hint else "")

    def refusal(self, index: int, stroke: Any) -> str | None:
        """Why the painter refuses a stroke's concept, layer, direction or strength (a raw JSON stroke), in one
        line; None when it does not, or the stroke is not an add / remove object."""
        if not isinstance(stroke, dict) or stroke.get("action") not in MODES:
            return None
        concept, layer, strength = stroke.get("concept"), stroke.get("layer"), stroke.get("strength")
        if not (concept is None or isinstance(concept, str)) or not (layer is None or isinstance(layer, str)):
            return None
        try:
            layer, direction = self.direction_of(f"stroke {index}", stroke["action"], concept, layer)
            if isinstance(strength, int) and not isinstance(strength, bool):
                check_strength(f"stroke {index}", f"{stroke['action']} {concept} at {layer}", direction, strength)
        except PainterError as error:
            return str(error)
        return None

    def _check_points(self, where: str, stroke: Stroke) -> tuple[tuple[float, float], ...]:
        """The stroke's points as (x, y) floats, refused unless 1..max_points pairs inside the image."""
        height, width = self.image_size
        try:
            points = tuple((float(x), float(y)) for x, y in stroke.points)
        except (TypeError, ValueError):
            points = ()
        if not 1 <= len(points) <= self.limits.max_points:
            raise PainterError(f"{where}: points must be 1 to {self.limits.max_points} pairs [x, y]")
        if not all(0 <= x <= width and 0 <= y <= height for x, y in points):  # NaN fails every comparison
            raise PainterError(f"{where}: points must lie inside the image, 0 <= x <= {width} and 0 <= y <= {height}")
        if not 0 < stroke.radius <= self.limits.max_radius:
            raise PainterError(f"{where}: radius must lie in (0, {self.limits.max_radius}]; got {stroke.radius}")
        return points

    def _edit_of(self, planned: Planned) -> UnitEdit:
        mode = MODES[planned.stroke.action]
        values = None
        if mode == "insert":
            values = self._insertion_values(planned.layer or "", planned.stroke.concept or "")
        return unit_edit(mode, planned.units, values, float(planned.stroke.alpha), planned.mask)

    def _insertion_values(self, layer: str, concept: str) -> torch.Tensor:
        """(U,) values to insert at `layer` for `concept`: the values its insertion ranking was measured with
        (0 for units it does not offer)."""
        key = (layer, concept)
        if key not in self._values:
            values = torch.zeros(int(self.result.layers[layer].shape[0]))
            for choice in self.concepts[concept].layers[layer].add.units:
                values[choice.unit] = float(choice.value or 0.0)
            self._values[key] = values.to(self.device)
        return self._values[key]

    def _render(self, seed: int, planned: Sequence[Planned]) -> torch.Tensor:
        """The (1, 3, H, W) image of `seed` under the planned edits (under the lock, in inference mode)."""
        entry = self._entry(seed)
        active = [p for p in planned if p.layer is not None and bool(p.mask.any())]
        if not active:
            return self._unedited(entry)
        edits: dict[str, list[UnitEdit]] = {}
        for p in active:
            edits.setdefault(p.layer or "", []).append(self._edit_of(p))
        first = min(edits, key=self.layers.index)
        if first not in entry.features:
            entry.features[first] = self._cuts[first].head(entry.z)
        features = entry.features[first]
        for edit in edits.pop(first):
            features = edit.apply(features, first)
        with Trace(self.generator, edit=edits):
            return self._cuts[first].tail(features, entry.z)

    def _entry(self, seed: int) -> SeedEntry:
        """The cache entry of `seed` (least recently used seeds are dropped)."""
        seed = int(seed)
        if seed in self._cache:
            self._cache.move_to_end(seed)
            return self._cache[seed]
        entry = SeedEntry(sample_z(self.generator, seed, [0]).to(self.device))
        self._cache[seed] = entry
        while len(self._cache) > SEED_CACHE:
            self._cache.popitem(last=False)
        return entry

    def _unedited(self, entry: SeedEntry) -> torch.Tensor:
        """The seed's image without edits: the whole generator, run once per cached seed."""
        if entry.unedited is None:
            with torch.inference_mode():
                entry.unedited = self.generator(entry.z)
        return entry.unedited

    def _get_segmenter(self) -> Any:
        if self._segmenter is None:
            raise PainterError("the run records no segmenter: restart the painter with --segmenter")
        if callable(self._segmenter) and not hasattr(self._segmenter, "segment"):
            self._segmenter = self._segmenter()
        return self._segmenter


def check_strength(where: str, what: str, direction: Direction, strength: int | None) -> None:
    """Refuse a strength outside 1..the direction's number of significant units, in one line."""
    if strength is None or not 1 <= strength <= direction.max_strength:
        raise PainterError(f"{where}: strength must lie in 1..{direction.max_strength}, the significant units of "
                           f"{what}; got {strength}")


def concept_shares(labels: torch.Tensor, concepts: int) -> dict[int, float]:
    """{concept index: share of the known pixels it covers in any label channel} for labels (1, K, h, w);
    pixels marked -2 (unknown) in any channel are left out. Concepts with no pixel are left out."""
    known = ~(labels == -2).any(1)
    total = int(known.sum())
    shares = {}
    for concept in labels[labels >= 0].unique().tolist():
        if 0 <= concept < concepts and total:
            shares[int(concept)] = int(((labels == concept).any(1) & known).sum()) / total
    return shares


def model_label(spec: str) -> str:
    """A model spec as shown to clients, with no folder of this machine in it: a registered name as is, a file
    factory by its file name, a loader spec (`progan:/path/file.pth,option=...`) by its file name and options."""
    if is_loader_spec(spec):
        family, _, rest = spec.partition(":")
        source, *options = rest.split(",")
        return ",".join([f"{family}:{Path(source).name}", *options])
    target, colon, attribute = spec.rpartition(":")
    if colon and target.endswith(".py"):
        return f"{Path(target).name}:{attribute}"
    return spec

