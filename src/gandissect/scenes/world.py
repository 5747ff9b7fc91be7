"""A procedural world of outdoor scenes whose every pixel's concept is known.

`render(seed, size)` draws one scene (sky, sun, clouds, mountains, grass, a lake, buildings with roofs,
windows and doors, trees with trunks) and returns its RGB image, its per-pixel concept labels and the
objects it placed. The scene is laid out in unit coordinates, so the same seed gives the same scene at
any size. Context rules hold by construction: parts are drawn only on their host (windows, doors and
roofs on a building, trunks under a tree's crown), doors stand at the base of their building, the sun
and clouds lie above the horizon, buildings and trees stand on grass, never on water.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CONCEPTS: tuple[str, ...] = (
    "sky", "cloud", "sun", "mountain", "grass", "water",
    "tree", "trunk", "building", "roof", "window", "door",
)
CONCEPT_INDEX: dict[str, int] = {name: i for i, name in enumerate(CONCEPTS)}
HOSTS: dict[str, str] = {"trunk": "tree", "roof": "building", "window": "building", "door": "building"}
CATEGORIES: dict[str, str] = {name: ("part" if name in HOSTS else "object") for name in CONCEPTS}


@dataclass
class SceneObject:
    """One drawn shape: its concept, bounding box (x0, y0, x1, y1) in unit coordinates, and host object."""

    concept: str
    box: tuple[float, float, float, float]
    host: int | None = None


@dataclass
class Scene:
    """A rendered scene: `image` (H, W, 3) uint8, `labels` (H, W) uint8 indices into CONCEPTS."""

    image: np.ndarray
    labels: np.ndarray
    horizon: float
    objects: list[SceneObject] = field(default_factory=list)


class _Canvas:
    """Paints colour and concept label together, so that labels always agree with pixels.

    `detail` draws per-pixel noise; it is apart from the layout's generator because the number of values it
    draws depends on the size, and the layout must not.
    """

    def __init__(self, size: int, detail: np.random.Generator) -> None:
        self.size = size
        self.detail = detail
        centres = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.xs = centres[None, :]
        self.ys = centres[:, None]
        self.rgb = np.zeros((size, size, 3), np.float32)
        self.labels = np.zeros((size, size), np.uint8)

    def window(self, x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice] | None:
        """Pixel slices of the box, or None when it covers no pixel centre."""
        n = self.size
        r0, r1 = max(int(np.ceil(y0 * n - 0.5)), 0), min(int(np.ceil(y1 * n - 0.5)), n)
        c0, c1 = max(int(np.ceil(x0 * n - 0.5)), 0), min(int(np.ceil(x1 * n - 0.5)), n)
        if r0 >= r1 or c0 >= c1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def paint(self, rows: slice, cols: slice, mask: np.ndarray, colour: np.ndarray, concept: str) -> None:
        """Paint `colour` ((3,) or (h, w, 3)) and the concept's label where `mask` is true."""
        region = self.rgb[rows, cols]
        if colour.ndim == 1:
            region[mask] = colour
        else:
            region[mask] = colour[mask]
        self.labels[rows, cols][mask] = CONCEPT_INDEX[concept]

    def rect(self, x0: float, y0: float, x1: float, y1: float, colour: np.ndarray, concept: str) -> bool:
        box = self.window(x0, y0, x1, y1)
        if box is None:
            return False
        rows, cols = box
        mask = np.ones((rows.stop - rows.start, cols.stop - cols.start), bool)
        self.paint(rows, cols, mask, colour, concept)
        return True

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, colour: np.ndarray, concept: str,
                below: float = 0.0, above: float = 1.0) -> np.ndarray | None:
        """Paint an ellipse clipped to below <= y < above; returns the painted mask in full-canvas form."""
        box = self.window(cx - rx, max(cy - ry, below), cx + rx, min(cy + ry, above))
        if box is None:
            return None
        rows, cols = box
        dx = (self.xs[:, cols] - cx) / rx
        dy = (self.ys[rows, :] - cy) / ry
        mask = dx * dx + dy * dy <= 1.0
        self.paint(rows, cols, mask, colour, concept)
        return mask


def _jitter(rng: np.random.Generator, base: tuple[float, float, float], amount: float) -> np.ndarray:
    return np.clip(np.asarray(base, np.float32) + rng.uniform(-amount, amount, 3).astype(np.float32), 0, 1)


def _pick(rng: np.random.Generator, palette: list[tuple[float, float, float]], amount: float = 0.05) -> np.ndarray:
    return _jitter(rng, palette[rng.integers(len(palette))], amount)


