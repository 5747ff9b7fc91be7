"""A run folder is untrusted input: a spec it records that would import code is never imported or run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gandissect.cli import main
from gandissect.core.errors import ConfigError
from gandissect.models import recorded_spec
from gandissect.viz.painter.loader import open_painter
from tamper import rehash

PLANTED_SPEC = f"{Path(__file__).with_name('planted.py')}:PlantedGenerator"
PAYLOAD = """
from pathlib import Path

Path(__file__).with_name("ran").write_text("the payload ran")


def make():
    raise SystemExit("the payload ran")
"""


@pytest.fixture(scope="module")
def planted_cli_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trust") / "run"
    assert main(["dissect", "--model", PLANTED_SPEC, "--segmenter", "color", "--layers", "features", "--samples",
                 "32", "--quantile", "0.15", "--out", str(out)]) == 0
    return out


def hostile(run: Path, tmp_path: Path, **specs: str) -> Path:
    """A copy of `run` whose dissect.json records `specs` (model, segmenter), with payload.py beside it."""
    copy = tmp_path / "handed-over"
    shutil.copytree(run, copy)
    (tmp_path / "payload.py").write_text(PAYLOAD)
    document = json.loads((copy / "dissect.json").read_text())
    document.update(specs)
    (copy / "dissect.json").write_text(json.dumps(document))
    rehash(copy)  # a consistent folder: refused for the specs it records, not for its checksums
    return copy


COMMANDS = [
    ["report"],
    ["causal", "--concept", "blue", "--samples", "4", "--no-report"],
    ["causal-labels", "--samples", "4", "--no-report"],
    ["edit", "--units", "2", "--out", "EDIT"],
    ["artifacts", "--real", "world", "--count", "1"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
@pytest.mark.parametrize("field", ["model", "segmenter"])
def test_no_command_runs_code_named_by_a_run_folder(planted_cli_run, tmp_path, capsys, command, field):
    payload = f"{tmp_path / 'payload.py'}:make"
    run = hostile(planted_cli_run, tmp_path, **{field: payload})
    argv = [command[0], str(run), *(str(tmp_path / "edit") if a == "EDIT" else a for a in command[1:])]
    if field == "segmenter":  # the model is given on the command line: trusted, as the user typed it
        argv += ["--model", PLANTED_SPEC]
    if command[0] == "report" and field == "segmenter":
        assert main(argv) == 0  # the report needs no segmenter: the recorded one is not even looked at
    else:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "never runs code" in err and f"--{field}" in err
    assert not (tmp_path / "ran").exists()


def test_the_painter_runs_no_code_named_by_a_run_folder(planted_cli_run, tmp_path):
    run = hostile(planted_cli_run, tmp_path, model="os:system", segmenter=f"{tmp_path / 'payload.py'}:make")
    with pytest.raises(ConfigError, match="never runs code"):
        open_painter(run)
    with pytest.raises(ConfigError, match="never runs code"):
        open_painter(run, model=PLANTED_SPEC)  # the segmenter is still the run's
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize(("spec", "allowed"), [
    ("scenes64", True), ("color", True), ("scenes64+color", True), ("progan:churchoutdoor", True),
    ("stylegan2:/x/y.pt,truncation=0.7", True), ("ade20k:segformer-b4+color", True),
    ("os:system", False), ("payload.py:make", False), ("scenes64+payload.py:make", False), ("", False),
])
def test_recorded_specs_may_name_only_shipped_models_and_loaders(spec, allowed):
    key = "segmenter" if "+" in spec or spec == "color" or spec.startswith("ade20k") else "model"
    if allowed:
        assert recorded_spec({key: spec}, key, None, f"--{key}") == spec
    else:
        with pytest.raises(ConfigError):
            recorded_spec({key: spec}, key, None, f"--{key}")
    assert recorded_spec({key: spec}, key, "given.py:make", f"--{key}") == "given.py:make"  # typed by the user
    assert recorded_spec({}, key, None, f"--{key}") is None
