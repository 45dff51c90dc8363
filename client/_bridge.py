"""The engines behind ``Client.video`` and ``Client.batch`` are asyncio; the blocking ``Client``
is not. What joins them:

* :class:`AsyncCalls` and :class:`ThreadedCalls`: the calls the engines make (``/models``, one
  ``/stream`` run, one image), over an ``AsyncClient`` on the loop, or over a blocking
  ``Client`` on a pool of threads (a stream's events passed to the loop as they arrive).
* :class:`ThreadedIterator`: an engine's async generator run on an event loop of its own, in a
  thread, its items handed to blocking code through a bounded queue (the generator waits while
  the consumer is behind); :meth:`~ThreadedIterator.close` cancels it, and the generator's own
  cleanup runs.
* :class:`ThreadedRun` and :class:`AsyncRun`: what ``Client.video``/``Client.batch`` and their
  ``AsyncClient`` twins return, whatever the engine (a :class:`Run`).

The clients are duck-typed here: this module sits below ``client._client``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, Protocol, TypeVar

from client.schema import ModelList, StreamEnd, StreamFrame, StreamStart

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
_DONE = object()


def _call(
    client: Any, route: str, image: bytes | str, deployed_model_id: str, params: Mapping[str, Any]
) -> Any:
    """One image on ``route`` (an image route's client method: ``detect``, ``classify``...;
    ``annotate``: its JSON form)."""
    if route == "annotate":
        return client.annotate(image, json=True, deployed_model_id=deployed_model_id, **params)
    return getattr(client, route)(image, deployed_model_id=deployed_model_id, **params)


class AsyncCalls:
    """The engines' calls (``models``, a ``/stream`` run for video, one image for batch) over
    an ``AsyncClient``."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def models(self, deployed_model_id: str | None) -> ModelList:
        result: ModelList = await self.client.models(deployed_model_id=deployed_model_id)
        return result

    async def infer(
        self, route: str, image: bytes | str, deployed_model_id: str, params: Mapping[str, Any]
    ) -> Any:
        return await _call(self.client, route, image, deployed_model_id, params)

    async def stream(
        self, frames: list[bytes], deployed_model_id: str, params: Mapping[str, Any]
    ) -> AsyncIterator[StreamStart | StreamFrame | StreamEnd]:
        stream = await self.client.stream(frames, deployed_model_id=deployed_model_id, **params)
        async with stream:
            async for event in stream:
                yield event


class ThreadedCalls:
    """:class:`AsyncCalls` over a blocking ``Client``: each call on a thread of ``pool``, a
    stream's events passed to the loop as they arrive."""

    def __init__(self, client: Any, pool: ThreadPoolExecutor) -> None:
        self.client, self.pool = client, pool

    async def models(self, deployed_model_id: str | None) -> ModelList:
        loop = asyncio.get_running_loop()
        result: ModelList = await loop.run_in_executor(
            self.pool, lambda: self.client.models(deployed_model_id=deployed_model_id)
        )
        return result

    async def infer(
        self, route: str, image: bytes | str, deployed_model_id: str, params: Mapping[str, Any]
    ) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.pool, lambda: _call(self.client, route, image, deployed_model_id, params)
        )

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


