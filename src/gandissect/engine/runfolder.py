"""Run folders that never lose or mix results.

A run folder holds one finished run's results (for a dissection: dissect.json, dissect.csv,
statistics.safetensors, report.html, run.json) and, while a run is under way, a `.partial/` folder with
the run's identity (`run.json`: settings and fingerprints of the generator and segmenter) and its
checkpoints. Rules:
- a folder holding a finished or unfinished run is refused unless `resume` or `force` is given;
- `resume` continues an unfinished run only if its identity is the same (the fields that differ are
  named); a finished run is not resumed (nothing to do) and needs `force` to be redone;
- `force` starts over, but the old results stay until the new ones are complete, and `commit` replaces
  them all at once (a journalled commit, see `engine.runfiles`): old results the new run did not produce,
  causal results among them, go in the same commit;
- every result file's SHA-256 is in run.json, and readers check it (`engine.runfiles.Snapshot`);
- one writing process at a time: an exclusive lock on `.lock`, which holds the writer's pid and is removed
  when the writer ends (a lock left by kill -9 is released by the system and taken over by the next one);
- temporary files left by killed writes and stale checkpoints are cleaned up when a run starts.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gandissect.core.errors import GandissectError
from gandissect.engine.journal import CommitLock, commit, flock_file, manifest_of, recover, unlock_file
from gandissect.engine.runfiles import Staged
from gandissect.engine.storage import read_json, write_json_atomic

PARTIAL = ".partial"
IDENTITY = "run.json"
LOCK = ".lock"


class RunFolderError(GandissectError):
    """The run folder is in the way: it holds another run, is locked, is a file, or cannot be written."""


def fingerprint(obj: Any) -> dict[str, Any]:
    """What identifies a generator or segmenter: its class, and a SHA-256 of its parameters and buffers
    (and, for a segmenter, its concepts and categories). Two runs mix only if these are equal."""
    parts: list[Any] = [obj] + [p for p in getattr(obj, "parts", []) if p is not obj]
    digest = hashlib.sha256()
    tensors = 0
    for part in parts:
        if isinstance(part, nn.Module):
            for key, tensor in sorted(part.state_dict().items()):
                digest.update(key.encode())
                digest.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
                digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
                tensors += 1
    record: dict[str, Any] = {"class": f"{type(obj).__module__}.{type(obj).__qualname__}",
                              "tensors": tensors, "sha256": digest.hexdigest()}
    if hasattr(obj, "concepts"):
        record["concepts"] = list(obj.concepts)
        record["categories"] = list(getattr(obj, "categories", []))
    return record


def identity_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The fields that differ between two run identities, dotted, with both values when they are short."""
    names = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            names += [f"{key}.{name}" for name in identity_differences(a, b)]
        elif a != b:
            short = all(not isinstance(v, (list, dict)) and len(str(v)) <= 24 for v in (a, b))
            names.append(f"{key}: {a} then, {b} now" if short else key)
    return names


