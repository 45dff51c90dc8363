"""The server's thread policy (app/threads.py) and the GPU-only features' errors on a CPU box.

Speed is never judged here (tests/bench/perf.py prints it); these check what the policy picks,
that the real server runs with it, and that a GPU feature asked of a CPU machine stops the start
with a message naming what is missing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os

import pytest

from app.config import DEMO_MODELS, Settings, SettingsError
from app.processes import count as process_count
from app.registry import Registry
from app.siblings import Siblings
from app.threads import (
    MAX_DEFAULT_WORKERS,
    adaptive,
    policy,
    torch_threads,
    usable_cores,
    workers,
)
from conftest import INSTRUMENTED, PATIENCE_S, metric, serving, wait_until


def test_the_policy_gives_a_lone_call_every_core_and_shares_them_under_load() -> None:
    cores = usable_cores()
    assert 1 <= cores <= (os.cpu_count() or 1)
    assert workers(Settings(), "cpu") == min(cores, MAX_DEFAULT_WORKERS)  # in one process
    assert workers(Settings(), "cuda:0") == 1
    assert workers(Settings(workers=3), "cpu") == 3  # SERVE_WORKERS wins
    assert torch_threads(Settings(), "cpu") == cores  # a lone call: every core
    assert torch_threads(Settings(), "cuda:0") == 1  # its CPU side is small
    assert torch_threads(Settings(torch_threads=3), "cpu") == 3  # SERVE_TORCH_THREADS wins
    assert torch_threads(Settings(torch_threads=3), "cuda:0") == 3
    assert adaptive(Settings(), "cpu")
    assert not adaptive(Settings(torch_threads=1), "cpu") and not adaptive(Settings(), "cuda")


def test_the_process_never_manages_more_openmp_threads_than_cores() -> None:
    """However the calls fall on the inference threads: only the wide one (0) ever runs more
    than one torch thread, and never more than the cores, so with the main thread's team of one
    GNU OpenMP manages at most the usable cores (past that it parks idle threads instead of
    spinning them: app/threads.py); at full load the calls use every core."""
    cores = usable_cores()
    for count in range(1, 2 * cores + 1):
        threads = policy(Settings(workers=count), "cpu")
        try:
            for running in itertools.product([False, True], repeat=count):
                threads._running = list(running)
                widest = [threads.threads_for(i) for i in range(count)]
                assert all(t == 1 for t in widest[1:]) and 1 <= widest[0] <= cores
                if all(running[1:]):  # the wide thread starts beside every other
                    assert widest[0] == max(1, cores - (count - 1))
        finally:
            threads.close()


def test_calls_take_the_wide_thread_first_with_the_count_the_load_gives_them() -> None:
    """InferenceThreads with 2 threads (explicit gates hold calls, not timing): a lone call runs
    on the wide thread with every core; one that starts beside it, on the other with one; one
    that starts on the wide thread while the other is busy, with every core but one."""
    import threading

    import torch

    threads = policy(Settings(workers=2), "cpu")
    seen: list[tuple[str, str, int]] = []

    def record(label: str) -> None:
        seen.append((label, threading.current_thread().name, torch.get_num_threads()))

    def held(label: str, started: threading.Event, gate: threading.Event) -> None:
        record(label)
        started.set()
        assert gate.wait(30)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        threads.start()
        await threads.run(record, "lone")
        wide_started, wide_gate = threading.Event(), threading.Event()
        wide = asyncio.ensure_future(threads.run(held, "held", wide_started, wide_gate))
        await loop.run_in_executor(None, wide_started.wait, 30)
        narrow_started, narrow_gate = threading.Event(), threading.Event()
        narrow = asyncio.ensure_future(threads.run(held, "beside", narrow_started, narrow_gate))
        await loop.run_in_executor(None, narrow_started.wait, 30)
        assert threads.busy == 2
        wide_gate.set()
        await wide
        await threads.run(record, "wide beside")  # the narrow one still held
        narrow_gate.set()
        await narrow
        assert threads.busy == 0

    try:
        asyncio.run(main())
    finally:
        threads.close()
    cores = usable_cores()
    assert seen == [
        ("lone", "infer-0_0", cores),
        ("held", "infer-0_0", cores),
        ("beside", "infer-1_0", 1),
        ("wide beside", "infer-0_0", max(1, cores - 1)),
    ]
    expected = f"2 x 1-{cores} torch threads" if cores > 1 else "2 x 1 torch threads"
    assert threads.describe() == expected


def test_the_server_runs_with_the_policy(server, client) -> None:
    """The session's server (defaults: the demo models): its processes (app/processes.py), in
    each every model warm with one instance (more on demand, up to the inference threads), the
    policy's threads for the device it chose, said in its log."""
    devices = {m["device"] for m in client.get("/models").json()["models"]}
    assert len(devices) == 1, devices
    device = devices.pop()
    settings = Settings()
    processes = process_count(settings, device)
    expected = policy(settings, device, Siblings(processes))
    try:
        line = f"{expected.describe()}; instances: 1, up to {expected.count} on demand"
    finally:
        expected.close()
    logs = server.logs()
    assert logs.count(line) == len(DEMO_MODELS) * processes, logs[-2000:]
    if processes > 1:
        assert f"with {processes} processes" in logs


