"""Run folders changed the way someone handing one over could: files edited and run.json's checksums updated
to match (a consistent folder that must still be refused for what it holds, not for its checksums); and a
fixture's plain folder read as a run's files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from gandissect.engine.journal import check_name, files_on_disk, inside

RESULTS = ("dissect.json", "dissect.csv", "statistics.safetensors", "report.html")


def rehash(run: Path, add: bool = False) -> None:
    """Set every checksum in run.json to the file now on disk; with `add`, list every result file and every
    file under causal/ too (as if the commands had written them), and drop those no longer there."""
    identity = json.loads((run / "run.json").read_text())
    names = set(identity["files"])
    if add:
        names |= {name for name in RESULTS if (run / name).is_file()}
        names |= {p.relative_to(run).as_posix() for p in (run / "causal").rglob("*") if p.is_file()}
        names = {name for name in names if (run / name).is_file()}
    identity["files"] = {name: hashlib.sha256((run / name).read_bytes()).hexdigest() for name in sorted(names)}
    (run / "run.json").write_text(json.dumps(identity))


def edit_json(run: Path, name: str, change) -> None:
    """Apply `change` (which edits the document in place) to the JSON document `name` of `run`, then rehash."""
    path = run / name
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))
    rehash(run)


class FolderFiles:
    """A test fixture's folder as a run's files (`engine.runfiles.RunFiles`), read as they are, unchecked:
    what the report reads from a run, without the manifest a real run has."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def names(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        found = files_on_disk(self.root, [prefix] if prefix else os.listdir(self.root))
        return [name for name in found if (self.root / name).is_file()]

    def read(self, name: str) -> bytes:
        return inside(self.root, check_name(name, str(self.root))).read_bytes()
