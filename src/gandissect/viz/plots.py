"""Small self-contained charts as SVG text (line and bar charts with axes, labels and a legend), and picture
strips as PNG, for the causal figures: ablation curves and the context of insertion. No plotting library."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import torch
from PIL import Image, ImageDraw

from gandissect.causal.context import InsertionContext
from gandissect.causal.curves import AblationCurve
from gandissect.core.errors import ConfigError
from gandissect.core.images import grid, to_uint8
from gandissect.engine.storage import save_png, write_text_atomic

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")
FONT = "font-family='Helvetica, Arial, sans-serif'"
MARGIN = {"left": 64, "right": 16, "top": 36, "bottom": 56}
LEGEND_CHAR = 6.3  # pixels per character of 11-pixel legend text, roughly


@dataclass
class Series:
    """One line of a line chart: points (x, y), a name for the legend, solid or dashed."""

    name: str
    x: Sequence[float]
    y: Sequence[float]
    dashed: bool = False
    colour: str | None = None


def nice_step(low: float, high: float, count: int = 5, integer: bool = False) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten; whole numbers when `integer`) giving about `count`
    intervals over [low, high]."""
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    steps = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    step = next(m * power for m in steps if m * power >= raw)
    return max(step, 1) if integer else step


def nice_ticks(low: float, high: float, count: int = 5, integer: bool = False) -> list[float]:
    """About `count` round tick values within [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    step = nice_step(low, high, count, integer)
    first = math.ceil(low / step - 1e-9) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def nice_range(low: float, high: float, count: int = 5) -> tuple[float, float]:
    """[low, high] widened to the nearest round ticks outside it."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return low, low + 1
    step = nice_step(low, high, count)
    return math.floor(low / step + 1e-9) * step, math.ceil(high / step - 1e-9) * step


def _label(value: float) -> str:
    return f"{value:.6g}"


def _text(x: float, y: float, text: str, anchor: str = "middle", size: int = 12, extra: str = "") -> str:
    return (f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}' font-size='{size}' {FONT}{extra}>"
            f"{escape(text)}</text>")


class _Frame:
    """Plot area, scales and axes of a chart of size (width, height)."""

    def __init__(self, width: int, height: int, x_range: tuple[float, float], y_range: tuple[float, float],
                 bottom: int = MARGIN["bottom"], legend: Sequence[str] = ()) -> None:
        """A plot area `width` wide (plus room on its right for a legend of these names) and `height` high."""
        self.legend_width = (40 + LEGEND_CHAR * max(len(name) for name in legend)) if legend else 0
        self.width, self.height = int(width + self.legend_width), height
        self.left, self.top = MARGIN["left"], MARGIN["top"]
        self.right, self.bottom = width - MARGIN["right"], height - bottom
        self.x_range, self.y_range = x_range, y_range

    def x(self, value: float) -> float:
        low, high = self.x_range
        return self.left + (value - low) / ((high - low) or 1) * (self.right - self.left)

    def y(self, value: float) -> float:
        low, high = self.y_range
        return self.bottom - (value - low) / ((high - low) or 1) * (self.bottom - self.top)

    def axes(self, title: str, x_label: str, y_label: str, x_ticks: Sequence[float] | None) -> list[str]:
        parts = [f"<rect x='0' y='0' width='{self.width}' height='{self.height}' fill='white'/>"]
        for tick in nice_ticks(*self.y_range):
            y = self.y(tick)
            parts.append(f"<line x1='{self.left}' y1='{y:.1f}' x2='{self.right}' y2='{y:.1f}' stroke='#e6e6e6'/>")
            parts.append(_text(self.left - 6, y + 4, _label(tick), "end", 11))
        for tick in x_ticks or []:
            x = self.x(tick)
            parts.append(f"<line x1='{x:.1f}' y1='{self.bottom}' x2='{x:.1f}' y2='{self.bottom + 4}' stroke='black'/>")
            parts.append(_text(x, self.bottom + 16, _label(tick), "middle", 11))
        parts.append(f"<line x1='{self.left}' y1='{self.bottom}' x2='{self.right}' y2='{self.bottom}' stroke='black'/>")
        parts.append(f"<line x1='{self.left}' y1='{self.top}' x2='{self.left}' y2='{self.bottom}' stroke='black'/>")
        parts.append(_text(self.left, 20, title, "start", 14, " font-weight='bold'"))
        parts.append(_text((self.left + self.right) / 2, self.height - 10, x_label, "middle", 12))
        middle = (self.top + self.bottom) / 2
        parts.append(_text(16, middle, y_label, "middle", 12, f" transform='rotate(-90 16 {middle:.1f})'"))
        return parts

    def legend(self, entries: Sequence[tuple[str, str, bool, str]]) -> list[str]:
        """Entries (name, colour, dashed, kind 'line' or 'box') right of the plot area."""
        box_width = self.legend_width - 16
        x0, y0 = self.right + 10, self.top
        parts = [f"<g class='legend'><rect x='{x0:.1f}' y='{y0:.1f}' width='{box_width:.1f}' "
                 f"height='{8 + 16 * len(entries)}' fill='white' fill-opacity='0.85' stroke='#bbbbbb'/>"]
        for n, (name, colour, dashed, kind) in enumerate(entries):
            y = y0 + 14 + 16 * n
            if kind == "box":
                parts.append(f"<rect x='{x0 + 6:.1f}' y='{y - 8:.1f}' width='18' height='10' fill='{colour}'/>")
            else:
                dash = " stroke-dasharray='5,3'" if dashed else ""
                parts.append(f"<line x1='{x0 + 6:.1f}' y1='{y - 3:.1f}' x2='{x0 + 24:.1f}' y2='{y - 3:.1f}' "
                             f"stroke='{colour}' stroke-width='2'{dash}/>")
            parts.append(_text(x0 + 30, y + 1, name, "start", 11))
        parts.append("</g>")
        return parts


