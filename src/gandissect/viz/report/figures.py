"""Titles and captions of a concept's causal figures, from the files `gandissect causal` writes beside them.

- curves.svg (with curves.json): the top N units of each ranking switched off, and N random units;
- ablation-strip.png: pictures of the first of those samples as the top N units of one ranking are switched
  off (the removal ranking for a schema-2 ace.json; older runs ablated the ACE ranking);
- context.svg (with context.json): the top insertion units (older runs: ACE) switched on at every location.

Each caption says what is drawn, on which samples and seed, and what the axes are; a figure of another name
keeps its file name as its caption. The JSON files are read defensively: a missing key leaves its words out.
"""

from __future__ import annotations

import json
from typing import Any

from gandissect.engine.runfiles import RunFiles
from gandissect.viz.report.evidence import integer, number

ORDER = ("curves.svg", "ablation-strip.png", "context.svg")
RANDOM = "random"
RANKINGS = {
    "removal": "removal (each unit switched off alone removes the most {concept})",
    "insertion": "insertion (each unit switched on alone adds the most {concept})",
    "ace": "ACE (switched on minus switched off)",
    "ACE": "ACE (switched on minus switched off)",
    "IoU": "IoU (the dissection's overlap with {concept})",
    "alpha": "alpha (strengths fitted by optimisation)",
}


def _read(files: RunFiles, name: str) -> dict[str, Any]:
    """A JSON object from the run's files; {} when it is not there or not an object."""
    if name not in files.names(name):
        return {}
    try:
        found = json.loads(files.read(name))
    except (UnicodeDecodeError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _listed(values: list[Any]) -> str:
    return ", ".join(str(v) for v in values)


def _samples(curve: dict[str, Any]) -> str:
    samples, seed = integer(curve.get("samples")), integer(curve.get("seed"))
    return (f"{samples} held-out samples" if samples is not None else "held-out samples") + \
        (f" (seed {seed})" if seed is not None else "")


def _curves(concept: str, layer: str, curves: dict[str, Any]) -> str:
    kept = {name: c for name, c in curves.items() if isinstance(c, dict)}
    rankings = [name for name in kept if name != RANDOM]
    named = _listed(RANKINGS.get(n, n).format(concept=concept) for n in rankings) or "each ranking"
    banded = any(_finite(kept[n].get("removed_low")) for n in rankings)
    first = next(iter(kept.values()), {})
    missing = max((m for c in kept.values() if isinstance(c.get("missing"), list)
                   for m in c["missing"] if integer(m) is not None), default=0)
    parts = [f"Each coloured line switches off (sets to 0 everywhere in {layer}) the top N units of one ranking: "
             f"{named}. x axis: N, the number of units switched off; y axis: the fraction of {concept} pixels "
             f"removed (solid{', with its 95% interval shaded' if banded else ''}); dashed: the share of the "
             f"other concepts' pixels kept. On {_samples(first)}"
             f"{f', up to {missing} unreadable by the segmenter and left out' if missing else ''}."]
    random = kept.get(RANDOM)
    if random is not None:
        draws = integer(random.get("draws"))
        over = f"{draws} draws" if draws else "the draws"
        band = _finite(random.get("removed_low"))
        parts.append(f"The grey band is N units drawn at random: 5th to 95th percentile over {over}, their mean "
                     "dashed; a line above the band removes more than random units do." if band else
                     f"The random line is N units drawn at random (mean over {over}).")
    return " ".join(parts)


def _counts(counts: list[int]) -> str:
    if not counts:
        return ""
    if counts[0] == 0:
        return f" (N = 0, the unedited image, then {_listed(counts[1:])})" if len(counts) > 1 else " (N = 0)"
    return f" (N = {_listed(counts)})"


def _strip(concept: str, layer: str, ranking: str | None, curves: dict[str, Any]) -> str:
    curve = curves.get(ranking or "") if isinstance(curves.get(ranking or ""), dict) else {}
    counts = [n for n in curve.get("counts", []) if integer(n) is not None] if isinstance(curve.get("counts"),
                                                                                           list) else []
    which = f"the {ranking} ranking for {concept}" if ranking else f"a ranking of units for {concept}"
    seed = integer(curve.get("seed"))
    return (f"Each row switches off (sets to 0 everywhere in {layer}) the top N units of {which}, N written at the "
            f"row's left{_counts(counts)}; each column is one held-out sample, the "
            f"same in every row{f': the first samples of the curves (seed {seed})' if seed is not None else ''}.")


def _context(concept: str, layer: str, ranking: str | None, context: dict[str, Any]) -> str:
    units = context.get("units") if isinstance(context.get("units"), list) else []
    patch, samples, seed = (integer(context.get(k)) for k in ("patch", "samples", "seed"))
    which = f"{len(units)} " if units else ""
    listed = f" ({_listed(units)})" if units else ""
    ranked = f" by {ranking}" if ranking else ""
    where = f"a {patch}×{patch} patch of cells" if patch else "a patch of cells"
    on = f" on {samples} samples" if samples is not None else ""
    return (f"The top {which}units{ranked} for {concept}{listed} are switched on together (set to a high "
            f"activation) in {where} at every location of {layer}. x axis: the concept the segmenter saw at "
            f"the location before the insertion (n: locations tried); y axis: the mean number of {concept} "
            f"pixels gained near it (below 0: lost){on}{f' (seed {seed})' if seed is not None else ''}.")


def figure_notes(files: RunFiles, folder: str, name: str, concept: str, layer: str, schema: int | None
                 ) -> tuple[str, str]:
    """(title, caption) of the figure `name` in a concept's causal `folder` of the run's `files`, whose
    ace.json has `schema`
    (0 for an older file, None for none: the rankings the strip and the context used are then unknown);
    ("", file name) for a figure of another name."""
    strip, inserted = ("removal", "insertion") if schema and schema >= 2 else ("ACE", "ACE") if schema == 0 \
        else (None, None)
    if name == "curves.svg":
        return (f"Ablation curves: switching off the top units for {concept}",
                _curves(concept, layer, _read(files, f"{folder}/curves.json")))
    if name == "ablation-strip.png":
        return (f"Switching off the top {strip + ' ' if strip else ''}units for {concept}",
                _strip(concept, layer, strip, _read(files, f"{folder}/curves.json")))
    if name == "context.svg":
        return (f"Where inserting {concept} units draws {concept}",
                _context(concept, layer, inserted, _read(files, f"{folder}/context.json")))
    return "", name


def order(names: list[str]) -> list[str]:
    """The known figures in reading order (curves, strip, context), then the others by name."""
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def _finite(values: Any) -> bool:
    """Whether `values` is a list holding a finite number."""
    return isinstance(values, list) and any(number(v) is not None for v in values)
