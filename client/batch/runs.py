"""What ``Client.batch`` and ``AsyncClient.batch`` return: the engine's run over a client
(:class:`AsyncBatchStream` on the caller's loop; :class:`BatchStream` on a loop of its own, in a
thread, its calls on a pool of threads: :mod:`client._bridge`), iterated for
:class:`~client.batch.engine.BatchLine`s as the calls finish, with live
:class:`~client.batch.engine.BatchStats` as ``stats``."""

from __future__ import annotations

from typing import Any

from client._bridge import AsyncRun, ThreadedRun
from client.batch.engine import MAX_CONCURRENCY, BatchLine, BatchRun, BatchStats


class AsyncBatchStream(AsyncRun[BatchLine]):
    """``AsyncClient.batch``'s run: ``async for line in run``; ``run.stats``."""

    run: BatchRun

    @property
    def stats(self) -> BatchStats:
        return self.run.stats


class BatchStream(ThreadedRun[BatchLine]):
    """``Client.batch``'s run: ``for line in run``; ``run.stats``; ``close()`` (or leave the
    ``with`` block) to stop early."""

    run: BatchRun

    def __init__(self, make_run: Any, client: Any, concurrency: int | None = None) -> None:
        super().__init__(make_run, client, (concurrency or MAX_CONCURRENCY) + 1, "batch-call")

    @property
    def stats(self) -> BatchStats:
        return self.run.stats
