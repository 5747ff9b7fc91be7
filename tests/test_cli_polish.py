"""Legends and summaries a reader can use: the segmentation picture's colour legend, evaluate's table and JSON
file, dissect's summary table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gandissect import models
from gandissect.cli import main
from gandissect.cli.dissect import dissect_summary
from gandissect.cli.tables import text_table
from gandissect.core.images import SWATCH, label_palette, legend_boxes, with_legend
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import ColorSegmenter
from gandissect.dissection.results import to_json
from gandissect.scenes.ship import ship

PLANTED = str(Path(__file__).parent / "planted.py") + ":PlantedGenerator"


def _check_legend(picture: np.ndarray, top: int, names: list[str], colours: np.ndarray, scale: int = 1) -> None:
    """Each name's swatch holds its colour, framed, with dark text pixels (its name) right beside it."""
    corners, _ = legend_boxes(names, picture.shape[1] // scale)
    for (x, y), colour in zip(corners, colours, strict=True):
        x0, y0 = x * scale, (top + y) * scale
        inside = picture[y0 + scale:y0 + (SWATCH - 1) * scale, x0 + scale:x0 + (SWATCH - 1) * scale]
        assert (inside == colour).all()
        assert (picture[y0, x0] != colour).any()  # the frame
        text = picture[y0:y0 + SWATCH * scale, x0 + (SWATCH + 4) * scale:x0 + (SWATCH + 30) * scale]
        assert (text.max(-1) < 100).any()


def test_with_legend_draws_each_colour_beside_its_name():
    names = ["sky", "grass", "a longer name", "door"]
    colours = label_palette(4)
    picture = np.zeros((40, 90, 3), np.uint8)
    out = with_legend(picture, names, colours)
    assert (out[:40, :90] == 0).all()  # the picture is kept as it was, the legend below it
    _check_legend(out, 40, names, colours)
    assert label_palette(12)[:4].tolist() == colours.tolist()  # a label's colour does not depend on the count


def test_sample_segmentation_has_a_legend_of_the_drawn_labels(tmp_path):
    assert main(["sample", "--model", PLANTED, "--segmenter", "color", "--count", "4", "--out", str(tmp_path)]) == 0
    picture = np.asarray(Image.open(tmp_path / "segmentation.png").convert("RGB"))
    generator, segmenter = models.resolve_generator(PLANTED), ColorSegmenter()
    with torch.no_grad():
        labels = segmenter.segment(generator(sample_z(generator, 0, range(4))))[:, 0]
    drawn = sorted(int(i) for i in labels.unique() if i >= 0)  # computed apart from the command
    names = [segmenter.concepts[i] for i in drawn]
    colours = label_palette(max(drawn) + 1)[drawn]
    top = (32 + 1) * 1 + 1  # one row of four 32x32 samples with 1-pixel padding, drawn at scale 2
    _check_legend(picture, top, names, colours, scale=2)
    legend = picture[top * 2:]
    unused = label_palette(len(segmenter.concepts))[[i for i in range(len(segmenter.concepts)) if i not in drawn]]
    for colour in unused:  # labels that no pixel holds are left out of the legend
        assert not (legend == colour).all(-1).any() or colour.tolist() in colours.tolist()


@pytest.fixture
def tiny_model(tmp_path, monkeypatch, tiny_gan_run, tiny_segmenter_run) -> str:
    monkeypatch.setattr(models, "WEIGHTS", tmp_path / "package")
    monkeypatch.setenv("GANDISSECT_CACHE", str(tmp_path / "cache"))
    ship("tiny", tiny_gan_run, tiny_segmenter_run)
    return "tiny"


def test_evaluate_prints_a_table_and_writes_the_json_file(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--model", tiny_model, "--samples", "3", "--batch-size", "3"]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "runs" / "evaluate-tiny.json").read_text())
    assert "{" not in out and "full results: runs/evaluate-tiny.json" in out
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["concept", "segmenter"]
    for concept, iou in result["segmenter_iou"]["per_concept"].items():
        row = next(line.split() for line in lines if line.split()[:1] == [concept])
        share = result["fsd"]["per_concept"][concept]
        assert row[1] == ("-" if iou is None else f"{iou:.3f}")
        assert row[2:4] == [f"{share['generated_percent']:.2f}", f"{share['real_percent']:.2f}"]
    assert f"FSD {result['fsd']['fsd']:.2f}" in out
    assert main(["evaluate", "--model", tiny_model, "--out", str(tmp_path)]) == 2  # a folder, refused first


def test_dissect_summary_is_a_table_of_counts(planted_run):
    document = to_json(planted_run)
    text = dissect_summary(document, "iou-top-half")
    assert "{" not in text and "'" not in text
    lines = text.splitlines()
    header = lines[1].split()
    assert header == ["concept", *document["layers"]]
    for name, layer in document["layers"].items():
        column = header.index(name)
        counts: dict[str, int] = {}
        for unit in layer["units"]:  # counted again from the units themselves
            if unit["interpretable"]:
                counts[unit["concept"]] = counts.get(unit["concept"], 0) + 1
        rows = {line.split()[0]: line.split() for line in lines[3:]}
        assert {c: int(rows[c][column]) for c in counts} == counts
        assert set(rows) == set(counts) | {"all"}
        assert " ".join(rows["all"][column:column + 3]) == f"{sum(counts.values())} of {layer['shape'][0]}"
    assert counts  # the planted units are found


def test_text_table_aligns_numbers_right_and_text_left():
    table = text_table(["name", "value"], [["a", "1.5"], ["long name", "-12.25"]]).splitlines()
    assert table[0] == "name        value"
    assert table[2] == "a             1.5"
    assert table[3] == "long name  -12.25"
    with pytest.raises(ValueError):
        text_table(["one"], [["a", "b"]])
