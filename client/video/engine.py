"""Whole videos and live sources through ``/stream`` windows, spread over an endpoint's replicas.

A dedicated endpoint takes at most 10 MB and ``inference_timeout`` seconds a call, so a video
goes as **windows**: runs of frames, each decoded here, scaled down to the model's input size and
JPEG-encoded (:mod:`~client.video.source`), packed to fit the body limit with headroom, and sent
as one ``/stream`` frame run. The engine (:class:`VideoRun`, asyncio):

* **Reading** runs on a thread of its own. For a file it waits while enough frames are ready
  (bounded memory: a 2-hour video never sits in memory); for a live source it never waits:
  when the endpoint is slower than the source, the oldest waiting frames are dropped (counted)
  and latency stays bounded.
* **Windows** run up to ``concurrency`` at once: by default two per replica seen answering, plus
  one to find another (so every replica stays busy whatever their number), at most 16. Every
  window goes to one deployed model: the pinned one, or the one that answered the first call.
* **Results** come back in source order, with source frame indices, timestamps and boxes in
  source pixels, whatever order the windows finish in; a window's frames are passed on as they
  arrive once the frames before them are out.
* **Tracking**: windows overlap by ``overlap`` frames; the ids of each window's tracker are
  joined to the video's on the shared frames (:mod:`~client.video.tracks`), so one object keeps
  one id from the first frame to the last.
* **Faults**: a window that fails (a replica died, 503, a cut stream, a ``shutting-down``
  event) is sent again from the first frame not received (with the overlap before it, when
  tracking), up to ``attempts`` times: the output has every frame exactly once. Retries are
  counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import msgspec

from client import errors
from client.matching import similarity_for
from client.schema import (
    Box,
    Classification,
    Detection,
    KeypointLayout,
    ModelList,
    StreamEnd,
    StreamFrame,
    StreamStart,
)
from client.stats import percentiles
from client.video.source import Capture, Prepared, SourceInfo, encode_jpeg, prepare
from client.video.tracks import TrackIds

log = logging.getLogger("client.video")

#: The endpoint's body limit (Vertex's dedicated endpoints: 10 MB) and the share windows use.
BODY_LIMIT = 10_000_000
HEADROOM = 0.8
PART_OVERHEAD = 256  # multipart headers per frame
MAX_CONCURRENCY = 16  # the default's ceiling
MAX_WINDOWS = 64  # what may be asked for
LATENCY_SAMPLES = 10_000  # the last ones kept for the percentiles: a live run never grows


class Endpoint(Protocol):
    """What the engine needs of a client: ``/models`` and one ``/stream`` frame run."""

    async def models(self, deployed_model_id: str | None) -> ModelList: ...

    def stream(
        self, frames: list[bytes], deployed_model_id: str, params: Mapping[str, Any]
    ) -> AsyncGenerator[StreamStart | StreamFrame | StreamEnd, None]: ...


@dataclass(frozen=True)
class VideoOptions:
    """How a video is cut and sent.

    Attributes:
        live: bounded latency (drop the oldest frames when behind) instead of completeness;
            None: live for cameras and live URLs, not for files.
        concurrency: windows in flight; None: two per replica seen plus one (at most 16).
        window: frames per window (default 64; live 4: a live window takes the frames there,
            up to that many); fewer when the body limit says so.
        overlap: frames consecutive windows share when tracking (default 4; live 1).
        body_limit: the endpoint's limit per request; windows use ``headroom`` of it.
        attempts: tries per window (the first, then resumes after the last frame received).
        keep_frames: keep each frame at source resolution (JPEG) in its result, to draw it.
        buffer: live: frames waiting at most before the oldest are dropped (default 2 windows).
    """

    live: bool | None = None
    concurrency: int | None = None
    window: int | None = None
    overlap: int | None = None
    body_limit: int = BODY_LIMIT
    headroom: float = HEADROOM
    attempts: int = 5
    keep_frames: bool = False
    buffer: int | None = None

    def check(self) -> None:
        for name in ("concurrency", "window", "buffer"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise errors.ParameterError(f"{name} must be at least 1, not {value}")
        if self.concurrency is not None and self.concurrency > MAX_WINDOWS:
            raise errors.ParameterError(
                f"concurrency {self.concurrency}: at most {MAX_WINDOWS} windows in flight"
            )
        if self.overlap is not None and self.overlap < 0:
            raise errors.ParameterError(f"overlap must be 0 or more, not {self.overlap}")
        if self.attempts < 1:
            raise errors.ParameterError(f"attempts must be at least 1, not {self.attempts}")


class VideoFrame(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One processed frame of the source.

    ``index`` counts the source's frames from 0 (strided ones included); ``timestamp_ms`` is its
    position in a file, or the time since a live source was opened; boxes are in source pixels;
    ``track_id`` (when tracking) is the video's, the same over the whole video. ``latency_ms``
    (live) is from the frame's capture to its result; ``image`` its JPEG at source resolution
    when the run keeps frames.
    """

    index: int
    timestamp_ms: float | None
    detections: list[Detection]
    deployed_model_id: str
    replica_id: str | None
    latency_ms: float | None = None
    image: bytes | None = None
    classes: list[Classification] | None = None  # a classification model's top classes


