"""What ``Client.video`` and ``AsyncClient.video`` return: a run of the engine over a client.

The engine (:class:`~client.video.engine.VideoRun`) is asyncio. :class:`AsyncVideoStream` runs it
on the caller's loop over an ``AsyncClient``; :class:`VideoStream` runs it on a loop of its own,
in a thread, over a blocking ``Client`` whose calls run on a pool of threads (one per window in
flight), and hands the results over through a bounded queue. Both are iterated for
:class:`~client.video.engine.VideoFrame` results in source order and show
:class:`~client.video.engine.VideoStats` as ``stats``, live.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from client.schema import ModelList, StreamEnd, StreamFrame, StreamStart
from client.video.engine import MAX_CONCURRENCY, VideoFrame, VideoRun, VideoStats

_DONE = object()


class AsyncWindows:
    """The engine's :class:`~client.video.engine.Endpoint` over an ``AsyncClient``."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def models(self, deployed_model_id: str | None) -> ModelList:
        result: ModelList = await self.client.models(deployed_model_id=deployed_model_id)
        return result

    async def stream(
        self, frames: list[bytes], deployed_model_id: str, params: Mapping[str, Any]
    ) -> AsyncIterator[StreamStart | StreamFrame | StreamEnd]:
        stream = await self.client.stream(frames, deployed_model_id=deployed_model_id, **params)
        async with stream:
            async for event in stream:
                yield event


class ThreadedWindows:
    """The engine's :class:`~client.video.engine.Endpoint` over a blocking ``Client``: each call
    on a thread of ``pool``, a stream's events passed to the loop as they arrive."""

    def __init__(self, client: Any, pool: ThreadPoolExecutor) -> None:
        self.client, self.pool = client, pool

    async def models(self, deployed_model_id: str | None) -> ModelList:
        loop = asyncio.get_running_loop()
        result: ModelList = await loop.run_in_executor(
            self.pool, lambda: self.client.models(deployed_model_id=deployed_model_id)
        )
        return result

    async def stream(
        self, frames: list[bytes], deployed_model_id: str, params: Mapping[str, Any]
    ) -> AsyncIterator[StreamStart | StreamFrame | StreamEnd]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()
        opened: list[Any] = []
        hang_up = threading.Event()

        def hand(ok: bool, value: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closing: nobody listens
                loop.call_soon_threadsafe(events.put_nowait, (ok, value))

        def work() -> None:
            try:
                stream = self.client.stream(frames, deployed_model_id=deployed_model_id, **params)
                opened.append(stream)
                if hang_up.is_set():  # hung up while it opened
                    stream.close()
                    return
                with stream:
                    for event in stream:
                        if hang_up.is_set():
                            return
                        hand(True, event)
                hand(True, _DONE)
            except BaseException as exc:  # noqa: BLE001 - raised on the loop's side
                hand(False, exc)

        loop.run_in_executor(self.pool, work)
        try:
            while True:
                ok, value = await events.get()
                if not ok:
                    raise value
                if value is _DONE:
                    return
                yield value
        finally:
            hang_up.set()
            for stream in opened:  # closing the response ends the thread's read
                stream.close()


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
    ``with`` block, or stop iterating and drop it) to stop early."""

    def __init__(self, make_run: Any, client: Any, windows: int | None = None) -> None:
        workers = (windows or MAX_CONCURRENCY) + 1  # every window in flight, and /models
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="video-window")
        self.run: VideoRun = make_run(ThreadedWindows(client, self._pool))
        self._queue: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=64)
        self._closed = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="video-run", daemon=True)
        self._consumed = False

    @property
    def stats(self) -> VideoStats:
        return self.run.stats

    def _hand(self, item: tuple[bool, Any]) -> bool:
        """Put ``item`` for the consumer (a worker thread waits for room); False once closed."""
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _pump(self) -> None:
        async def main() -> None:
            self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
            self._started.set()
            try:
                async with contextlib.aclosing(self.run.frames()) as frames:
                    async for frame in frames:  # closed here, even when cancelled
                        if not await asyncio.to_thread(self._hand, (True, frame)):
                            return
                self.run.finish_stats()
                await asyncio.to_thread(self._hand, (True, _DONE))
            except asyncio.CancelledError:
                pass
            except BaseException as exc:  # noqa: BLE001 - raised in the consumer's thread
                await asyncio.to_thread(self._hand, (False, exc))

        try:
            asyncio.run(main())
        finally:
            self._started.set()
            # The windows' streams are closed (hung up): their threads end on their own.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._hand((True, _DONE))  # the consumer never waits for nothing

    def __iter__(self) -> Iterator[VideoFrame]:
        if self._consumed:
            raise RuntimeError("a video run can be iterated once")
        self._consumed = True
        self._thread.start()
        try:
            while True:
                try:
                    ok, value = self._queue.get(timeout=1)
                except queue.Empty:
                    if self._thread.is_alive():
                        continue
                    return  # (cannot happen: the run always hands a last item)
                if not ok:
                    raise value
                if value is _DONE:
                    return
                yield value
        finally:
            self.close()

    def close(self) -> None:
        """Stop the run: its calls are closed, its threads end, the source is released."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._thread.is_alive():
            self._started.wait(10)
            if self._loop is not None and self._task is not None:
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._task.cancel)
            self._thread.join(30)
        else:
            self.run.capture.close()
            self._pool.shutdown(wait=False)

    def __enter__(self) -> VideoStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