def test_half_on_a_cpu_device_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="SERVE_HALF=on needs a CUDA device"):
        Settings.from_env({"SERVE_HALF": "on", "SERVE_DEVICE": "cpu"})
    with pytest.raises(SettingsError, match="SERVE_HALF='fast' must be auto, on or off"):
        Settings.from_env({"SERVE_HALF": "fast"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"SERVE_MODELS": "m={dir}/model.engine"},
            "model 'm' is a TensorRT engine, which runs only on a CUDA GPU; this server's device "
            "is cpu",
        ),
        (
            {"SERVE_HALF": "on"},
            "SERVE_HALF=on: FP16 needs a CUDA device; model 'shapes-detect' would run on cpu",
        ),
    ],
    ids=["engine", "half"],
)
def test_gpu_features_on_this_cpu_machine_stop_the_load_naming_what_is_missing(
    tmp_path, env, message
) -> None:
    """The loader's own checks, in this process (the server's start runs the same
    ``Registry._load_all`` and exits 1 with the message: test_formats checks that path for a
    missing runtime). Nothing is read: the checks come before any weights are. The device is
    set to the CPU after validation (which refuses SERVE_HALF=on with SERVE_DEVICE=cpu), so a
    CUDA machine, where ``auto`` would pick the GPU and nothing fail, checks the same."""
    (tmp_path / "model.engine").write_bytes(b"not an engine: never read")
    settings = Settings.from_env({k: v.format(dir=tmp_path) for k, v in env.items()})
    settings = dataclasses.replace(settings, device="cpu")
    registry = Registry(settings)
    try:
        with pytest.raises(RuntimeError) as failure:
            registry._load_all()
    finally:
        if registry.threads is not None:
            registry.threads.close()
    assert message in str(failure.value)


def test_a_model_makes_a_second_instance_when_two_requests_are_in_flight(tmp_path) -> None:
    """One warm instance at start; a second request admitted while the first is held (the
    instrumented server's gate: no timing) makes another, warmed on the free inference thread,
    up to SERVE_WORKERS; every request is answered."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from helpers import encode, scenes

    weights = dict(DEMO_MODELS)["shapes-detect"]
    env = {
        "SERVE_WORKERS": "2",
        "SERVE_MODELS": f"shapes-detect={weights}",
        "SERVE_METRICS": "true",
    }
    image = encode(scenes(1)[0][0])

    def detect() -> httpx.Response:
        return httpx.post(
            server.url + "/detect", content=image, headers={"Content-Type": "image/png"},
            timeout=PATIENCE_S,
        )  # fmt: skip

    with serving(tmp_path, env, INSTRUMENTED) as server, ThreadPoolExecutor(4) as pool:
        assert "instances: 1, up to 2 on demand" in server.logs()
        gate = server.gate
        assert gate is not None
        gate.close()
        first = pool.submit(detect)
        gate.wait(waiting=1)  # the first request holds the one instance, on the wide thread
        second = pool.submit(detect)
        wait_until(
            lambda: metric(server.url, "yolo_queue_depth", model="shapes-detect") == 2,
            "the second request admitted",
        )
        gate.wait(waiting=2)  # the new instance's warm-up predict, on the other thread, held too
        gate.open()
        assert first.result().status_code == 200 and second.result().status_code == 200
        wait_until(lambda: "instance 2 of at most 2 ready" in server.logs(), "the 2nd instance")
        more = [pool.submit(detect) for _ in range(3)]
        assert all(f.result().status_code == 200 for f in more)
    assert "instance 3" not in server.logs()