class VideoStats(msgspec.Struct, kw_only=True):
    """Where a run stands (read it during the run, for a progress display, or after)."""

    source: str
    live: bool
    width: int
    height: int
    fps_source: float | None
    frames_expected: int | None  # None for a live source or an unknown length
    deployed_model_id: str | None = None
    model: str | None = None
    task: str | None = None
    keypoints: KeypointLayout | None = None  # a pose model's, for drawing its skeleton
    frames: int = 0  # results passed on
    read: int = 0  # frames read (after vid_stride)
    windows: int = 0  # /stream calls made, resumes included
    in_flight: int = 0
    retries: int = 0
    drops: int = 0
    replicas: dict[str, int] = {}  # replica id -> frames it processed
    tracks: int = 0
    class_counts: dict[str, int] = {}
    elapsed_s: float = 0.0
    fps: float = 0.0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    max_waiting: int = 0  # live: the most frames ever waiting for a window
    max_pending: int = 0  # the most frames read, not dropped, not yet out, behind a result


# -- internal state ------------------------------------------------------------------------------


@dataclass(eq=False)
class _Frame:
    index: int
    timestamp_ms: float | None
    sent: Prepared
    captured: float  # monotonic
    original: bytes | None


@dataclass(eq=False)
class _Part:
    """One ``/stream`` call for a window: positions ``start`` to the end sent, results passed
    on from ``first`` (the frames before it are shared: only for the track join)."""

    start: int
    first: int
    shared: dict[int, list[Detection]] = field(default_factory=dict)
    replica_id: str | None = None
    mapping: dict[int, int] | None = None


@dataclass(eq=False)
class _Window:
    number: int
    frames: list[_Frame]
    shared: int  # leading frames shared with the previous window (passed on by it)
    received: dict[int, tuple[_Part, list[Detection], list[Classification] | None]] = field(
        default_factory=dict
    )
    done: bool = False
    error: BaseException | None = None


class _Signal:
    """Wakes every waiter on each change (all on the event loop's thread)."""

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    def notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter


_END = object()


def _retryable(exc: BaseException) -> bool:
    """Failures another try (or another replica) may not have: the connection, 429/5xx, a
    stream cut or ended by the server's shutdown or error."""
    if isinstance(exc, errors.StreamError):
        problem = exc.problem
        return problem is None or problem.status >= 500 or problem.status == 429
    if isinstance(exc, errors.APIError):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, errors.ConnectionError | errors.TimeoutError)


