"""The server's thread policy: how many threads PyTorch runs, and in which thread.

Measured on the project's 2-core machine (README "Threads, devices and FP16"): PyTorch's CPU
kernels run on GNU OpenMP (``libgomp``), which spins a team's idle threads between parallel
regions only while it manages no more threads than the machine has CPUs; past that it parks
them (futex sleep), and each of the hundreds of parallel regions of a YOLO forward pays a
wake-up.
A process that first used OpenMP on its main thread (importing torch, a model's set-up) keeps
that team forever, so an inference thread's own team then counts past the CPUs: YOLO11n at 640
ran 72 ms on a worker thread against 49 ms on the main thread with 2 threads each, the demo
model 16 ms against 8.5 ms. So:

* :func:`prepare_process` (before torch is imported) sets ``OMP_NUM_THREADS=1`` unless it is
  set: the main thread and every thread that decodes or serves keep single-thread teams;
* every model call runs on one of the inference threads shared by all models
  (:class:`InferenceThreads`): ``SERVE_WORKERS`` of them, by default (:func:`workers`) one per
  usable core up to 4 on CPU, shared among the server's processes (so one each with their
  default), and one on a GPU;
* on CPU the torch threads of a call follow the load (:class:`InferenceThreads`): a call that
  starts while no other runs gets every usable core (a lone request's lowest latency), calls
  side by side share the cores (a full queue's highest throughput: on 2 cores two one-thread
  calls side by side beat one two-thread call after another). Only one inference thread, the
  wide one, ever runs more than one torch thread, so the process never manages more OpenMP
  threads than cores. The server's other processes (app/processes.py) count as load too,
  through what they publish (app/siblings.py): the requests each has admitted, and whether one
  of its calls is wide (at most one is, across the processes). On a GPU one thread (its CPU
  work is small: letterbox and copies; more threads would only spin on cores that decode).
  ``SERVE_TORCH_THREADS`` fixes every call's count;
* Ultralytics' device set-up would set ``min(8, cores - 1)`` threads in the thread that runs a
  model's first predict: :func:`hold_ultralytics_threads` keeps it to one, and every call sets
  its own count.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from app.config import Settings
from app.siblings import Siblings

T = TypeVar("T")


def prepare_process() -> None:
    """Keep OpenMP teams outside the inference threads to one thread (before torch loads)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def usable_cores() -> int:
    """The CPUs this process may run on: its affinity, bounded by the CPU quota of its cgroup v2
    namespace root (a container's), whole CPUs only (1.5 CPUs: 1 thread, never oversubscribed)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def is_cuda(device: str) -> bool:
    """``cuda``, ``cuda:N`` or ``N`` (Ultralytics' spelling of ``cuda:N``)."""
    return device.startswith("cuda") or device.isdigit()


def is_accelerator(device: str) -> bool:
    return is_cuda(device) or device == "mps"


#: the most inference threads ``SERVE_WORKERS``'s default starts on CPU (each is one instance
#: of every model: memory grows with it, and past a few busy calls each share is small)
MAX_DEFAULT_WORKERS = 4


def workers(settings: Settings, device: str, processes: int = 1) -> int:
    """Inference threads of each of the server's ``processes`` (and instances of each model):
    ``SERVE_WORKERS``, else one per usable core up to :data:`MAX_DEFAULT_WORKERS` on CPU, shared
    among the processes (each has at least one); one on an accelerator."""
    if settings.workers:
        return settings.workers
    if is_accelerator(device):
        return 1
    return max(1, min(usable_cores(), MAX_DEFAULT_WORKERS) // processes)


def adaptive(settings: Settings, device: str) -> bool:
    """Whether a call's torch threads follow the load: on CPU unless ``SERVE_TORCH_THREADS``."""
    return not settings.torch_threads and not is_accelerator(device)


def torch_threads(settings: Settings, device: str) -> int:
    """Torch threads of a call that runs alone: ``SERVE_TORCH_THREADS``, else every usable core
    on CPU and one on an accelerator (see the module docstring for calls side by side)."""
    if settings.torch_threads:
        return settings.torch_threads
    if is_accelerator(device):
        return 1
    return usable_cores()


class InferenceThreads:
    """The process's inference threads, shared by every model: at most ``count`` model calls run
    at once, one per thread. One OpenMP team per inference thread, whatever the number of models
    (a thread per model instance would count past the CPUs: two demo models on 2 cores already
    made three).

    Following the load (``adaptive``): thread 0 is the **wide** one, taken first whenever it is
    free; a call on it runs with the ``cores`` minus one for each call running on the others;
    a call on any other thread runs with one. GNU OpenMP keeps a thread's team (its pool of
    worker threads) for good once made, so only the wide thread may ever make one larger than
    one: the process then manages at most ``cores`` OpenMP threads, however the calls fall
    (two inference threads with teams of two each, on 2 cores, made every call twice as slow).
    For the same reason Ultralytics' device set-up, in a model's first predict, must not set the
    count itself (:func:`hold_ultralytics_threads`). Fixed (not adaptive): every call
    ``threads`` torch threads.

    Create it anywhere; call :meth:`start` in the running event loop before :meth:`run`.
    """

    def __init__(
        self, count: int, threads: int, adaptive: bool = False, siblings: Siblings | None = None
    ) -> None:
        self.count, self.threads, self.adaptive = count, threads, adaptive
        self.siblings = siblings or Siblings()  # the server's other processes (app/processes.py)
        self.executors = [ThreadPoolExecutor(1, f"infer-{i}") for i in range(count)]
        self._running = [False] * count  # changed on the event loop only
        self._waiters: deque[asyncio.Future[int]] = deque()
        self._admitted = 0

    def admitted(self, change: int) -> None:
        """Requests (and stream frames) admitted by the models and not yet answered changed by
        ``change``: what the server's other processes see of this one's load."""
        self._admitted += change
        self.siblings.set_demand(self._admitted)

    @property
    def busy(self) -> int:
        """Calls running now."""
        return sum(self._running)

    def threads_for(self, index: int) -> int:
        """Torch threads of a call starting now on inference thread ``index``."""
        if not self.adaptive:
            return self.threads
        if index != 0 or self.siblings.wide_elsewhere():
            return 1
        elsewhere = self.siblings.busy_elsewhere(self.count)
        return max(1, self.threads - sum(self._running[1:]) - elsewhere)

    def describe(self) -> str:
        """``N x T torch threads``, T a range when it follows the load (the log's wording)."""
        low = 1 if self.adaptive and self.count > 1 else self.threads
        counts = f"{self.threads}" if low == self.threads else f"{low}-{self.threads}"
        return f"{self.count} x {counts} torch threads"

    def warm_up(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` (a model's first predict, which sets its device up) on the wide thread,
        blocking (at load, before the event loop runs calls), with every usable core."""
        run = partial(_with_threads, self.threads, fn)
        return self.executors[0].submit(run).result()

    def start(self) -> None:
        """Ready for :meth:`run` (in the running event loop)."""
        self._running = [False] * self.count

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a free inference thread, the wide one when it is free (waiting for
        one)."""
        index = await self._acquire()
        threads = self.threads_for(index)
        wide = threads > 1 and self.adaptive and self.siblings.claim_wide()
        call = partial(_with_threads, threads if wide or not self.adaptive else 1, fn, *args)
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executors[index], call)
        finally:
            if wide:
                self.siblings.release_wide()
            self._release(index)

    async def _acquire(self) -> int:
        for index in range(self.count):
            if not self._running[index]:
                self._running[index] = True
                return index
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a thread as it was cancelled
                self._release(waiter.result())
            raise

    def _release(self, index: int) -> None:
        """Hand thread ``index`` to the oldest waiter, or free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(index)  # stays running, for the waiter
                return
        self._running[index] = False

    def close(self) -> None:
        """End the threads once their current call (if any) is done; no new work."""
        for executor in self.executors:
            executor.shutdown(wait=False, cancel_futures=True)


def _with_threads(threads: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` with ``threads`` torch threads in this thread. Set before every call (a few
    microseconds, when it differs): Ultralytics' device set-up, in a model's first predict,
    resets the count."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return fn(*args)


def hold_ultralytics_threads() -> None:
    """Keep Ultralytics' device set-up from setting the torch thread count: it sets
    ``min(8, cores - 1)`` (its ``NUM_THREADS``, meant for training) in the thread that runs a
    model's first predict, whose warm-up inference would then make an OpenMP team of that size
    there for good (on a thread that must run one). Every call sets its own count anyway
    (:func:`_with_threads`); Ultralytics uses the constant for nothing else the server runs
    (data loaders and training)."""
    from ultralytics.utils import torch_utils

    torch_utils.NUM_THREADS = 1


def policy(settings: Settings, device: str, siblings: Siblings | None = None) -> InferenceThreads:
    """The process's inference threads for ``settings`` on ``device``, beside the server's other
    processes (``siblings``; none: a lone process)."""
    processes = siblings.count if siblings else 1
    return InferenceThreads(
        workers(settings, device, processes),
        torch_threads(settings, device),
        adaptive(settings, device),
        siblings,
    )
