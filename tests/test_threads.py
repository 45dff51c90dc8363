"""The server's thread policy (app/threads.py) and the GPU-only features' errors on a CPU box.

Speed is never judged here (tests/bench/perf.py prints it); these check what the policy picks,
that the real server runs with it, and that a GPU feature asked of a CPU machine stops the start
with a message naming what is missing.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from app.config import DEMO_MODELS, Settings, SettingsError
from app.registry import Registry
from app.threads import torch_threads, usable_cores


def test_the_policy_shares_the_cores_among_the_instances_on_cpu() -> None:
    cores = usable_cores()
    assert 1 <= cores <= (os.cpu_count() or 1)
    assert torch_threads(Settings(), "cpu") == cores
    assert torch_threads(Settings(workers=2), "cpu") == max(1, cores // 2)
    assert torch_threads(Settings(workers=cores * 4), "cpu") == 1  # never below one
    assert torch_threads(Settings(), "cuda:0") == 1  # its CPU side is small: no spinning teams
    assert torch_threads(Settings(torch_threads=3), "cpu") == 3  # SERVE_TORCH_THREADS wins
    assert torch_threads(Settings(torch_threads=3), "cuda:0") == 3


def test_the_process_never_manages_more_openmp_threads_than_cores() -> None:
    """SERVE_WORKERS inference threads, shared by every model, each a team of torch_threads:
    with the main thread's team of one, GNU OpenMP manages at most the usable cores (past that
    it parks idle threads instead of spinning them: app/threads.py), however many models."""
    cores = usable_cores()
    for workers in range(1, 2 * cores + 1):
        threads = torch_threads(Settings(workers=workers), "cpu")
        assert 1 + workers * (threads - 1) <= cores, (workers, threads)


def test_the_server_runs_with_the_policy(server, client) -> None:
    """The session's server (defaults: the demo models): all on the one inference thread with
    the policy's threads for the device it chose (every usable core on CPU, one on a GPU), said
    in its log; its metrics count one inference thread (test_soak)."""
    devices = {m["device"] for m in client.get("/models").json()["models"]}
    assert len(devices) == 1, devices
    threads = torch_threads(Settings(), devices.pop())
    logs = server.logs()
    models = len(DEMO_MODELS)  # every demo model, one instance each
    assert logs.count(f"1 x {threads} torch threads") == models, logs[-2000:]


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
