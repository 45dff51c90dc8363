"""``POST /stream``: per-frame results of a video (or a run of frames) as Server-Sent Events.

Why sse-starlette's ``EventSourceResponse`` and not Litestar's own ``ServerSentEvent``
(checked with Litestar 2.25): Litestar's has no keep-alive ping (proxies and load balancers drop a
silent connection while a slow model works), no send timeout (a client that stops reading would
hold the stream and its model slot forever), and separates events with CRLF only, which the
Vertex SDK's line iterator can split into a spurious blank line (see the project notes). The
response is an ASGI app, which Litestar serves as it is.
"""

from __future__ import annotations

import logging

import anyio
from litestar import Request, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ASGIApp, Receive, Scope, Send
from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError

from app.config import Settings
from app.errors import WrongTask
from app.media import parse_parameters
from app.middleware import request_id
from app.registry import Registry
from app.routes.openapi import operation, problems
from app.stream import SSE_SEPARATOR, StreamSession
from app.video import VIDEO_TYPES, open_source, read_stream_inputs
from client.schema import Problem, StreamEnd, StreamFrame, StreamParameters, StreamStart

log = logging.getLogger("app.stream")
TRACKABLE = ("detect", "segment", "pose")
DESCRIPTION = f"""Runs a video, or a run of image frames, through a model and answers
`text/event-stream`: one `start` event (model, version, deployed model id, source fps, frame count
when known, width, height), one `frame` event per processed frame as soon as it is computed (SSE
`id` = frame index; timestamp in ms, inference ms, detections with `track_id` when tracking and
masks for a segmentation model), then `end` (frames, elapsed ms, fps, per-class counts, distinct
tracks) or `error` (problem details) and the stream closes. A `: ping` comment keeps the
connection alive. Events are separated by LF only; each `data:` is one line of JSON.

Input: a video as the raw body ({", ".join(sorted(VIDEO_TYPES))}; the container is sniffed),
multipart/form-data image frames in order, or JSON `{{"frames": ["<base64>", ...], "parameters":
{{...}}}}`. Parameters (query string, form fields or JSON): model, conf, iou, max_det, classes,
imgsz, rle, `track` (none, bytetrack, botsort; state lives for this request), `vid_stride`,
`max_frames`. Everything is validated before the first event: an undecodable video, no frame or
a video over the server's limits (frames, duration, resolution) is a 4xx problem+json answer."""


@post(
    "/stream",
    status_code=200,
    summary="Stream per-frame results of a video (Server-Sent Events)",
    description=DESCRIPTION,
    responses={
        200: ResponseSpec(
            data_container=StreamStart | StreamFrame | StreamEnd | Problem,  # type: ignore[arg-type]
            media_type="text/event-stream",
            generate_examples=False,
            description="Events `start` (StreamStart), `frame` (StreamFrame), `end` "
            "(StreamEnd), `error` (Problem); see client/schema.py",
        ),
        **problems(400, 404, 413, 415, 429, 503),
    },
    operation_class=operation(
        sorted(VIDEO_TYPES),
        "frames",
        StreamParameters,
        events={
            "start": "StreamStart",
            "frame": "StreamFrame",
            "end": "StreamEnd",
            "error": "Problem",
        },
    ),
)
async def stream_handler(request: Request, registry: Registry, settings: Settings) -> ASGIApp:
    inputs = await read_stream_inputs(request, settings)
    params = parse_parameters(inputs.params, kind=StreamParameters)
    model = registry.get(params.model, route="/stream")
    if params.track != "none" and model.task not in TRACKABLE:
        raise WrongTask(
            f"model {model.name!r} is a {model.task} model; tracking needs boxes "
            f"({', '.join(TRACKABLE)} models)",
            field="track",
        )
    class_ids = model.class_ids(params.classes)
    model.input_size(params.imgsz)  # 400 when a static export is asked for another size
    model.ensure_room()  # 429 before the video is written, opened and probed
    source = await anyio.to_thread.run_sync(open_source, inputs, params, settings)
    try:
        session = StreamSession(
            model, source, params, class_ids, settings, request_id(request.scope)
        )
    except BaseException:
        source.close()
        raise
    return _DropStuckClients(
        EventSourceResponse(
            session.events(),
            headers={"X-Model-Name": model.name, "X-Model-Version": model.version},
            ping=settings.stream_ping_seconds,
            sep=SSE_SEPARATOR,
            send_timeout=settings.stream_send_timeout,
            # On shutdown: the frames computed, then an `error` event `shutting-down`.
            shutdown_event=session.shutdown,
            shutdown_grace_period=settings.shutdown_seconds,
        ),
        session.request_id,
        settings.stream_send_timeout,
    )


class _DropStuckClients:
    """The SSE response, with a client that stopped reading logged as such rather than as an
    ASGI error: sse-starlette ends the response by raising ``SendTimeoutError``."""

    def __init__(self, response: EventSourceResponse, request_id: str, timeout: float) -> None:
        self.response, self.request_id, self.timeout = response, request_id, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.response(scope, receive, send)
        except* SendTimeoutError:
            log.warning(
                "stream %s: client dropped, a send blocked for over %g s",
                self.request_id,
                self.timeout,
            )
