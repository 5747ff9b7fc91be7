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

from gandissect.cli import artifacts, causal, dissect, edit, labels, models, paint, runs, scenes

ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gandissect", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (dissect, edit, causal, labels, artifacts, models, scenes, paint):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from gandissect.core.errors import GandissectError

    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    prefix = f"gandissect {args.command}"
    try:
        return handler(args)
    except GandissectError as error:
        if os.environ.get("GANDISSECT_DEBUG"):
            raise
        print(f"{prefix}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted; finished batches are kept in a checkpoint: rerun with --resume to continue",
              file=sys.stderr)
        return 130
    except OSError as error:
        if error.errno not in ENVIRONMENT_ERRNOS or os.environ.get("GANDISSECT_DEBUG"):
            raise
        where = f" ({error.filename})" if error.filename else ""
        print(f"{prefix}: error: {error.strerror}{where}; the last checkpoint is kept: free the problem and rerun "
              "with --resume", file=sys.stderr)
        return 1
    finally:
        runs.release_held()
