"""What the commands on a dissected run share: opening the run with its models, common flags, the report."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
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


def open_run(args: argparse.Namespace, hold: bool = True) -> OpenRun:
    """Load RUN's dissection, and its generator and segmenter (from the specs it recorded, or --model and
    --segmenter). With `hold` (commands that write into the run), take the run's lock and refuse models whose
    fingerprints differ from the run's, before any work."""
    from gandissect.core.errors import ConfigError
    from gandissect.dissection import Dissection
    from gandissect.engine.runfolder import RunFolder
    from gandissect.engine.samplepass import check_device
    from gandissect.engine.speed import channels_last
    from gandissect.engine.storage import read_json
    from gandissect.models import recorded_spec, resolve_generator, resolve_segmenter

    folder = Path(args.run)
    document = read_json(folder / "dissect.json") if (folder / "dissect.json").exists() else {}
    result = Dissection.load(folder)
    if document:
        from gandissect.viz.report.data import check_document

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
    return OpenRun(folder, result, generator, segmenter, device, holder)


def common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a finished dissection run folder")
    p.add_argument("--layer", default=None, help="a dissected layer (default: the run's first)")
    p.add_argument("--model", default=None, help="generator spec (default: the one the run recorded)")
    p.add_argument("--segmenter", default=None, help="segmenter spec (default: the one the run recorded)")
    p.add_argument("--device", default="cpu")



def rewrite_report(run: OpenRun, args: argparse.Namespace) -> None:
    """Rewrite the run's report.html with the causal results (when the run has a report)."""
    from gandissect.engine.storage import read_json
    from gandissect.viz import report

    if args.no_report or not (run.folder / "report.html").exists():
        return
    path = report.write_report(read_json(run.folder / "dissect.json"), run.generator, run.folder, device=run.device)
    print(f"report: {path}")
