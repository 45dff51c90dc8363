"""What ``Client.video`` and ``AsyncClient.video`` return: the engine's run over a client.

The engine (:class:`~client.video.engine.VideoRun`) is asyncio. :class:`AsyncVideoStream` runs it
on the caller's loop over an ``AsyncClient``; :class:`VideoStream` runs it on a loop of its own,
in a thread, over a blocking ``Client`` whose calls run on a pool of threads (one per window in
flight), and hands the results over through a bounded queue (:mod:`client._bridge`). Both are
iterated for :class:`~client.video.engine.VideoFrame` results in source order and show
:class:`~client.video.engine.VideoStats` as ``stats``, live.
"""

from __future__ import annotations

from typing import Any

from client._bridge import AsyncRun, ThreadedRun
from client.video.engine import MAX_CONCURRENCY, VideoFrame, VideoRun, VideoStats


class AsyncVideoStream(AsyncRun[VideoFrame]):
    """``AsyncClient.video``'s run: ``async for frame in run`` (once); ``run.stats``; ``async
    with`` it (or ``await run.aclose()``) to release the source of a run never iterated."""

    run: VideoRun

    @property
    def stats(self) -> VideoStats:
        return self.run.stats


class VideoStream(ThreadedRun[VideoFrame]):
    """``Client.video``'s run: ``for frame in run``; ``run.stats``; ``close()`` (or leave the
    ``with`` block, or stop iterating) to stop early."""

    run: VideoRun

    def __init__(self, make_run: Any, client: Any, windows: int | None = None) -> None:
        # every window in flight, and /models
        super().__init__(make_run, client, (windows or MAX_CONCURRENCY) + 1, "video-window")

    @property
    def stats(self) -> VideoStats:
        return self.run.stats
