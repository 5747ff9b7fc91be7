"""Conversions between image tensors and pictures on disk or in HTML (PNG through Pillow)."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images (N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    scaled = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).cpu().numpy()


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> images (N, 3, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def grid(pictures: np.ndarray, columns: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile (N, H, W, 3) uint8 pictures into one picture, `columns` wide."""
    n, h, w, _ = pictures.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    out = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = pictures[i]
    return out


def png_bytes(picture: np.ndarray, scale: int = 1) -> bytes:
    image = Image.fromarray(picture)
    if scale != 1:
        image = image.resize((picture.shape[1] * scale, picture.shape[0] * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def data_uri(picture: np.ndarray, quality: int = 75) -> str:
    """A data URI of `picture`, so that an HTML page carries its pictures inside: JPEG (4:2:0, `quality`) or
    PNG, whichever is smaller; flat synthetic pictures compress better losslessly, natural ones as JPEG."""
    jpeg, png = io.BytesIO(), io.BytesIO()
    Image.fromarray(picture).save(jpeg, format="JPEG", quality=quality, subsampling=2, optimize=True)
    Image.fromarray(picture).save(png, format="PNG", optimize=True)
    kind, data = ("jpeg", jpeg) if jpeg.tell() <= png.tell() else ("png", png)
    return f"data:image/{kind};base64," + base64.b64encode(data.getvalue()).decode("ascii")


def label_palette(count: int, seed: int = 3) -> np.ndarray:
    """The fixed colour (count, 3) uint8 of labels 0..count-1; a label's colour does not depend on `count`."""
    return np.random.default_rng(seed).integers(40, 256, (count, 3)).astype(np.uint8)


def label_colours(labels: torch.Tensor, seed: int = 3) -> np.ndarray:
    """Label maps (N, H, W), -1 for none, -> (N, H, W, 3) uint8 with a fixed distinct colour per label
    (`label_palette`), black for none."""
    palette = np.concatenate([label_palette(int(labels.max().clamp(min=0)) + 1, seed), np.zeros((1, 3), np.uint8)])
    index = labels.cpu().numpy().astype(np.int64)
    return palette[np.where(index < 0, len(palette) - 1, index)]


SWATCH = 12
"""The side of a legend's colour square, in pixels (a 1-pixel dark border around the colour)."""


def legend_boxes(names: Sequence[str], width: int) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """Where `legend` draws each entry's swatch (its top-left corner), and the legend's (height, width): entries
    flow left to right in columns of equal width, as many per row as fit in `width`."""
    font = ImageFont.load_default()
    text = max((int(font.getlength(n)) for n in names), default=0)
    column, row = SWATCH + 4 + text + 12, SWATCH + 6
    per_row = max(1, (width - 4) // column)
    corners = [(4 + (i % per_row) * column, 4 + (i // per_row) * row) for i in range(len(names))]
    return corners, (4 + math.ceil(len(names) / per_row) * row, max(width, 4 + column))


def legend(names: Sequence[str], colours: np.ndarray, width: int) -> np.ndarray:
    """A white picture about `width` wide naming each colour: a bordered square of `colours[i]` (N, 3) uint8 and
    `names[i]` beside it."""
    if len(names) != len(colours):
        raise ValueError(f"{len(names)} names for {len(colours)} colours")
    corners, (height, width) = legend_boxes(names, width)
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for (x, y), name, colour in zip(corners, names, colours, strict=True):
        draw.rectangle((x, y, x + SWATCH - 1, y + SWATCH - 1), fill=tuple(int(c) for c in colour), outline=(60, 60, 60))
        draw.text((x + SWATCH + 4, y), name, fill=(0, 0, 0), font=font)
    return np.asarray(image).copy()


def with_legend(picture: np.ndarray, names: Sequence[str], colours: np.ndarray) -> np.ndarray:
    """`picture` (H, W, 3) uint8 with a legend of `names` and their `colours` below it, on white."""
    key = legend(names, colours, picture.shape[1])
    out = np.full((picture.shape[0] + key.shape[0], max(picture.shape[1], key.shape[1]), 3), 255, np.uint8)
    out[:picture.shape[0], :picture.shape[1]] = picture
    out[picture.shape[0]:, :key.shape[1]] = key
    return out


def label_rows(picture: np.ndarray, labels: Sequence[str], height: int, pad: int = 1) -> np.ndarray:
    """`picture` (a `grid` of rows `height` pixels high, `pad` apart) with a white column on its left naming each
    row: `labels[i]` is written level with row i."""
    font = ImageFont.load_default()
    width = 6 + max((int(font.getlength(text)) for text in labels), default=0)
    column = Image.new("RGB", (width, picture.shape[0]), (255, 255, 255))
    draw = ImageDraw.Draw(column)
    for i, text in enumerate(labels):
        top, bottom = font.getbbox(text)[1::2]
        draw.text((3, pad + i * (height + pad) + (height - top - bottom) // 2), text, fill=(0, 0, 0), font=font)
    return np.concatenate([np.asarray(column), picture], axis=1)
