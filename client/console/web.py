"""The console's web app: the page (``static/``, shipped in the package) and its JSON API.

``GET /`` the page; ``/static/...`` its script and style; ``GET /api/endpoint`` the endpoint
view; ``GET /api/models`` one deployed model's models; ``POST /api/infer`` one image;
``POST /api/stream`` a video, its events relayed as SSE with each frame's image;
``POST /api/compare`` two deployed models on one image or video; ``GET /api/rollout`` the
rollout report. Form posts are ``multipart/form-data`` (``file`` plus the parameters).

Every error answers ``{"error": "error: ...", "status": N}``, the CLI's one line, with a 4xx
for what the user gave (or the endpoint's own status, a 429 included) and 502/504 for an
endpoint that cannot be reached or answers late. The app serves loopback only: a request whose
``Host`` is not ``127.0.0.1``/``localhost`` (DNS rebinding) is refused.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.exceptions import HTTPException
from litestar.params import FromQuery
from litestar.response import Stream
from litestar.static_files import create_static_files_router

from client import errors
from client.console.work import (
    ROUTE_PARAMS,
    STREAM_PARAMS,
    Console,
    error_line,
    http_status,
    parse_params,
)
from client.schema import sniff

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 512 * 1024 * 1024  # a video the page sends (the client checks the rest)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
T = TypeVar("T")

_encoder = msgspec.json.Encoder()


def _json(value: Any, status: int = 200) -> Response[bytes]:
    return Response(_encoder.encode(value), status_code=status, media_type="application/json")


def _error(line: str, status: int) -> Response[bytes]:
    return _json({"error": line, "status": status}, status)


def _client_error(_: Request, exc: Exception) -> Response[bytes]:
    return _error(error_line(exc), http_status(exc))


def _http_error(_: Request, exc: Exception) -> Response[bytes]:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
    return _error(f"error: {detail}", status)


def _unexpected(_: Request, exc: Exception) -> Response[bytes]:
    return _error(f"error: {type(exc).__name__}: {exc}", 500)


async def _blocking(call: Callable[[], T]) -> T:
    """A blocking client call, off the event loop."""
    return await asyncio.to_thread(call)


async def _form(request: Request) -> tuple[dict[str, str], bytes | None, str | None]:
    """A multipart post's text fields, and its ``file`` (bytes, file name)."""
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    upload = form.get("file")
    if isinstance(upload, UploadFile):
        return fields, await upload.read(), upload.filename
    return fields, None, None


def _need_file(data: bytes | None, name: str | None) -> bytes:
    if not data:
        raise errors.ParameterError(f"{name or 'the file'} is empty: choose an image or a video")
    return data


def _is_video(data: bytes) -> bool:
    kind = sniff(data)
    return kind.startswith("video/") or kind == "image/gif"


class _Upload:
    """An uploaded video as a temp file (the client and OpenCV read paths); removed on close."""

    def __init__(self, data: bytes, name: str | None) -> None:
        suffix = Path(name or "video").suffix or ".mp4"
        with tempfile.NamedTemporaryFile(prefix="console-", suffix=suffix, delete=False) as f:
            f.write(data)
        self.path = Path(f.name)

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


def create_app(console: Console) -> Litestar:
    """The console's Litestar app over ``console``."""

    page = (STATIC / "index.html").read_bytes()

    @get("/", include_in_schema=False)
    async def index() -> Response[bytes]:
        return Response(page, media_type="text/html; charset=utf-8")

    @get("/api/endpoint")
    async def endpoint() -> Response[bytes]:
        return _json(await _blocking(console.endpoint_view))

    @get("/api/models")
    async def models(deployed_model_id: FromQuery[str | None] = None) -> Response[bytes]:
        return _json(await _blocking(partial(console.models, deployed_model_id or None)))

    @post("/api/infer")
    async def infer(request: Request) -> Response[bytes]:
        fields, data, name = await _form(request)
        image = _need_file(data, name)
        route = fields.get("route", "detect")
        params = parse_params(fields, ROUTE_PARAMS.get(route, ()))
        dm = fields.get("deployed_model_id") or None
        return _json(await _blocking(partial(console.infer, route, image, dm, params)))

    @post("/api/compare")
    async def compare(request: Request) -> Response[bytes]:
        fields, data, name = await _form(request)
        media = _need_file(data, name)
        route = fields.get("route", "detect")
        params = parse_params(fields, ROUTE_PARAMS.get(route, ()))
        ids = (fields.get("a", ""), fields.get("b", ""))
        video = _Upload(media, name) if _is_video(media) else None
        try:
            path = video.path if video is not None else None
            call = partial(console.compare, route, media, path, ids, params)
            return _json(await _blocking(call))
        finally:
            if video is not None:
                video.close()

    @post("/api/stream")
    async def stream(request: Request) -> Response[Any]:
        fields, data, name = await _form(request)
        media = _need_file(data, name)
        if not _is_video(media):
            raise errors.ParameterError(
                f"{name or 'the file'} is not a video (MP4, WebM, Matroska, AVI or GIF)"
            )
        params = parse_params(fields, STREAM_PARAMS)
        dm = fields.get("deployed_model_id") or None
        video = _Upload(media, name)
        try:  # the start event read here: a refused video is an error answer, not a stream
            events = await _blocking(partial(console.stream_events, video.path, dm, params))
        except BaseException:
            video.close()
            raise
        return Stream(_sse(events, video), media_type="text/event-stream")

    @get("/api/rollout")
    async def rollout() -> Response[bytes]:
        return _json(await _blocking(console.rollout))

    return Litestar(
        route_handlers=[
            index,
            endpoint,
            models,
            infer,
            compare,
            stream,
            rollout,
            create_static_files_router(path="/static", directories=[STATIC]),
        ],
        before_request=_loopback_only,
        exception_handlers={
            errors.VertexYoloError: _client_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        request_max_body_size=MAX_UPLOAD_BYTES,
        openapi_config=None,
    )


async def _loopback_only(request: Request) -> None:
    host = request.headers.get("host", "").rsplit(":", 1)[0]
    if host not in LOOPBACK_HOSTS:
        raise HTTPException(status_code=403, detail=f"the console answers on loopback, not {host}")


def _sse(events: Iterator[tuple[str, Any]], video: _Upload) -> Iterator[bytes]:
    """SSE lines of the relayed events; an error after the start is one last ``error`` event
    holding the CLI's line. (Litestar runs this iterator in a thread, a step at a time.)"""
    try:
        for kind, value in events:
            yield b"event: " + kind.encode() + b"\ndata: " + _encoder.encode(value) + b"\n\n"
    except errors.VertexYoloError as exc:
        line = {"error": error_line(exc), "status": http_status(exc)}
        yield b"event: failed\ndata: " + _encoder.encode(line) + b"\n\n"
    finally:
        video.close()
