"""One ``/stream`` request: frames → model (→ tracker) → Server-Sent Events.

A producer task runs each frame through :meth:`LoadedModel.predict` (the model's scheduler: one
frame per call, so ``/detect`` requests and other streams interleave with it frame by frame, and
may share a batch with it), tracks and encodes it in a worker thread and puts the event into a
bounded queue; the SSE generator sends from that queue. A slow client therefore holds at most
``SERVE_STREAM_QUEUE`` encoded frames, a client that disconnects cancels the producer (the frame
in flight finishes, no new one starts), and the source is closed in every case, on the same
worker threads as its reads (so a stream owns no thread of its own), before the stream stops
counting as active (``yolo_streams_active``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import anyio
from sse_starlette import ServerSentEvent

from app.config import Settings
from app.errors import ServingError, problem
from app.frames import FrameSource
from app.metrics import STREAM_FRAMES, STREAMS_ACTIVE
from app.registry import LoadedModel
from app.results import classifications, detections
from app.shutdown import Shutdown, ShuttingDown
from client.schema import (
    StreamEnd,
    StreamFrame,
    StreamParameters,
    StreamStart,
    json_encoder,
)

log = logging.getLogger("app.stream")
# LF only: the Vertex SDK's line iterator can split a CRLF across reads into a spurious blank line.
SSE_SEPARATOR = "\n"


def event(name: str, body: Any, event_id: str | None = None) -> ServerSentEvent:
    """One SSE event whose ``data`` is a single line of JSON (msgspec never emits newlines)."""
    data = json_encoder.encode(body).decode()
    return ServerSentEvent(data, event=name, id=event_id, sep=SSE_SEPARATOR)


def make_tracker(kind: str) -> Any:
    """A fresh Ultralytics tracker, owned by one request.

    ``model.track(persist=True)`` would keep tracker state on the shared predictor, mixing
    concurrent streams; this is the per-request equivalent of Ultralytics' tracking callbacks.
    """
    from ultralytics.trackers.track import TRACKER_MAP
    from ultralytics.utils import YAML, IterableSimpleNamespace
    from ultralytics.utils.checks import check_yaml

    cfg = IterableSimpleNamespace(**YAML.load(check_yaml(f"{kind}.yaml")))
    return TRACKER_MAP[kind](args=cfg)  # track_buffer counts frames, as in Ultralytics


def apply_tracker(tracker: Any, result: Any) -> Any:
    """Update ``tracker`` with one frame's result; keep only tracked boxes (rotated ones for an
    OBB model, as Ultralytics' own tracking does), with their ids; keypoints follow their box.

    Unlike Ultralytics, which passes untracked boxes through when no track is confirmed, every
    detection of a tracked stream carries a ``track_id``.
    """
    import torch

    is_obb = result.obb is not None
    found = result.obb if is_obb else result.boxes
    tracks = tracker.update(found.cpu().numpy(), result.orig_img)
    if len(tracks) == 0:
        return result[:0]
    tracked = result[tracks[:, -1].astype(int)]
    kept = torch.as_tensor(tracks[:, :-1], device=found.data.device)
    tracked.update(**{"obb" if is_obb else "boxes": kept})
    return tracked


class StreamSession:
    """The state of one stream: source, parameters, tracker and running totals."""

    def __init__(
        self,
        model: LoadedModel,
        source: FrameSource,
        params: StreamParameters,
        class_ids: list[int] | None,
        settings: Settings,
        request_id: str,
        server: Shutdown,
    ) -> None:
        self.model, self.source, self.params = model, source, params
        self.class_ids, self.settings = class_ids, settings
        self.request_id = request_id
        self.tracker = make_tracker(params.track) if params.track != "none" else None
        self.with_masks = model.task == "segment"
        self.processed = 0
        self.class_counts: Counter[str] = Counter()
        self.track_ids: set[int] = set()
        # The server's shutdown, marked by the signal handler itself; and the event sse-starlette
        # sets when it notices (see app/shutdown.py). No new frame starts once either is set.
        self.server = server
        self.shutdown = anyio.Event()
        self._released: asyncio.Task[None] | None = None

    def start_event(self) -> ServerSentEvent:
        src = self.source
        return event(
            "start",
            StreamStart(
                model=self.model.name,
                version=self.model.version,
                deployed_model_id=self.settings.deployed_model_id,
                replica_id=self.settings.replica_id,
                task=self.model.task,
                source=src.kind,
                fps=src.fps,
                frames=src.frames,
                width=src.width,
                height=src.height,
                track=self.params.track,
                keypoints=self.model.keypoints,
            ),
        )

    async def infer(self, item: tuple[int, float | None, Any]) -> Any:
        """Infer one frame, holding a place in the model's queue while it is in flight."""
        with self.model.admit(force=True):
            (result,) = await self.model.predict([item[2]], self.params, self.class_ids)
        return result

    def finish(
        self, item: tuple[int, float | None, Any], result: Any, started: float
    ) -> ServerSentEvent:
        """Track and encode one inferred frame (worker thread)."""
        index, timestamp, _ = item
        p = self.params
        if self.tracker is not None:
            result = apply_tracker(self.tracker, result)
        inference_ms = (time.perf_counter() - started) * 1000
        classes = None
        if self.model.task == "classify":
            found, classes = [], classifications(result, p.top_k)
            self.class_counts[classes[0].class_name] += 1  # a frame counts as its top class
        else:
            found = detections(result, self.with_masks, p.rle)
        for d in found:
            self.class_counts[d.class_name] += 1
            if d.track_id is not None:
                self.track_ids.add(d.track_id)
        self.processed += 1
        body = StreamFrame(
            index=index,
            timestamp_ms=timestamp,
            inference_ms=round(inference_ms, 2),
            detections=found,
            classes=classes,
        )
        return event("frame", body, str(index))

    async def _produce(self, queue: asyncio.Queue[ServerSentEvent]) -> None:
        """Decode frame k+1 in its own thread while frame k is inferred, then queue its event."""
        started = time.perf_counter()

        def read_next() -> asyncio.Future[Any]:
            future = asyncio.ensure_future(anyio.to_thread.run_sync(self.source.read))
            future.add_done_callback(_retrieved)  # a read left behind by a cut stream may fail
            return future

        async def finish_and_queue(item: Any, result: Any, t0: float) -> None:
            # not under the inference limiter: it overlaps the next frame's inference
            frame = await anyio.to_thread.run_sync(partial(self.finish, item, result, t0))
            STREAM_FRAMES.labels(self.model.name).inc()
            await queue.put(frame)

        async def last(body: ServerSentEvent, finishing: asyncio.Future[None] | None) -> None:
            """The last event, after the frame already inferred (if it can go out) and once the
            source is closed (so a client that got it sees the stream no longer active)."""
            if finishing is not None:
                with contextlib.suppress(Exception):
                    await finishing
            await asyncio.shield(self._release())
            await queue.put(body)

        # Frame k is tracked and encoded (a worker thread) while frame k+1 is inferred; frame k+1
        # is finished only after frame k, so events stay in order and one thread at a time
        # touches the tracker.
        finishing: asyncio.Future[None] | None = None
        try:
            pending = read_next()
            while (item := await pending) is not None:
                if self.server.started or self.shutdown.is_set():
                    raise ShuttingDown(
                        f"The server is shutting down; this stream stopped after "
                        f"{self.processed} frames. Send the frames after the last event id again "
                        "(another replica takes them)."
                    )
                pending = read_next()
                t0 = time.perf_counter()
                result = await self.infer(item)
                if finishing is not None:
                    await finishing
                finishing = asyncio.ensure_future(finish_and_queue(item, result, t0))
                finishing.add_done_callback(_retrieved)
            if finishing is not None:
                await finishing
            elapsed = time.perf_counter() - started
            end = StreamEnd(
                frames=self.processed,
                elapsed_ms=round(elapsed * 1000, 1),
                fps=round(self.processed / elapsed, 2) if elapsed > 0 else 0.0,
                class_counts=dict(self.class_counts),
                tracks=len(self.track_ids),
            )
            await last(event("end", end), None)
        except ServingError as exc:
            await last(event("error", problem(None, exc)), finishing)
        except Exception:
            log.exception("stream %s failed after %d frames", self.request_id, self.processed)
            failure = ServingError("the stream failed on the server; see its logs")
            await last(event("error", problem(None, failure)), finishing)
        finally:
            if finishing is not None and not finishing.done():
                finishing.cancel()  # no await here (see events()); its thread ends on its own
            self._release()  # a cancelled producer (the client went away) closes it here

    async def events(self) -> AsyncIterator[ServerSentEvent]:
        """The SSE events: start, frames as they are computed, then end (or error; on server
        shutdown, after the frames already computed, the error ``shutting-down``).

        On a client that goes away (or a send timeout) this generator is cancelled: the producer
        is cancelled with it, so no new frame starts, and the source is closed (its lock waits
        for a read in flight). No await happens in ``finally``: under a cancelled anyio scope it
        would be cancelled again.
        """
        STREAMS_ACTIVE.labels(self.model.name).inc()
        queue: asyncio.Queue[ServerSentEvent] = asyncio.Queue(self.settings.stream_queue)
        producer = asyncio.create_task(self._produce(queue))
        reason = "cut short: the client went away or stopped reading"
        try:
            yield self.start_event()
            while True:
                item = await queue.get()
                yield item
                if item.event in ("end", "error"):
                    reason = item.event
                    break
        finally:
            producer.cancel()
            self._release()  # also when the producer never ran
            log.info("stream %s: %d frames, %s", self.request_id, self.processed, reason)

    def _release(self) -> asyncio.Task[None]:
        """Close the source, then stop counting the stream as active: once, in a task of its own
        (closing waits for a read in flight, up to vid_stride frames decoded: in a worker thread,
        not on the loop; a task, so that a cancelled caller cannot cut it short)."""
        if self._released is None:
            self._released = asyncio.get_running_loop().create_task(self._close())
            _closing.add(self._released)
            self._released.add_done_callback(_closing.discard)
        return self._released

    async def _close(self) -> None:
        try:
            await anyio.to_thread.run_sync(self.source.close)
        finally:
            STREAMS_ACTIVE.labels(self.model.name).dec()


_closing: set[asyncio.Task[None]] = set()  # sources being closed (a task needs a reference)


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a background future's exception as seen (it is reported where it matters)."""
    if not future.cancelled():
        future.exception()
