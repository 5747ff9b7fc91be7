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


@pytest.fixture(scope="module")
def planted_folder(tmp_path_factory) -> Path:
    """A finished dissection of tests/planted.py's model with the colour segmenter, as a run folder."""
    from conftest import PLANTED_CONFIG
    from gandissect.dissection import DissectConfig, Dissector
    from planted import PlantedGenerator

    out = tmp_path_factory.mktemp("planted_folder")
    dissector = Dissector(PlantedGenerator(), ColorSegmenter(), DissectConfig(**PLANTED_CONFIG), out, progress=False)
    dissector.finish(dissector.run(), {"model": PLANTED, "segmenter": "color"})
    return out


def test_edit_png_names_rows_and_outlines_the_box(planted_folder, tmp_path):
    from gandissect.viz.edits import REGION_COLOUR

    assert main(["edit", str(planted_folder), "--model", PLANTED, "--units", "0", "--box", "4,8,20,24", "--count", "2",
                 "--concept", "red", "--out", str(tmp_path)]) == 0
    picture = np.asarray(Image.open(tmp_path / "edit.png").convert("RGB"))[::2, ::2]  # saved at scale 2
    label_width = picture.shape[1] - (2 * 33 + 1)
    assert picture.shape[0] == 4 * 33 + 1 and label_width > 20  # original, edited, red before, red after
    cyan = (picture == REGION_COLOUR).all(-1)
    for row in range(4):
        for column in range(2):
            top, left = 1 + row * 33, label_width + 1 + column * 33
            cell = cyan[top:top + 32, left:left + 32]
            assert cell[8, 4:20].all() and cell[23, 4:20].all() and cell[8:24, 4].all() and cell[8:24, 19].all()
            assert not cell[12:20, 8:16].any() and not cell[:8].any()


def test_artifacts_refuses_too_few_rows_and_prints_intervals(planted_folder, capsys):
    base = ["artifacts", str(planted_folder), "--model", PLANTED, "--real", "world", "--count", "1", "--draws", "2"]
    assert main([*base, "--samples", "11"]) == 2  # the colour segmenter gives 11 features
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot fit a Gaussian in 11 feature dimensions" in err
    assert main([*base, "--samples", "24", "--real-count", "48"]) == 0
    captured = capsys.readouterr()
    assert "warning: only 24 generated samples" in captured.err and "only 24 real feature rows" in captured.err
    record = json.loads((planted_folder / "causal" / "features" / "artifacts.json").read_text())["study"]
    rows = {line.split("  ")[0]: line for line in captured.out.splitlines()}
    model = rows["none (the model)"].split()
    low, high = record["intervals"]["before"]
    assert model[3:6] == [f"{record['before']:.2f}", f"{low:.2f}", "to"] and model[6] == f"{high:.2f}"
    assert low <= record["before"] <= high and record["intervals"]["method"].startswith("basic bootstrap")
    assert any(name.startswith("1 random (mean of 2)") for name in rows)