SKY_TOPS = [(0.25, 0.5, 0.9), (0.35, 0.6, 0.95), (0.2, 0.3, 0.65), (0.5, 0.65, 0.85)]
SKY_HORIZONS = [(0.7, 0.85, 1.0), (0.8, 0.88, 0.95), (0.95, 0.65, 0.45), (0.85, 0.8, 0.75)]
SUN_COLOURS = [(1.0, 0.95, 0.55), (1.0, 0.8, 0.35), (1.0, 1.0, 0.85)]
CLOUD_COLOURS = [(0.97, 0.97, 0.97), (0.85, 0.86, 0.9), (0.75, 0.76, 0.8)]
MOUNTAIN_COLOURS = [(0.45, 0.45, 0.5), (0.5, 0.42, 0.35), (0.35, 0.4, 0.55), (0.55, 0.5, 0.45)]
GRASS_COLOURS = [(0.3, 0.6, 0.25), (0.4, 0.65, 0.2), (0.55, 0.65, 0.25), (0.25, 0.5, 0.2)]
WATER_COLOURS = [(0.15, 0.35, 0.7), (0.2, 0.45, 0.65), (0.1, 0.3, 0.55)]
FOLIAGE_COLOURS = [(0.1, 0.35, 0.12), (0.15, 0.42, 0.1), (0.2, 0.3, 0.08), (0.6, 0.35, 0.1)]
TRUNK_COLOURS = [(0.35, 0.22, 0.1), (0.28, 0.18, 0.1), (0.4, 0.3, 0.2)]
WALL_COLOURS = [(0.75, 0.35, 0.25), (0.85, 0.8, 0.65), (0.65, 0.65, 0.65), (0.9, 0.9, 0.85), (0.7, 0.55, 0.4)]
ROOF_COLOURS = [(0.5, 0.15, 0.1), (0.3, 0.3, 0.35), (0.45, 0.3, 0.2), (0.2, 0.25, 0.4)]
WINDOW_COLOURS = [(0.6, 0.8, 0.95), (0.95, 0.9, 0.5), (0.3, 0.45, 0.6)]
DOOR_COLOURS = [(0.3, 0.18, 0.08), (0.45, 0.1, 0.08), (0.15, 0.3, 0.15), (0.2, 0.2, 0.25)]


def render(seed: int, size: int = 64) -> Scene:
    """Render the scene of `seed` at `size` x `size` pixels."""
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    rng = np.random.default_rng(seed)
    canvas = _Canvas(size, np.random.default_rng([seed, 1]))
    objects: list[SceneObject] = []
    horizon = float(rng.uniform(0.42, 0.62))

    _draw_sky(canvas, rng, horizon)
    if rng.random() < 0.5:
        r = rng.uniform(0.045, 0.08)
        cx, cy = rng.uniform(0.1, 0.9), rng.uniform(0.05 + r, horizon - r - 0.04)
        if canvas.ellipse(cx, cy, r, r, _pick(rng, SUN_COLOURS), "sun", above=horizon) is not None:
            objects.append(SceneObject("sun", (cx - r, cy - r, cx + r, cy + r)))
    for _ in range(rng.integers(0, 4)):
        objects.extend(_draw_cloud(canvas, rng, horizon))
    for _ in range(rng.integers(0, 4)):
        objects.append(_draw_mountain(canvas, rng, horizon))
    _draw_grass(canvas, rng, horizon)
    lake = _draw_lake(canvas, rng, horizon) if rng.random() < 0.5 else None
    if lake is not None:
        objects.append(SceneObject("water", lake))

    placements = []
    for kind, count in (("building", rng.integers(0, 4)), ("tree", rng.integers(0, 6))):
        for _ in range(count):
            x, base = rng.uniform(0.05, 0.95), rng.uniform(horizon + 0.04, 0.97)
            if lake is not None and _near_lake(lake, x, base):
                continue
            placements.append((base, x, kind))
    for base, x, kind in sorted(placements):
        scale = 0.7 + 0.8 * (base - horizon) / (1.0 - horizon)
        draw = _draw_building if kind == "building" else _draw_tree
        objects.extend(draw(canvas, rng, x, base, scale, host=len(objects)))

    light = np.float32(rng.uniform(0.7, 1.15))
    tint = _jitter(rng, (1.0, 1.0, 1.0), 0.08)
    noise = canvas.detail.normal(0.0, 0.025, canvas.rgb.shape).astype(np.float32)
    image = np.clip(canvas.rgb * light * tint + noise, 0.0, 1.0)
    return Scene((image * 255.0 + 0.5).astype(np.uint8), canvas.labels, horizon, objects)


