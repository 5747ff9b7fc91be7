"""Inline SVG bar charts of interpretable units per concept, grouped and coloured by category as in the paper."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

CATEGORY_ORDER = ("object", "part", "material", "color", "scene", "texture")
CATEGORY_COLORS = {
    "object": "#4e79a7",
    "part": "#f28e2b",
    "material": "#59a14f",
    "color": "#e15759",
    "scene": "#76b7b2",
    "texture": "#b07aa1",
}
EXTRA_COLORS = ("#9c755f", "#edc948", "#ff9da7", "#bab0ac", "#86bcb6", "#d37295")


def category_rank(category: str) -> tuple[int, str]:
    """Sort key: the paper's categories in its order, then any others by name."""
    return (CATEGORY_ORDER.index(category), "") if category in CATEGORY_ORDER else (len(CATEGORY_ORDER), category)


def category_colors(categories: Sequence[str]) -> dict[str, str]:
    """A colour per category: fixed ones for the paper's categories, then a cycle of extra colours."""
    colors: dict[str, str] = {}
    extra = 0
    for category in categories:
        if category in colors:
            continue
        if category in CATEGORY_COLORS:
            colors[category] = CATEGORY_COLORS[category]
        else:
            colors[category] = EXTRA_COLORS[extra % len(EXTRA_COLORS)]
            extra += 1
    return colors


def concept_chart(layer_name: str, layer: dict[str, Any], concepts: list[dict[str, Any]],
                  colors: dict[str, str]) -> str:
    """Bars of interpretable units per concept of one layer; each bar links to its concept's page."""
    counts = layer.get("interpretable_by_concept", {})
    category_of = {c["name"]: c["category"] for c in concepts}
    groups: dict[str, list[tuple[str, int]]] = {}
    for concept, n in counts.items():
        if n > 0:
            groups.setdefault(category_of.get(concept, "other"), []).append((concept, int(n)))
    ordered = sorted(groups, key=category_rank)
    for category in ordered:
        groups[category].sort(key=lambda t: (-t[1], t[0]))
    bars = [(cat, c, n) for cat in ordered for c, n in groups[cat]]
    longest = max((min(len(c), 16) for _, c, _ in bars), default=4)
    bar, gap, group_gap, left, top, plot_h = 16, 4, 18, 36, 18, 150
    label_h = 30 + round(longest * 5.6)  # labels at 60 degrees, about 6.5 px per character
    width = left + 10 + sum(len(groups[c]) * (bar + gap) for c in ordered) + group_gap * max(len(ordered) - 1, 0)
    width = max(width, 320)
    height = top + plot_h + label_h + 22
    highest = max((n for _, _, n in bars), default=1)
    step = max(1, math.ceil(highest / 5))
    ymax = step * math.ceil(highest / step)
    scale = plot_h / ymax
    base = top + plot_h
    esc = html.escape
    parts = [f'<svg class="concept-chart" data-layer="{esc(layer_name)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="interpretable units per concept, {esc(layer_name)}">']
    for tick in range(0, ymax + 1, step):
        y = base - tick * scale
        parts.append(f'<line class="grid" x1="{left}" x2="{width - 4}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="tick" x="{left - 5}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>')
    if not bars:
        parts.append(f'<text class="empty" x="{left + 10}" y="{top + plot_h / 2:.0f}">no interpretable units</text>')
    x = left + 8
    for index, category in enumerate(ordered):
        if index:
            x += group_gap
        start = x
        color = colors.get(category, "#888")
        for concept, n in groups[category]:
            h = n * scale
            cx = x + bar / 2
            label = concept if len(concept) <= 16 else concept[:15] + "…"
            parts.append(
                f'<a href="#concept/{quote(concept, safe="")}" class="bar-link">'
                f'<rect class="bar" x="{x}" y="{base - h:.1f}" width="{bar}" height="{h:.1f}" fill="{color}" '
                f'data-concept="{esc(concept)}" data-category="{esc(category)}" data-count="{n}">'
                f'<title>{esc(concept)} ({esc(category)}): {n} unit{"s" if n != 1 else ""}</title></rect>'
                f'<text class="count" x="{cx}" y="{base - h - 3:.1f}" text-anchor="middle">{n}</text>'
                f'<text class="label" transform="translate({cx + 4},{base + 6}) rotate(-60)" '
                f'text-anchor="end">{esc(label)}</text></a>')
            x += bar + gap
        end = x - gap
        y = base + label_h - 8
        parts.append(f'<line class="bracket" x1="{start}" x2="{end}" y1="{y}" y2="{y}" stroke="{color}"/>'
                     f'<text class="category" x="{(start + end) / 2:.1f}" y="{y + 15}" text-anchor="middle" '
                     f'fill="{color}">{esc(category)}</text>')
    parts.append(f'<line class="axis" x1="{left}" x2="{width - 4}" y1="{base}" y2="{base}"/></svg>')
    return "".join(parts)
