"""Real ``python -m app`` processes on free ports: started, waited on, stopped; the gate of an
instrumented one (``tests/instrumented_app.py``); the server's metrics.

Needs only the server's dependencies (no pytest, no Google SDK), so the benchmarks under
``tests/bench`` import it too; ``conftest`` re-exports it for the tests.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
#: the server with a gate on its model calls and a poison image (see tests/instrumented_app.py)
INSTRUMENTED = [sys.executable, str(ROOT / "tests" / "instrumented_app.py")]
#: how long a test waits for a state it set up before calling it a failure (not a speed bound)
PATIENCE_S = 120.0
WEIGHTS = ROOT / "app" / "demo" / "weights"
#: what a server started here serves unless its environment names models (``SERVE_MODELS``) or a
#: storage URI: the demo detector and segmenter, not all five demo models (each start about a
#: second shorter); the session's ``server`` and emulator serve all five (tests/conftest.py)
TEST_MODELS = ",".join(
    f"{name}={WEIGHTS / name}.pt" for name in ("shapes-detect", "shapes-segment")
)
#: every demo model, for a server that must serve the defaults
ALL_MODELS = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A real ``python -m app`` child process; ``started`` is when it was spawned (perf_counter).
    ``gate``: the gate on its model calls, when it runs :data:`INSTRUMENTED`."""

    url: str
    proc: subprocess.Popen
    log: Path
    started: float = field(default_factory=time.perf_counter)
    gate: Gate | None = None

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
    gate = None
    if cmd == INSTRUMENTED:
        gate_port = free_port()
        gate = Gate(f"http://127.0.0.1:{gate_port}")
        env = {"TEST_GATE_PORT": str(gate_port), **(env or {})}
    given = {**os.environ, **(env or {})}
    full_env = {
        **os.environ,
        **(
            {}
            if {"SERVE_MODELS", "AIP_STORAGE_URI"} & given.keys()
            else {"SERVE_MODELS": TEST_MODELS}
        ),
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
    return Server(f"http://127.0.0.1:{port}", proc, log, started, gate)


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


def wait_until(check: Callable[[], bool], what: str, timeout: float = PATIENCE_S) -> None:
    """Poll ``check`` until it holds; after ``timeout`` the state never came: fail with ``what``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Gate:
    """The gate on an instrumented server's model calls (``tests/instrumented_app.py``), at its
    control server's URL.

    Example:
        gate = server.gate
        gate.close()                  # calls now wait for permits
        ... send a request ...
        gate.wait(waiting=1)          # its predict has started and is held
        ... the server is busy: check what must hold ...
        gate.open()
    """

    def __init__(self, url: str) -> None:
        self.url = url

    def state(self) -> dict[str, int | None]:
        return httpx.get(self.url, timeout=10).json()

    def set(self, permits: int | None) -> None:
        value = "open" if permits is None else str(permits)
        httpx.post(self.url, params={"permits": value}, timeout=10).raise_for_status()

    def close(self) -> None:
        self.set(0)

    def open(self) -> None:
        self.set(None)

    def add(self, permits: int) -> None:
        httpx.post(self.url, params={"add": permits}, timeout=10).raise_for_status()

    def wait(self, *, waiting: int | None = None, passed: int | None = None) -> None:
        """Until at least ``waiting`` calls wait at the gate and ``passed`` went through."""

        def reached() -> bool:
            try:
                state = self.state()
            except httpx.TransportError:  # the process is still starting
                return False
            return (waiting is None or (state["waiting"] or 0) >= waiting) and (
                passed is None or (state["passed"] or 0) >= passed
            )

        wait_until(reached, f"the gate to reach waiting={waiting} passed={passed}")


def gate_of(log: str) -> Gate:
    """The gate of an instrumented replica started with ``TEST_GATE_PORT=0``, from its log (the
    last port written there: a replica started again writes its new one)."""
    port = re.findall(r"test gate on http://127\.0\.0\.1:(\d+)", Path(log).read_text())
    assert port, f"no gate in {log}"
    return Gate(f"http://127.0.0.1:{port[-1]}")


def metric(url: str, name: str, **labels: str) -> float:
    """One sample of a server's ``/metrics`` (``SERVE_METRICS=true``); 0 when absent."""
    text = httpx.get(url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


@dataclass
class StorageServer:
    """A GCS JSON API server (``gcp-storage-emulator``, in memory) on a free loopback port:
    the unmodified ``google-cloud-storage`` client reaches it through ``STORAGE_EMULATOR_HOST``
    (:attr:`env`), in this process and in every server given that variable."""

    proc: subprocess.Popen[bytes]
    url: str

    @property
    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.url}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_storage(log: Path) -> StorageServer:
    port = free_port()
    command = [str(Path(sys.executable).with_name("gcp-storage-emulator")), "start"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--in-memory"]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    server = StorageServer(proc, f"http://127.0.0.1:{port}")

    def answers() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"gcp-storage-emulator exited:\n{log.read_text()}")
        try:
            httpx.get(f"{server.url}/storage/v1/b", timeout=2)
        except httpx.TransportError:
            return False
        return True

    wait_until(answers, "the GCS API server to answer")
    return server