def _scaled(detections: Sequence[Detection], sent: Prepared) -> list[Detection]:
    """Boxes, mask polygons, keypoints and rotated boxes from the sent frame's pixels to the
    source's (an RLE mask stays at the size it was computed at: its ``size`` says which). A
    frame is scaled by one factor both ways (up to rounding), so a rotated box keeps its angle."""
    sx, sy = sent.scale_x, sent.scale_y
    if sx == 1 and sy == 1:
        return list(detections)
    out = []
    for d in detections:
        box = Box(x1=d.box.x1 * sx, y1=d.box.y1 * sy, x2=d.box.x2 * sx, y2=d.box.y2 * sy)
        mask, keypoints, rotated = d.mask, d.keypoints, d.rotated_box
        if mask is not None:
            polygons = [[[x * sx, y * sy] for x, y in polygon] for polygon in mask.polygons]
            mask = msgspec.structs.replace(mask, polygons=polygons)
        if keypoints is not None:
            keypoints = [msgspec.structs.replace(k, x=k.x * sx, y=k.y * sy) for k in keypoints]
        if rotated is not None:
            rotated = msgspec.structs.replace(
                rotated,
                cx=rotated.cx * sx,
                cy=rotated.cy * sy,
                width=rotated.width * (sx + sy) / 2,
                height=rotated.height * (sx + sy) / 2,
                corners=[[x * sx, y * sy] for x, y in rotated.corners],
            )
        out.append(
            msgspec.structs.replace(d, box=box, mask=mask, keypoints=keypoints, rotated_box=rotated)
        )
    return out


