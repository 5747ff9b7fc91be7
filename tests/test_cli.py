"""The command line on a planted model: dissect end to end, list layers, and clear one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gandissect.cli import main

PLANTED = str(Path(__file__).parent / "planted.py") + ":PlantedGenerator"


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("GANDISSECT_DEBUG", raising=False)  # it makes user errors raise instead of print


def run_dissect(out: Path, *extra: str) -> int:
    return main(["dissect", "--model", PLANTED, "--segmenter", "color", "--layers", "features", "--samples", "64",
                 "--batch-size", "32", "--quantile", "0.15", "--out", str(out), *extra])


def test_dissect_writes_results_and_report(tmp_path, capsys):
    assert run_dissect(tmp_path / "run") == 0
    printed = capsys.readouterr().out
    assert "interpretable units (quantile rule):" in printed
    rows = {line.split()[0]: line.split()[1:] for line in printed.splitlines()[2:] if line.strip()}
    assert rows["all"] == ["3", "of", "5"] and {c: rows[c] for c in ("red", "green", "blue")} == \
        {"red": ["1"], "green": ["1"], "blue": ["1"]}
    assert f"results: {(tmp_path / 'run').resolve()}/report.html" in printed
    document = json.loads((tmp_path / "run" / "dissect.json").read_text())
    assert document["model"] == PLANTED and document["segmenter"] == "color"
    assert [u["concept"] for u in document["layers"]["features"]["units"][:3]] == ["red", "green", "blue"]
    assert (tmp_path / "run" / "report.html").stat().st_size > 1000


def test_report_is_rewritten_from_a_finished_run(tmp_path, capsys):
    assert run_dissect(tmp_path, "--no-report") == 0
    assert not (tmp_path / "report.html").exists()
    assert main(["report", str(tmp_path)]) == 2  # the run records a factory: a run folder never runs code
    assert "never runs code" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--model", PLANTED]) == 0
    assert "unit-card" in (tmp_path / "report.html").read_text()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert f"{tmp_path / 'missing'} does not exist: run `gandissect dissect --out" in capsys.readouterr().err


def test_existing_run_is_refused_then_forced(tmp_path, capsys):
    assert run_dissect(tmp_path, "--no-report") == 0
    capsys.readouterr()
    assert run_dissect(tmp_path, "--no-report") == 2
    error = capsys.readouterr().err
    assert "already holds a run" in error and "--force" in error and "Traceback" not in error
    assert run_dissect(tmp_path, "--no-report", "--resume") == 2  # a finished run has nothing to resume
    assert "nothing to resume" in capsys.readouterr().err
    assert run_dissect(tmp_path, "--no-report", "--force") == 0


def test_unknown_layer_is_one_clear_line(tmp_path, capsys):
    code = main(["dissect", "--model", PLANTED, "--segmenter", "color", "--layers", "layer7", "--out", str(tmp_path)])
    error = capsys.readouterr().err
    assert code == 2
    assert "no layer 'layer7'" in error and "features" in error and "Traceback" not in error


@pytest.mark.parametrize("segmenter", [
    ["--segmenter", "color"],
    [],
])
def test_unknown_model_lists_shipped_names(tmp_path, capsys, segmenter):
    from gandissect.models import available

    assert main(["dissect", "--model", "nosuchmodel", *segmenter, "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "nosuchmodel" in error and all(name in error for name in available())
    assert "--segmenter is required" not in error


@pytest.mark.parametrize("flag, spec", [
    ("--model", "no_such_file.py:make"),
    ("--model", "no_such_package.module:make"),
    ("--model", "{planted}:NO_SUCH_FACTORY"),
    ("--model", "{planted}:PLANTED"),  # a dict, not a torch.nn.Module
    ("--segmenter", "no_such_file.py:make"),
    ("--segmenter", "{planted}:PlantedGenerator"),  # no concepts, categories, segment
])
def test_factory_spec_mistakes_are_one_clear_line(tmp_path, capsys, flag, spec):
    planted = str(Path(__file__).parent / "planted.py")
    spec = spec.format(planted=planted)
    args = {"--model": PLANTED, "--segmenter": "color", flag: spec}
    code = main(["dissect", "--model", args["--model"], "--segmenter", args["--segmenter"], "--layers", "features",
                 "--out", str(tmp_path / "run")])
    error = capsys.readouterr().err
    assert code == 2
    assert error.startswith("gandissect dissect: error:") and error.count("\n") == 1 and spec in error


def test_layers_lists_names_and_shapes(capsys):
    assert main(["layers", "--model", PLANTED]) == 0
    out = capsys.readouterr().out
    assert "features" in out and "(5, 8, 8)" in out and "(3, 32, 32)" in out


def test_segmenter_is_required_for_own_models(tmp_path, capsys):
    assert main(["dissect", "--model", PLANTED, "--out", str(tmp_path)]) == 2
    assert "--segmenter is required" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["dissect"], ["train"], ["nonsense"]])
def test_usage_errors_exit_nonzero(argv):
    with pytest.raises(SystemExit) as error:
        main(argv)
    assert error.value.code == 2