class RunFolder:
    """The files of one run and the rules above; `open` before work, `commit` at the end, `close` always."""

    def __init__(self, path: str | Path, results: Iterable[str], rank: int = 0, world: int = 1) -> None:
        self.path = Path(path)
        self.results = tuple(results)
        self.rank, self.world = rank, world
        self._lock: int | None = None

    @property
    def partial(self) -> Path:
        return self.path / PARTIAL

    def checkpoint_path(self, rank: int | None = None) -> Path:
        rank = self.rank if rank is None else rank
        return self.partial / (f"checkpoint-rank{rank}.safetensors" if self.world > 1 else "checkpoint.safetensors")

    def check_writable(self) -> None:
        """Refuse, in one line, an output path that is a file or a folder that cannot be written."""
        existing = self.path
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise RunFolderError(f"--out {self.path}: {existing} is a file, not a folder")
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise RunFolderError(f"--out {self.path}: cannot write in {existing}")

    def finished(self) -> bool:
        return (self.path / IDENTITY).exists()

    def open(self, identity: dict[str, Any], resume: bool = False, force: bool = False) -> bool:
        """Take the folder for a run of `identity` (rank 0 only; other ranks wait for it). Returns whether an
        unfinished run of the same identity is resumed."""
        if resume and force:
            raise RunFolderError("pass either --resume or --force, not both")
        self.check_writable()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunFolderError(f"--out {self.path}: cannot create it ({error.strerror})") from None
        self._take_lock()
        try:
            return self._open_locked(identity, resume, force)
        except BaseException:
            self.close()
            raise

    def hold(self, generator: Any, segmenter: Any = None) -> RunFolder:
        """Take the finished run for a command that adds results to it (the causal tools): its one-process
        lock (rank 0, which writes), and a check that `generator` and `segmenter` are the ones it was made with
        (the fingerprints in run.json; a command without a segmenter passes None), so results of different
        models never mix in one folder; an interrupted commit is finished first."""
        if not self.path.is_dir():
            raise RunFolderError(f"{self.path} does not exist: run `gandissect dissect --out {self.path}` first")
        if self.rank == 0:
            self._take_lock()
            try:
                self._recover()
            except BaseException:
                self.close()
                raise
        try:
            stored = read_json(self.path / IDENTITY)
            manifest_of(stored, self.path / IDENTITY)
        except (OSError, ValueError, GandissectError) as error:
            self.close()
            if isinstance(error, GandissectError):
                raise
            raise RunFolderError(f"{self.path} holds no readable {IDENTITY} ({error}): not a finished run") from None
        for key, part in (("generator", generator), ("segmenter", segmenter)):
            if part is None:
                continue
            differences = identity_differences({key: stored.get(key)}, {key: fingerprint(part)})
            if differences:
                self.close()
                flag = "--model" if key == "generator" else "--segmenter"
                raise RunFolderError(f"the {key} is not the one {self.path} was dissected with "
                                     f"({', '.join(differences)}): give the run's own {key} (or leave {flag} out)")
        return self

    def update(self, replaces: Iterable[str]) -> Staged:
        """Stage new files for this held run (rank 0): they replace everything under `replaces` when the
        returned update commits, and nothing before."""
        assert self._lock is not None, "hold() the run first"
        return Staged(self.path, replaces)

    def _recover(self) -> None:
        lock = CommitLock(self.path).take(exclusive=True)
        try:
            recover(self.path)
        finally:
            lock.release()

    def _open_locked(self, identity: dict[str, Any], resume: bool, force: bool) -> bool:
        self._recover()
        self._clean_temporary_files()
        unfinished = (self.partial / IDENTITY).exists()
        if not (resume or force):
            held = [name for name in (*self.results, IDENTITY) if (self.path / name).exists()]
            if unfinished:
                held.append(f"{PARTIAL}/ (an unfinished run)")
            if held:
                raise RunFolderError(f"{self.path} already holds a run ({', '.join(held)}); pass --resume to "
                                     "continue an unfinished run or --force to replace it")
        if resume:
            if unfinished:
                stored = read_json(self.partial / IDENTITY)
                changed = identity_differences(stored, identity)
                if changed:
                    raise RunFolderError(f"cannot resume {self.path}: its run used other settings or models "
                                         f"({', '.join(changed)}); pass --force to replace it")
                return True
            if self.finished():
                raise RunFolderError(f"{self.path} holds a finished run: nothing to resume; pass --force to redo it "
                                     "(`gandissect report` rewrites its report)")
        if self.partial.exists():
            shutil.rmtree(self.partial)
        self.partial.mkdir()
        write_json_atomic(self.partial / IDENTITY, identity)
        return False

    def stage(self, name: str) -> Path:
        """Where a result file of the new run is written before `commit`."""
        return self.partial / name

    def commit(self, facts: dict[str, Any] | None = None) -> list[Path]:
        """Replace the run's results by the staged ones, all at once, with the identity (plus `facts` about
        how the run went, such as the images it clipped) and its manifest; old results the run did not make
        and the partial folder with its checkpoints go too. Returns the result paths."""
        identity = {**read_json(self.partial / IDENTITY), **(facts or {})}
        manifest = commit(self.path, self.partial, identity, self.results)
        return [self.path / name for name in manifest]

    def close(self) -> None:
        if self._lock is not None:
            unlock_file(self.path / LOCK, self._lock, remove=True)
            self._lock = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _take_lock(self) -> None:
        try:
            fd = flock_file(self.path / LOCK, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EACCES):
                try:
                    holder = (self.path / LOCK).read_text(errors="replace").strip() or "unknown"
                except OSError:
                    holder = "unknown"
                raise RunFolderError(f"{self.path} is in use by another gandissect process (pid {holder}); "
                                     "wait for it to finish or choose another --out") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock = fd

    def _clean_temporary_files(self) -> None:
        """Remove what killed atomic writes of this run folder's own files left behind (`.<name>.<random>`
        beside their target); a user's other files are never touched."""
        for name in (*self.results, IDENTITY):
            for path in self.path.glob(f".{name}.*"):
                if path.is_file():
                    path.unlink(missing_ok=True)
        if self.partial.is_dir():
            for path in self.partial.glob(".*"):
                if path.is_file():
                    path.unlink(missing_ok=True)
