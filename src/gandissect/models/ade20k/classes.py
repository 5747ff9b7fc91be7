"""The 150 classes of the ADE20K scene-parsing benchmark (SceneParsing / ADEChallengeData2016), in the order
of the models trained on it, with the concept name and category gandissect gives each.

`ADE20K_LABELS[i]` is class i's name as Hugging Face checkpoints spell it in `config.id2label` (the first
synonym of the benchmark's objectInfo150 list). Concept names are those names, except where the first synonym
is obscure or ambiguous (`RENAMED`): "windowpane" is a window, "ashcan" a trash can, "screen" a projection
screen (the benchmark has "crt screen" and "monitor" as well).

Categories are "object" or "part". A class is a part when, in the scenes it is labelled in, it is normally a
component of another object: the basis is Unified Perceptual Parsing's Broden+ object-part table
(CSAILVision/unifiedparsing, data/object_part.csv), whose building, house, car, bus, door, table, lamp, column,
stairway and counter parts include window, door, column, railing, balustrade, step, base/pedestal and top.
ADE20K-150 has no wheel class ("bicycle, bike, wheel, cycle" is the whole bicycle), so wheel cannot be a part
here. GAN Dissection's own segmenter counted door and window as objects (its unified parser predicted them
both ways and it kept one index); gandissect reports them as parts, and keeps the best object under them in a
separate label channel (see `ADE20KSegmenter`), so a window pixel of a building still counts as building.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from gandissect.core.errors import ConfigError

ADE20K_LABELS: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door",
    "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill",
    "bench", "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight",
    "booth", "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator",
    "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy",
    "washer", "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike",
    "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal",
    "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light",
    "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
)

RENAMED: dict[str, str] = {
    "windowpane": "window",
    "ashcan": "trash can",
    "television receiver": "television",
    "plaything": "toy",
    "minibike": "motorbike",
    "hovel": "hut",
    "conveyer belt": "conveyor belt",
    "case": "display case",
    "screen": "projection screen",
    "pot": "flowerpot",
    "palm": "palm tree",
    "hood": "exhaust hood",
    "washer": "washing machine",
    "tank": "storage tank",
    "glass": "drinking glass",
}
"""Benchmark name -> concept name, where the benchmark's first synonym is obscure or ambiguous."""

PARTS: dict[str, str] = {
    "windowpane": "window of a building, house, car, bus or door",
    "door": "door of a building, house, car, bus, cabinet or wardrobe",
    "screen door": "a kind of door, so a part like door",
    "column": "column of a building, house or lamp",
    "railing": "railing of a building or house",
    "bannister": "balustrade of a building",
    "step": "step of a stairway",
    "base": "base or pedestal of a table, lamp, column or sink",
    "countertop": "top of a counter or kitchen island",
}
"""Benchmark name -> why it is a part (Broden+ object-part table, see the module docstring)."""


def concept_name(label: str) -> str:
    """The concept name of ADE20K class `label` (a benchmark name); other names pass through unchanged."""
    return RENAMED.get(label, label)


def category_of(label: str) -> str:
    """"part" for the ADE20K classes in `PARTS`, else "object"."""
    return "part" if label in PARTS else "object"


ADE20K_CONCEPTS: tuple[str, ...] = tuple(concept_name(label) for label in ADE20K_LABELS)
ADE20K_CATEGORIES: tuple[str, ...] = tuple(category_of(label) for label in ADE20K_LABELS)


GENERIC_LABEL = re.compile(r"^LABEL_\d+$")
"""How transformers names classes it was given no names for."""


def _benchmark_name(name: str) -> str | None:
    """The ADE20K class `name` denotes: itself, or its first synonym ("windowpane, window"); else None."""
    name = name.strip()
    if name in ADE20K_LABELS:
        return name
    first = re.split(r"[,;]", name, maxsplit=1)[0].strip()
    return first if first in ADE20K_LABELS else None


def concepts_for(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Concept names and categories for a model's class names (`config.id2label` in index order).

    Generic names (LABEL_0, ...) on 150 classes are taken as ADE20K's classes in the benchmark's order; real
    names are mapped through the ADE20K table where they name an ADE20K class and kept (category object)
    otherwise. Refused in one line: generic names on another number of classes, or names that repeat."""
    if all(GENERIC_LABEL.match(name.strip()) for name in names):
        if len(names) != len(ADE20K_LABELS):
            raise ConfigError(f"the model has {len(names)} unnamed classes (LABEL_0...): an ADE20K model has "
                              f"{len(ADE20K_LABELS)}; give the model's config.json an id2label naming its classes")
        return list(ADE20K_CONCEPTS), list(ADE20K_CATEGORIES)
    concepts, categories = [], []
    for name in names:
        label = _benchmark_name(name)
        concepts.append(concept_name(label) if label else name.strip())
        categories.append(category_of(label) if label else "object")
    repeated = sorted({c for c in concepts if concepts.count(c) > 1})
    if repeated:
        raise ConfigError(f"the model's id2label names the classes {repeated} more than once")
    return concepts, categories
