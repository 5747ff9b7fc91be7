"""A unit's top images with the region where its upsampled activation exceeds a threshold highlighted.

`render_layer` generates each needed sample of a layer once and returns, per unit, the plain strip of its
top images and, per requested (unit, threshold), the region mask over that strip. The report shows a
plain strip under a small transparent PNG overlay per threshold (`overlay_uri`), so drawing a unit at
several thresholds costs a few hundred bytes each rather than another picture; `render_unit_images`
composes the same highlight into pixels (`highlight`). The region's border is drawn twice: OUTLINE (yellow)
just inside it and HALO (near black) just outside, so it stays visible on light concepts (sun, cloud) and on
dark ones alike.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from gandissect.core.features import upsample
from gandissect.core.hooks import Trace
from gandissect.core.images import to_uint8
from gandissect.core.sampling import sample_z

DIM = 0.35
OUTLINE = (255, 230, 40)
HALO = (16, 16, 24)
GAP = 255
OVERLAY_ALPHA = round(255 * (1 - DIM))  # black at this opacity over a picture dims it to DIM


def threshold_key(threshold: float | None) -> float:
    """A threshold as a float key; a missing one (null in JSON) highlights nothing."""
    return math.inf if threshold is None or threshold != threshold else float(threshold)


def outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of `mask` (H, W) bool with a 4-neighbour outside it; the image's border counts as outside."""
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def halo(mask: np.ndarray) -> np.ndarray:
    """Pixels outside `mask` (H, W) bool with a 4-neighbour inside it: a ring around the region."""
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    near = padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
    return near & ~mask


def highlight(picture: np.ndarray, mask: np.ndarray, content: np.ndarray | None = None) -> np.ndarray:
    """Dim `picture` (H, W, 3) uint8 to DIM outside `mask` (H, W) bool, draw the mask's inner border in
    OUTLINE and the ring just outside it in HALO; only where `content` (default: everywhere) is true, so a
    strip's white gaps stay white."""
    out = picture.copy()
    content = np.ones(mask.shape, bool) if content is None else content
    outside = content & ~mask
    out[outside] = np.round(picture[outside].astype(np.float32) * DIM).astype(np.uint8)
    out[halo(mask) & content] = HALO
    out[outline(mask)] = OUTLINE
    return out


def overlay_uri(mask: np.ndarray, content: np.ndarray) -> str:
    """A PNG data URI that, laid over the plain strip, shows what `highlight(strip, mask, content)` shows:
    black at OVERLAY_ALPHA outside the mask, OUTLINE on its border, HALO on the ring around it, transparent
    elsewhere."""
    index = np.zeros(mask.shape, np.uint8)
    index[content & ~mask] = 1
    index[halo(mask) & content] = 3
    index[outline(mask)] = 2
    image = Image.fromarray(index, "P")
    image.putpalette([0, 0, 0, 0, 0, 0, *OUTLINE, *HALO])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True, transparency=bytes([0, OVERLAY_ALPHA, 255, 255]))
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


REPORT_SIDE = 128  # pixels: the longest side a top image is stored at in the report (larger ones are reduced)
MIN_TILE = 96  # CSS pixels: the least width a top image is drawn at (a 64-px image at 1.5x)


