"""Reports that scale: a large generator's top images are stored at the report's display size (REPORT_SIDE,
area-averaged), with overlays to match, so a report grows with the units shown and not with the pixels drawn;
small images (the shipped 64x64 model) are stored as they are."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import gandissect
from gandissect.core.hooks import Trace
from gandissect.core.images import to_uint8
from gandissect.viz.report import write_report
from gandissect.viz.report.images import REPORT_SIDE, reduced

COUNT = 4


class Large(nn.Module):
    """A random generator of 256x256 images from a 6-unit 8x8 layer."""

    z_dim = 8

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer1 = nn.Sequential(nn.Linear(8, 6 * 8 * 8), nn.Unflatten(1, (6, 8, 8)), nn.ReLU())
        self.to_rgb = nn.Conv2d(6, 3, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(F.interpolate(self.to_rgb(self.layer1(z)), size=(256, 256), mode="bilinear"))


def decode(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGBA"))[..., :3]


def test_a_large_generators_pictures_are_stored_at_display_size(tmp_path):
    generator = Large().eval()
    d = gandissect.dissect(generator, "color", layers=["layer1"], samples=16, quantile=0.1, topk=COUNT,
                           progress=False)
    path = write_report(d.document, generator, tmp_path, images_per_unit=COUNT, progress=False)
    text = path.read_text()
    cards = re.findall(r'data-unit="(\d+)".*?<img class="picture" src="([^"]+)".*?<img class="overlay" src="([^"]+)"',
                       text, re.S)
    assert len(cards) == 6
    unit, picture_uri, overlay_uri = cards[0]
    picture, overlay = decode(picture_uri), decode(overlay_uri)
    side = REPORT_SIDE
    assert picture.shape == (side, COUNT * (side + 1), 3) and overlay.shape[:2] == picture.shape[:2]
    record = d.document["layers"]["layer1"]["units"][int(unit)]
    first = record["top_samples"][0]
    with torch.no_grad(), Trace(generator, ["layer1"]):
        native = to_uint8(generator(gandissect.sample_z(generator, d.config.iou_seed, [first])))
    expected = np.asarray(Image.fromarray(native[0]).resize((side, side), Image.Resampling.BOX))
    tile = picture[:, :side].astype(int)
    assert np.abs(tile - expected.astype(int)).mean() < 4  # the same picture, through JPEG


def test_small_pictures_are_kept_as_they_are():
    pictures = (np.arange(2 * 64 * 48 * 3) % 251).astype(np.uint8).reshape(2, 64, 48, 3)
    assert reduced(pictures, REPORT_SIDE) is pictures and reduced(pictures, None) is pictures
    smaller = reduced(np.repeat(np.repeat(pictures, 4, axis=1), 4, axis=2), REPORT_SIDE)
    assert smaller.shape == (2, 128, 96, 3)
    assert np.abs(smaller[:, ::2, ::2].astype(int) - pictures.astype(int)).max() <= 1  # 2x2 equal blocks averaged
