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
from typing import Any, cast

import anyio
from litestar import Request, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ASGIApp, Receive, Scope, Send
from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError

from app.config import Settings
from app.errors import InvalidParameter, WrongTask
from app.frames import open_source
from app.frontend import Route, admitted
from app.inputs import VIDEO_TYPES
from app.middleware import request_id
from app.registry import LoadedModel, Registry
from app.routes.openapi import operation, problems
from app.shutdown import Shutdown
from app.stream import SSE_SEPARATOR, StreamSession
from client.schema import (
    BOX_TASKS,
    Problem,
    StreamEnd,
    StreamFrame,
    StreamParameters,
    StreamStart,
)

log = logging.getLogger("app.stream")
TRACKABLE = BOX_TASKS  # models whose results have boxes Ultralytics' trackers take


def check(params: StreamParameters, model: LoadedModel, settings: Settings) -> None:
    """Tracking needs boxes; ``max_frames`` may not exceed the server's frame limit."""
    if params.track != "none" and model.task not in TRACKABLE:
        raise WrongTask(
            f"model {model.name!r} is a {model.task} model; tracking needs boxes "
            f"({', '.join(TRACKABLE)} models): leave track out (or track=none) to stream its "
            "classes",
            field="track",
        )
    if params.max_frames is not None and params.max_frames > settings.stream_max_frames:
        raise InvalidParameter(
            f"max_frames={params.max_frames} is over this server's limit of "
            f"{settings.stream_max_frames} frames",
            field="max_frames",
        )


STREAM = Route("/stream", StreamParameters, stream=True, check=check)
DESCRIPTION = f"""Runs a video, or a run of image frames, through a model and answers
`text/event-stream`: one `start` event (model, version, deployed model id, source fps, frame count
when known, width, height), one `frame` event per processed frame as soon as it is computed (SSE
`id` = frame index; timestamp in ms, inference ms, detections with `track_id` when tracking,
masks for a segmentation model, keypoints for a pose model, rotated boxes for an OBB model, the
top_k classes for a classification model), then `end` (frames, elapsed ms, fps, per-class counts, distinct
tracks) or `error` (problem details) and the stream closes. A `: ping` comment keeps the
connection alive. Events are separated by LF only; each `data:` is one line of JSON.

Input: a video as the raw body ({", ".join(sorted(VIDEO_TYPES))}; the container is sniffed),
multipart/form-data image frames in order, or JSON `{{"frames": ["<base64>", ...], "parameters":
{{...}}}}`. Parameters (query string, form fields or JSON): model, conf, iou, max_det, classes,
imgsz, rle, top_k, `track` (none, bytetrack, botsort; state lives for this request; not for a
classification model), `vid_stride`, `max_frames`. Everything is validated before the first event: an undecodable video, no frame or
a video over the server's limits (frames, duration, resolution) is a 4xx problem+json answer."""


@post(
    "/stream",
    status_code=200,
    summary="Stream per-frame results of a video (Server-Sent Events)",
    description=DESCRIPTION,
    responses={
        200: ResponseSpec(
            # a union: Litestar's annotation (wider with attrs installed) names one type
            data_container=cast(Any, StreamStart | StreamFrame | StreamEnd | Problem),
            media_type="text/event-stream",
            generate_examples=False,
            description="Events `start` (StreamStart), `frame` (StreamFrame), `end` "
            "(StreamEnd), `error` (Problem); see client/schema.py",
        ),
        **problems(400, 404, 413, 415, 429, 503),
    },
    operation_class=operation(
        STREAM,
        sorted(VIDEO_TYPES),
        "frames",
        events={
            "start": "StreamStart",
            "frame": "StreamFrame",
            "end": "StreamEnd",
            "error": "Problem",
        },
    ),
)
async def stream_handler(
    request: Request,
    registry: NamedDependency[Registry],
    settings: NamedDependency[Settings],
    shutdown: NamedDependency[Shutdown],
) -> ASGIApp:
    # Admitted once: the place in the queue is held while the video is written, opened and
    # probed; the stream's frames then take places of their own, never refused.
    async with admitted(request, registry, settings, STREAM) as job:
        source = await anyio.to_thread.run_sync(open_source, job.inputs, job.params, settings)
    try:
        session = StreamSession(
            job.model,
            source,
            job.params,
            job.class_ids,
            settings,
            request_id(request.scope),
            shutdown,
        )
    except BaseException:
        source.close()
        raise
    model = job.model
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
        try:  # sse-starlette types the ASGI triple as Starlette's
            await self.response(cast(Any, scope), cast(Any, receive), cast(Any, send))
        except* SendTimeoutError:
            log.warning(
                "stream %s: client dropped, a send blocked for over %g s",
                self.request_id,
                self.timeout,
            )
