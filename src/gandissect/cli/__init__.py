"""The `gandissect` command line: dissect, report, edit, causal, list models and layers, sample, train, ship.

Errors a user can fix (`GandissectError`) print one line and exit 2; Ctrl-C and environment failures (disk
full, a read-only folder) print one line and keep the last checkpoint; anything else is a bug and keeps its
traceback."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def build_parser() -> argparse.ArgumentParser:
    from gandissect.cli import artifacts, causal, dissect, edit, labels, models, paint, scenes

    parser = argparse.ArgumentParser(prog="gandissect", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (dissect, edit, causal, labels, artifacts, models, scenes, paint):
        module.register(sub)
    return parser


def interrupted(args: argparse.Namespace | None) -> str:
    """What a Ctrl-C left behind, for the command that was running (None: before its arguments were read)."""
    command = getattr(args, "command", None)
    if command == "dissect" and getattr(args, "out", None):
        partial = Path(args.out) / ".partial"
        if any(partial.glob("checkpoint*.safetensors")):
            return f"finished batches are kept in {partial}: rerun with --resume to continue"
        return "stopped before a batch was finished: there is nothing to resume"
    if command == "train" and getattr(args, "out", None):
        checkpoint = Path(args.out) / "checkpoint.pt"
        if checkpoint.is_file():
            return f"the last checkpoint is kept ({checkpoint}): rerun the same command to continue"
        return "stopped before the first checkpoint: there is nothing to resume"
    if command in ("causal", "causal-labels", "artifacts", "report"):
        return "the run folder is as it was (a command's results are committed together, at its end)"
    return "stopped"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; see the module for how it ends."""
    args = None
    try:
        from gandissect.core.errors import GandissectError

        parser = build_parser()
        args = parser.parse_args(argv)
        return _run(args, GandissectError)
    except KeyboardInterrupt:
        prefix = f"gandissect {args.command}" if args is not None else "gandissect"
        print(f"{prefix}: interrupted; {interrupted(args)}", file=sys.stderr)
        return 130
    finally:
        runs = sys.modules.get("gandissect.cli.runs")  # loaded by the commands that take a run's lock
        if runs is not None:
            runs.release_held()


def _run(args: argparse.Namespace, user_error: type[Exception]) -> int:
    handler: Callable[[argparse.Namespace], int] = args.handler
    prefix = f"gandissect {args.command}"
    try:
        return handler(args)
    except user_error as error:
        if os.environ.get("GANDISSECT_DEBUG"):
            raise
        print(f"{prefix}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in ENVIRONMENT_ERRNOS or os.environ.get("GANDISSECT_DEBUG"):
            raise
        where = f" ({error.filename})" if error.filename else ""
        print(f"{prefix}: error: {error.strerror}{where}; the last checkpoint is kept: free the problem and rerun "
              "with --resume", file=sys.stderr)
        return 1
