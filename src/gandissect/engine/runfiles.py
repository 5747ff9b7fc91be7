"""A run folder's result files: checked on every read, changed only all at once.

A run folder is untrusted input (people hand them around), and several commands write into one. So:
- **Manifest.** run.json lists every result file with its SHA-256 (`files`). Readers see only the files it
  lists, read each one once into memory and compare its digest before using it: a changed, truncated or
  swapped file is refused in one line naming it. Names are checked (relative, no `..`, no dot-files) and
  no path through a symbolic link is followed, so a folder cannot point a reader at a file elsewhere.
- **Journalled commits.** A command writes its new files into a staging folder, then, holding the commit
  lock, writes the new run.json and a journal (`COMMIT.json`: the files to move into place and the files to
  remove) and only then moves them. Writing the journal is the moment of commit: a process killed after it
  is rolled forward by the next process that opens the folder, and one killed before it leaves the old run.
- **Readers lock out commits.** A reader holds the commit lock shared while it reads; a commit holds it
  exclusively for the moves (milliseconds). A reader therefore sees one whole run: the old one or the new.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from gandissect.engine.journal import (
    IDENTITY,
    MAX_FILE,
    STAGING,
    CommitLock,
    RunFileError,
    check_name,
    commit,
    digest_file,
    files_on_disk,
    inside,
    manifest_of,
    pending,
    recover,
    under,
)
from gandissect.engine.storage import read_json

__all__ = ["RunFileError", "RunFiles", "Snapshot", "Staged", "read_json_file"]


class RunFiles(Protocol):
    """Read access to a run's result files by relative name ("causal/layer4/tree/ace.json")."""

    root: Path

    def read(self, name: str) -> bytes: ...

    def names(self, prefix: str = "") -> list[str]: ...

class Snapshot:
    """The committed files of a run, read under the shared commit lock and checked against run.json; use as
    a context manager (the lock is held until it closes)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.lock = CommitLock(self.root)
        self.files: dict[str, str] = {}
        self.identity: dict[str, Any] = {}

    def __enter__(self) -> Snapshot:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> Snapshot:
        if not self.root.is_dir():
            raise RunFileError(f"{self.root} does not exist: run `gandissect dissect --out {self.root}` first")
        self.lock.take(exclusive=False)
        try:
            if pending(self.root):
                if self.lock.fd is None or not os.access(self.root, os.W_OK):
                    raise RunFileError(f"{self.root} holds an interrupted commit that needs write access to "
                                       "finish: open it once with permission to write")
                self.lock.release()
                self.lock.take(exclusive=True)
                recover(self.root)
                self.lock.release()
                self.lock.take(exclusive=False)
            if not (self.root / IDENTITY).is_file():
                raise RunFileError(f"{self.root} holds no finished run (no {IDENTITY}): run `gandissect dissect "
                                   f"--out {self.root}` first")
            self.identity = read_json(inside(self.root, IDENTITY))
            self.files = manifest_of(self.identity, self.root / IDENTITY)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        self.lock.release()

    def names(self, prefix: str = "") -> list[str]:
        return sorted(name for name in self.files if not prefix or under(name, [prefix]))

    def read(self, name: str) -> bytes:
        if name not in self.files:
            raise RunFileError(f"{self.root / name} is not one of the run's files (run.json does not list it)")
        path = inside(self.root, name)
        try:
            if path.stat().st_size > MAX_FILE:
                raise RunFileError(f"{path} is larger than any file gandissect writes")
            data = path.read_bytes()
        except FileNotFoundError:
            raise RunFileError(f"{path} is missing: the run folder lost a file run.json lists") from None
        except OSError as error:
            raise RunFileError(f"cannot read {path} ({error.strerror})") from None
        if hashlib.sha256(data).hexdigest() != self.files[name]:
            raise RunFileError(f"{path} was changed after gandissect wrote it (its SHA-256 is not the one run.json "
                               "records): restore it or redo the command that wrote it")
        return data


class Staged:
    """A command's new files for a finished run, staged in `.staging/` and committed together; reads see the
    staged files over the run's committed ones (outside `replaces`), so a report written before the commit
    already shows them."""

    def __init__(self, root: Path, replaces: Iterable[str]) -> None:
        self.root = root
        self.replaces = [check_name(p, "a staged update") for p in replaces]
        self.staging = root / STAGING[1]
        lock = CommitLock(root).take(exclusive=True)
        try:
            recover(root)
        finally:
            lock.release()
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.committed = self._kept()  # the writer holds the run's lock: nothing else commits meanwhile
        self.staging.mkdir()

    def path(self, name: str) -> Path:
        """Where to write the new file `name` (its folders are made)."""
        check_name(name, "a staged file")
        if not under(name, self.replaces):
            raise ValueError(f"{name} is outside what this update replaces ({', '.join(self.replaces)})")
        path = self.staging / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _staged(self) -> list[str]:
        return files_on_disk(self.staging, os.listdir(self.staging))

    def names(self, prefix: str = "") -> list[str]:
        staged = {n for n in self._staged() if not prefix or under(n, [prefix])}
        return sorted(set(self.committed.names(prefix)) | staged)

    def read(self, name: str) -> bytes:
        if name in self._staged():
            return (self.staging / name).read_bytes()
        return self.committed.read(name)

    def _kept(self) -> Snapshot:
        """The run's files this update keeps, each checked against run.json now (a damaged run gets no new
        results), as a snapshot to read them from."""
        identity = read_json(self.root / IDENTITY)
        kept = Snapshot(self.root)
        kept.identity = identity
        for name, digest in manifest_of(identity, self.root / IDENTITY).items():
            if not under(name, self.replaces):
                path = inside(self.root, name)
                if not path.is_file() or digest_file(path) != digest:
                    raise RunFileError(f"{path} was changed after gandissect wrote it (its SHA-256 is not the one "
                                       "run.json records): restore it or redo the command that wrote it")
                kept.files[name] = digest
        return kept

    def commit(self) -> None:
        """Commit the staged files, the kept ones checked once more."""
        commit(self.root, self.staging, self._kept().identity, self.replaces)


def read_json_file(files: RunFiles, name: str) -> Any:
    """A run file's JSON, naming the file in any error."""
    try:
        return json.loads(files.read(name))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunFileError(f"cannot read {name}: {error}") from None
