"""Conversions between image tensors and pictures on disk or in HTML (PNG through Pillow)."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import torch
from PIL import Image


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


def label_colours(labels: torch.Tensor, seed: int = 3) -> np.ndarray:
    """Label maps (N, H, W), -1 for none, -> (N, H, W, 3) uint8 with a fixed distinct colour per label."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(40, 256, (int(labels.max().clamp(min=0)) + 2, 3)).astype(np.uint8)
    palette[-1] = 0
    index = labels.cpu().numpy().astype(np.int64)
    return palette[np.where(index < 0, len(palette) - 1, index)]
