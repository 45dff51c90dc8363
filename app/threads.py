"""The server's thread policy: how many threads PyTorch runs, and in which thread.

Measured on the project's 2-core machine (README "Where the time goes"): PyTorch's CPU kernels
run on GNU OpenMP (``libgomp``), which spins a team's idle threads between parallel regions
only while it manages no more threads than the machine has CPUs; past that it parks them
(futex sleep), and every one of the hundreds of parallel regions of a YOLO forward pays a wake-up.
A process that first used OpenMP on its main thread (importing torch, a model's set-up) keeps
that team forever, so an inference thread's own team then counts past the CPUs: YOLO11n at 640
ran 72 ms on a worker thread against 49 ms on the main thread with 2 threads each, the demo
model 16 ms against 8.5 ms. So:

* :func:`prepare_process` (before torch is imported) sets ``OMP_NUM_THREADS=1`` unless it is
  set: the main thread and every thread that decodes or serves keep single-thread teams;
* each model instance's inference thread sets its own count (:func:`torch_threads`): on CPU the
  usable cores shared among the instances (``SERVE_WORKERS``), at least one each; on a GPU one
  (its CPU work is small: letterbox and copies; more threads would only spin on cores that
  decode); ``SERVE_TORCH_THREADS`` overrides both;
* the warm-up predict runs on that thread (Ultralytics' device set-up resets the count to
  ``min(8, cores - 1)`` in the thread that runs it; the count is set again after it).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from app.config import Settings


def prepare_process() -> None:
    """Keep OpenMP teams outside the inference threads to one thread (before torch loads)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def usable_cores() -> int:
    """The CPUs this process may run on: its affinity, bounded by a cgroup v2 CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def torch_threads(settings: Settings, device: str) -> int:
    """Torch threads for each inference thread (see the module docstring)."""
    if settings.torch_threads:
        return settings.torch_threads
    if device != "cpu":
        return 1
    return max(1, usable_cores() // settings.workers)


def inference_thread(name: str, threads: int) -> ThreadPoolExecutor:
    """One model instance's inference thread, with ``threads`` torch threads."""
    return ThreadPoolExecutor(1, f"infer-{name}", initializer=partial(_set_threads, threads))


def warm_up(executor: ThreadPoolExecutor, threads: int, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` (the first predict, which sets the device up) on the inference thread, then
    set its thread count again."""

    def run() -> Any:
        result = fn()
        _set_threads(threads)
        return result

    return executor.submit(run).result()


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
