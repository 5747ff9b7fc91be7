"""Ctrl-C at any moment is one line saying what was kept, never a traceback: while the command line is still
importing its modules (torch takes seconds), before a dissection has finished a batch, and in a causal
command, which leaves the run folder as it was."""

from __future__ import annotations

import builtins
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gandissect.cli import main

PLANTED_SPEC = f"{Path(__file__).with_name('planted.py')}:PlantedGenerator"
DISSECT = ["dissect", "--model", PLANTED_SPEC, "--segmenter", "color", "--layers", "features", "--samples", "32",
           "--quantile", "0.15", "--no-report"]


def test_the_command_line_imports_no_torch_before_it_can_catch_ctrl_c():
    """The console script imports gandissect.cli, then calls main, which catches Ctrl-C: that import must be
    light (no torch), or a Ctrl-C in the first seconds escapes as a traceback."""
    code = "import sys; import gandissect.cli; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(shown.replace("'", '"')) == []


def test_ctrl_c_while_importing_is_one_line(monkeypatch, capsys):
    real = builtins.__import__

    def importing(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise KeyboardInterrupt  # as if Ctrl-C landed inside `import torch`
        return real(name, *args, **kwargs)

    for module in [m for m in sys.modules if m.startswith("gandissect.cli.")]:
        monkeypatch.delitem(sys.modules, module)  # imported again, from inside main
    monkeypatch.setattr(builtins, "__import__", importing)
    code = main(["models"])
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code == 130 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(("gandissect: interrupted", "gandissect models: interrupted"))


def test_ctrl_c_before_the_first_batch_says_there_is_nothing_to_resume(tmp_path, monkeypatch, capsys):
    from gandissect.dissection import dissector

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dissector.Dissector, "run", stop)
    assert main([*DISSECT, "--out", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "gandissect dissect: interrupted; stopped before a batch was finished: there is nothing to resume"
    assert "--resume" not in "\n".join(err)


def test_ctrl_c_in_a_causal_command_leaves_the_run_as_it_was(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert main([*DISSECT, "--out", str(run)]) == 0
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    from gandissect.causal import ace

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ace, "measure_effects", stop)
    capsys.readouterr()
    assert main(["causal", str(run), "--model", PLANTED_SPEC, "--concept", "blue", "--samples", "4"]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == ("gandissect causal: interrupted; the run folder is as it was (a "
                                            "command's results are committed together, at its end)")
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert {k: v for k, v in after.items() if k.name != ".lock"} == {k: v for k, v in before.items()
                                                                    if k.name != ".lock"}


@pytest.mark.parametrize("argv", [["--no-such-flag"], []])
def test_argument_errors_still_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