def render_batch(seeds: range | list[int], size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Render many scenes: images (N, H, W, 3) uint8 and labels (N, H, W) uint8."""
    scenes = [render(int(s), size) for s in seeds]
    return np.stack([s.image for s in scenes]), np.stack([s.labels for s in scenes])


def _draw_sky(canvas: _Canvas, rng: np.random.Generator, horizon: float) -> None:
    box = canvas.window(0.0, 0.0, 1.0, horizon)
    if box is None:
        return
    rows, cols = box
    top, bottom = _pick(rng, SKY_TOPS), _pick(rng, SKY_HORIZONS)
    t = np.clip(canvas.ys[rows] / horizon, 0, 1)[:, :, None]
    gradient = np.broadcast_to(top * (1 - t) + bottom * t, (rows.stop - rows.start, cols.stop - cols.start, 3))
    canvas.paint(rows, cols, np.ones(gradient.shape[:2], bool), gradient, "sky")


def _draw_cloud(canvas: _Canvas, rng: np.random.Generator, horizon: float) -> list[SceneObject]:
    colour = _pick(rng, CLOUD_COLOURS, 0.03)
    cx, cy = rng.uniform(0.0, 1.0), rng.uniform(0.06, max(horizon - 0.12, 0.07))
    placed = []
    for _ in range(rng.integers(2, 5)):
        rx, ry = rng.uniform(0.05, 0.1), rng.uniform(0.025, 0.045)
        bx, by = cx + rng.uniform(-0.08, 0.08), cy + rng.uniform(-0.02, 0.02)
        if canvas.ellipse(bx, by, rx, ry, colour, "cloud", above=horizon) is not None:
            placed.append(SceneObject("cloud", (bx - rx, by - ry, bx + rx, by + ry)))
    return placed


def _draw_mountain(canvas: _Canvas, rng: np.random.Generator, horizon: float) -> SceneObject:
    px, height, half = rng.uniform(0.0, 1.0), rng.uniform(0.1, 0.3), rng.uniform(0.15, 0.4)
    peak = horizon - height
    box = canvas.window(px - half, peak, px + half, horizon)
    if box is not None:
        rows, cols = box
        xs, ys = canvas.xs[:, cols], canvas.ys[rows, :]
        mask = ys >= peak + np.abs(xs - px) * (height / half)
        colour = _pick(rng, MOUNTAIN_COLOURS)
        shade = np.where(xs > px, 0.78, 1.0)[..., None] * colour
        shade = np.broadcast_to(shade, (*mask.shape, 3)).copy()
        if rng.random() < 0.4:
            snow = (ys < peak + 0.3 * height) & mask
            shade[snow] = _jitter(rng, (0.93, 0.93, 0.97), 0.03)
        canvas.paint(rows, cols, mask, shade, "mountain")
    return SceneObject("mountain", (px - half, peak, px + half, horizon))


def _draw_grass(canvas: _Canvas, rng: np.random.Generator, horizon: float) -> None:
    box = canvas.window(0.0, horizon, 1.0, 1.0)
    if box is None:
        return
    rows, cols = box
    shape = (rows.stop - rows.start, cols.stop - cols.start)
    depth = ((canvas.ys[rows] - horizon) / (1 - horizon))[:, :, None]
    texture = canvas.detail.normal(0.0, 0.04, (*shape, 1)).astype(np.float32)
    colour = _pick(rng, GRASS_COLOURS) * (1.05 - 0.25 * depth) + texture
    canvas.paint(rows, cols, np.ones(shape, bool), np.clip(colour, 0, 1), "grass")


def _draw_lake(canvas: _Canvas, rng: np.random.Generator, horizon: float) -> tuple[float, float, float, float]:
    cx, cy = rng.uniform(0.2, 0.8), rng.uniform(horizon + 0.1, 0.85)
    rx, ry = rng.uniform(0.15, 0.35), rng.uniform(0.05, 0.1)
    box = canvas.window(cx - rx, max(cy - ry, horizon), cx + rx, cy + ry)
    if box is not None:
        rows, cols = box
        dx, dy = (canvas.xs[:, cols] - cx) / rx, (canvas.ys[rows, :] - cy) / ry
        mask = dx * dx + dy * dy <= 1.0
        ripple = 0.06 * np.sin(canvas.ys[rows, :] * 90.0 + rng.uniform(0, 6.3))[..., None]
        colour = np.broadcast_to(_pick(rng, WATER_COLOURS) + ripple, (*mask.shape, 3))
        canvas.paint(rows, cols, mask, np.clip(colour, 0, 1), "water")
    return (cx - rx, max(cy - ry, horizon), cx + rx, cy + ry)


def _near_lake(lake: tuple[float, float, float, float], x: float, y: float) -> bool:
    x0, y0, x1, y1 = lake
    return x0 - 0.05 <= x <= x1 + 0.05 and y0 - 0.02 <= y <= y1 + 0.04


def _draw_building(canvas: _Canvas, rng: np.random.Generator, x: float, base: float, scale: float,
                   host: int) -> list[SceneObject]:
    width, height = scale * rng.uniform(0.2, 0.32), scale * rng.uniform(0.18, 0.32)
    x0, x1, top = x - width / 2, x + width / 2, base - height
    if not canvas.rect(x0, top, x1, base, _pick(rng, WALL_COLOURS), "building"):
        return []
    placed = [SceneObject("building", (x0, top, x1, base))]
    roof_colour = _pick(rng, ROOF_COLOURS)
    if rng.random() < 0.6:
        roof_h = scale * rng.uniform(0.06, 0.11)
        box = canvas.window(x0 - 0.01, top - roof_h, x1 + 0.01, top)
        if box is not None:
            rows, cols = box
            xs, ys = canvas.xs[:, cols], canvas.ys[rows, :]
            mask = ys >= top - roof_h + np.abs(xs - x) * (roof_h / (width / 2 + 0.01))
            canvas.paint(rows, cols, mask, roof_colour, "roof")
        placed.append(SceneObject("roof", (x0 - 0.01, top - roof_h, x1 + 0.01, top), host))
    else:
        roof_h = max(scale * 0.035, 0.035)
        canvas.rect(x0 - 0.01, top - roof_h, x1 + 0.01, top, roof_colour, "roof")
        placed.append(SceneObject("roof", (x0 - 0.01, top - roof_h, x1 + 0.01, top), host))

    door_w, door_h = max(0.2 * width, 0.05), max(0.38 * height, 0.08)
    door_x = rng.uniform(x0 + 0.1 * width, x1 - 0.1 * width - door_w)
    canvas.rect(door_x, base - door_h, door_x + door_w, base, _pick(rng, DOOR_COLOURS), "door")
    placed.append(SceneObject("door", (door_x, base - door_h, door_x + door_w, base), host))

    win_w, win_h = max(0.16 * width, 0.045), max(0.14 * height, 0.045)
    window_colour = _pick(rng, WINDOW_COLOURS)
    upper = base - door_h - 0.02 - top
    rows_n = max(min(int(upper / (win_h * 1.8)), 3), 0)
    cols_n = max(min(int(width / (win_w * 1.8)), 4), 1)
    gap_x = (width - cols_n * win_w) / (cols_n + 1)
    gap_y = (upper - rows_n * win_h) / (rows_n + 1) if rows_n else 0.0
    for r in range(rows_n):
        wy = top + gap_y + r * (win_h + gap_y)
        for c in range(cols_n):
            wx = x0 + gap_x + c * (win_w + gap_x)
            if canvas.rect(wx, wy, wx + win_w, wy + win_h, window_colour, "window"):
                placed.append(SceneObject("window", (wx, wy, wx + win_w, wy + win_h), host))
    return placed


def _draw_tree(canvas: _Canvas, rng: np.random.Generator, x: float, base: float, scale: float,
               host: int) -> list[SceneObject]:
    trunk_w = max(scale * rng.uniform(0.025, 0.04), 0.035)
    trunk_h = scale * rng.uniform(0.08, 0.14)
    rx = scale * rng.uniform(0.06, 0.1)
    ry = rx * rng.uniform(1.0, 1.4)
    trunk_top = base - trunk_h
    cy = trunk_top - 0.6 * ry
    placed = []
    if canvas.rect(x - trunk_w / 2, trunk_top, x + trunk_w / 2, base, _pick(rng, TRUNK_COLOURS), "trunk"):
        placed.append(SceneObject("trunk", (x - trunk_w / 2, trunk_top, x + trunk_w / 2, base), host))
    foliage = _pick(rng, FOLIAGE_COLOURS)
    box = canvas.window(x - rx, cy - ry, x + rx, cy + ry)
    if box is not None:
        rows, cols = box
        dx, dy = (canvas.xs[:, cols] - x) / rx, (canvas.ys[rows, :] - cy) / ry
        mask = dx * dx + dy * dy <= 1.0
        speckle = canvas.detail.normal(0.0, 0.05, (*mask.shape, 1)).astype(np.float32)
        shade = np.where(dx < 0, 1.1, 0.85)[..., None]
        colour = np.clip(foliage * shade + speckle, 0, 1)
        canvas.paint(rows, cols, mask, colour, "tree")
    placed.insert(0, SceneObject("tree", (x - rx, cy - ry, x + rx, base)))
    return placed
