"""An ASGI guard in front of the painter's routes: a request with a body must be JSON and small.

Requests that send a body (POST, PUT, PATCH) are refused with 415 unless their Content-Type is
application/json, and with 413 when their Content-Length, or the bytes actually streamed, exceed the limit.
The body is read here (at most `limit` bytes) and handed on whole, so the limit holds whatever the client
declares. Answers are JSON `{"detail": "..."}` like every other error.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

BODY_LIMIT = 256 * 1024
WITH_BODY = {"POST", "PUT", "PATCH"}


async def send_error(send: Send, status: int, detail: str) -> None:
    """A complete JSON error response."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def content_type(scope: Scope) -> str:
    """The request's media type, lower case, without parameters ('' when absent)."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-type":
            return value.decode("latin-1").split(";")[0].strip().lower()
    return ""


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length; -1 when it is not a number, None when absent."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else -1
    return None


class BodyGuard:
    """Refuse bodies that are not JSON (415) or are larger than `limit` bytes (413)."""

    def __init__(self, app: ASGIApp, limit: int = BODY_LIMIT) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WITH_BODY:
            await self.app(scope, receive, send)
            return
        if content_type(scope) != "application/json":
            await send_error(send, 415, "send the request body as JSON, with Content-Type: application/json")
            return
        length = declared_length(scope)
        if length is not None and length < 0:
            await send_error(send, 400, "Content-Length must be a number of bytes")
            return
        if length is not None and length > self.limit:
            await send_error(send, 413, f"the request body is {length} bytes; at most {self.limit} are accepted")
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                await send_error(send, 413, f"the request body is over {self.limit} bytes, the most accepted")
                return
            more = bool(message.get("more_body", False))
        await self.app(scope, _replay(bytes(body), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the whole body once, then waits on the client as the original would."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
APP_POLICY = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
              "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
REPORT_POLICY = ("default-src 'none'; img-src data: blob:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
                 "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")  # the report is self-contained


def host_name(scope: Scope) -> str | None:
    """The Host header's name without its port, lower case ('[::1]:8000' -> '::1'); None when absent."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"host":
            text = value.decode("latin-1").strip().lower()
            if text.startswith("["):
                return text[1:text.find("]")] if "]" in text else text
            return text.rsplit(":", 1)[0] if text.count(":") == 1 else text
    return None


class HostGuard:
    """Answer only requests addressed to this painter by name (the Host header): loopback names and the
    `allowed` ones. A web page elsewhere that rebinds its own domain to 127.0.0.1 (DNS rebinding) sends its
    own name and is refused (421). Every answer says `nosniff` and carries a Content-Security-Policy that lets
    the app load only from its own origin (the self-contained report: only its inline parts)."""

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...] = ()) -> None:
        self.app = app
        self.allowed = {name.strip("[]").lower() for name in (*LOOPBACK_NAMES, *allowed)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if host_name(scope) not in self.allowed:
            await send_error(send, 421, f"this painter answers only to {', '.join(sorted(self.allowed))} "
                                        "(start it with --allow-host NAME to add a name)")
            return
        policy = REPORT_POLICY if scope.get("path", "").startswith("/report/") else APP_POLICY

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-content-type-options", b"nosniff"),
                                      (b"content-security-policy", policy.encode()),
                                      (b"referrer-policy", b"no-referrer")]
            await send(message)

        await self.app(scope, receive, secured)
