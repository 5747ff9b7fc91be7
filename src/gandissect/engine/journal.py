"""The low level of checked run folders (see `engine.runfiles`): file names a run folder may hold, paths
that pass through no link, the manifest in run.json, lock files, and journalled commits with their roll
forward."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gandissect.core.errors import GandissectError
from gandissect.engine.storage import read_json, write_json_atomic

IDENTITY = "run.json"
COMMIT_LOCK = ".commit.lock"
JOURNAL = "COMMIT.json"
STAGING = (".partial", ".staging")
FILES = "files"
NAME = re.compile(r"[^\x00-\x1f/\\.][^\x00-\x1f/\\]{0,199}")
DIGEST = re.compile(r"[0-9a-f]{64}")
MAX_FILE = 8 << 30


class RunFileError(GandissectError):
    """A run folder's file is missing, changed since it was written, or not one a reader may open."""


def check_name(name: Any, where: str) -> str:
    """`name` if it is a relative file name inside a run folder (parts without leading dots, no separators
    of another kind); else a one-line error saying where it came from."""
    if not isinstance(name, str) or not name or not valid(name):
        raise RunFileError(f"{where}: {name!r} is not the name of a file in a run folder")
    return name


def valid(name: str) -> bool:
    return all(NAME.fullmatch(part) for part in name.split("/"))


def under(name: str, prefixes: Iterable[str]) -> bool:
    """Whether `name` is one of `prefixes` or inside one of them (as folders)."""
    return any(name == p or name.startswith(p.rstrip("/") + "/") for p in prefixes)


def digest_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def inside(root: Path, name: str, link_ok: bool = False) -> Path:
    """root/name, refusing a path that passes through a symbolic link (or a part that is not a folder);
    with `link_ok`, the last part may be a link (to be removed, never followed)."""
    path = root
    parts = name.split("/")
    for i, part in enumerate(parts):
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return root.joinpath(*parts)
        if stat.S_ISLNK(mode) and not (link_ok and i == len(parts) - 1):
            raise RunFileError(f"{path} is a symbolic link: a run folder's files are read only where they are")
        if i < len(parts) - 1 and not stat.S_ISDIR(mode):
            raise RunFileError(f"{path} is not a folder")
    return path


def files_on_disk(root: Path, prefixes: Iterable[str]) -> list[str]:
    """The result files now under `prefixes` in `root` (links are listed, never followed)."""
    found = []
    for prefix in prefixes:
        path = root / prefix
        if path.is_symlink() or path.is_file():
            found.append(prefix)
        elif path.is_dir():
            for folder, dirs, names in os.walk(path):
                dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
                relative = Path(folder).relative_to(root).as_posix()
                found += [f"{relative}/{n}" for n in names]
                found += [f"{relative}/{d}" for d in os.listdir(folder)
                          if os.path.islink(os.path.join(folder, d)) and os.path.isdir(os.path.join(folder, d))]
    return sorted(name for name in set(found) if valid(name))


def manifest_of(identity: Any, where: Path) -> dict[str, str]:
    """The checked `files` of a run.json document."""
    files = identity.get(FILES) if isinstance(identity, dict) else None
    if not isinstance(files, dict):
        raise RunFileError(f"{where} lists no checksums of the run's files (a run from gandissect before "
                           "checked run folders, or not a gandissect run): redo it with `gandissect dissect --force`")
    for name, digest in files.items():
        check_name(name, f"{where}: {FILES}")
        if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
            raise RunFileError(f"{where}: {FILES}.{name} is not a SHA-256 digest")
    return files


