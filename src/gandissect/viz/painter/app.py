"""The painter's web app: a JSON and PNG API over a `Painter`, and the single-page front end.

    GET  /api/info, /api/concepts, /api/sample?seed=S      POST /api/edit, /api/concept-pixels
    GET  /  (static/index.html), /static/<file>, /report/report.html

The API is stateless: each request carries the seed and every stroke. Errors are 4xx with `{"detail": "..."}`
(422 for a request that does not fit the schema or the run, 413 for a large body, 415 for a body that is not
JSON, 404 for anything not served). Only files the server chose are served: the files directly inside
`static/` and the run's report.html; no path from a client is ever opened.
"""

# No `from __future__ import annotations`: FastAPI must see the per-run request model in the signatures.

import json
import mimetypes
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response

from gandissect.core.errors import GandissectError
from gandissect.engine.runfiles import RunFileError, Snapshot
from gandissect.viz.painter.engine import Painter, Stroke, png_bytes
from gandissect.viz.painter.guard import BODY_LIMIT, BodyGuard, HostGuard
from gandissect.viz.painter.schema import ConceptPixels, Concepts, Error, Info, concepts_document, request_models

STATIC = Path(__file__).parent / "static"
FILE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
EDIT_HEADER = "X-Gandissect-Edit"
MAX_ERRORS = 3


class PNGResponse(Response):
    media_type = "image/png"


def _error(description: str) -> dict[str, Any]:
    """An error response in the schema: JSON `Error` (the component that /api/concept-pixels registers),
    also on routes whose success is a PNG."""
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _png(description: str, headers: dict[str, Any] | None = None) -> dict[int | str, dict[str, Any]]:
    ok: dict[str, Any] = {"description": description,
                          "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}
    if headers:
        ok["headers"] = headers
    return {200: ok, 422: _error("a request that does not fit the schema or the run")}


BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    413: _error(f"the body is larger than {BODY_LIMIT} bytes"),
    415: _error("the body is not sent as application/json"),
    400: _error("a Content-Length that is not a number"),
}
EDIT_RECORD = {"description": "one JSON object per stroke: action, concept, layer, units, alpha",
               "schema": {"type": "string"}}


def validation_message(errors: list[dict[str, Any]], explain: Callable[[int, Any], str | None] | None = None,
                       body: Any = None) -> str:
    """Pydantic's errors as one sentence: where (body.strokes.0.radius -> strokes.0.radius) and what. An error
    in a stroke that `explain(index, stroke)` refuses (its concept, layer, direction or strength) is told in the
    painter's words instead, once per stroke."""
    parts: list[str] = []
    for error in errors[:MAX_ERRORS]:
        reason = _explained(error, explain, body)
        if reason is not None:
            if reason not in parts:
                parts.append(reason)
            continue
        where = [str(part) for part in error.get("loc", ())]
        if where and where[0] in ("body", "query", "path", "header") and len(where) > 1:
            where = where[1:]
        if error.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'malformed')})")
        else:
            parts.append(f"{'.'.join(where) or 'request'}: {error.get('msg', 'invalid')}")
    more = len(errors) - MAX_ERRORS
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _explained(error: dict[str, Any], explain: Callable[[int, Any], str | None] | None, body: Any) -> str | None:
    """The painter's reason for refusing the stroke an error lies in (body.strokes.<i>...), if it has one."""
    where = list(error.get("loc", ()))
    if explain is None or where[:2] != ["body", "strokes"] or len(where) < 3 or not isinstance(where[2], int):
        return None
    strokes = body.get("strokes") if isinstance(body, dict) else None
    if not isinstance(strokes, list) or not 0 <= where[2] < len(strokes):
        return None
    return explain(where[2], strokes[where[2]])


def static_file(folder: Path, name: str) -> FileResponse:
    """A file directly inside `folder` whose name is a plain file name; 404 for anything else."""
    if not FILE_NAME.match(name) or name not in {p.name for p in folder.glob("*") if p.is_file()}:
        raise HTTPException(404, f"no such file: {name}")
    kind = "text/javascript" if name.endswith(".js") else mimetypes.guess_type(name)[0]
    return FileResponse(folder / name, media_type=kind or "application/octet-stream",
                        headers={"Cache-Control": "no-cache"})


def _strokes(body: Any) -> list[Stroke]:
    return [Stroke(**stroke.model_dump()) for stroke in body.strokes]


