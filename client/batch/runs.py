"""What ``Client.batch`` and ``AsyncClient.batch`` return: a run of the engine over a client
(:class:`AsyncBatchStream` on the caller's loop; :class:`BatchStream` on a loop of its own, in a
thread, its calls on a pool of threads), iterated for :class:`~client.batch.engine.BatchLine`s
as the calls finish, with live :class:`~client.batch.engine.BatchStats` as ``stats``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from client._bridge import ThreadedCalls, ThreadedIterator
from client.batch.engine import MAX_CONCURRENCY, BatchLine, BatchRun, BatchStats


class AsyncBatchStream:
    """``AsyncClient.batch``'s run: ``async for line in run``; ``run.stats``."""

    def __init__(self, run: BatchRun) -> None:
        self.run = run

    @property
    def stats(self) -> BatchStats:
        return self.run.stats

    async def __aiter__(self) -> AsyncIterator[BatchLine]:
        async with contextlib.aclosing(self.run.lines()) as lines:
            async for line in lines:
                yield line


class BatchStream:
    """``Client.batch``'s run: ``for line in run``; ``run.stats``; ``close()`` (or leave the
    ``with`` block) to stop early."""

    def __init__(self, make_run: Any, client: Any, concurrency: int | None = None) -> None:
        workers = (concurrency or MAX_CONCURRENCY) + 1
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="batch-call")
        self.run: BatchRun = make_run(ThreadedCalls(client, self._pool))
        self._lines = ThreadedIterator(
            self.run.lines,
            finally_=lambda: self._pool.shutdown(wait=False, cancel_futures=True),
            name="batch-run",
        )

    @property
    def stats(self) -> BatchStats:
        return self.run.stats

    def __iter__(self) -> Iterator[BatchLine]:
        return iter(self._lines)

    def close(self) -> None:
        if not self._lines.started:
            self._pool.shutdown(wait=False)
        self._lines.close()

    def __enter__(self) -> BatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
