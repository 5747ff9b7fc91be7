"""Serving the painter with uvicorn: on loopback by default, on a port chosen here (0: any free one), so that
the URL is known before the server starts; in a background thread for tests and benchmarks.

    with ServerThread(create_app(painter)) as server:
        httpx.get(server.url + "/api/info")
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from gandissect.core.errors import ConfigError

LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
STARTUP_TIMEOUT = 20.0


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_warning(host: str) -> str | None:
    """A warning for a host that other machines can reach; None for a loopback host."""
    if is_loopback(host):
        return None
    return (f"warning: binding to {host} lets other machines on the network use the painter (and run the model); "
            "it has no authentication. Use --host 127.0.0.1 unless you mean it.")


LISTEN_BACKLOG = 128


def open_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (port 0: a free one) and listening, so that connections made as soon as
    its URL is printed wait for the server instead of being refused; a one-line error if taken."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must lie in 0..65535; got {port}")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP: asyncio then sets TCP_NODELAY
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as error:
        raise ConfigError(f"cannot listen on {host}:{port} ({error.strerror or error}): pick another --port, or 0 "
                          "for any free one") from None
    return sock


def url_of(sock: socket.socket) -> str:
    """The http URL a bound socket serves (on a wildcard address, the loopback URL a browser here can open)."""
    host, port = sock.getsockname()[:2]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _config(app: Any) -> uvicorn.Config:
    return uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")


def serve(app: Any, sock: socket.socket) -> None:
    """Serve `app` on the bound socket until Ctrl-C."""
    uvicorn.Server(_config(app)).run(sockets=[sock])


class ServerThread:
    """A uvicorn server on 127.0.0.1 and a free port (or `host`, `port`) in a daemon thread; `url` once entered."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = open_socket(host, port)
        self.url = url_of(self.sock)
        self.server = uvicorn.Server(_config(app))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the painter's server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
