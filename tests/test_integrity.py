"""A run folder is read only as gandissect wrote it and changes only all at once (engine/runfiles.py): every
result file's SHA-256 in run.json, checked by every reader; journalled commits that a kill at any step leaves
as the old run or the new one; readers that never see a commit half done; dissect.json checked field by field."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from gandissect.cli import main
from gandissect.core.errors import GandissectError
from gandissect.core.segmenters import ColorSegmenter
from gandissect.dissection import DissectConfig, Dissection, Dissector
from gandissect.dissection.document import SchemaError, check_document
from gandissect.engine import runfiles
from gandissect.engine.runfiles import RunFileError, Snapshot
from gandissect.engine.runfolder import RunFolder
from gandissect.engine.storage import StoredFileError
from gandissect.viz.report.causal import load_causal
from planted import PlantedGenerator
from tamper import edit_json, rehash

PLANTED_SPEC = f"{Path(__file__).with_name('planted.py')}:PlantedGenerator"
CONFIG = {"layers": ["features"], "samples": 32, "batch_size": 32, "quantile": 0.15}
LOCKS = (".lock", ".commit.lock")


def dissect(out: Path, **settings) -> dict:
    d = Dissector(PlantedGenerator(), ColorSegmenter(), DissectConfig(**{**CONFIG, **settings}), out, progress=False,
                  force=True)
    return d.finish(d.run())


def on_disk(run: Path) -> dict[str, bytes]:
    """Every file of the run folder but the lock files, by relative name."""
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.name not in LOCKS}


def through_reader(run: Path) -> dict[str, bytes]:
    """Every file a reader sees (checked), by name."""
    with Snapshot(run) as files:
        return {name: files.read(name) for name in files.names()}


def add_causal(run: Path, concept: str, generation: int) -> None:
    """Commit causal/features/<concept>/{ace,extra}.json holding `generation`, as a causal command would."""
    holder = RunFolder(run, ()).hold(None)
    try:
        update = holder.update([f"causal/features/{concept}"])
        for name in ("ace.json", "extra.json"):
            update.path(f"causal/features/{concept}/{name}").write_text(json.dumps({"generation": generation}))
        update.commit()
    finally:
        holder.close()


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A planted dissection (32 samples) with causal results for blue: read it, copy it to change it."""
    run = tmp_path_factory.mktemp("integrity") / "run"
    dissect(run)
    add_causal(run, "blue", 1)
    return run


