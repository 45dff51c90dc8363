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
  usable core up to 4 on CPU and one on a GPU;
* on CPU the torch threads of a call follow the load (:func:`adaptive`): a call that starts
  while no other runs gets every usable core (a lone request's lowest latency), a call that
  starts while others run gets the cores shared among the busy calls, at least one (a full
  queue's highest throughput: on 2 cores two one-thread calls side by side beat one two-thread
  call after another). A call keeps its count until it ends, so the process may briefly manage
  more threads than cores when a second call starts beside a lone one; from then on, while the
  load stays, every call runs with its share. On a GPU one thread (its CPU work is small:
  letterbox and copies; more threads would only spin on cores that decode).
  ``SERVE_TORCH_THREADS`` fixes the count of every call;
* the warm-up predicts run on those threads (Ultralytics' device set-up resets the count to
  ``min(8, cores - 1)`` in the thread that runs it; every call sets its count again).
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from app.config import Settings

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


def workers(settings: Settings, device: str) -> int:
    """Inference threads (and instances of each model): ``SERVE_WORKERS``, else one per usable
    core up to :data:`MAX_DEFAULT_WORKERS` on CPU, one on an accelerator."""
    if settings.workers:
        return settings.workers
    if is_accelerator(device):
        return 1
    return min(usable_cores(), MAX_DEFAULT_WORKERS)


def adaptive(settings: Settings, device: str) -> bool:
    """Whether a call's torch threads follow the load: on CPU unless ``SERVE_TORCH_THREADS``."""
    return not settings.torch_threads and not is_accelerator(device)


def torch_threads(settings: Settings, device: str, busy: int | None = None) -> int:
    """Torch threads for a call that starts while ``busy`` calls run, itself included (see
    the module docstring); ``busy=None``: at full load (every inference thread busy)."""
    if settings.torch_threads:
        return settings.torch_threads
    if is_accelerator(device):
        return 1
    busy = workers(settings, device) if busy is None else busy
    return max(1, usable_cores() // max(1, busy))


class InferenceThreads:
    """The process's inference threads, shared by every model: at most ``count`` model calls run
    at once. A call runs with ``threads(busy)`` torch threads, ``busy`` the calls running when
    it starts, itself included (:func:`policy`). One OpenMP team per inference thread, whatever
    the number of models (a thread per model instance would count past the CPUs: two demo
    models on 2 cores already made three).

    Create it anywhere; call :meth:`start` in the running event loop before :meth:`run`.
    """

    def __init__(self, count: int, threads: Callable[[int], int]) -> None:
        self.count, self.threads = count, threads
        self.executors = [ThreadPoolExecutor(1, f"infer-{i}") for i in range(count)]
        self._free: asyncio.Queue[ThreadPoolExecutor] | None = None
        self.busy = 0  # calls running now (changed on the event loop only)

    def describe(self) -> str:
        """``N x T torch threads``, T a range when it follows the load (the log's wording)."""
        lone, full = self.threads(1), self.threads(self.count)
        counts = f"{lone}" if lone == full else f"{full}-{lone}"
        return f"{self.count} x {counts} torch threads"

    def warm_up(self, index: int, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` (a model's first predict, which sets its device up) on inference thread
        ``index`` (blocking), then set that thread's count again: Ultralytics' device set-up
        resets it to ``min(8, cores - 1)``."""

        run = partial(_with_threads, self.threads(1), fn)
        return self.executors[index % len(self.executors)].submit(run).result()

    def start(self) -> None:
        self._free = asyncio.Queue()
        for executor in self.executors:
            self._free.put_nowait(executor)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a free inference thread (waiting for one)."""
        assert self._free is not None, "InferenceThreads.start() first"
        executor = await self._free.get()
        self.busy += 1
        call = partial(_with_threads, self.threads(self.busy), fn, *args)
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, call)
        finally:
            self.busy -= 1
            self._free.put_nowait(executor)

    def close(self) -> None:
        """End the threads once their current call (if any) is done; no new work."""
        for executor in self.executors:
            executor.shutdown(wait=False, cancel_futures=True)


def _with_threads(threads: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` with ``threads`` torch threads in this thread. Set before every call (a few
    microseconds) when it differs: Ultralytics' device set-up, in a model's first predict, resets the count."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return fn(*args)


def policy(settings: Settings, device: str) -> InferenceThreads:
    """The process's inference threads for ``settings`` on ``device``."""
    if adaptive(settings, device):
        return InferenceThreads(workers(settings, device), partial(_adaptive_count, usable_cores()))
    fixed = torch_threads(settings, device)
    return InferenceThreads(workers(settings, device), lambda busy: fixed)


def _adaptive_count(cores: int, busy: int) -> int:
    return max(1, cores // max(1, busy))