class VideoRun:
    """One video through an :class:`Endpoint`: iterate :meth:`frames` for the results in source
    order; :attr:`stats` says where it stands."""

    def __init__(
        self,
        endpoint: Endpoint,
        capture: Capture,
        params: Mapping[str, Any],
        *,
        deployed_model_id: str | None = None,
        options: VideoOptions = VideoOptions(),
        backoff: float = 0.5,
    ) -> None:
        options.check()
        self.endpoint, self.capture = endpoint, capture
        info: SourceInfo = capture.info
        self.live = info.live
        self.params = {k: v for k, v in params.items() if k not in ("vid_stride", "max_frames")}
        self.stride = int(params.get("vid_stride") or 1)
        self.max_frames: int | None = params.get("max_frames")
        self.tracking = params.get("track", "none") != "none"
        self.window_frames = options.window or (4 if self.live else 64)
        overlap = options.overlap if options.overlap is not None else (1 if self.live else 4)
        self.overlap = min(overlap, self.window_frames - 1) if self.tracking else 0
        self.budget = int(options.body_limit * options.headroom)
        self.buffer_size = options.buffer or 2 * self.window_frames
        self.options, self.backoff = options, backoff
        self.pinned = deployed_model_id
        expected = info.frames
        if expected is not None:
            expected = -(-expected // self.stride)
            if self.max_frames:
                expected = min(expected, self.max_frames)
        self.stats = VideoStats(
            source=info.name,
            live=self.live,
            width=info.width,
            height=info.height,
            fps_source=info.fps,
            frames_expected=expected,
        )
        self._signal = _Signal()
        self._waiting: deque[_Frame | object] = deque()
        self._windows: dict[int, _Window] = {}
        self._made = 0  # windows made so far
        self._building = True
        self._error: BaseException | None = None
        self._tracks = TrackIds()
        self._recent: dict[int, list[Detection]] = {}  # source index -> global detections
        self._latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._classes: Counter[str] = Counter()
        self._stop = threading.Event()
        self._imgsz = 640

    # -- the public side ---------------------------------------------------------------------

    @property
    def concurrency(self) -> int:
        if self.options.concurrency:
            return self.options.concurrency
        return min(MAX_CONCURRENCY, max(2, 2 * len(self.stats.replicas) + 1))

    async def frames(self) -> AsyncGenerator[VideoFrame, None]:
        """The results, in source order; the run stops (its calls closed, the source released)
        when the iteration ends, early or not."""
        started = time.monotonic()
        try:
            await self._resolve_model()
        except BaseException:
            self.capture.close()
            raise
        loop = asyncio.get_running_loop()
        reader = threading.Thread(target=self._read, args=(loop,), name="video-reader", daemon=True)
        reader.start()
        tasks: set[asyncio.Task[None]] = set()
        builder = asyncio.ensure_future(self._build(tasks))
        try:
            async for frame in self._emit():
                self._clock(started)
                yield frame
            await builder  # its error, if any
        finally:
            self._stop.set()
            builder.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(builder, *tasks, return_exceptions=True)
            # A live source may hold the reader in a read until its next frame arrives.
            await asyncio.to_thread(reader.join, 10)
            self._clock(started)

    def _clock(self, started: float) -> None:
        self.stats.elapsed_s = time.monotonic() - started
        self.stats.fps = self.stats.frames / max(self.stats.elapsed_s, 1e-9)

    # -- the model ---------------------------------------------------------------------------

    async def _resolve_model(self) -> None:
        """Pin the deployed model (the one asked for, or the one answering this first call) and
        learn the model's input size."""
        listing = await self.endpoint.models(self.pinned)
        self.pinned = self.pinned or listing.deployed_model_id
        name = self.params.get("model") or listing.default_model
        model = next((m for m in listing.models if m.name == name), None)
        if model is None:
            known = ", ".join(m.name for m in listing.models) or "none"
            raise errors.ParameterError(
                f"deployed model {self.pinned} serves no model {name!r} (it serves {known})"
            )
        self._imgsz = int(self.params.get("imgsz") or model.imgsz)
        self.stats.deployed_model_id, self.stats.model = self.pinned, model.name
        self.stats.task, self.stats.keypoints = model.task, model.keypoints
        self._tracks.similarity = similarity_for(model.task)

    # -- reading (a thread) ------------------------------------------------------------------

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read, select (vid_stride, max_frames) and prepare frames; hand them to the loop."""
        try:
            taken = 0
            while not self._stop.is_set():
                if self.max_frames is not None and taken >= self.max_frames:
                    break
                item = self.capture.read()
                captured = time.monotonic()  # the glass: as the frame leaves the source
                if item is None:
                    break
                index, stamp, image = item
                if index % self.stride:
                    continue
                frame = _Frame(
                    index=index,
                    timestamp_ms=stamp,
                    sent=prepare(image, self._imgsz),
                    captured=captured,
                    original=encode_jpeg(image) if self.options.keep_frames else None,
                )
                taken += 1
                if self.live:
                    loop.call_soon_threadsafe(self._arrive, frame)
                else:  # a file waits for room: bounded memory
                    done = asyncio.run_coroutine_threadsafe(self._put(frame), loop)
                    while not self._stop.is_set():
                        with contextlib.suppress(TimeoutError):
                            done.result(timeout=0.2)
                            break
                    else:
                        done.cancel()
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, raised there
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._fail, exc)
        finally:
            self.capture.close()
            with contextlib.suppress(RuntimeError):  # the loop may be closing
                loop.call_soon_threadsafe(self._arrive, _END)

    def _arrive(self, frame: _Frame | object) -> None:
        """A frame read (on the loop's thread). Live: the oldest waiting go when over the bound."""
        self._waiting.append(frame)
        if frame is not _END:
            self.stats.read += 1
        while self.live and len(self._waiting) > self.buffer_size:
            self._waiting.popleft()
            self.stats.drops += 1
        self.stats.max_waiting = max(self.stats.max_waiting, len(self._waiting))
        self._signal.notify()

    async def _put(self, frame: _Frame) -> None:
        await self._signal.until(lambda: len(self._waiting) < self.buffer_size)
        self._arrive(frame)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._signal.notify()

    # -- windows -----------------------------------------------------------------------------

    async def _next_frame(self, wait: bool) -> _Frame | object | None:
        """The next frame read (``_END`` at the end); None when ``wait`` is off and none is
        there."""
        if not wait and not self._waiting:
            return None
        await self._signal.until(lambda: bool(self._waiting) or self._error is not None)
        if self._error is not None:
            raise self._error
        return self._waiting.popleft()

    async def _build(self, tasks: set[asyncio.Task[None]]) -> None:
        """Cut the frames into windows and start each when there is room for it."""
        shared: list[_Frame] = []
        carried: _Frame | None = None
        ended = False
        try:
            while not ended:
                await self._signal.until(self._room)
                frames, size = list(shared), sum(len(f.sent.jpeg) + PART_OVERHEAD for f in shared)
                kept = len(frames)  # shared frames still at the window's head
                while len(frames) < self.window_frames:
                    if carried is not None:
                        item: _Frame | object | None = carried
                        carried = None
                    else:
                        # live: send what is there once the window has a new frame
                        item = await self._next_frame(wait=not self.live or len(frames) == kept)
                    if item is None:
                        break
                    if item is _END:
                        ended = True
                        break
                    assert isinstance(item, _Frame)
                    cost = len(item.sent.jpeg) + PART_OVERHEAD
                    if size + cost > self.budget and len(frames) > kept:
                        carried = item  # the next window's
                        break
                    while size + cost > self.budget and kept:  # less overlap, not no window
                        size -= len(frames.pop(0).sent.jpeg) + PART_OVERHEAD
                        kept -= 1
                    if size + cost > self.budget:
                        raise errors.ParameterError(
                            f"frame {item.index} is {len(item.sent.jpeg)} bytes as JPEG: more "
                            f"than a window may carry ({self.budget} bytes)"
                        )
                    frames.append(item)
                    size += cost
                if len(frames) == kept:
                    break  # nothing new
                window = _Window(self._made, frames, kept)
                self._windows[window.number] = window
                self._made += 1
                shared = frames[-self.overlap :] if self.overlap else []
                self.stats.in_flight += 1  # now: the next _room() must see it
                task = asyncio.ensure_future(self._send(window))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            self._building = False
            self._signal.notify()

    def _room(self) -> bool:
        """Whether another window may start: fewer in flight than the concurrency, and a bound
        on the windows held for their results to be passed on in order (a file may read one
        round ahead; a live source none: what waits for a window is what can be dropped)."""
        limit = self.concurrency
        held = limit if self.live else 2 * limit
        return self.stats.in_flight < limit and len(self._windows) < held

    async def _send(self, window: _Window) -> None:
        """Run ``window`` (counted in flight by the builder), resuming after the last frame
        received when a try fails."""
        start, first, attempt = 0, window.shared, 1
        try:
            while True:
                part = _Part(start=start, first=first)
                self.stats.windows += 1
                try:
                    await self._run_part(window, part)
                    missing = self._missing(window)
                    if missing is None:
                        window.done = True
                        return
                    raise errors.StreamError(
                        f"window {window.number} ended at frame {window.frames[missing].index} "
                        "without its other frames"
                    )
                except Exception as exc:
                    missing = self._missing(window)
                    if missing is None:  # everything arrived before the failure
                        window.done = True
                        return
                    if not _retryable(exc) or attempt >= self.options.attempts:
                        window.error = exc
                        return
                    attempt += 1
                    self.stats.retries += 1
                    first = missing
                    start = max(0, missing - self.overlap) if self.tracking else missing
                    log.warning(
                        "window %d failed at frame %d (%s); sending it again from there",
                        window.number,
                        window.frames[missing].index,
                        exc,
                    )
                    await asyncio.sleep(self.backoff * (attempt - 1))
        finally:
            self.stats.in_flight -= 1
            self._signal.notify()

    async def _run_part(self, window: _Window, part: _Part) -> None:
        assert self.pinned is not None
        frames = [f.sent.jpeg for f in window.frames[part.start :]]
        async with contextlib.aclosing(self.endpoint.stream(frames, self.pinned, self.params)) as s:
            await self._receive(window, part, s)

    async def _receive(
        self,
        window: _Window,
        part: _Part,
        events: AsyncIterator[StreamStart | StreamFrame | StreamEnd],
    ) -> None:
        async for event in events:
            if isinstance(event, StreamStart):  # the client checked it is the pinned model's
                part.replica_id = event.replica_id
            elif isinstance(event, StreamFrame):
                position = part.start + event.index
                if not 0 <= position < len(window.frames):
                    raise errors.StreamError(f"window {window.number}: no frame {event.index}")
                detections = _scaled(event.detections, window.frames[position].sent)
                if position < part.first:
                    part.shared[position] = detections
                elif position not in window.received:
                    window.received[position] = (part, detections, event.classes)
                    if part.replica_id:
                        replicas = self.stats.replicas
                        replicas[part.replica_id] = replicas.get(part.replica_id, 0) + 1
                self._signal.notify()

    def _missing(self, window: _Window) -> int | None:
        """The first position of ``window`` still to receive (None: all there)."""
        for position in range(window.shared, len(window.frames)):
            if position not in window.received:
                return position
        return None

    # -- results in order --------------------------------------------------------------------

    async def _emit(self) -> AsyncIterator[VideoFrame]:
        number, position = 0, 0
        while True:
            window = self._windows.get(number)
            if window is None:
                if not self._building and number >= self._made:
                    if self._error is not None:
                        raise self._error
                    return
                await self._signal.until(partial(self._window_made, number))
                if self._error is not None:
                    raise self._error
                continue
            position = max(position, window.shared)
            if position >= len(window.frames):
                if window.error is not None:
                    raise window.error
                if window.done:
                    del self._windows[number]
                    number, position = number + 1, 0
                    self._signal.notify()
                    continue
            entry = window.received.get(position) if position < len(window.frames) else None
            if entry is None:
                if window.error is not None:
                    raise window.error
                await self._signal.until(partial(self._result_ready, window, position))
                if self._error is not None:
                    raise self._error
                continue
            yield self._result(window, position, *entry)
            position += 1

    def _window_made(self, number: int) -> bool:
        return number in self._windows or not self._building or self._error is not None

    def _result_ready(self, window: _Window, position: int) -> bool:
        return (
            position in window.received
            or window.error is not None
            or (window.done and position >= len(window.frames))
            or self._error is not None
        )

    def _result(
        self,
        window: _Window,
        position: int,
        part: _Part,
        detections: list[Detection],
        classes: list[Classification] | None,
    ) -> VideoFrame:
        frame = window.frames[position]
        if self.tracking:
            if part.mapping is None:  # the part's first result: join it on the shared frames
                shared = range(part.start, part.first)
                known = [self._recent[window.frames[p].index] for p in shared]
                local = [part.shared.get(p, []) for p in shared]
                part.mapping = self._tracks.mapping(known, local)
            detections = self._tracks.relabel(detections, part.mapping)
            self._recent[frame.index] = detections
            while len(self._recent) > self.overlap + 1:
                del self._recent[next(iter(self._recent))]
            self.stats.tracks = len(self._tracks.seen)
        pending = self.stats.read - self.stats.drops - self.stats.frames - 1
        self.stats.max_pending = max(self.stats.max_pending, pending)
        self._classes.update(d.class_name for d in detections)
        if classes:
            self._classes[classes[0].class_name] += 1  # a classified frame counts as its top
        self.stats.class_counts = dict(self._classes)
        self.stats.frames += 1
        latency = None
        if self.live:
            latency = (time.monotonic() - frame.captured) * 1000
            self._latencies.append(latency)
            if self.stats.frames % 10 == 1:
                p50, p95 = percentiles(self._latencies, 50, 95)
                self.stats.latency_p50_ms, self.stats.latency_p95_ms = p50, p95
        return VideoFrame(
            index=frame.index,
            timestamp_ms=frame.timestamp_ms,
            detections=detections,
            deployed_model_id=self.pinned or "",
            replica_id=part.replica_id,
            latency_ms=latency,
            image=frame.original,
            classes=classes,
        )

    def finish_stats(self) -> VideoStats:
        """The stats with the final latency percentiles."""
        if self._latencies:
            p50, p95 = percentiles(self._latencies, 50, 95)
            self.stats.latency_p50_ms, self.stats.latency_p95_ms = p50, p95
        return self.stats

    # -- the run's face (client._bridge.Run) ---------------------------------------------------

    def items(self) -> AsyncGenerator[VideoFrame, None]:
        return self.frames()

    def finish(self) -> None:
        self.finish_stats()

    def release(self) -> None:
        self.capture.close()
