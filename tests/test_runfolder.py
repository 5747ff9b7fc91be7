"""Run folders never lose or mix results: identity, refuse/resume/force, the lock, staging, clean-up, Ctrl-C,
and the one-line errors of `gandissect dissect` (each test is one rule; see engine/runfolder.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from gandissect import cli
from gandissect.core.errors import GandissectError
from gandissect.core.segmenters import ColorSegmenter, MergedSegmenter
from gandissect.dissection import DissectConfig, Dissector
from gandissect.engine.runfolder import RunFolderError
from gandissect.engine.samplepass import NonFiniteError
from gandissect.engine.storage import read_checkpoint_meta
from planted import PlantedGenerator

TESTS = str(Path(__file__).parent)
CONFIG = {"layers": ["features"], "samples": 64, "batch_size": 32, "quantile": 0.15, "checkpoint_every": 1}
RESULTS = ("dissect.json", "dissect.csv", "statistics.safetensors")
KEPT = (*RESULTS, "run.json")  # what a finished (--no-report) run holds


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("GANDISSECT_DEBUG", raising=False)


# ---------------------------------------------------------------------------------------------- helpers


class Stop(Exception):
    """Stands for a kill in the middle of a pass."""


def stop_at(phase: str, done: int, error: type[BaseException] = Stop):
    def callback(at: str, count: int) -> None:
        if (at, count) == (phase, done):
            raise error

    return callback


def dissector(out: Path, generator=None, segmenter=None, **options) -> Dissector:
    settings = {name: options.pop(name) for name in list(options) if name in DissectConfig.__dataclass_fields__}
    return Dissector(generator or PlantedGenerator(), segmenter or ColorSegmenter(),
                     DissectConfig(**{**CONFIG, **settings}), out, progress=False, **options)


def dissect(out: Path, **options) -> dict:
    d = dissector(out, **options)
    return d.finish(d.run())


def interrupt(out: Path, phase: str = "iou", done: int = 1, **options) -> None:
    with pytest.raises(Stop):
        dissector(out, on_batch=stop_at(phase, done), **options).run()


def snapshot(folder: Path, names=KEPT) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in names}


def contents(folder: Path) -> dict[str, object]:
    """The results as content: statistics.safetensors as its tensors and metadata (its header's key order varies
    from write to write), the other files as bytes."""
    files: dict[str, object] = snapshot(folder)
    path = str(folder / "statistics.safetensors")
    with safe_open(path, framework="pt") as handle:
        metadata = {key: json.loads(value) for key, value in (handle.metadata() or {}).items()}
    tensors = load_file(path)
    files["statistics.safetensors"] = (metadata, sorted(tensors), [tensors[k].tolist() for k in sorted(tensors)])
    return files


def every_file(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` but the two lock files, by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in (".lock", ".commit.lock")}


def without(message: str, out: Path) -> str:
    """The message with the folder's path taken out (tmp paths contain the test's name)."""
    return message.replace(str(out), "<out>")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """`reference(**settings)`: the `contents` of an uninterrupted run of those settings (cached)."""
    cache: dict[tuple, dict[str, object]] = {}

    def run(**settings) -> dict[str, object]:
        key = tuple(sorted(settings.items()))
        if key not in cache:
            out = tmp_path_factory.mktemp("reference") / "run"
            dissect(out, **settings)
            cache[key] = contents(out)
        return cache[key]

    return run


FACTORY = f"""
import sys

import torch

if {TESTS!r} not in sys.path:
    sys.path.insert(0, {TESTS!r})
from planted import PlantedGenerator


def make():
    return PlantedGenerator()


class Uneven:
    concepts = ["sky", "ground"]
    categories = ["object"]

    def segment(self, images):
        return torch.zeros(images.shape[0], 1, 32, 32, dtype=torch.long)


class Repeated(Uneven):
    concepts = ["sky", "ground", "sky"]
    categories = ["object", "object", "object"]


def uneven():
    return Uneven()


def repeated():
    return Repeated()