@pytest.fixture
def copy(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run"))


def one_line(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and all(f in err for f in fragments), err
    return err


# ---------------------------------------------------------------------------------------------- the manifest


def test_run_json_lists_every_result_file_with_its_sha256(finished):
    manifest = json.loads((finished / "run.json").read_text())["files"]
    expected = {name: hashlib.sha256(data).hexdigest() for name, data in on_disk(finished).items()
                if name != "run.json"}
    assert manifest == expected
    assert set(manifest) == {"dissect.json", "dissect.csv", "statistics.safetensors", "causal/features/blue/ace.json",
                             "causal/features/blue/extra.json"}


@pytest.mark.parametrize("name", ["statistics.safetensors", "dissect.json", "causal/features/blue/ace.json"])
def test_a_changed_file_is_refused_by_every_reader_naming_it(copy, capsys, name):
    path = copy / name
    data = bytearray(path.read_bytes())
    if name == "statistics.safetensors":  # 200 KB of random bytes inside the tensors, the header intact
        size = int.from_bytes(data[:8], "little") + 8
        noise = bytes(hashlib.sha256(str(i).encode()).digest()[0] for i in range(200_000))
        data[size:size + len(noise)] = noise[:len(data) - size]
    else:
        data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(RunFileError, match=f"{name} was changed after gandissect wrote it"):
        through_reader(copy)
    if name == "statistics.safetensors":
        with pytest.raises(RunFileError, match="was changed"):
            Dissection.load(copy)
    for argv in (["report", str(copy), "--model", PLANTED_SPEC],
                 ["causal", str(copy), "--model", PLANTED_SPEC, "--segmenter", "color", "--concept", "blue",
                  "--samples", "4", "--no-report"],
                 ["edit", str(copy), "--model", PLANTED_SPEC, "--units", "2", "--out", str(copy.parent / "edit")],
                 ["paint", str(copy), "--model", PLANTED_SPEC, "--port", "0"]):
        if name.startswith("causal/") and argv[0] in ("causal", "edit"):
            continue  # these do not read causal files (causal replaces them)
        assert main(argv) == 2, argv
        one_line(capsys, f"{copy / name} was changed after gandissect wrote it")


def test_files_the_manifest_does_not_list_are_never_read(copy):
    planted = copy / "causal" / "features" / "red"
    planted.mkdir(parents=True)
    (planted / "ace.json").write_text(json.dumps({"units": [{"unit": 0, "ace": 0.9}]}))
    (planted / "curves.svg").write_text("<svg/>")
    document = json.loads((copy / "dissect.json").read_text())
    with Snapshot(copy) as files:
        assert not files.names("causal/features/red")
        with pytest.warns(UserWarning, match="blue/ace.json") as caught:  # the listed stand-in has no units
            causal = load_causal(files, document)
        with pytest.raises(RunFileError, match="not one of the run's files"):
            files.read("causal/features/red/ace.json")
    assert len(caught) == 1 and causal is None, "red's files, which run.json does not list, were read"


def test_a_symbolic_link_is_never_followed(copy, tmp_path):
    elsewhere = tmp_path / "elsewhere.json"
    shutil.copy(copy / "dissect.json", elsewhere)  # the same bytes: only the link is wrong
    (copy / "dissect.json").unlink()
    (copy / "dissect.json").symlink_to(elsewhere)
    with pytest.raises(RunFileError, match="symbolic link"):
        through_reader(copy)
    shutil.rmtree(copy / "causal")
    (copy / "causal").symlink_to(tmp_path)
    with pytest.raises(RunFileError, match="symbolic link"):
        add_causal(copy, "blue", 2)
    assert elsewhere.exists(), "a link is never followed, for reading or for removing"


def test_a_run_without_checksums_or_without_run_json_is_one_line(copy, capsys):
    identity = json.loads((copy / "run.json").read_text())
    del identity["files"]
    (copy / "run.json").write_text(json.dumps(identity))
    assert main(["report", str(copy), "--model", PLANTED_SPEC]) == 2
    one_line(capsys, "lists no checksums", "--force")
    (copy / "run.json").unlink()
    assert main(["report", str(copy), "--model", PLANTED_SPEC]) == 2
    one_line(capsys, "holds no finished run")


def test_statistics_missing_a_tensor_name_it(copy):
    path = copy / "statistics.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    dropped = sorted(k for k in tensors if k.startswith("levels/"))[0]
    del tensors[dropped]
    save_file(tensors, str(path), metadata=metadata)
    rehash(copy)
    with pytest.raises(StoredFileError, match=f"lacks tensor {dropped}"):
        Dissection.load(copy)


# ---------------------------------------------------------------------------------------------- commits


class Killed(BaseException):
    """Stands for kill -9 or Ctrl-C at one step of a commit (nothing after it runs)."""


def kill_at(monkeypatch, step: int) -> None:
    """Make the `step`-th rename of the commit machinery (atomic writes and moves) the last one that happens."""
    calls = {"n": 0}
    real = os.replace

    def replace(source, target):
        if calls["n"] == step:
            raise Killed
        calls["n"] += 1
        real(source, target)

    monkeypatch.setattr(runfiles.os, "replace", replace)
    monkeypatch.setattr("gandissect.engine.storage.os.replace", replace)


def test_a_kill_at_any_step_of_a_forced_run_leaves_the_old_run_or_the_new(finished, tmp_path, monkeypatch):
    """A forced run of other settings over a run with causal results, killed at every step of its commit in
    turn: a reader then sees exactly the old run (with its causal results) or exactly the new one (without)."""
    new = tmp_path / "new"
    dissect(new, samples=40)
    old_files, new_files = through_reader(finished), through_reader(new)
    outcomes = set()
    for step in range(40):
        run = tmp_path / f"run{step}"
        shutil.copytree(finished, run)
        d = Dissector(PlantedGenerator(), ColorSegmenter(), DissectConfig(**{**CONFIG, "samples": 40}), run,
                      progress=False, force=True)
        result = d.run()
        kill_at(monkeypatch, step)
        try:
            d.finish(result)
            killed = False
        except Killed:
            killed = True
        monkeypatch.undo()
        seen = through_reader(run)
        assert seen in (old_files, new_files), step
        outcomes.add("new" if seen == new_files else "old")
        if seen == new_files:
            assert not (run / "causal").exists() and not (run / ".partial").exists()
        if not killed:
            break
    assert outcomes == {"old", "new"} and step > 5  # both outcomes happened: the kills hit the commit itself


def test_a_kill_at_any_step_of_a_causal_commit_leaves_the_old_results_or_the_new(finished, tmp_path, monkeypatch):
    before = through_reader(finished)
    for step in range(20):
        run = Path(shutil.copytree(finished, tmp_path / f"run{step}"))
        kill_at(monkeypatch, step)
        try:
            add_causal(run, "blue", 2)
            killed = False
        except Killed:
            killed = True
        monkeypatch.undo()
        seen = through_reader(run)
        generations = {json.loads(seen[f"causal/features/blue/{n}"])["generation"] for n in ("ace.json", "extra.json")}
        assert len(generations) == 1, step  # never one file of each commit
        assert {k: v for k, v in seen.items() if not k.startswith("causal/")} == \
            {k: v for k, v in before.items() if not k.startswith("causal/")}
        if not killed:
            assert generations == {2}
            break
    assert step > 3


def test_readers_never_see_a_commit_half_done(copy):
    """One thread commits new causal results 25 times while another reads them: every read sees the two
    files of one commit."""
    done = threading.Event()
    failures: list[str] = []

    def read() -> None:
        while not done.is_set():
            try:
                seen = through_reader(copy)
            except GandissectError as error:
                failures.append(str(error))
                return
            generations = {json.loads(seen[f"causal/features/blue/{n}"])["generation"]
                           for n in ("ace.json", "extra.json")}
            if len(generations) != 1:
                failures.append(f"mixed {generations}")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for generation in range(2, 27):
            add_causal(copy, "blue", generation)
    finally:
        done.set()
        reader.join()
    assert failures == []
    assert json.loads((copy / "causal/features/blue/ace.json").read_text()) == {"generation": 26}


def test_a_journal_never_touches_files_outside_the_run(copy, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    staging = copy / ".staging"
    staging.mkdir()
    (staging / "COMMIT.json").write_text(json.dumps({"moves": [], "removes": ["../victim.txt"]}))
    with pytest.raises(RunFileError, match="not the name of a file in a run folder"):
        through_reader(copy)
    assert victim.read_text() == "keep me"


# ---------------------------------------------------------------------------------------------- dissect.json


def _set(path: list, value):
    def change(document):
        target = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


CASES = [
    (_set(["schema"], 3), "has schema 3"),
    (lambda d: d.pop("layers"), "layers is missing"),
    (_set(["layers", "features", "units", 1, "top_samples", 0], 5000),
     "units[1].top_samples[0] is 5000, outside 0..31"),
    (_set(["layers", "features", "units", 0, "concept"], "unicorn"), "units[0].concept is 'unicorn'"),
    (_set(["layers", "features", "units", 2, "threshold"], float("nan")), "units[2].threshold is nan"),
    (_set(["layers", "features", "shape"], [7, 8, 8]), "layers.features.units has 5 entries, not 7"),
    (_set(["layers", "features", "concepts", "blue", "units"], [0, 0, 1, 2, 3]), "is not an ordering"),
    (_set(["layers", "features", "units", 3, "labels", "iqr", "iou"], "high"), "labels.iqr.iou is 'high'"),
]


@pytest.mark.parametrize("change, named", CASES, ids=[named.split(" ")[0] for _, named in CASES])
def test_dissect_json_is_checked_field_by_field(finished, change, named):
    document = json.loads((finished / "dissect.json").read_text())
    check_document(document)  # what gandissect writes passes
    change(document)
    with pytest.raises(SchemaError) as error:
        check_document(document)
    assert named in str(error.value) and "\n" not in str(error.value)


def test_a_consistent_but_wrong_dissect_json_is_one_line_for_report_and_painter(copy, capsys):
    edit_json(copy, "dissect.json", _set(["layers", "features", "units", 1, "top_samples", 0], 5000))
    for argv in (["report", str(copy), "--model", PLANTED_SPEC], ["paint", str(copy), "--model", PLANTED_SPEC]):
        assert main(argv) == 2
        one_line(capsys, "top_samples[0] is 5000")


def test_no_lock_file_outlives_its_command(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["dissect", "--model", PLANTED_SPEC, "--segmenter", "color", "--layers", "features", "--samples",
                 "32", "--quantile", "0.15", "--out", str(run)]) == 0
    assert not any((run / name).exists() for name in LOCKS)
    (run / ".lock").write_text("4242")  # as a writer killed by kill -9 leaves it: the lock itself is free
    assert main(["causal", str(run), "--model", PLANTED_SPEC, "--concept", "blue", "--samples", "4"]) == 0
    assert not any((run / name).exists() for name in LOCKS)


def test_models_lists_the_fingerprints_run_json_records(painter_run, capsys):
    """`gandissect models` shows each weight file's own SHA-256 and, labelled as such, the fingerprints a run of
    the model records in run.json (of the loaded weights): the same strings as a real run's."""
    identity = json.loads((painter_run / "run.json").read_text())
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    line = next(line for line in listing.splitlines() if "run.json fingerprints" in line)
    assert f"generator {identity['generator']['sha256'][:12]}" in line
    assert f"segmenter scenes64+color {identity['segmenter']['sha256'][:12]}" in line
    assert "file sha256" in listing
