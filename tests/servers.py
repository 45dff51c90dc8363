"""Real ``python -m app`` processes on free ports: started, waited on, stopped.

Needs only the server's dependencies (no pytest, no Google SDK), so the benchmarks under
``tests/bench`` import it too; ``conftest`` re-exports it for the tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A real ``python -m app`` child process; ``started`` is when it was spawned (perf_counter)."""

    url: str
    proc: subprocess.Popen
    log: Path
    started: float = field(default_factory=time.perf_counter)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_healthy(
        self, timeout: float = 180.0, path: str = "/health", poll: float = 0.1
    ) -> float:
        """Wait for ``path`` to answer 200 (polled every ``poll`` s); seconds since the spawn."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.TransportError:
                pass
            time.sleep(poll)
        raise TimeoutError(f"server not healthy after {timeout} s:\n{self.logs()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(
    workdir: Path, env: dict[str, str] | None = None, cmd: list[str] | None = None
) -> Server:
    """Start the server (not waiting for health); its output goes to a log file."""
    port = free_port()
    full_env = {
        **os.environ,
        "AIP_HTTP_PORT": str(port),
        "SERVE_HOST": "127.0.0.1",
        "YOLO_CONFIG_DIR": str(workdir / "yolo-config"),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    log = workdir / f"server-{port}.log"
    started = time.perf_counter()
    with log.open("wb") as out:  # the child holds its own copy
        proc = subprocess.Popen(
            cmd or [sys.executable, "-m", "app"],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Server(f"http://127.0.0.1:{port}", proc, log, started)


@contextmanager
def serving(
    workdir: Path,
    env: dict[str, str] | None = None,
    cmd: list[str] | None = None,
    *,
    health: str = "/health",
) -> Iterator[Server]:
    """:func:`start_server`, wait until ``health`` answers 200, yield the server; always stop it."""
    srv = start_server(workdir, env, cmd)
    try:
        srv.wait_healthy(path=health)
        yield srv
    finally:
        srv.stop()