"""


@pytest.fixture
def factory(tmp_path) -> str:
    path = tmp_path / "gen.py"
    path.write_text(FACTORY)
    return str(path)


def argv(factory: str, out: Path, *extra: str) -> list[str]:
    return ["dissect", "--model", f"{factory}:make", "--segmenter", "color", "--layers", "features", "--samples", "64",
            "--batch-size", "32", "--quantile", "0.15", "--no-report", "--out", str(out), *extra]


def call(capsys, args: list[str]) -> tuple[int, list[str]]:
    """Exit code (returned, or of SystemExit) and stderr lines of `gandissect ...`."""
    capsys.readouterr()
    try:
        code = cli.main(args)
    except SystemExit as exit_:
        code = exit_.code
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped cli.main")
    return code, capsys.readouterr().err.splitlines()


def error_lines(lines: list[str], command: str = "dissect") -> list[str]:
    return [line for line in lines if line.startswith(f"gandissect {command}: error:")]


def sigint_in_first_iou_batch(monkeypatch) -> None:
    """A real Ctrl-C (SIGINT to this process) while the first batch of the IoU pass is being counted."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach only the main thread")
    original = Dissector._add_counts
    fired = []

    def add_counts(self, batch, stats, **options):
        if not fired:
            fired.append(True)
            signal.raise_signal(signal.SIGINT)
        original(self, batch, stats, **options)

    monkeypatch.setattr(Dissector, "_add_counts", add_counts)


