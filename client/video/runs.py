"""What ``Client.video`` and ``AsyncClient.video`` return: a run of the engine over a client.

The engine (:class:`~client.video.engine.VideoRun`) is asyncio. :class:`AsyncVideoStream` runs it
on the caller's loop over an ``AsyncClient``; :class:`VideoStream` runs it on a loop of its own,
in a thread, over a blocking ``Client`` whose calls run on a pool of threads (one per window in
flight), and hands the results over through a bounded queue. Both are iterated for
:class:`~client.video.engine.VideoFrame` results in source order and show
:class:`~client.video.engine.VideoStats` as ``stats``, live.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from client._bridge import ThreadedCalls, ThreadedIterator
from client.video.engine import MAX_CONCURRENCY, VideoFrame, VideoRun, VideoStats


class AsyncVideoStream:
    """``AsyncClient.video``'s run: ``async for frame in run`` (once); ``run.stats``; ``async
    with`` it (or ``await run.aclose()``) to release the source of a run never iterated."""

    def __init__(self, run: VideoRun) -> None:
        self.run = run
        self._consumed = False

    @property
    def stats(self) -> VideoStats:
        return self.run.stats

    async def __aiter__(self) -> AsyncIterator[VideoFrame]:
        if self._consumed:
            raise RuntimeError("a video run can be iterated once")
        self._consumed = True
        async with contextlib.aclosing(self.run.frames()) as frames:
            async for frame in frames:
                yield frame
        self.run.finish_stats()

    async def aclose(self) -> None:
        if not self._consumed:
            self._consumed = True
            self.run.capture.close()

    async def __aenter__(self) -> AsyncVideoStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class VideoStream:
    """``Client.video``'s run: ``for frame in run``; ``run.stats``; ``close()`` (or leave the
    ``with`` block, or stop iterating) to stop early."""

    def __init__(self, make_run: Any, client: Any, windows: int | None = None) -> None:
        workers = (windows or MAX_CONCURRENCY) + 1  # every window in flight, and /models
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="video-window")
        self.run: VideoRun = make_run(ThreadedCalls(client, self._pool))
        self._frames = ThreadedIterator(
            self.run.frames,
            after=self.run.finish_stats,
            # The windows' streams are closed (hung up): their threads end on their own.
            finally_=lambda: self._pool.shutdown(wait=False, cancel_futures=True),
            name="video-run",
        )

    @property
    def stats(self) -> VideoStats:
        return self.run.stats

    def __iter__(self) -> Iterator[VideoFrame]:
        return iter(self._frames)

    def close(self) -> None:
        """Stop the run: its calls are closed, its threads end, the source is released."""
        if not self._frames.started:
            self.run.capture.close()
            self._pool.shutdown(wait=False)
        self._frames.close()

    def __enter__(self) -> VideoStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