def strip_layout(count: int, width: int) -> dict[str, Any]:
    """How the page draws a strip of `count` images `width` pixels wide (each followed by a 1-px gap): in
    `rows` rows (two when `count` is even and at least 4, so a gallery card stays narrow) of `per_row` images,
    each at `tile` CSS pixels, at least its own width and at least MIN_TILE; `row_px` and `line_px` are the
    least widths of a row of `per_row` and of all `count` in one row."""
    rows = 2 if count >= 4 and count % 2 == 0 else 1
    scale = max(MIN_TILE, width) / width
    return {"count": count, "rows": rows, "per_row": count // rows, "tile": round(width * scale, 2),
            "row_px": math.ceil(count // rows * (width + 1) * scale), "line_px": math.ceil(count * (width + 1) * scale)}


def picture_size(uri: str) -> tuple[int, int]:
    """(height, width) of the picture in a data: URI."""
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as image:
        return image.height, image.width


@dataclass
class LayerImages:
    """Per unit the plain strip of its top images, (H, count * (W + 1), 3) uint8 with a white 1-px gap after
    each image, and how many images it holds; per (unit, threshold key) the region mask over the strip."""

    width: int
    pictures: dict[int, np.ndarray] = field(default_factory=dict)
    filled: dict[int, int] = field(default_factory=dict)
    masks: dict[tuple[int, float], np.ndarray] = field(default_factory=dict)

    def content(self, unit: int) -> np.ndarray:
        """Where the unit's strip shows an image (not a gap, not an unused slot)."""
        strip = self.pictures[unit]
        columns = np.zeros(strip.shape[1], bool)
        for rank in range(self.filled[unit]):
            columns[rank * (self.width + 1): rank * (self.width + 1) + self.width] = True
        return np.broadcast_to(columns, strip.shape[:2])

    def mask(self, unit: int, threshold: float | None) -> np.ndarray:
        return self.masks[unit, threshold_key(threshold)]

    def highlighted(self, unit: int, threshold: float | None) -> np.ndarray:
        return highlight(self.pictures[unit], self.mask(unit, threshold), self.content(unit))

    def overlay(self, unit: int, threshold: float | None) -> str:
        return overlay_uri(self.mask(unit, threshold), self.content(unit))


def reduced(pictures: np.ndarray, side: int | None) -> np.ndarray:
    """(N, H, W, 3) uint8 pictures with the longer side at most `side` (area-averaged), as they are when
    already small enough or `side` is None."""
    height, width = pictures.shape[1:3]
    if side is None or max(height, width) <= side:
        return pictures
    size = (max(1, round(width * side / max(height, width))), max(1, round(height * side / max(height, width))))
    return np.stack([np.asarray(Image.fromarray(p).resize(size, Image.Resampling.BOX)) for p in pictures])


def render_layer(generator: nn.Module, document: dict[str, Any], layer: str,
                 requests: Iterable[tuple[int, float | None]], count: int = 8,
                 device: str | torch.device = "cpu", batch_size: int = 32, side: int | None = None,
                 progress: bool = False) -> LayerImages:
    """Strips of the top `count` images of the requested units of `layer` and their masks at the requested
    thresholds. Images come from the IoU sample set (seed `config.iou_seed`); each distinct sample is
    generated once, in batches of `batch_size`, whatever the number of units and thresholds using it. With
    `side`, pictures and masks are drawn with the longer side at most that (the report's display size), so a
    large generator's report stays small and quick to make. With `progress`, a bar counts the samples drawn."""
    records = {int(r["unit"]): r for r in document["layers"][layer]["units"]}
    wanted: dict[int, set[float]] = {}
    for unit, threshold in requests:
        wanted.setdefault(int(unit), set()).add(threshold_key(threshold))
    missing = sorted(u for u in wanted if u not in records)
    if missing:
        raise KeyError(f"layer {layer!r} has no units {missing[:10]} (it has {len(records)})")
    uses: dict[int, list[tuple[int, int]]] = {}  # sample -> [(unit, rank)]
    for unit in wanted:
        for rank, sample in enumerate(records[unit]["top_samples"][:count]):
            uses.setdefault(int(sample), []).append((unit, rank))
    height, width = (int(s) for s in document.get("segmentation_size") or (64, 64))
    images = LayerImages(width)
    generator = generator.to(device).eval()
    samples = sorted(uses)
    bar = tqdm(total=len(samples), desc=f"report: {layer} images", unit="sample", disable=not progress,
               dynamic_ncols=True)
    for start in range(0, len(samples), batch_size):
        batch = samples[start:start + batch_size]
        with torch.no_grad(), Trace(generator, [layer]) as trace:
            pictures = reduced(to_uint8(generator(sample_z(generator, int(document["config"]["iou_seed"]),
                                                           torch.tensor(batch)).to(device))), side)
        acts = trace[layer].float()
        height, width = pictures.shape[1:3]
        images.width = width
        pairs = [(b, unit, rank) for b, sample in enumerate(batch) for unit, rank in uses[sample]]
        rows = torch.tensor([p[0] for p in pairs], device=acts.device)
        cols = torch.tensor([p[1] for p in pairs], device=acts.device)
        upsampled = upsample(acts[rows, cols][:, None], (height, width))[:, 0].cpu().numpy()
        for (b, unit, rank), values in zip(pairs, upsampled, strict=True):
            x = rank * (width + 1)
            strip = images.pictures.setdefault(unit, np.full((height, count * (width + 1), 3), GAP, np.uint8))
            strip[:, x:x + width] = pictures[b]
            for key in wanted[unit]:
                mask = images.masks.setdefault((unit, key), np.zeros(strip.shape[:2], bool))
                mask[:, x:x + width] = values > key
        bar.update(len(batch))
    bar.close()
    for unit, keys in wanted.items():
        strip = images.pictures.setdefault(unit, np.full((height, count * (width + 1), 3), GAP, np.uint8))
        images.filled[unit] = len(records[unit]["top_samples"][:count])
        for key in keys:
            images.masks.setdefault((unit, key), np.zeros(strip.shape[:2], bool))
    return images


def render_unit_images(generator: nn.Module, document: dict[str, Any], layer: str, units: Iterable[int] | None = None,
                       count: int = 8, device: str | torch.device = "cpu", batch_size: int = 32,
                       thresholds: Mapping[int, float] | None = None) -> dict[int, np.ndarray]:
    """Per unit of `layer`: its top `count` images side by side, (H, count * (W + 1), 3) uint8, each followed
    by a 1-px white gap; outside the region above the unit's threshold the image is dimmed to DIM and the
    region gets a 1-px OUTLINE border. The threshold is `thresholds[unit]` where given, else the unit's
    labelling threshold. `units` defaults to the units `thresholds` names, else all. Units with fewer top
    samples than `count` leave the rest of their strip white."""
    records = {int(r["unit"]): r for r in document["layers"][layer]["units"]}
    given = {int(u): t for u, t in (thresholds or {}).items()}
    chosen = [int(u) for u in units] if units is not None else sorted(given or records)
    chosen_thresholds = {u: given[u] if u in given else records.get(u, {}).get("threshold") for u in chosen}
    images = render_layer(generator, document, layer, chosen_thresholds.items(), count, device, batch_size)
    return {u: images.highlighted(u, chosen_thresholds[u]) for u in chosen}