def flock_file(path: Path, operation: int, create: bool = True) -> int:
    """An open descriptor of lock file `path` (made when missing and `create`) holding `operation` (a flock
    LOCK_* value). A holder that releases an exclusive lock removes its file, so a lock taken on a file that
    was removed meanwhile is dropped and taken again on the file now there."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT if create else os.O_RDONLY, 0o644)
        try:
            fcntl.flock(fd, operation)
            held, now = os.fstat(fd), os.stat(path)
            if (held.st_ino, held.st_dev) == (now.st_ino, now.st_dev):
                return fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def unlock_file(path: Path, fd: int, remove: bool) -> None:
    """Release a lock from `flock_file`; the holder of an exclusive lock removes the file first (so no lock
    file outlives its use), a shared holder leaves it."""
    if remove:
        with contextlib.suppress(OSError):
            os.unlink(path)
    os.close(fd)


class CommitLock:
    """The lock readers hold shared and commits hold exclusively (see the module). In a folder where it
    cannot be created (read-only), readers go without it: nothing can commit there either."""

    def __init__(self, root: Path) -> None:
        self.path = root / COMMIT_LOCK
        self.fd: int | None = None
        self.exclusive = False

    def take(self, exclusive: bool) -> CommitLock:
        self.exclusive = exclusive
        try:
            self.fd = flock_file(self.path, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except OSError as error:
            if error.errno not in (errno.EACCES, errno.EROFS, errno.EPERM) or exclusive:
                raise RunFileError(f"cannot lock {self.path} ({error.strerror})") from None
            try:
                self.fd = flock_file(self.path, fcntl.LOCK_SH, create=False)
            except OSError:
                self.fd = None
        return self

    def release(self) -> None:
        if self.fd is not None:
            unlock_file(self.path, self.fd, remove=self.exclusive)
            self.fd = None


def pending(root: Path) -> list[Path]:
    """Staging folders whose commit was decided (their journal is written) but not finished."""
    return [root / name for name in STAGING if (root / name / JOURNAL).is_file()]


def roll_forward(root: Path, staging: Path) -> None:
    """Finish a decided commit: move the staged files into place, remove the old ones, put the new run.json
    last, drop the staging folder. Every step can be repeated, so a second kill is harmless too."""
    journal = read_json(staging / JOURNAL)
    moves = journal.get("moves") if isinstance(journal, dict) else None
    removes = journal.get("removes") if isinstance(journal, dict) else None
    if not isinstance(moves, list) or not isinstance(removes, list):
        raise RunFileError(f"{staging / JOURNAL} is not a commit journal: remove {staging} by hand")
    for name in moves:
        source = inside(staging, check_name(name, str(staging / JOURNAL)))
        if source.is_file():
            target = inside(root, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
    for name in removes:
        target = inside(root, check_name(name, str(staging / JOURNAL)), link_ok=True)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
        _prune(root, target.parent)
    if (staging / IDENTITY).is_file():
        os.replace(staging / IDENTITY, root / IDENTITY)
    shutil.rmtree(staging, ignore_errors=True)


def _prune(root: Path, folder: Path) -> None:
    """Remove folders left empty by removed files, up to the run folder."""
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def recover(root: Path) -> None:
    """Roll forward any decided commit (the caller holds the commit lock exclusively)."""
    for staging in pending(root):
        roll_forward(root, staging)


def commit(root: Path, staging: Path, identity: dict[str, Any], replaces: Iterable[str]) -> dict[str, str]:
    """Commit the files staged in `staging`: each gets its SHA-256 in the new run.json (`identity` plus
    `files`); files now under `replaces` that were not staged are removed, and the manifest keeps the old
    entries outside `replaces`. Returns the new manifest."""
    replaces = list(replaces)
    staged = [name for name in files_on_disk(staging, os.listdir(staging)) if under(name, replaces)]
    old = identity.get(FILES) if isinstance(identity.get(FILES), dict) else {}
    manifest = {name: digest for name, digest in old.items() if not under(name, replaces)}
    manifest.update({name: digest_file(staging / name) for name in staged})
    removes = [name for name in files_on_disk(root, replaces) if name not in manifest]
    lock = CommitLock(root).take(exclusive=True)
    try:
        recover(root)
        write_json_atomic(staging / IDENTITY, {**identity, FILES: dict(sorted(manifest.items()))})
        write_json_atomic(staging / JOURNAL, {"moves": staged, "removes": removes})
        roll_forward(root, staging)
    finally:
        lock.release()
    return manifest

