"""Interventions and average causal effects against brute force and a planted model whose answer is known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gandissect.causal.ace import concept_share, unit_effects
from gandissect.causal.cut import Cut
from gandissect.causal.interventions import check_units, concept_index, insertion_values, unit_edit
from gandissect.cli import main
from gandissect.core.edits import UnitEdit
from gandissect.core.errors import ConfigError
from gandissect.core.hooks import Trace
from gandissect.core.sampling import sample_z
from gandissect.core.segmenters import ColorSegmenter
from planted import PLANTED, PlantedGenerator


def test_cut_tail_of_head_is_the_generator(planted_run):
    generator = PlantedGenerator()
    z = sample_z(generator, 0, range(4))
    cut = Cut(generator, "features")
    assert torch.equal(cut.tail(cut.head(z), z), generator(z))


def test_ablating_a_planted_unit_removes_its_concept_and_nothing_else(planted_run):
    generator, segmenter = PlantedGenerator(), ColorSegmenter()
    z = sample_z(generator, 3, range(16))
    before = generator(z)
    for unit, colour in PLANTED.items():
        with Trace(generator, edit={"features": UnitEdit.ablate([unit])}):
            after = generator(z)
        for other in PLANTED.values():
            c = segmenter.concepts.index(other)
            share_before, share_after = concept_share(segmenter, before, c), concept_share(segmenter, after, c)
            if other == colour:
                assert float(share_before.sum()) > 0 and float(share_after.sum()) == 0
            else:  # other colours lose nothing; those painted earlier may show where this one was
                assert bool((share_after >= share_before).all()), (unit, other)
                if list(PLANTED.values()).index(other) > unit:
                    assert torch.equal(share_after, share_before), (unit, other)


def test_single_unit_ace_ranks_the_planted_unit_first(planted_run):
    for unit, colour in PLANTED.items():
        values = insertion_values(planted_run, "features", colour)
        effects = unit_effects(PlantedGenerator(), ColorSegmenter(), "features",
                               concept_index(planted_run, colour), colour, values, samples=16, batch_size=8,
                               progress=False)
        assert effects.ranking()[0] == unit, (colour, effects.ace)
        assert float(effects.ace[unit]) > 0.3


def test_ace_equals_a_brute_force_loop_over_samples(planted_run):
    generator, segmenter = PlantedGenerator(), ColorSegmenter()
    red = concept_index(planted_run, "red")
    values = insertion_values(planted_run, "features", quantile=0.99)
    units = [0, 2, 3]
    effects = unit_effects(generator, segmenter, "features", red, "red", values, units=units, samples=10,
                           batch_size=4, group=2, progress=False)
    z = sample_z(generator, 3, range(10))
    for i, unit in enumerate(units):
        shares = {}
        for name, edit in (("inserted", UnitEdit.insert([unit], values[[unit]])), ("ablated", UnitEdit.ablate([unit]))):
            total = 0.0
            for sample in range(10):
                with Trace(generator, edit={"features": edit}):
                    image = generator(z[sample:sample + 1])
                total += float(concept_share(segmenter, image, red))
            shares[name] = total / 10
        assert float(effects.inserted[i]) == pytest.approx(shares["inserted"], abs=1e-6)
        assert float(effects.ablated[i]) == pytest.approx(shares["ablated"], abs=1e-6)
        assert float(effects.ace[i]) == pytest.approx(shares["inserted"] - shares["ablated"], abs=1e-6)


def test_an_insertion_in_a_region_changes_pixels_only_near_it(planted_run):
    generator = PlantedGenerator()
    z = sample_z(generator, 3, range(8))
    box = torch.zeros(32, 32)
    box[8:16, 8:16] = 1  # feature cells 2..3 of the 8x8 grid
    values = insertion_values(planted_run, "features", "blue")  # blue is painted last: nothing covers it
    before = generator(z)
    with Trace(generator, edit={"features": unit_edit("insert", [2], values, region=box)}):
        after = generator(z)
    changed = (after != before).any(1).any(0)
    assert changed.any()
    near = torch.zeros(32, 32, dtype=torch.bool)
    near[4:20, 4:20] = True  # the box and one feature cell around it
    assert not changed[~near].any()


def test_bad_input_is_refused_in_one_line(planted_run):
    with pytest.raises(ConfigError, match=r"out of range: layer 'features' has units 0\.\.4"):
        check_units([1, 7], 5, "features")
    with pytest.raises(ConfigError, match=r"no concept 'dragon'.*red"):
        concept_index(planted_run, "dragon")
    with pytest.raises(ConfigError, match=r"layer9.*features"):
        insertion_values(planted_run, "layer9", "red")
    with pytest.raises(ConfigError, match="alpha"):
        unit_edit("ablate", [0], alpha=1.5)
    with pytest.raises(ConfigError, match="mode"):
        unit_edit("paint", [0])


PLANTED_SPEC = f"{Path(__file__).with_name('planted.py')}:PlantedGenerator"


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["dissect", "--model", PLANTED_SPEC, "--segmenter", "color", "--layers", "features", "--samples",
                 "64", "--quantile", "0.15", "--no-report", "--out", str(out)]) == 0
    return out


def test_edit_command_writes_the_figure_and_the_concept_before_and_after(cli_run, tmp_path, capsys):
    out = tmp_path / "edit"
    assert main(["edit", str(cli_run), "--model", PLANTED_SPEC,
                 "--units", "2", "--mode", "ablate", "--concept", "blue", "--count", "4",
                 "--out", str(out)]) == 0
    record = json.loads((out / "edit.json").read_text())
    assert record["units"] == [2] and len(record["share_before"]) == 4
    assert max(record["share_after"]) == 0 and max(record["share_before"]) > 0  # ablating blue's unit removes it
    picture = Image.open(out / "edit.png")
    assert picture.size[0] > 4 * 32 and picture.size[1] > 4 * 32  # four rows of four 32-pixel samples, scaled
    assert "blue covers" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--units", "9"], "out of range"),
    (["--units", "1", "--concept", "dragon"], "no concept 'dragon'"),
    (["--units", "1", "--alpha", "1.5"], "alpha"),
    (["--units", "1", "--box", "0,0,40,8"], "inside the 32x32 image"),
    (["--units", "1", "--layer", "output"], "was not dissected"),
    (["--units", "1", "--count", "100000"], "--count must lie in 1..256"),
    (["--units", "1", "--count", "0"], "--count must lie in 1..256"),
])
def test_edit_command_refuses_bad_input_in_one_line(cli_run, tmp_path, capsys, argv, message):
    assert main(["edit", str(cli_run), "--model", PLANTED_SPEC, *argv, "--out", str(tmp_path / "x")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error


def test_edit_command_refuses_a_mask_of_the_wrong_size(cli_run, tmp_path, capsys):
    np.save(tmp_path / "mask.npy", np.ones((5, 5), np.float32))
    assert main(["edit", str(cli_run), "--model", PLANTED_SPEC,
                 "--units", "1", "--mask", str(tmp_path / "mask.npy"), "--out",
                 str(tmp_path / "x")]) == 2
    assert "expected the image size (32, 32) or the layer's grid (8, 8)" in capsys.readouterr().err


def test_causal_command_ranks_the_planted_unit_first(cli_run, capsys):
    assert main(["causal", str(cli_run), "--model", PLANTED_SPEC,
                 "--concept", "blue", "--samples", "8", "--batch-size", "4", "--curves",
                 "--context", "--curve-samples", "8"]) == 0
    folder = cli_run / "causal" / "features" / "blue"
    ranking = json.loads((folder / "ace.json").read_text())
    assert ranking["units"][0]["unit"] == 2 and ranking["units"][0]["effects"]["removal"]["mean"] > 0.2
    assert ranking["rankings"]["removal"]["significant"] == [2]
    assert (folder / "ace.csv").read_text().startswith("unit,value,iou,inserted,ablated,removal_mean,")
    curves = json.loads((folder / "curves.json").read_text())
    assert set(curves) == {"removal", "ace", "IoU", "random"}
    assert curves["removal"]["removed"][1] == 1.0  # unit 2 alone removes all blue
    assert curves["random"]["counts"] == curves["removal"]["counts"] == [0, 1, 2, 4, 5]
    assert "<svg" in (folder / "curves.svg").read_text() and "<svg" in (folder / "context.svg").read_text()
    assert (folder / "ablation-strip.png").exists() and (folder / "context.json").exists()


def test_causal_results_go_with_their_dissection(tmp_path):
    out = tmp_path / "run"
    base = ["dissect", "--model", PLANTED_SPEC, "--segmenter", "color", "--layers", "features", "--samples", "32",
            "--quantile", "0.15", "--out", str(out)]
    assert main(base) == 0
    assert main(["causal", str(out), "--model", PLANTED_SPEC,
                 "--concept", "blue", "--samples", "4", "--batch-size", "4"]) == 0
    assert "Causal results" in (out / "report.html").read_text()  # the report was rewritten with them
    assert main([*base[:-2], "--samples", "40", "--out", str(out), "--force", "--no-report"]) == 0
    assert not (out / "causal").exists()  # measured on the old dissection: removed with it


def test_causal_labels_command_names_the_planted_colours(cli_run, capsys):
    assert main(["causal-labels", str(cli_run), "--model", PLANTED_SPEC,
                 "--samples", "8", "--batch-size", "4", "--no-report"]) == 0
    labels = json.loads((cli_run / "causal" / "features" / "labels.json").read_text())
    named = {entry["unit"]: entry["label"] for entry in labels["units"]}
    assert [named[u] for u in PLANTED] == list(PLANTED.values())
    assert set(labels["agreement"]) >= {"quantile", "iqr", "iqr-iou"}
    assert "quantile" in capsys.readouterr().out


def test_causal_command_saves_the_optimised_unit_set(cli_run):
    assert main(["causal", str(cli_run), "--model", PLANTED_SPEC,
                 "--concept", "blue", "--samples", "4", "--batch-size", "4", "--optimize",
                 "--no-report"]) == 0
    record = json.loads((cli_run / "causal" / "features" / "blue" / "units.json").read_text())
    assert len(record["alpha"]) == 5 and all(0 <= a <= 1 for a in record["alpha"])


def test_artifacts_command_writes_the_study(cli_run, tmp_path, capsys):
    from gandissect.core.images import to_uint8

    real = tmp_path / "real"
    real.mkdir()
    images = PlantedGenerator()(sample_z(PlantedGenerator(), 9, range(24)))
    for i, picture in enumerate(to_uint8(images)):
        Image.fromarray(picture).save(real / f"{i:02d}.png")
    assert main(["artifacts", str(cli_run), "--model", PLANTED_SPEC,
                 "--real", str(real), "--count", "2", "--samples", "16", "--draws", "2",
                 "--real-count", "24"]) == 0
    record = json.loads((cli_run / "causal" / "features" / "artifacts.json").read_text())
    assert {"scores", "study"} <= set(record) and "random" in capsys.readouterr().out
    assert main(["artifacts", str(cli_run), "--model", PLANTED_SPEC,
                 "--real", str(tmp_path / "none"), "--count", "2"]) == 2


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` pixels and holds almost nothing (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def test_edit_refuses_bad_files_and_names_before_any_work(cli_run, tmp_path, capsys):
    np.save(tmp_path / "words.npy", np.array(["a", "b"]))
    (tmp_path / "bomb.png").write_bytes(png_header(20000, 20000))  # PIL itself refuses to open this one
    (tmp_path / "big.png").write_bytes(png_header(5000, 4000))  # under PIL's limit, over ours
    (tmp_path / "text.png").write_text("not a picture")
    (tmp_path / "taken").write_text("a file")
    cases = [(["--mask", str(tmp_path / "words.npy")], "not an array of numbers"),
             (["--mask", str(tmp_path / "bomb.png")], "too large"),
             (["--mask", str(tmp_path / "big.png")], "5000x4000"),
             (["--mask", str(tmp_path / "text.png")], "not a picture"),
             (["--out", str(tmp_path / "taken")], "is a file")]
    for extra, message in cases:
        out = [] if "--out" in extra else ["--out", str(tmp_path / "x")]
        assert main(["edit", str(cli_run), "--model", PLANTED_SPEC, "--units", "1", *extra, *out]) == 2, extra
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (extra, err)
    with pytest.raises(SystemExit):
        main(["edit", str(cli_run), "--model", PLANTED_SPEC, "--units", ",", "--out", str(tmp_path / "x")])
    assert "--units names no unit" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["--real-count", "0"], "--real-count must be at least 4"),
    (["--samples", "1"], "--samples must be at least 4"),
    (["--draws", "0"], "--draws must be at least 1"),
])
def test_artifacts_refuses_meaningless_counts(cli_run, capsys, argv, message):
    assert main(["artifacts", str(cli_run), "--model", PLANTED_SPEC, "--real", "world", "--count", "2", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_artifacts_refuses_a_real_folder_with_a_file_that_is_no_picture(cli_run, tmp_path, capsys):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.png").write_text("not a picture")
    assert main(["artifacts", str(cli_run), "--model", PLANTED_SPEC, "--real", str(tmp_path / "real"),
                 "--count", "2", "--samples", "16"]) == 2
    assert "not a picture" in capsys.readouterr().err
