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
* every model call runs on one of ``SERVE_WORKERS`` inference threads shared by all models
  (:class:`InferenceThreads`), each with its own count (:func:`torch_threads`): on CPU the
  usable cores shared among them, at least one each; on a GPU one (its CPU work is small:
  letterbox and copies; more threads would only spin on cores that decode);
  ``SERVE_TORCH_THREADS`` overrides both;
* the warm-up predicts run on those threads (Ultralytics' device set-up resets the count to
  ``min(8, cores - 1)`` in the thread that runs it; the count is set again after it).
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


def torch_threads(settings: Settings, device: str) -> int:
    """Torch threads for each inference thread (see the module docstring)."""
    if settings.torch_threads:
        return settings.torch_threads
    if is_accelerator(device):
        return 1
    return max(1, usable_cores() // settings.workers)


class InferenceThreads:
    """The process's ``SERVE_WORKERS`` inference threads, shared by every model: at most that
    many model calls run at once, each on a thread with ``threads`` torch threads. One OpenMP
    team per inference thread, whatever the number of models, so the process never manages
    more OpenMP threads than CPUs (a thread per model instance would: two demo models on 2
    cores already made three).

    Create it anywhere; call :meth:`start` in the running event loop before :meth:`run`.
    """

    def __init__(self, count: int, threads: int) -> None:
        self.threads = threads
        self.executors = [
            ThreadPoolExecutor(1, f"infer-{i}", initializer=partial(_set_threads, threads))
            for i in range(count)
        ]
        self._free: asyncio.Queue[ThreadPoolExecutor] | None = None

    def warm_up(self, index: int, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` (a model's first predict, which sets its device up) on inference thread
        ``index`` (blocking), then set that thread's count again: Ultralytics' device set-up
        resets it to ``min(8, cores - 1)``."""

        def run() -> Any:
            result = fn()
            _set_threads(self.threads)
            return result

        return self.executors[index % len(self.executors)].submit(run).result()

    def start(self) -> None:
        self._free = asyncio.Queue()
        for executor in self.executors:
            self._free.put_nowait(executor)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a free inference thread (waiting for one)."""
        assert self._free is not None, "InferenceThreads.start() first"
        executor = await self._free.get()
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        finally:
            self._free.put_nowait(executor)

    def close(self) -> None:
        """End the threads once their current call (if any) is done; no new work."""
        for executor in self.executors:
            executor.shutdown(wait=False, cancel_futures=True)


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