def _svg(width: int, height: int, parts: list[str]) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
            f"viewBox='0 0 {width} {height}'>\n" + "\n".join(parts) + "\n</svg>\n")


def line_chart(series: Sequence[Series], *, title: str = "", x_label: str = "", y_label: str = "",
               x_range: tuple[float, float] | None = None, y_range: tuple[float, float] | None = None,
               x_ticks: Sequence[float] | None = None, width: int = 520, height: int = 380) -> str:
    """An SVG line chart: one polyline (with point markers) per series, axes with ticks and labels, and a legend
    on the right (`width` is the chart's without the legend)."""
    if not series:
        raise ConfigError("a line chart needs at least one series")
    xs = [float(v) for s in series for v in s.x]
    ys = [float(v) for s in series for v in s.y if math.isfinite(float(v))]
    x_range = x_range or (min(xs), max(xs))
    if y_range is None:
        low, high = min([*ys, 0.0]), max([*ys, 1e-9])
        y_range = nice_range(low, high)
    frame = _Frame(width, height, x_range, y_range, legend=[s.name for s in series])
    parts = frame.axes(title, x_label, y_label, x_ticks if x_ticks is not None else nice_ticks(*x_range, 8))
    entries = []
    for n, s in enumerate(series):
        colour = s.colour or PALETTE[n % len(PALETTE)]
        points = [(frame.x(float(x)), frame.y(float(y))) for x, y in zip(s.x, s.y, strict=True)
                  if math.isfinite(float(y))]
        dash = " stroke-dasharray='6,4'" if s.dashed else ""
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(f"<g class='series'><title>{escape(s.name)}</title>"
                     f"<polyline points='{path}' fill='none' stroke='{colour}' stroke-width='2'{dash}/>")
        parts += [f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{2.5 if s.dashed else 3}' fill='{colour}'/>"
                  for x, y in points]
        parts.append("</g>")
        entries.append((s.name, colour, s.dashed, "line"))
    parts += frame.legend(entries)
    return _svg(frame.width, height, parts)


def bar_chart(categories: Sequence[str], groups: Mapping[str, Sequence[float]], *, title: str = "",
              x_label: str = "", y_label: str = "", notes: Sequence[str] | None = None, width: int | None = None,
              height: int = 380) -> str:
    """An SVG grouped bar chart: per category one bar per group (NaN: no bar), a note under each category
    (e.g. how many measurements), axes with labels, a legend of the groups."""
    if not categories or not groups:
        raise ConfigError("a bar chart needs at least one category and one group")
    for name, values in groups.items():
        if len(values) != len(categories):
            raise ConfigError(f"group {name!r} has {len(values)} values for {len(categories)} categories")
    finite = [float(v) for values in groups.values() for v in values if math.isfinite(float(v))]
    low, high = min([*finite, 0.0]), max([*finite, 1e-9])
    width = width or max(360, MARGIN["left"] + MARGIN["right"] + len(categories) * (18 * len(groups) + 34))
    frame = _Frame(width, height, (0, len(categories)), nice_range(low, high), bottom=72, legend=list(groups))
    parts = frame.axes(title, x_label, y_label, None)
    slot = (frame.right - frame.left) / len(categories)
    bar = min(28.0, slot * 0.8 / len(groups))
    zero = frame.y(0.0)
    if frame.y_range[0] < 0:
        parts.append(f"<line x1='{frame.left}' y1='{zero:.1f}' x2='{frame.right}' y2='{zero:.1f}' stroke='#888'/>")
    entries = []
    for g, (name, values) in enumerate(groups.items()):
        colour = PALETTE[g % len(PALETTE)]
        entries.append((name, colour, False, "box"))
        for n, value in enumerate(values):
            value = float(value)
            if not math.isfinite(value):
                continue
            x = frame.left + slot * n + (slot - bar * len(groups)) / 2 + bar * g
            top, bottom = sorted((frame.y(value), zero))
            parts.append(f"<rect x='{x:.1f}' y='{top:.1f}' width='{bar:.1f}' height='{max(bottom - top, 0.5):.1f}' "
                         f"fill='{colour}'><title>{escape(f'{name}, {categories[n]}: {value:.4g}')}</title></rect>")
    for n, category in enumerate(categories):
        x = frame.left + slot * (n + 0.5)
        parts.append(_text(x, frame.bottom + 16, category, "middle", 11))
        if notes is not None:
            parts.append(_text(x, frame.bottom + 30, notes[n], "middle", 10, " fill='#555'"))
    parts += frame.legend(entries)
    return _svg(frame.width, height, parts)


