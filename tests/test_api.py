"""The notebook API: `gandissect.dissect` and `gandissect.load` return a Dissection that shows itself as
tables and pictures; `gandissect.causal.effects` ranks units with their evidence; docs/notebook.ipynb runs.
Checked on the planted model, whose answer is known (units 0, 1, 2 draw red, green, blue; only unit 2 draws
blue, so only it removes blue)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gandissect
from gandissect.core.errors import ConfigError, GandissectError
from gandissect.core.tables import Table, table
from planted import PlantedGenerator

ROOT = Path(__file__).resolve().parents[1]
PLANTED_SPEC = f"{Path(__file__).with_name('planted.py')}:PlantedGenerator"
SETTINGS = {"layers": ["features"], "samples": 32, "quantile": 0.15, "progress": False}


@pytest.fixture(scope="module")
def planted() -> gandissect.Dissection:
    return gandissect.dissect(PlantedGenerator(), "color", **SETTINGS)


def test_importing_gandissect_loads_no_torch_until_the_api_is_used():
    code = ("import sys, gandissect; before = 'torch' in sys.modules; gandissect.Trace; "
            "print(before, 'torch' in sys.modules)")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert shown.split() == ["False", "True"]


def test_dissect_finds_the_planted_units(planted):
    units = planted.units()
    rows = units.to_dict("records") if hasattr(units, "to_dict") else units.rows
    assert [(r["unit"], r["concept"], r["interpretable"]) for r in rows[:3]] == \
        [(0, "red", True), (1, "green", True), (2, "blue", True)]
    summary = planted.summary()
    counts = summary.to_dict("records") if hasattr(summary, "to_dict") else summary.rows
    assert {r["concept"]: r["features"] for r in counts} == \
        planted.document["layers"]["features"]["interpretable_by_concept"] == {"red": 1, "green": 1, "blue": 1}
    html = planted._repr_html_()
    assert "<table>" in html and "32 samples per set" in html and "<td>blue</td>" in html


def test_tables_are_dataframes_with_pandas_and_tables_without():
    pandas = pytest.importorskip("pandas")
    rows = [{"unit": 2, "iou": 0.5}, {"unit": 0, "iou": 0.25}]
    frame = table(rows)
    assert isinstance(frame, pandas.DataFrame) and frame.to_dict("records") == rows
    plain = table(rows, pandas=False)
    assert isinstance(plain, Table) and plain.rows == rows and plain.column("iou") == [0.5, 0.25]
    assert repr(plain).splitlines()[0].split() == ["unit", "iou"] and "0.25" in repr(plain)
    assert plain._repr_html_().count("<tr>") == 3


def test_a_unit_and_a_concept_draw_themselves(planted):
    picture = planted.unit("features", 2, count=4)
    (label, strip), = picture.rows
    assert label == "top 4 images"
    assert "blue" in picture.caption and strip.dtype == np.uint8
    assert strip.shape == (32, 4 * 33, 3)  # 4 images of 32x32, each with a 1-px gap
    assert picture._repr_html_().count("data:image/") == 1
    concept = planted.concept("blue", units=2, count=3)
    ranking = planted.document["layers"]["features"]["concepts"]["blue"]
    assert [label.split(":")[0] for label, _ in concept.rows] == [f"unit {u}" for u in ranking["units"][:2]]
    assert concept.rows[0][0].startswith("unit 2")  # the planted blue unit first


def test_effects_single_out_the_planted_unit(planted):
    found = gandissect.causal.effects(planted.generator, planted.segmenter, planted, "features", ["blue"],
                                      samples=8, progress=False)
    rows = found.rows("removal")
    assert rows[0]["unit"] == 2 and rows[0]["significant"] and rows[0]["p_adjusted"] < 0.05
    assert rows[0]["low"] > 0 and not any(r["significant"] for r in rows[1:])
    assert found.ranking("blue", "removal").significant == [2]
    assert "8 samples (fixed)" in found._repr_html_()
    same = planted.effects("features", ["blue"], samples=8, progress=False)
    assert same.rows("removal") == rows  # the method is the function on its own generator and segmenter


def test_generate_switches_units_off(planted):
    picture = planted.generate(range(3), edit={"features": gandissect.UnitEdit([0, 1, 2], value=0.0)})
    (_, before), (_, after) = picture.rows
    assert before.shape == after.shape and not np.array_equal(before, after)
    assert len(planted.generate(range(3)).rows) == 1


def test_a_run_folder_is_kept_with_out_and_loaded_back(tmp_path):
    out = tmp_path / "run"
    made = gandissect.dissect(PlantedGenerator(), "color", out=out, **SETTINGS)
    assert (out / "report.html").is_file() and "report.html" in json.loads((out / "run.json").read_text())["files"]
    with pytest.raises(GandissectError, match="already holds a run"):
        gandissect.dissect(PlantedGenerator(), "color", out=out, **SETTINGS)
    with pytest.raises(ConfigError, match="pass generator="):  # a module given to dissect() is not recorded
        gandissect.load(out)
    loaded = gandissect.load(out, generator=PlantedGenerator())
    assert type(loaded.segmenter).__name__ == "ColorSegmenter"  # the spec given to dissect() is recorded
    assert loaded.document == made.document and loaded.folder == out


@pytest.mark.parametrize("call, message", [
    (lambda d: d.units("nope"), "no dissected layer 'nope'; the run's layers: features"),
    (lambda d: d.unit("features", 9), "layer features has units 0..4; got 9"),
    (lambda d: d.concept("unicorn"), "no concept 'unicorn'"),
    (lambda d: d.effects("features", ["unicorn"], samples=4), "unknown concepts ['unicorn']"),
    (lambda d: gandissect.dissect(object(), "color", **SETTINGS), "generator must be an nn.Module or a model spec"),
])
def test_mistakes_are_one_line(planted, call, message):
    with pytest.raises(ConfigError) as error:
        call(planted)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_example_notebook_runs(monkeypatch):
    """Every code cell of docs/notebook.ipynb, in order, in one namespace (as Jupyter would), with the sample
    counts cut down for the test; what a cell would display must show itself."""
    notebook = json.loads((ROOT / "docs" / "notebook.ipynb").read_text())
    namespace: dict = {}
    shown = []
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"]).replace("samples=200", "samples=48").replace("samples=32", "samples=8")
        *body, last = source.strip().splitlines()
        exec(compile("\n".join(body), "notebook", "exec"), namespace)
        value = eval(compile(last, "notebook", "eval"), namespace) if not last.startswith(("print", "d =")) \
            else exec(compile(last, "notebook", "exec"), namespace)
        if value is not None:
            shown.append(value)
    assert all(hasattr(v, "_repr_html_") for v in shown)
    assert len(shown) == 5 and shown[-1].rows[0][0] == "unedited" and len(shown[-1].rows) == 2
