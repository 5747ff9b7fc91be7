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
