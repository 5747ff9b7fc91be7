"""Run folders changed the way someone handing one over could: files edited and run.json's checksums updated
to match (a consistent folder that must still be refused for what it holds, not for its checksums)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

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
