"""Shared fixtures: real ``python -m app`` processes on free ports, and shape images."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from client.emulator import EmulatorInfo

ROOT = Path(__file__).resolve().parents[1]
BUS_JPG = Path(importlib.util.find_spec("ultralytics").origin).parent / "assets" / "bus.jpg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A real ``python -m app`` child process."""

    url: str
    proc: subprocess.Popen
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 180.0, path: str = "/health") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
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
    proc = subprocess.Popen(
        cmd or [sys.executable, "-m", "app"],
        cwd=ROOT,
        env=full_env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return Server(f"http://127.0.0.1:{port}", proc, log)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The default configuration: the bundled demo models."""
    srv = start_server(
        tmp_path_factory.mktemp("server"),
        {"AIP_DEPLOYED_MODEL_ID": "dm-test-1", "SERVE_MAX_IMAGES": "8"},
    )
    try:
        srv.wait_healthy()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


# --- The local Vertex AI dedicated endpoint (client/emulator) ---------------------------------


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorInfo]:
    """A running ``python -m client.emulator``, for the real SDK: the demo server deployed as
    ``shapes-a`` (80 %) and ``shapes-b`` (20 %, ``SERVE_DEFAULT_MODEL=shapes-segment``, so its
    /detect runs the segmentation weights).

    Yields a :class:`client.emulator.EmulatorInfo`: ``project``, ``location``, ``endpoint_id``,
    ``endpoint`` (resource name), ``control_plane_url``, ``dedicated_endpoint_dns``, ``ca_cert``,
    ``deployed_models`` (name -> id), ``traffic_split`` (id -> percent), ``pid``, ``servers`` and
    ``server_pids`` (name -> url / pid); ``info.init_kwargs()`` are the ``aiplatform.init``
    arguments and ``info.env()`` the environment below. For the whole session
    ``REQUESTS_CA_BUNDLE`` names its certificate and ``NO_PROXY`` covers loopback (requests reads
    both per request, so ``Endpoint.invoke`` works). Tests that change the traffic split must
    restore it. Teardown stops it with SIGTERM and fails if any server process survives.
    """
    from client.emulator import Emulator

    workdir = tmp_path_factory.mktemp("emulator")
    emu = Emulator(
        args=[
            *("--deploy", "shapes-a=80", "--deploy", "shapes-b=20"),
            *("--env", "shapes-b:SERVE_DEFAULT_MODEL=shapes-segment"),
            *("--log-dir", str(workdir / "logs")),
        ],
        # As start_server: Ultralytics offline, with its own config dir (inherited by the servers).
        env={"YOLO_CONFIG_DIR": str(workdir / "yolo-config"), "PYTHONUNBUFFERED": "1"},
        workdir=workdir,
        startup_timeout=240,
    )
    with emu as info, pytest.MonkeyPatch.context() as patch:
        for key, value in info.env().items():
            patch.setenv(key, value)
        yield info
    survivors = {name: pid for name, pid in info.server_pids.items() if pid_alive(pid)}
    assert emu.proc is not None and emu.proc.returncode == 0, emu.output()
    assert not survivors, f"server processes outlived the emulator: {survivors}"
