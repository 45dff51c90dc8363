"""The server's processes (app/processes.py): how many, the thread policy across them, and the
supervisor's care of them (a child that dies is started again, SIGTERM ends them all, a model
that fails to load ends the server with 1: tests/test_lifecycle.py, a port in use).

Speed is never judged here (tests/bench/bench_peers.py prints it).
"""

from __future__ import annotations

import mmap
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import httpx
import pytest

from app.config import Settings, SettingsError
from app.processes import MAX_RESTARTS, RESTART_WINDOW_S, _too_many, count
from app.siblings import Siblings, size
from app.threads import MAX_DEFAULT_WORKERS, InferenceThreads, usable_cores, workers
from conftest import ROOT, WEIGHTS, free_port, start_server, wait_until
from helpers import encode, scenes


def test_a_process_per_core_up_to_4_on_cpu_one_on_a_gpu_or_with_metrics() -> None:
    cores = usable_cores()
    assert count(Settings(), "cpu") == min(cores, MAX_DEFAULT_WORKERS)
    assert count(Settings(), "cuda:0") == 1
    assert count(Settings(metrics=True), "cpu") == 1  # each process would count its own
    assert count(Settings(processes=3), "cpu") == 3  # SERVE_PROCESSES wins
    # the inference threads are shared among the processes, at least one each
    assert workers(Settings(), "cpu", processes=2) == max(1, min(cores, MAX_DEFAULT_WORKERS) // 2)
    assert workers(Settings(), "cpu", processes=64) == 1
    with pytest.raises(SettingsError, match="SERVE_METRICS=true needs one server process"):
        Settings.from_env({"SERVE_PROCESSES": "2", "SERVE_METRICS": "true"})


def test_a_call_takes_every_core_only_while_no_other_process_has_work() -> None:
    """Two processes' views of one shared page (what the supervisor maps before forking): a
    call gets the cores less the calls another process runs or is about to (its admitted
    requests, up to its inference threads), and only one call at a time, across them, runs more
    than one torch thread."""
    page = mmap.mmap(-1, size(2))
    first, second = Siblings(2, 0, page), Siblings(2, 1, page)
    threads = InferenceThreads(1, 4, adaptive=True, siblings=first)
    other = InferenceThreads(1, 4, adaptive=True, siblings=second)
    try:
        assert threads.threads_for(0) == 4  # alone: every core
        other.admitted(1)  # a request admitted there: it will run a call
        assert threads.threads_for(0) == 3
        other.admitted(5)  # six admitted, one inference thread: one call at a time
        assert threads.threads_for(0) == 3
        other.admitted(-6)
        assert threads.threads_for(0) == 4
        threads.admitted(2)
        assert other.threads_for(0) == 3  # and the other way round
        assert second.claim_wide()  # a wide call runs there: none here
        assert threads.threads_for(0) == 1 and not first.claim_wide()
        second.release_wide()
        assert first.claim_wide() and not second.claim_wide()
        first.release_wide()
    finally:
        threads.close()
        other.close()
    assert not first.all_ready()
    first.mark_ready()
    assert not first.all_ready() and not second.all_ready()  # the server is not ready yet
    second.mark_ready()
    assert first.all_ready()
    first.reset(1)  # the supervisor starts process 1 again: the server stays in service
    assert first.all_ready() and second.all_ready()


def test_a_process_dying_again_and_again_stops_the_server_rather_than_restart_forever() -> None:
    now = time.monotonic()
    restarts: deque[float] = deque([now - 1.0] * (MAX_RESTARTS - 1), maxlen=MAX_RESTARTS)
    assert not _too_many(restarts)  # four in the last minute: start it again
    restarts.append(now)
    assert _too_many(restarts)  # the fifth: stop
    old = deque([now - RESTART_WINDOW_S - 1] + [now] * (MAX_RESTARTS - 1), maxlen=MAX_RESTARTS)
    assert not _too_many(old)  # five, the oldest over a minute ago: start it again


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the processes need fork")
def test_a_process_that_dies_is_started_again_and_sigterm_ends_them_all(tmp_path) -> None:
    """Two processes: one SIGKILLed (the OOM killer's way) while the other serves every request
    meanwhile (the new one listens only once its model is warm); SIGTERM to the server then
    ends both and it exits 0."""
    detector = f"shapes-detect={WEIGHTS / 'shapes-detect.pt'}"
    srv = start_server(tmp_path, {"SERVE_PROCESSES": "2", "SERVE_MODELS": detector})
    try:
        srv.wait_healthy()
        first = children(srv.proc.pid)
        assert len(first) == 2
        png = encode(scenes(1)[0][0])
        os.kill(first[0], signal.SIGKILL)
        wait_until(lambda: "died (Killed); starting it again" in srv.logs(), "the restart")
        for _ in range(6):  # a new connection each: the kernel spreads them over the listeners
            answer = httpx.post(f"{srv.url}/detect", content=png, timeout=60,
                                headers={"Content-Type": "image/png"})  # fmt: skip
            assert answer.status_code == 200, answer.text
            assert httpx.get(f"{srv.url}/health", timeout=60).status_code == 200
        wait_until(lambda: srv.logs().count("model shapes-detect ready") == 3, "the new one")
        again = children(srv.proc.pid)
        assert len(again) == 2 and first[1] in again and first[0] not in again
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(60) == 0
        assert not any(os.path.exists(f"/proc/{pid}") for pid in again)  # reaped by it
    finally:
        srv.stop()


def test_a_port_in_use_stops_the_server_with_a_clear_message(tmp_path) -> None:
    """The processes share their port (``SO_REUSEPORT``): a server already there must make the
    start fail, not silently take every other connection."""
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        env = {
            **os.environ,
            "SERVE_PROCESSES": "2",
            "SERVE_DEVICE": "cpu",
            "SERVE_HOST": "127.0.0.1",
            "AIP_HTTP_PORT": str(port),
            "YOLO_CONFIG_DIR": str(tmp_path),
        }
        proc = subprocess.run([sys.executable, "-m", "app"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 1
    output = proc.stdout + proc.stderr  # the log's lines: JSON on stdout
    assert f"cannot listen on 127.0.0.1:{port}" in output, output
    assert "Traceback" not in output