class ThreadedIterator(Generic[T]):
    """Iterate ``make()`` (an async generator) from a blocking thread, once.

    ``after`` runs on the loop once the generator is exhausted (not when it fails or is
    closed); ``finally_`` runs in the thread when it ends in any way.
    """

    def __init__(
        self,
        make: Callable[[], AsyncGenerator[T, None]],
        *,
        after: Callable[[], None] = lambda: None,
        finally_: Callable[[], None] = lambda: None,
        name: str = "async-run",
        size: int = 64,
    ) -> None:
        self._make, self._after, self._finally = make, after, finally_
        self._queue: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=size)
        self._closed = threading.Event()
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._consumed = False

    def _hand(self, item: tuple[bool, Any]) -> bool:
        """Put ``item`` for the consumer, waiting for room; False once closed."""
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        async def main() -> None:
            self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
            self._started.set()
            try:
                async with contextlib.aclosing(self._make()) as items:
                    async for item in items:  # closed here, even when cancelled
                        if not await asyncio.to_thread(self._hand, (True, item)):
                            return
                self._after()
            except asyncio.CancelledError:
                pass
            except BaseException as exc:  # noqa: BLE001 - raised in the consumer's thread
                with contextlib.suppress(asyncio.CancelledError):  # closed once it was handed
                    await asyncio.to_thread(self._hand, (False, exc))

        try:
            asyncio.run(main())
        finally:
            self._started.set()
            self._finally()
            self._hand((True, _DONE))  # the consumer never waits for nothing

    def __iter__(self) -> Iterator[T]:
        if self._consumed:
            raise RuntimeError("a run can be iterated once")
        self._consumed = True
        self._thread.start()
        try:
            while True:
                try:
                    ok, value = self._queue.get(timeout=1)
                except queue.Empty:
                    if self._thread.is_alive():
                        continue
                    return
                if not ok:
                    raise value
                if value is _DONE:
                    return
                yield value
        finally:
            self.close()

    @property
    def started(self) -> bool:
        return self._consumed

    def close(self) -> None:
        """Stop: the generator is cancelled and closed, the thread ends (waited for)."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._thread.is_alive():
            self._started.wait(10)
            if self._loop is not None and self._task is not None:
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._task.cancel)
            self._thread.join(30)


class Run(Protocol[T_co]):
    """What :class:`ThreadedRun` and :class:`AsyncRun` need of an engine's run: its live
    ``stats`` and the async generator of its items."""

    @property
    def stats(self) -> Any: ...

    def items(self) -> AsyncGenerator[T_co, None]: ...

    def finish(self) -> None:
        """Once every item is out (final figures)."""

    def release(self) -> None:
        """Let go of what the run holds before it starts (a video's capture)."""


class AsyncRun(Generic[T]):
    """An engine's run on the caller's loop over an ``AsyncClient``: ``async for item in run``
    (once), ``run.stats`` live; ``async with`` it (or ``await run.aclose()``) to release a run
    never iterated."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self._consumed = False

    @property
    def stats(self) -> Any:
        return self.run.stats

    async def __aiter__(self) -> AsyncIterator[T]:
        if self._consumed:
            raise RuntimeError("a run can be iterated once")
        self._consumed = True
        async with contextlib.aclosing(self.run.items()) as items:
            async for item in items:
                yield item
        self.run.finish()

    async def aclose(self) -> None:
        if not self._consumed:
            self._consumed = True
            self.run.release()

    async def __aenter__(self) -> AsyncRun[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class ThreadedRun(Generic[T]):
    """An engine's run over a blocking ``Client``: on a loop of its own in a thread, its calls on
    a pool of ``workers`` threads, its items handed over through a bounded queue. ``for item in
    run``; ``run.stats`` live; ``close()`` (or leave the ``with`` block, or stop iterating) stops
    it: its calls are closed, its threads end, what it holds is released."""

    def __init__(
        self, make_run: Callable[[ThreadedCalls], Any], client: Any, workers: int, name: str
    ) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=name)
        self.run = make_run(ThreadedCalls(client, self._pool))
        self._items: ThreadedIterator[T] = ThreadedIterator(
            self.run.items,
            after=self.run.finish,
            # streams in flight are closed (hung up): their threads end on their own
            finally_=lambda: self._pool.shutdown(wait=False, cancel_futures=True),
            name=name,
        )

    @property
    def stats(self) -> Any:
        return self.run.stats

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)

    def close(self) -> None:
        if not self._items.started:
            self.run.release()
            self._pool.shutdown(wait=False)
        self._items.close()

    def __enter__(self) -> ThreadedRun[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
