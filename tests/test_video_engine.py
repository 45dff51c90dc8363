"""The video engine's bookkeeping, on its own: a scripted endpoint and a synthetic source.

No server here (``tests/test_video.py`` runs the engine through the emulator and real servers):
the endpoint below is a stand-in written for these cases, so that "a stream cut after its third
frame", "the peak number of streams at once" or "shared frames filling the body budget" are
states a test sets exactly. Each frame's colour carries its source index, so the endpoint
knows which frames a window holds, and answers one box that moves one pixel a frame with a
track id local to each call, as a real tracker would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import cv2
import numpy as np
import pytest

from client import errors
from client.schema import (
    Box,
    Detection,
    ModelInfo,
    ModelList,
    StreamEnd,
    StreamFrame,
    StreamStart,
)
from client.video import VideoFrame, VideoOptions, VideoRun
from client.video.source import SourceInfo
from client.video.tracks import match

SIZE = 64


class Frames:
    """A source of ``n`` flat frames whose colour says their index (Capture's interface)."""

    def __init__(self, n: int, live: bool = False) -> None:
        self.info = SourceInfo("synthetic", live, 10.0, None if live else n, SIZE, SIZE)
        self.n, self.index, self.closed = n, -1, False

    def read(self) -> tuple[int, float, np.ndarray] | None:
        if self.index + 1 >= self.n:
            return None
        self.index += 1
        image = np.zeros((SIZE, SIZE, 3), np.uint8)
        image[:, :, 0], image[:, :, 1] = 8 * (self.index % 30), 8 * (self.index // 30)
        return self.index, self.index * 100.0, image

    def close(self) -> None:
        self.closed = True


def index_of(jpeg: bytes) -> int:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    low, high = (round(float(image[:, :, c].mean()) / 8) for c in (0, 1))
    return 30 * high + low


class Endpoint:
    """Answers every window; ``cut``: (call number, frames to send first) to cut a call after;
    ``refuse``: an error for every call; ``delay``: seconds per frame (a model much slower than
    the source, so windows queue up behind the concurrency)."""

    def __init__(
        self,
        cut: tuple[int, int] | None = None,
        refuse: Exception | None = None,
        delay: float = 0.0,
    ) -> None:
        self.cut, self.refuse, self.delay = cut, refuse, delay
        self.calls: list[list[int]] = []
        self.active = self.peak = 0

    async def models(self, deployed_model_id: str | None) -> ModelList:
        info = ModelInfo(
            name="m", task="detect", classes={0: "dot"}, imgsz=SIZE, source="-", version="1",
            sha256="-", device="cpu", default=True,
        )  # fmt: skip
        return ModelList(models=[info], default_model="m", deployed_model_id="dm-1")

    async def stream(
        self, frames: list[bytes], deployed_model_id: str, params: Any
    ) -> AsyncGenerator[StreamStart | StreamFrame | StreamEnd, None]:
        call = len(self.calls)
        indices = [index_of(f) for f in frames]
        self.calls.append(indices)
        if self.refuse is not None:
            raise self.refuse
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            yield StreamStart(
                model="m", version="1", deployed_model_id=deployed_model_id, task="detect",
                source="frames", fps=None, frames=len(frames), width=SIZE, height=SIZE,
                track="bytetrack", replica_id=f"replica-{call % 2}",
            )  # fmt: skip
            for position, index in enumerate(indices):
                await asyncio.sleep(self.delay)  # the other windows run meanwhile
                if self.cut is not None and self.cut == (call, position):
                    raise errors.StreamError("cut", last_event_id=str(position - 1))
                box = Box(x1=index, y1=10, x2=index + 20, y2=30)
                dot = Detection(
                    class_id=0, class_name="dot", confidence=0.9, box=box, track_id=100 + call
                )
                yield StreamFrame(
                    index=position, timestamp_ms=None, inference_ms=1.0, detections=[dot]
                )
            yield StreamEnd(frames=len(frames), elapsed_ms=1, fps=1, class_counts={}, tracks=1)
        finally:
            self.active -= 1


def run(
    endpoint: Endpoint, n: int, options: VideoOptions, **params: Any
) -> tuple[list[VideoFrame], VideoRun]:
    engine = VideoRun(endpoint, Frames(n), params, options=options, backoff=0)  # type: ignore[arg-type]

    async def collect() -> list[VideoFrame]:
        return [frame async for frame in engine.frames()]

    return asyncio.run(collect()), engine


def test_windows_in_order_each_frame_once_one_track() -> None:
    endpoint = Endpoint()
    frames, engine = run(endpoint, 100, VideoOptions(window=10, overlap=3), track="bytetrack")
    assert [f.index for f in frames] == list(range(100))
    assert {d.track_id for f in frames for d in f.detections} == {1}  # joined over 14 windows
    assert [f.detections[0].box.x1 for f in frames] == list(range(100))
    assert len(endpoint.calls) == engine.stats.windows >= 14
    assert all(
        call[:3] == prev[-3:]
        for prev, call in zip(endpoint.calls, endpoint.calls[1:], strict=False)
    )


@pytest.mark.parametrize("concurrency", [1, 2, 5])
def test_never_more_windows_at_once_than_the_concurrency(concurrency: int) -> None:
    endpoint = Endpoint(delay=0.005)
    frames, _ = run(endpoint, 120, VideoOptions(window=6, concurrency=concurrency))
    assert len(frames) == 120 and 1 <= endpoint.peak <= concurrency


def test_default_concurrency_is_two_per_replica_seen_plus_one() -> None:
    endpoint = Endpoint(delay=0.005)  # answers as two replicas, in turn
    frames, engine = run(endpoint, 200, VideoOptions(window=4))
    assert len(frames) == 200 and endpoint.peak <= 5 and len(engine.stats.replicas) == 2


def test_a_cut_window_resumes_after_its_last_frame_with_the_overlap() -> None:
    """Call 2 is cut after 4 of its 10 frames: it is sent again from its 5th (with the 2 frames
    before it, to join the ids), and every frame comes out once, with one id."""
    endpoint = Endpoint(cut=(2, 4))
    frames, engine = run(endpoint, 40, VideoOptions(window=10, overlap=2), track="bytetrack")
    assert [f.index for f in frames] == list(range(40))
    assert {d.track_id for f in frames for d in f.detections} == {1}
    assert engine.stats.retries == 1
    cut = endpoint.calls[2]
    resumed = next(c for c in endpoint.calls[3:] if c[0] == cut[2])
    assert resumed == cut[2:]


def test_an_error_no_retry_can_mend_ends_the_run() -> None:
    refused = errors.BadRequestError("400: bad frame", status=400)
    endpoint = Endpoint(refuse=refused)
    with pytest.raises(errors.BadRequestError, match="bad frame"):
        run(endpoint, 20, VideoOptions(window=5))
    assert len(endpoint.calls) == 1  # not retried


def test_shared_frames_give_way_to_the_body_budget() -> None:
    """Windows of 8 sharing 6 frames, a budget of about 7 frames: the overlap shrinks so each
    window still carries a new frame; none is refused."""
    jpeg = len(cv2.imencode(".jpg", np.full((SIZE, SIZE, 3), 100, np.uint8))[1])
    options = VideoOptions(window=8, overlap=6, body_limit=(jpeg + 300) * 7, headroom=1.0)
    frames, _ = run(Endpoint(), 30, options, track="bytetrack")
    assert [f.index for f in frames] == list(range(30))
    assert {d.track_id for f in frames for d in f.detections} == {1}


def test_join_thresholds_before_assigning() -> None:
    """Two pairs at IoU 0.45 must not outweigh one at 0.6: the threshold applies first."""

    def det(track: int, x1: float, x2: float) -> Detection:
        box = Box(x1=x1, y1=0, x2=x2, y2=10)
        return Detection(class_id=0, class_name="d", confidence=0.9, box=box, track_id=track)

    known = [[det(1, 0, 10), det(2, 20, 30)]]
    # local 5 overlaps known 1 at 0.6; local 6 overlaps nothing well
    local = [[det(5, 2.5, 12.5), det(6, 13, 23)]]
    assert match(known, local) == {5: 1}


def test_live_drops_the_oldest_and_bounds_what_waits() -> None:
    """A live source read faster than windows go (the endpoint answers only when the test's
    loop turns): drops are counted, and what waits never passes the buffer."""
    engine = VideoRun(  # type: ignore[arg-type]
        Endpoint(),
        Frames(300, live=True),
        {},
        options=VideoOptions(window=2, concurrency=1, buffer=4),
        backoff=0,
    )

    async def collect() -> list[VideoFrame]:
        return [frame async for frame in engine.frames()]

    frames = asyncio.run(collect())
    stats = engine.stats
    assert stats.read == 300 and stats.frames + stats.drops == 300
    assert stats.max_waiting <= 4 and stats.max_pending <= 4 + 2
    assert [f.index for f in frames] == sorted({f.index for f in frames})
