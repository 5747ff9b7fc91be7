"""What the commands on a dissected run share: opening the run with its models, common flags, the report."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

HELD: list[Any] = []  # run folders whose lock this command holds; `main` releases them when it ends


def release_held() -> None:
    """Release the locks taken by `open_run` (a command's process may go on: tests, notebooks)."""
    while HELD:
        HELD.pop().close()


@dataclass
class OpenRun:
    """A finished dissection with the generator and segmenter it was made with."""

    folder: Path
    result: Any
    generator: torch.nn.Module
    segmenter: Any
    device: torch.device
    holder: Any = None
    document: dict = field(default_factory=dict)
    has_report: bool = False


def open_run(args: argparse.Namespace, hold: bool = True) -> OpenRun:
    """Load RUN's dissection, and its generator and segmenter (from the specs it recorded, or --model and
    --segmenter). With `hold` (commands that write into the run), take the run's lock and refuse models whose
    fingerprints differ from the run's, before any work."""
    from gandissect.core.errors import ConfigError
    from gandissect.dissection import Dissection
    from gandissect.dissection.document import check_document
    from gandissect.engine.runfiles import Snapshot, read_json_file
    from gandissect.engine.runfolder import RunFolder
    from gandissect.engine.samplepass import check_device
    from gandissect.engine.speed import channels_last
    from gandissect.models import recorded_spec, resolve_generator, resolve_segmenter

    folder = Path(args.run)
    with Snapshot(folder) as files:
        document = read_json_file(files, "dissect.json") if "dissect.json" in files.names() else {}
        result = Dissection.load(files)
        has_report = "report.html" in files.names()
    if document:
        check_document(document)  # the report is rewritten at the end: refuse a broken document before the work
    model = recorded_spec(document, "model", args.model, "--model")
    segmenter = recorded_spec(document, "segmenter", args.segmenter, "--segmenter")
    if not model or not segmenter:
        raise ConfigError(f"{folder} records no model or segmenter: pass --model and --segmenter")
    device = check_device(args.device)
    generator, segmenter = resolve_generator(model, device), resolve_segmenter(segmenter, device)
    rank = int(os.environ.get("RANK", "0") or 0)  # under torchrun only rank 0 writes, and holds the lock
    holder = RunFolder(folder, (), rank=rank).hold(generator, segmenter) if hold else None
    if holder is not None:
        HELD.append(holder)
    channels_last(generator, segmenter)
    return OpenRun(folder, result, generator, segmenter, device, holder, document, has_report)


def spec_help(what: str, default: str) -> str:
    """The help of a --model or --segmenter flag: what it is, its default, and every form a spec takes."""
    from gandissect.models import SPEC_FORMS

    return f"the {what} (default: {default}); a spec is {SPEC_FORMS}"


def common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a finished dissection run folder")
    p.add_argument("--layer", default=None, help="a dissected layer (default: the run's first)")
    p.add_argument("--model", default=None, help=spec_help("generator", "the one the run recorded"))
    p.add_argument("--segmenter", default=None, help=spec_help("segmenter", "the one the run recorded"))
    p.add_argument("--device", default="cpu")



def staged_update(run: OpenRun, args: argparse.Namespace, replaces: list[str]) -> Any:
    """The update a causal command stages its files in (rank 0, which holds the run): it replaces
    `replaces`, and report.html when the run has one that is rewritten (not --no-report)."""
    report = run.has_report and not args.no_report
    return run.holder.update([*replaces, *(["report.html"] if report else [])])


def commit_update(run: OpenRun, update: Any) -> None:
    """Write the report (when the update replaces it) from the staged and committed files, then commit all
    of the command's files at once."""
    from gandissect.viz import report

    if "report.html" in update.replaces:
        report.write_report(run.document, run.generator, update.path("report.html").parent, files=update,
                            device=run.device)
    update.commit()
    if "report.html" in update.replaces:
        print(f"report: {run.folder / 'report.html'}")
