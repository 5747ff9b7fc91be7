"""`gandissect paint RUN`: the painter on a finished dissection, served on this machine."""

from __future__ import annotations

import argparse
import sys

from gandissect.cli.runs import spec_help


def _add_paint(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("paint", help="paint with units: a local web app that adds or removes concepts where you draw")
    p.add_argument("run", help="a finished dissection run folder (causal unit sets are used where they exist)")
    p.add_argument("--model", default=None, help=spec_help("generator", "the one the run recorded"))
    p.add_argument("--segmenter", default=None, help=spec_help("segmenter for concept pixel counts", "the run's"))
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="a host name the painter answers to besides localhost, 127.0.0.1, ::1 and --host "
                        "(repeatable; requests addressed to any other name are refused)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: small edits run fastest single-threaded, one at a time)")
    p.set_defaults(handler=_run_paint)


def _run_paint(args: argparse.Namespace) -> int:
    import torch

    from gandissect.core.errors import ConfigError
    from gandissect.engine.samplepass import check_device
    from gandissect.viz.painter.app import create_app
    from gandissect.viz.painter.loader import open_painter
    from gandissect.viz.painter.server import bind_warning, open_socket, serve, url_of

    if args.threads < 1:
        raise ConfigError(f"--threads must be at least 1; got {args.threads}")
    torch.set_num_threads(args.threads)
    painter = open_painter(args.run, args.model, args.segmenter, check_device(args.device))
    sock = open_socket(args.host, args.port)
    warning = bind_warning(args.host)
    if warning:
        print(warning, file=sys.stderr)
    print(f"painter on {painter.info()['run']} ({painter.info()['model']}): {url_of(sock)}/  (Ctrl-C to stop)",
          flush=True)
    try:
        serve(create_app(painter, allowed_hosts=(args.host, *args.allow_host)), sock)
    except KeyboardInterrupt:
        print("painter stopped", file=sys.stderr)
    finally:
        sock.close()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    _add_paint(sub)
