"""The deployed models' server processes: start with Vertex's container environment, wait for
health, watch, and stop without leaving orphans.

Each server runs in its own process group (so stopping it also stops anything it spawned) and,
on Linux, with ``PR_SET_PDEATHSIG``: if the emulator itself is SIGKILLed, the kernel kills its
servers too. Output goes to one log file per server; its tail is shown when a server fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

log = logging.getLogger("client.emulator")
PR_SET_PDEATHSIG = 1
# Looked up here, not in the forked child: between fork and exec only async-signal-safe work is
# sound, and loading a library (dlopen, malloc) is not.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


class StartupError(RuntimeError):
    """A server exited or did not become healthy in time; the message holds its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent(parent: int) -> None:
    """Runs in the child before exec: ask Linux to SIGKILL it when its parent dies.

    Linux ties the signal to the parent *thread*: start children from a thread that lives as
    long as they should (the main thread).
    """
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def die_with_me() -> functools.partial[None]:
    """A ``preexec_fn`` for ``Popen``: the child is SIGKILLed when this process dies (Linux)."""
    return functools.partial(_die_with_parent, os.getpid())


@dataclass
class ModelServer:
    """One deployed model's server process, listening on ``127.0.0.1:port``.

    ``env`` is its whole environment (:func:`client.emulator.config.container_env`), which
    gives it ``port`` as ``AIP_HTTP_PORT``.
    """

    name: str
    deployed_model_id: str
    command: tuple[str, ...]
    env: Mapping[str, str]
    health_route: str
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    exit_reported: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the process (call from the main thread: the death signal is tied to the thread)."""
        with self.log_path.open("ab") as out:
            try:
                self.proc = subprocess.Popen(
                    self.command,
                    env=dict(self.env),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=die_with_me(),
                )
            except OSError as exc:
                raise StartupError(
                    f"cannot start the server of deployed model {self.name!r}: "
                    f"{self.command[0]}: {exc.strerror}"
                ) from None
        log.info(
            "started %s (deployed model %s), pid %s, port %s, log %s",
            self.name,
            self.deployed_model_id,
            self.proc.pid,
            self.port,
            self.log_path,
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def describe_exit(self) -> str:
        return (
            f"the server of deployed model {self.name!r} ({self.deployed_model_id}) exited with "
            f"code {self.returncode}; last lines of {self.log_path}:\n{self.log_tail()}"
        )

    async def wait_healthy(self, client: httpx.AsyncClient, deadline: float) -> None:
        """Poll the health route until it answers 200; raise :class:`StartupError` otherwise."""
        url = self.url + self.health_route
        last = "no answer yet"
        while time.monotonic() < deadline:
            if not self.running:
                raise StartupError(self.describe_exit())
            try:
                response = await client.get(url, timeout=2)
                if response.status_code == 200:
                    log.info("%s (deployed model %s) is healthy", self.name, self.deployed_model_id)
                    return
                last = f"GET {self.health_route} answered {response.status_code}"
            except httpx.TransportError as exc:
                last = f"GET {self.health_route} failed: {exc!r}"
            await asyncio.sleep(0.2)
        raise StartupError(
            f"the server of deployed model {self.name!r} ({self.deployed_model_id}) was not "
            f"healthy in time ({last}); last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the server's whole process group."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)


class Fleet:
    """All deployed models' servers, keyed by deployed model id."""

    def __init__(self) -> None:
        self.servers: dict[str, ModelServer] = {}

    def add(self, server: ModelServer) -> None:
        self.servers[server.deployed_model_id] = server

    def remove(self, deployed_model_id: str) -> ModelServer | None:
        """Take a server out of the fleet (stop it with :func:`stop_servers`)."""
        return self.servers.pop(deployed_model_id, None)

    def get(self, deployed_model_id: str) -> ModelServer | None:
        return self.servers.get(deployed_model_id)

    def start(self) -> None:
        for server in self.servers.values():
            server.start()

    async def wait_healthy(self, timeout: float) -> None:
        """Wait for every server at once; the first failure cancels the other waits."""
        deadline = time.monotonic() + timeout
        try:
            async with httpx.AsyncClient(trust_env=False) as client, asyncio.TaskGroup() as tasks:
                for server in self.servers.values():
                    tasks.create_task(server.wait_healthy(client, deadline))
        except* StartupError as failures:
            raise failures.exceptions[0] from None

    async def watch(self, interval: float = 0.2) -> None:
        """Log each server that exits (the data plane then answers 503 for it). Runs until cancelled."""
        while True:
            for server in self.servers.values():
                if server.proc is not None and not server.running and not server.exit_reported:
                    server.exit_reported = True
                    log.error("%s; requests for it get 503", server.describe_exit())
            await asyncio.sleep(interval)

    def stop(self, grace: float = 10.0) -> None:
        """Stop every server (:func:`stop_servers`)."""
        stop_servers(list(self.servers.values()), grace)


def stop_servers(servers: list[ModelServer], grace: float = 10.0) -> None:
    """SIGTERM each server, SIGKILL what is left after ``grace`` seconds, and reap them all.

    The SIGKILL goes to the whole group (anything the server spawned and left behind) while
    the server is not yet reaped: its pid, and so its group id, cannot be reused until then.
    A server reaped earlier (it died on its own) is not signalled at all.
    """
    live = [s for s in servers if s.proc is not None and s.proc.returncode is None]
    for server in live:
        server.exit_reported = True
        server.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for server in live:
        assert server.proc is not None
        while not _exited(server.proc) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _exited(server.proc):
            log.warning("%s did not stop in %s s: SIGKILL", server.name, grace)
        server.signal(signal.SIGKILL)
        server.proc.wait()


def _exited(proc: subprocess.Popen) -> bool:
    """Whether ``proc`` has exited, without reaping it (it stays a zombie, holding its ids)."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True