class Halves:
    """Another segmenter (no weights): top half 'sky', bottom half 'ground'."""

    concepts = ("sky", "ground")
    categories = ("object", "object")

    def segment(self, images):
        labels = torch.zeros(images.shape[0], 1, *images.shape[-2:], dtype=torch.long)
        labels[..., images.shape[-2] // 2:, :] = 1
        return labels


# ---------------------------------------------------------------------------------------------- 1. identity


def test_resume_is_refused_for_another_generator_segmenter_or_settings(tmp_path, reference):
    out = tmp_path / "run"
    interrupt(out)
    unfinished = every_file(out)
    perturbed = PlantedGenerator()
    perturbed.region_weights[0, 0] += 1e-3
    reordered = ColorSegmenter()
    reordered.concepts = reordered.concepts[::-1]  # same class, same (no) weights, other concepts
    cases = [
        ({"generator": perturbed}, "generator", ("segmenter", "config")),
        ({"segmenter": MergedSegmenter(ColorSegmenter(), Halves())}, "segmenter", ("generator", "config")),
        ({"segmenter": reordered}, "segmenter.concepts", ("generator", "config")),
        ({"samples": 96}, "config.samples", ("generator", "segmenter")),
        ({"quantile": 0.2}, "config.quantile", ("generator", "segmenter")),
    ]
    for options, named, not_named in cases:
        with pytest.raises(RunFolderError, match="cannot resume") as error:
            dissector(out, resume=True, **options).run()
        message = without(str(error.value), out)
        assert named in message, (options, message)
        assert not any(other in message for other in not_named), (options, message)
        assert "--force" in message
        assert every_file(out) == unfinished  # a refusal changes nothing
    dissect(out, resume=True)  # the same generator, segmenter and settings resume, exactly
    assert contents(out) == reference()


# ---------------------------------------------------------------------------------------------- 2. finished


def test_resume_of_a_finished_run_is_refused_and_leaves_it_untouched(tmp_path):
    out = tmp_path / "run"
    dissect(out)
    finished = every_file(out)
    assert set(finished) == set(KEPT)
    with pytest.raises(RunFolderError, match="nothing to resume") as error:
        dissector(out, resume=True).run()
    assert "--force" in str(error.value)
    assert every_file(out) == finished
    assert not (out / ".partial").exists()


# ---------------------------------------------------------------------------------------------- 3. force


def test_force_keeps_the_old_results_until_the_new_run_is_complete(tmp_path, reference):
    out = tmp_path / "run"
    dissect(out)
    old = snapshot(out)
    assert contents(out) == reference()

    interrupt(out, force=True, samples=96)  # --force killed in the IoU pass
    assert snapshot(out) == old
    assert (out / ".partial" / "checkpoint.safetensors").exists()
    with pytest.raises(RunFolderError, match="unfinished"):
        dissector(out).run()  # neither flag: the folder holds a run and an unfinished one
    assert snapshot(out) == old

    dissect(out, resume=True, samples=96)  # --resume continues the new run
    assert contents(out) == reference(samples=96)
    assert not (out / ".partial").exists()

    newer = snapshot(out)
    interrupt(out, "thresholds", 1, force=True, quantile=0.2)
    assert snapshot(out) == newer
    dissect(out, force=True, quantile=0.2)  # a --force that completes replaces them
    assert contents(out) == reference(quantile=0.2)
    assert set(every_file(out)) == set(KEPT)


# ---------------------------------------------------------------------------------------------- 4. lock

HOLD = """
import sys
from gandissect.engine.runfolder import RunFolder

folder = RunFolder(sys.argv[1], ["dissect.json"])
folder.open({"holder": True})
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_folder_in_use_by_another_process_is_refused_naming_its_pid(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = holder.stdout.readline().strip()
        assert ready == "locked", holder.stderr.read() if holder.poll() is not None else ready
        held = every_file(out)
        for options in ({}, {"force": True}, {"resume": True}):
            with pytest.raises(RunFolderError, match="in use") as error:
                dissector(out, **options).run()
            assert f"pid {holder.pid}" in str(error.value)
            assert every_file(out) == held  # the holder's run is not touched
    finally:
        holder.kill()  # kill -9: the kernel releases the lock
        holder.wait(timeout=30)
    dissect(out, force=True)
    dissect(out, force=True)  # released after finish: a second run works
    assert set(every_file(out)) == set(KEPT)


# ---------------------------------------------------------------------------------------------- 5. images


class NaNPixels(PlantedGenerator):
    """Finite features, but NaN in a corner of every image."""

    def forward(self, z):
        images = super().forward(z)
        images[:, :, 0, 0] = float("nan")
        return images


class Loud(PlantedGenerator):
    """Images in [-5, 5] where [-1, 1] is declared."""

    def forward(self, z):
        return super().forward(z) * 5


class DeclaresUnit(PlantedGenerator):
    """Images in [-1, 1] where [0, 1] is declared."""

    output_range = (0.0, 1.0)


@pytest.mark.parametrize("generator, error, message", [
    (NaNPixels, NonFiniteError, r"images produced NaN"),
    (Loud, GandissectError, r"outside its declared range \[-1, 1\]"),
    (DeclaresUnit, GandissectError, r"outside its declared range \[0, 1\]"),
])
def test_nan_or_out_of_range_images_are_refused_before_the_run(tmp_path, generator, error, message):
    out = tmp_path / "run"
    with pytest.raises(error, match=message):
        dissector(out, generator=generator()).run()
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- 6. stale files


def test_a_new_run_removes_stale_files_but_never_a_users_files(tmp_path, reference):
    out = tmp_path / "x"
    interrupt(out, samples=96)  # a stale checkpoint of other settings, in the IoU pass
    assert read_checkpoint_meta(out / ".partial" / "checkpoint.safetensors")["pass"] == "iou"
    (out / ".dissect.json.abc123").write_text('{"half": ')  # left by a killed atomic write
    (out / ".partial" / ".checkpoint.safetensors.k2j4h5g6").write_bytes(b"half")
    notes = {"checkpoint_notes.txt": b"my notes", "checkpoints/keep.txt": b"mine too",
             "checkpoint.safetensors": b"not gandissect's"}
    for name, data in notes.items():
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_bytes(data)

    interrupt(out, "thresholds", 1, force=True)  # the new --force run has started
    assert not (out / ".dissect.json.abc123").exists()
    assert not (out / ".partial" / ".checkpoint.safetensors.k2j4h5g6").exists()
    assert read_checkpoint_meta(out / ".partial" / "checkpoint.safetensors") == {"pass": "thresholds", "next": 1,
                                                                                 "world": 1}
    dissect(out, force=True)  # the stale checkpoint is not used: the results are those of an uninterrupted run
    assert contents(out) == reference()
    for name, data in notes.items():
        assert (out / name).read_bytes() == data, name
    assert set(every_file(out)) == {*KEPT, *notes}


def test_a_users_dotfiles_in_the_run_folder_survive(tmp_path):
    out = tmp_path / "project"
    out.mkdir()
    dotfiles = {".pre-commit-config.yaml": b"repos: []\n", ".env.local": b"KEY=1\n", ".gitignore": b"*.pt\n"}
    for name, data in dotfiles.items():
        (out / name).write_bytes(data)
    dissect(out)
    for name, data in dotfiles.items():
        assert (out / name).exists() and (out / name).read_bytes() == data, name


# ---------------------------------------------------------------------------------------------- 7. one-line errors


@pytest.mark.parametrize("flag, value", [
    ("--layers", "features,features"),
    ("--topk", "0"),
    ("--min-iou", "2"),
    ("--samples", "0"),
    ("--batch-size", "100000000"),
    ("--label-method", "nope"),
    ("--device", "cuda"),
    ("--device", "tpu"),
])
def test_bad_settings_are_one_line_naming_the_flag(tmp_path, capsys, factory, flag, value):
    if flag == "--device" and value == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    out = tmp_path / "run"
    code, lines = call(capsys, argv(factory, out, flag, value))
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("gandissect dissect: error:"), lines
    assert flag in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("spec, named", [
    ("{factory}:uneven", "Uneven"),
    ("{factory}:repeated", "Repeated"),
    ("color+{factory}:repeated", "MergedSegmenter"),
    ("color+color", "red"),
])
def test_a_segmenter_breaking_the_protocol_is_one_line_naming_it(tmp_path, capsys, factory, spec, named):
    out = tmp_path / "run"
    code, lines = call(capsys, argv(factory, out, "--segmenter", spec.format(factory=factory)))
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("gandissect dissect: error:"), lines
    assert named in lines[0] and ("categories" in lines[0] or "more than once" in lines[0])
    assert not out.exists()


@pytest.mark.parametrize("kind", ["file", "inside a file", "read-only"])
def test_an_unusable_out_is_one_line_naming_the_path(tmp_path, capsys, factory, kind):
    if kind == "read-only":
        parent = tmp_path / "readonly"
        parent.mkdir()
        parent.chmod(0o555)
        if os.access(parent, os.W_OK):
            parent.chmod(0o755)
            pytest.skip("this user can write in a read-only folder (root)")
        out, named = parent / "run", parent
    else:
        named = tmp_path / "a-file"
        named.write_text("keep me")
        out = named if kind == "file" else named / "run"
    try:
        code, lines = call(capsys, argv(factory, out))
    finally:
        if kind == "read-only":
            parent.chmod(0o755)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("gandissect dissect: error:"), lines
    assert "--out" in lines[0] and str(named) in lines[0]
    if kind != "read-only":
        assert named.read_text() == "keep me"
    else:
        assert not out.exists()


# ---------------------------------------------------------------------------------------------- 8. Ctrl-C


@pytest.mark.parametrize("how", ["raised", "sigint"])
def test_ctrl_c_keeps_the_checkpoint_and_resume_completes_identically(tmp_path, reference, monkeypatch, how):
    out = tmp_path / "run"
    if how == "raised":  # KeyboardInterrupt out of the batch callback; periodic checkpoints every batch
        every, options = 1, {"on_batch": stop_at("iou", 1, KeyboardInterrupt)}
    else:  # a real Ctrl-C: the batch finishes, is checkpointed (no periodic checkpoint is due), then it stops
        every, options = 8, {}
        sigint_in_first_iou_batch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        dissector(out, checkpoint_every=every, **options).run()
    monkeypatch.undo()
    checkpoint = out / ".partial" / "checkpoint.safetensors"
    assert read_checkpoint_meta(checkpoint) == {"pass": "iou", "next": 1, "world": 1}
    assert not any((out / name).exists() for name in KEPT)
    dissect(out, resume=True, checkpoint_every=every)
    assert contents(out) == reference(checkpoint_every=every)
    assert not (out / ".partial").exists()


def test_ctrl_c_in_the_cli_exits_130_with_one_line_and_resume_completes(tmp_path, capsys, monkeypatch, factory):
    whole, out = tmp_path / "whole", tmp_path / "run"
    assert call(capsys, argv(factory, whole))[0] == 0
    sigint_in_first_iou_batch(monkeypatch)
    code, lines = call(capsys, argv(factory, out))
    monkeypatch.undo()
    assert code == 130
    mentions = [line for line in lines if "--resume" in line]
    assert len(mentions) == 1 and mentions[0].startswith("gandissect dissect: interrupted"), lines
    assert not any("Traceback" in line for line in lines)
    assert read_checkpoint_meta(out / ".partial" / "checkpoint.safetensors")["next"] == 1
    code, lines = call(capsys, argv(factory, out, "--resume"))
    assert code == 0, lines
    assert contents(out) == contents(whole)


# ---------------------------------------------------------------------------------------------- 9. JSON errors


def test_an_unreadable_json_file_is_one_line_naming_it(tmp_path, capsys, factory):
    out = tmp_path / "run"
    interrupt(out)
    (out / ".partial" / "run.json").write_text('{"config": {"samples": 6')
    code, lines = call(capsys, argv(factory, out, "--resume"))
    assert code == 2
    assert not any("Traceback" in line for line in lines)
    errors = error_lines(lines)
    assert len(errors) == 1 and "run.json" in errors[0], lines

    finished = tmp_path / "finished"
    dissect(finished)
    (finished / "dissect.json").write_text("{not json")
    code, lines = call(capsys, ["report", str(finished)])
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("gandissect report: error:"), lines
    assert "dissect.json" in lines[0]


# ---------------------------------------------------------------------------------------------- 10. bugs


def test_an_error_that_is_a_bug_keeps_its_traceback(tmp_path, capsys, monkeypatch, factory):
    def broken(*args, **kwargs):
        raise KeyError("a bug deep inside")

    # the dissector holds its own reference to results.to_json
    monkeypatch.setattr("gandissect.dissection.results.to_json", broken)
    monkeypatch.setattr("gandissect.dissection.dissector.to_json", broken)
    out = tmp_path / "run"
    with pytest.raises(KeyError, match="a bug deep inside"):
        cli.main(argv(factory, out))
    assert "error:" not in capsys.readouterr().err
    assert not any((out / name).exists() for name in KEPT)  # nothing half-written was committed
