"""Per-model scheduling: admission (a bounded queue), dynamic batching and the instance pool.

Every route goes through its model's :class:`Scheduler`:

* :meth:`Scheduler.admit` takes a place in the model's queue before any work is done for a
  request (decoding included) and gives it back when the request's inference is over. When
  ``SERVE_QUEUE_SIZE`` places are taken it raises :class:`~app.errors.Overloaded` (429 with
  ``Retry-After``), so memory is bounded by the queue, not by the offered load. A ``/stream``
  frame takes a place while it is in flight but is never refused (the stream was admitted when
  it started).
* :meth:`Scheduler.predict` runs one work item (a request's images, or a frame) on an instance
  from the pool, on one of the process's inference threads (``SERVE_WORKERS``, shared by every
  model: :class:`app.threads.InferenceThreads`). With batching off that is one ``predict`` per
  item, as soon as an instance is free. With batching on, a batcher task gathers items whose ``key`` is equal
  (same predict arguments, so one ``predict`` call serves them all) up to ``max_size`` images or
  ``max_delay`` after the oldest one arrived, runs them as one ``predict`` and hands each item its
  own slice of the results, in order. It waits only while another admitted request is still
  being decoded (nothing else can join a batch sooner), so a lone request is never delayed (and
  goes straight to a free instance, past the batcher). If
  a batched call raises, each of its items runs again alone: a bad input fails only its own
  request.

A model starts with one warm instance; when it has more requests admitted than instances, one
more is made and warmed on a free inference thread (a few hundred ms, once) and joins the pool, up to
``most`` (the number of inference threads): instances cost memory and start-up time only where
requests run side by side.

An inference thread cannot be interrupted, so an instance goes back to the pool only when its
call is done: calls run in their own tasks, which a cancelled caller (a client gone from a
stream) does not cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

from app.config import Settings
from app.errors import Overloaded
from app.metrics import BATCH_SIZE, INFERENCE_WAITING, QUEUE_DEPTH
from app.threads import InferenceThreads

log = logging.getLogger("app.scheduler")

# fn(instance, images) -> one result per image, in order
PredictFn = Callable[[Any, list[Any]], list[Any]]


@dataclass(frozen=True)
class Policy:
    """How one model schedules its work (built from the settings and the model's format)."""

    batching: bool = False
    max_size: int = 8  # images per batched predict
    max_delay: float = 0.005  # seconds the oldest item may wait for others
    queue_size: int = 64  # requests waiting for or in inference
    retry_after: int = 1  # seconds, in the 429's Retry-After

    @classmethod
    def from_settings(cls, settings: Settings, model_format: str) -> Policy:
        """``SERVE_BATCHING=auto`` is on for PyTorch weights (measured faster under concurrency
        on CPU and CUDA alike: README "Benchmarks") and off for static exports, which
        Ultralytics runs once per image anyway."""
        batching = settings.batching == "on" or (
            settings.batching == "auto" and model_format == "pt"
        )
        return cls(
            batching=batching and settings.batch_max_size > 1,
            max_size=settings.batch_max_size,
            max_delay=settings.batch_max_delay_ms / 1000,
            queue_size=settings.queue_size,
        )

    def describe(self) -> str:
        batching = (
            f"on (up to {self.max_size} images, {self.max_delay * 1000:g} ms)"
            if self.batching
            else "off"
        )
        return f"batching {batching}, queue {self.queue_size}"


@dataclass(eq=False)
class _Item:
    """One request's (or frame's) images, waiting for a batch."""

    images: list[Any]
    key: Hashable
    fn: PredictFn
    arrived: float
    future: asyncio.Future[list[Any]] = field(repr=False)


class Scheduler:
    """Admission, batching and the instance pool of one model.

    Create it and call :meth:`start` inside the running event loop.
    """

    def __init__(
        self,
        name: str,
        instances: list[Any],
        policy: Policy,
        threads: InferenceThreads,
        make: Callable[[], Any] | None = None,
        most: int = 1,
    ) -> None:
        self.name, self.policy, self.threads = name, policy, threads
        self._instances = instances
        self._make, self._most = make, most
        self._growing = False
        self._pool: asyncio.Queue[Any] = asyncio.Queue()
        self._depth = 0  # admitted and not yet done
        self._items = 0  # submitted to predict and not yet done
        self._pending: deque[_Item] = deque()
        self._waiting = 0  # callers waiting for an instance (batching off)
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        for instance in self._instances:
            self._pool.put_nowait(instance)
        QUEUE_DEPTH.labels(self.name).set(0)
        self._count_waiting()
        if self.policy.batching:
            self._spawn(self._batch_forever())

    @property
    def depth(self) -> int:
        """Requests (and stream frames) admitted and not yet done."""
        return self._depth

    def _ensure_room(self) -> None:
        """Raise :class:`Overloaded` when the queue is full."""
        if self._depth >= self.policy.queue_size:
            raise Overloaded(
                f"model {self.name!r} is at capacity: {self._depth} requests are waiting for or "
                f"in inference (limit {self.policy.queue_size}); retry after "
                f"{self.policy.retry_after} s",
                retry_after=self.policy.retry_after,
            )

    @contextlib.contextmanager
    def admit(self, force: bool = False) -> Iterator[None]:
        """Hold a place in the queue for the block; refused (429) when full unless ``force``."""
        if not force:
            self._ensure_room()
        self._depth += 1
        self.threads.admitted(1)
        QUEUE_DEPTH.labels(self.name).set(self._depth)
        if self._depth > len(self._instances):
            self._grow()
        try:
            yield
        finally:
            self._depth -= 1
            self.threads.admitted(-1)
            QUEUE_DEPTH.labels(self.name).set(self._depth)
            self._changed.set()  # the batcher may stop waiting for this request

    async def predict(self, images: list[Any], key: Hashable, fn: PredictFn) -> list[Any]:
        """``fn(instance, images)`` in a worker thread, maybe batched with other equal-key items.

        Items with equal keys promise that one ``fn`` serves them all: the batch runs the
        first item's ``fn`` over every item's images.
        """
        if self.policy.batching and self._alone():
            # Nothing to batch with, now or soon: straight to the free instance (the batcher's
            # hand-offs cost a few task switches for nothing).
            instance = self._pool.get_nowait()
            self._items += 1
            try:
                return await asyncio.shield(self._spawn(self._use(instance, fn, images)))
            finally:
                self._items -= 1
        if not self.policy.batching:
            self._waiting += 1
            self._count_waiting()
            try:
                instance = await self._pool.get()
            finally:
                self._waiting -= 1
                self._count_waiting()
            return await asyncio.shield(self._spawn(self._use(instance, fn, images)))
        loop = asyncio.get_running_loop()
        item = _Item(images, key, fn, loop.time(), loop.create_future())
        self._pending.append(item)
        self._count_waiting()
        self._items += 1
        self._changed.set()
        try:
            return await item.future  # a cancelled caller cancels the future: the batch skips it
        finally:
            self._items -= 1

    # --- internals --------------------------------------------------------------------------

    def _count_waiting(self) -> None:
        """``yolo_inference_waiting``: submitted to predict, not yet running (pending for a
        batch, or waiting for an instance)."""
        INFERENCE_WAITING.labels(self.name).set(self._waiting + len(self._pending))

    @property
    def instances(self) -> int:
        return len(self._instances)

    def _grow(self) -> None:
        """One more instance, made on an inference thread, unless one is on its way or the
        model has ``most``; the requests waiting meanwhile go to the instances there are."""
        if self._growing or self._make is None or len(self._instances) >= self._most:
            return
        self._growing = True
        self._spawn(self._add_instance(self._make))

    async def _add_instance(self, make: Callable[[], Any]) -> None:
        started = asyncio.get_running_loop().time()
        try:
            instance = await self.threads.run(make)
        except Exception:
            log.exception("model %s: another instance failed to load; keeping %d",
                          self.name, len(self._instances))  # fmt: skip
            self._make = None  # no retry storm: the instances there are carry on
            return
        finally:
            self._growing = False
        self._instances.append(instance)
        self._pool.put_nowait(instance)
        self._changed.set()
        log.info("model %s: instance %d of at most %d ready (%.2f s)", self.name,
                 len(self._instances), self._most,
                 asyncio.get_running_loop().time() - started)  # fmt: skip
        if self._depth > len(self._instances):
            self._grow()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _call(self, instance: Any, fn: PredictFn, images: list[Any]) -> list[Any]:
        BATCH_SIZE.labels(self.name).observe(len(images))
        # on one of the process's SERVE_WORKERS inference threads, shared by every model
        return await self.threads.run(fn, instance, images)

    async def _use(self, instance: Any, fn: PredictFn, images: list[Any]) -> list[Any]:
        """One call on ``instance`` (in its own task), which then goes back to the pool."""
        try:
            return await self._call(instance, fn, images)
        finally:
            self._pool.put_nowait(instance)

    async def _batch_forever(self) -> None:
        while True:
            while not self._pending:
                self._changed.clear()
                await self._changed.wait()
            instance = await self._pool.get()
            try:
                batch = await self._gather()
            except Exception:  # a bug here must not stop every later request of the model
                log.exception("model %s: the batcher failed; going on", self.name)
                batch = []
            except BaseException:
                self._pool.put_nowait(instance)
                raise
            if batch:
                self._spawn(self._run_batch(instance, batch))
            else:
                self._pool.put_nowait(instance)

    def _alone(self) -> bool:
        """Whether a new item would run alone: nothing pending, no other admitted request on its
        way to :meth:`predict`, and an instance free."""
        return not self._pending and self._depth <= self._items + 1 and not self._pool.empty()

    def _expecting(self) -> bool:
        """Whether an admitted request is still on its way (decoding) to :meth:`predict`."""
        return self._depth > self._items

    async def _gather(self) -> list[_Item]:
        """The next batch: the oldest item and the equal-key items after it, in order."""
        loop = asyncio.get_running_loop()
        policy = self.policy
        while True:
            while self._pending and self._pending[0].future.done():
                self._pending.popleft()  # its caller went away
                self._count_waiting()
            if not self._pending:
                return []
            first = self._pending[0]
            batch: list[_Item] = []
            size, full = 0, False
            for item in self._pending:
                if item.key != first.key or item.future.done():
                    continue
                if batch and size + len(item.images) > policy.max_size:
                    full = True
                    break
                batch.append(item)
                size += len(item.images)
            full = full or size >= policy.max_size
            wait = first.arrived + policy.max_delay - loop.time()
            if full or wait <= 0 or not self._expecting():
                taken = set(map(id, batch))
                self._pending = deque(i for i in self._pending if id(i) not in taken)
                self._count_waiting()
                return batch
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait)

    async def _run_batch(self, instance: Any, batch: list[_Item]) -> None:
        """Run a batch on ``instance`` (its own task) and hand each item its results."""
        try:
            batch = [item for item in batch if not item.future.done()]
            if not batch:
                return
            images = [image for item in batch for image in item.images]
            try:
                results = await self._call(instance, batch[0].fn, images)
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0], exc=exc)
                    return
                log.warning(
                    "model %s: a batch of %d requests failed (%s: %s); running each alone",
                    self.name, len(batch), type(exc).__name__, exc,
                )  # fmt: skip
                for item in batch:
                    if item.future.done():
                        continue
                    try:
                        _settle(item, await self._call(instance, item.fn, item.images))
                    except Exception as alone:
                        _settle(item, exc=alone)
                return
            start = 0
            for item in batch:
                _settle(item, results[start : start + len(item.images)])
                start += len(item.images)
        finally:
            self._pool.put_nowait(instance)


def _settle(
    item: _Item, results: list[Any] | None = None, exc: BaseException | None = None
) -> None:
    if item.future.done():
        return
    if exc is not None:
        item.future.set_exception(exc)
    else:
        item.future.set_result(results or [])