def create_app(painter: Painter, static: Path = STATIC, body_limit: int = BODY_LIMIT,
               allowed_hosts: tuple[str, ...] = ()) -> FastAPI:
    """The app over `painter`, serving the front end from `static`, answering requests addressed to loopback
    names and `allowed_hosts` only (see `guard.HostGuard`)."""
    models = request_models(painter)
    example = _example(painter)
    EditBody = Annotated[models.edit, Body(openapi_examples=example)]  # the run's request model
    app = FastAPI(title="gandissect painter", version="1", docs_url=None, redoc_url=None,  # those pages need a CDN
                  description="Paint with a generator's units: add or remove concepts where you draw. Every request "
                              "carries the seed and all strokes; the same request gives the same image.")
    app.add_middleware(BodyGuard, limit=body_limit)
    app.add_middleware(HostGuard, allowed=tuple(allowed_hosts))  # added last: runs first

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        message = validation_message(list(error.errors()), painter.refusal, error.body)
        return JSONResponse({"detail": message}, status_code=422)

    @app.exception_handler(GandissectError)
    async def refused(request: Request, error: GandissectError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.get("/api/info", response_model=Info)
    def info() -> dict[str, Any]:
        """The model, the run folder's name, the image size, the layers and the request limits."""
        return painter.info()

    @app.get("/api/concepts", response_model=Concepts)
    def concepts() -> dict[str, Any]:
        """The opening brush, and per concept, layer and direction (remove, add): the source of its units (a causal
        ranking, or untested), its significant units with their effects, what they did together on held-out
        samples, and why it is not offered (with the command that measures it)."""
        return concepts_document(painter)

    @app.get("/api/sample", response_class=PNGResponse, responses=_png("the unedited image"))
    def sample(seed: Annotated[int, Query(ge=0, le=painter.limits.max_seed,
                                          description="the image: sample 0 of this sample set")] = 0) -> PNGResponse:
        """The unedited image of `seed` as PNG."""
        return PNGResponse(png_bytes(painter.sample(seed)))

    @app.post("/api/edit", response_class=PNGResponse,
              responses={**_png("the edited image", {EDIT_HEADER: EDIT_RECORD}), **BODY_ERRORS})
    def edit(body: EditBody) -> PNGResponse:  # type: ignore[valid-type]
        """The image of `seed` with the strokes applied in order, as PNG; the header tells what each did."""
        picture, records = painter.edit(body.seed, _strokes(body))  # type: ignore[attr-defined]
        return PNGResponse(png_bytes(picture), headers={EDIT_HEADER: json.dumps(records, separators=(",", ":"))})

    invalid_json = {"model": Error, "description": "a request that does not fit the schema or the run"}

    @app.post("/api/concept-pixels", response_model=ConceptPixels, responses={422: invalid_json, **BODY_ERRORS})
    def concept_pixels(body: EditBody) -> dict[str, Any]:  # type: ignore[valid-type]
        """The share of pixels of each concept present, before and after the strokes (the run's segmenter)."""
        before, after = painter.concept_pixels(body.seed, _strokes(body))  # type: ignore[attr-defined]
        return {"before": before, "after": after}

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        if not (static / "index.html").is_file():
            raise HTTPException(404, "the painter's front end (static/index.html) is not installed")
        return static_file(static, "index.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static_route(name: str) -> FileResponse:
        return static_file(static, name)

    @app.get("/report/{name}", include_in_schema=False)
    def report(name: str) -> Response:
        """The run's report.html as run.json lists it (a changed file is refused, 409)."""
        if name != "report.html":
            raise HTTPException(404, "only the run's report.html is served here")
        try:
            with Snapshot(painter.run) as files:
                if name not in files.names(name):
                    raise HTTPException(404, "the run has no report.html: run `gandissect report` on it")
                content = files.read(name)
        except RunFileError as error:
            raise HTTPException(409, str(error)) from None
        return Response(content, media_type="text/html", headers={"Cache-Control": "no-cache"})

    return app


def _example(painter: Painter) -> dict[str, Any]:
    """A request that works on this run, for the schema: the opening brush along a line."""
    height, width = painter.image_size
    strokes = []
    tool = painter.default
    if tool is not None:
        strokes.append({"action": tool.action, "concept": tool.concept, "layer": tool.layer,
                        "strength": tool.strength, "alpha": 1.0,
                        "points": [[width / 4, height / 2], [3 * width / 4, height / 2]], "radius": width / 8})
    name = f"{tool.action} {tool.concept}" if tool else "nothing offered"
    return {"paint": {"summary": f"{name} along a line", "value": {"seed": 0, "strokes": strokes}}}