def _pale(colour: str, opacity: float) -> str:
    """`colour` (#rrggbb) seen at `opacity` over white, as #rrggbb (for legend swatches of translucent bands)."""
    channels = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(255 - opacity * (255 - c)):02x}" for c in channels)


def _band(frame: _Frame, counts: Sequence[int], low: Sequence[float], high: Sequence[float], colour: str,
          opacity: float, label: str) -> list[str]:
    """A translucent polygon between `low` and `high` over the points where both are finite."""
    points = [(frame.x(n), frame.y(a), frame.y(b)) for n, a, b in zip(counts, low, high, strict=False)
              if math.isfinite(a) and math.isfinite(b)]
    if not points:
        return []
    outline = [f"{x:.1f},{y:.1f}" for x, _, y in points] + [f"{x:.1f},{y:.1f}" for x, y, _ in reversed(points)]
    return [f"<polygon class='band' points='{' '.join(outline)}' fill='{colour}' fill-opacity='{opacity}' "
            f"stroke='none'><title>{escape(label)}</title></polygon>"]


def _line(frame: _Frame, counts: Sequence[int], values: Sequence[float], colour: str, dash: str, label: str,
          marker: float) -> list[str]:
    """A polyline through the finite points (with markers of radius `marker`, none when 0)."""
    points = [(frame.x(n), frame.y(v)) for n, v in zip(counts, values, strict=True) if math.isfinite(v)]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    parts = [f"<g class='series'><title>{escape(label)}</title>"
             f"<polyline points='{path}' fill='none' stroke='{colour}' stroke-width='2'{dash}/>"]
    parts += [f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{marker}' fill='{colour}'/>" for x, y in points if marker]
    return [*parts, "</g>"]


def curves_chart(curves: Sequence[AblationCurve] | Mapping[str, AblationCurve], title: str | None = None) -> str:
    """Ablation curves of one concept and layer on one chart, against units ablated: per ranking the fraction of
    the concept's pixels removed (solid) with its 95% interval (a translucent band) and the share of the other
    concepts' pixels kept (dashed); the random baseline ("random") as its mean (dashed grey) in a grey band
    from the 5th to the 95th percentile over draws."""
    curves = list(curves.values()) if isinstance(curves, Mapping) else list(curves)
    if not curves:
        raise ConfigError("give at least one ablation curve to plot")
    first, grey, light = curves[0], "#666666", "#999999"  # the random baseline's mean and band
    baselines = [c for c in curves if c.draws > 0]
    rankings = [c for c in curves if c.draws == 0]
    top = max(max(c.counts) for c in curves)
    values = [v for c in curves for v in (*c.removed, *c.others_kept, *c.removed_low, *c.removed_high)
              if math.isfinite(v)]
    names = [c.ranking or f"ranking {n + 1}" for n, c in enumerate(rankings)]
    entries = [(name, PALETTE[n % len(PALETTE)], False, "line") for n, name in enumerate(names)]
    if any(c.removed_low for c in rankings):
        entries.append(("shaded: 95% interval", _pale(PALETTE[0], 0.2), False, "box"))
    for curve in baselines:
        entries += [(f"{curve.ranking}: mean of {curve.draws} draws", grey, True, "line"),
                    (f"{curve.ranking}: 5-95% of draws", _pale(light, 0.45), False, "box")]
    entries += [(f"{name}: other concepts kept", PALETTE[n % len(PALETTE)], True, "line")
                for n, name in enumerate(names)]
    frame = _Frame(520, 380, (0, top), nice_range(min([0.0, *values]), max([1.0, *values])),
                   legend=[name for name, *_ in entries])
    missing = max((m for c in curves for m in c.missing), default=0)
    note = f"; up to {missing} of {first.samples} samples unreadable, left out" if missing else ""
    parts = frame.axes(title or f"Ablating {first.concept} units at {first.layer}", "units ablated (N)",
                       f"fraction of {first.concept} pixels removed (held-out samples)",
                       nice_ticks(0, top, 8, integer=True))
    parts.append(_text(frame.left, 32, f"{first.samples} held-out samples (seed {first.seed}){note}", "start", 10,
                       " fill='#555'"))
    for curve in baselines:
        parts += _band(frame, curve.counts, curve.removed_low, curve.removed_high, light, 0.45,
                       f"{curve.ranking}: 5-95% of {curve.draws} draws")
        parts += _line(frame, curve.counts, curve.removed, grey, " stroke-dasharray='6,4'",
                       f"{curve.ranking}: mean of {curve.draws} draws", 0)
    for n, (curve, name) in enumerate(zip(rankings, names, strict=True)):
        colour = PALETTE[n % len(PALETTE)]
        parts += _band(frame, curve.counts, curve.removed_low, curve.removed_high, colour, 0.2,
                       f"{name}: 95% interval")
        parts += _line(frame, curve.counts, curve.removed, colour, "", name, 3)
        parts += _line(frame, curve.counts, curve.others_kept, colour, " stroke-dasharray='6,4'",
                       f"{name}: other concepts kept", 2.5)
    parts += frame.legend(entries)
    return _svg(frame.width, frame.height, parts)


def context_chart(contexts: InsertionContext | Sequence[InsertionContext], min_locations: int = 1,
                  title: str | None = None) -> str:
    """Concept pixels gained by inserting each context's units, grouped by the concept at the location before
    the insertion (those tried at least `min_locations` times in some context), one bar per inserted concept."""
    contexts = [contexts] if isinstance(contexts, InsertionContext) else list(contexts)
    if not contexts:
        raise ConfigError("give at least one insertion context to plot")
    names = list(contexts[0].before)
    shown = [name for name in names
             if any(ctx.locations[ctx.before.index(name)] >= max(min_locations, 1) for ctx in contexts)]
    if not shown:
        raise ConfigError(f"no 'before' concept was tried at least {min_locations} times")
    shown.sort(key=lambda name: -max(ctx.locations[ctx.before.index(name)] for ctx in contexts))
    groups = {}
    for ctx in contexts:
        key = f"{ctx.concept} ({len(ctx.units)} units at {ctx.layer})"
        groups[key] = [ctx.gained[ctx.before.index(name)] if ctx.locations[ctx.before.index(name)] >= min_locations
                       else float("nan") for name in shown]
    notes = [f"n={max(ctx.locations[ctx.before.index(name)] for ctx in contexts)}" for name in shown]
    concepts = list(dict.fromkeys(ctx.concept for ctx in contexts))
    if len(concepts) == 1:
        default, what = f"Where inserting {concepts[0]} units draws {concepts[0]}", concepts[0]
    else:
        default, what = "Where inserted units draw their concept", "concept"
    return bar_chart(shown, groups, title=title or default, x_label="concept at the location before the insertion",
                     y_label=f"{what} pixels gained near the location", notes=notes)


def image_strip(images: torch.Tensor, row_labels: Sequence[str] | None = None, scale: int = 1,
                label_width: int = 56) -> np.ndarray:
    """Images (R, S, 3, H, W) in [-1, 1] as one (H', W', 3) uint8 picture: R rows of S pictures, each row
    labelled on its left (e.g. "N=4")."""
    if images.dim() != 5:
        raise ConfigError(f"a strip needs images (rows, samples, 3, H, W); got shape {tuple(images.shape)}")
    rows, columns = images.shape[:2]
    pictures = to_uint8(images.flatten(0, 1))
    if scale != 1:
        pictures = pictures.repeat(scale, axis=1).repeat(scale, axis=2)
    tiled = grid(pictures, columns=columns)
    if not row_labels:
        return tiled
    if len(row_labels) != rows:
        raise ConfigError(f"{len(row_labels)} row labels for {rows} rows")
    canvas = Image.new("RGB", (tiled.shape[1] + label_width, tiled.shape[0]), "white")
    canvas.paste(Image.fromarray(tiled), (label_width, 0))
    draw = ImageDraw.Draw(canvas)
    step = pictures.shape[1] + 1
    for n, label in enumerate(row_labels):
        draw.text((4, 1 + n * step + pictures.shape[1] // 2 - 6), str(label), fill=(0, 0, 0))
    return np.asarray(canvas)


def save_svg(path: str | Path, svg: str) -> None:
    write_text_atomic(path, svg)


def save_strip(path: str | Path, images: torch.Tensor, row_labels: Sequence[str] | None = None,
               scale: int = 1) -> None:
    save_png(path, image_strip(images, row_labels, scale))
