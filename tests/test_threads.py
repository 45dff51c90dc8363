"""The server's thread policy (app/threads.py) and the GPU-only features' errors on a CPU box.

Speed is never judged here (tests/bench/perf.py prints it); these check what the policy picks,
that the real server runs with it, and that a GPU feature asked of a CPU machine stops the start
with a message naming what is missing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os

import pytest

from app.config import DEMO_MODELS, Settings, SettingsError
from app.registry import Registry
from app.threads import (
    MAX_DEFAULT_WORKERS,
    adaptive,
    policy,
    torch_threads,
    usable_cores,
    workers,
)
from conftest import INSTRUMENTED, PATIENCE_S, serving, wait_until


def test_the_policy_gives_a_lone_call_every_core_and_shares_them_under_load() -> None:
    cores = usable_cores()
    assert 1 <= cores <= (os.cpu_count() or 1)
    assert workers(Settings(), "cpu") == min(cores, MAX_DEFAULT_WORKERS)
    assert workers(Settings(), "cuda:0") == 1
    assert workers(Settings(workers=3), "cpu") == 3  # SERVE_WORKERS wins
    assert torch_threads(Settings(), "cpu", busy=1) == cores  # a lone call: every core
    assert torch_threads(Settings(), "cpu", busy=2) == max(1, cores // 2)
    assert torch_threads(Settings(), "cpu", busy=cores * 4) == 1  # never below one
    assert torch_threads(Settings(workers=2), "cpu") == max(1, cores // 2)  # full load
    assert torch_threads(Settings(), "cuda:0", busy=1) == 1  # its CPU side is small
    assert torch_threads(Settings(torch_threads=3), "cpu", busy=1) == 3  # SERVE_TORCH_THREADS
    assert torch_threads(Settings(torch_threads=3), "cuda:0") == 3
    assert adaptive(Settings(), "cpu")
    assert not adaptive(Settings(torch_threads=1), "cpu") and not adaptive(Settings(), "cuda")


def test_at_full_load_the_process_never_manages_more_openmp_threads_than_cores() -> None:
    """Every inference thread busy, each a team of its share: with the main thread's team of
    one, GNU OpenMP manages at most the usable cores (past that it parks idle threads instead
    of spinning them: app/threads.py), however many models and workers."""
    cores = usable_cores()
    for count in range(1, 2 * cores + 1):
        settings = Settings(workers=count)
        threads = torch_threads(settings, "cpu")
        assert 1 + count * (threads - 1) <= cores, (count, threads)


def test_a_call_runs_with_the_count_the_load_gives_it() -> None:
    """InferenceThreads: a lone call sees busy=1, a call that starts while another is held (an
    explicit gate, not timing) sees busy=2; each runs with that many torch threads."""
    import threading

    import torch

    threads = policy(Settings(workers=2), "cpu")
    seen: list[tuple[int, int]] = []
    gate, started = threading.Event(), threading.Event()

    def held() -> None:
        started.set()
        seen.append(("held", torch.get_num_threads()))
        assert gate.wait(30)

    async def main() -> None:
        threads.start()
        await threads.run(lambda: seen.append(("lone", torch.get_num_threads())))
        first = asyncio.ensure_future(threads.run(held))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 30)
        await threads.run(lambda: seen.append(("beside", torch.get_num_threads())))
        gate.set()
        await first
        assert threads.busy == 0

    try:
        asyncio.run(main())
    finally:
        threads.close()
    cores = usable_cores()
    assert seen == [("lone", cores), ("held", cores), ("beside", max(1, cores // 2))]
    assert threads.describe() == (
        f"2 x {max(1, cores // 2)}-{cores} torch threads" if cores > 1 else "2 x 1 torch threads"
    )


def test_the_server_runs_with_the_policy(server, client) -> None:
    """The session's server (defaults: the demo models): each model warm with one instance (more
    on demand, up to the inference threads), the policy's threads for the device it chose, said
    in its log."""
    devices = {m["device"] for m in client.get("/models").json()["models"]}
    assert len(devices) == 1, devices
    device = devices.pop()
    settings = Settings()
    expected = policy(settings, device)
    try:
        line = f"{expected.describe()}; instances: 1, up to {expected.count} on demand"
    finally:
        expected.close()
    logs = server.logs()
    assert logs.count(line) == len(DEMO_MODELS), logs[-2000:]


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
    """One warm instance at start; a second request in flight while the first is held (the
    instrumented server's gate: no timing) makes another, warmed on the other inference thread,
    up to SERVE_WORKERS; both requests are then answered."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from helpers import encode, scenes

    weights = dict(DEMO_MODELS)["shapes-detect"]
    env = {"SERVE_WORKERS": "2", "SERVE_MODELS": f"shapes-detect={weights}"}
    image = encode(scenes(1)[0][0])

    def detect() -> httpx.Response:
        return httpx.post(
            server.url + "/detect", content=image, headers={"Content-Type": "image/png"},
            timeout=PATIENCE_S,
        )  # fmt: skip

    with serving(tmp_path, env, INSTRUMENTED) as server, ThreadPoolExecutor(3) as pool:
        assert "instances: 1, up to 2 on demand" in server.logs()
        gate = server.gate
        assert gate is not None
        gate.close()
        first = pool.submit(detect)
        gate.wait(waiting=1)  # the first request holds the one instance
        second = pool.submit(detect)
        gate.wait(waiting=2)  # ... and the second instance's warm-up predict is at the gate
        gate.open()
        assert first.result().status_code == 200 and second.result().status_code == 200
        wait_until(lambda: "instance 2 of at most 2 ready" in server.logs(), "the 2nd instance")
        third = [pool.submit(detect) for _ in range(3)]
        assert all(f.result().status_code == 200 for f in third)
    assert "instance 3" not in server.logs()
