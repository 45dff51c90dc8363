"""Server processes: start one with its environment, ask its health route, stop it without leaving
orphans.

Each server runs in its own process group (so stopping it also stops anything it spawned) and,
on Linux, with ``PR_SET_PDEATHSIG``: if the emulator itself is SIGKILLed, the kernel kills its
servers too. Output goes to one log file per process; its tail is shown when one fails.
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
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class StartupError(RuntimeError):
    """A server exited or did not become healthy in time; the message holds its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


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
class ServerProcess:
    """One server process, listening on ``127.0.0.1:port``.

    ``env`` is its whole environment (:func:`client.emulator.config.container_env`), which gives
    it ``port`` as ``AIP_HTTP_PORT``; ``name`` says whose it is in logs and errors.
    """

    name: str
    command: tuple[str, ...]
    env: Mapping[str, str]
    health_route: str
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

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
        try:
            out = self.log_path.open("ab")
        except OSError as exc:
            raise StartupError(
                f"cannot start the server of {self.name}: its log {self.log_path}: {exc.strerror}"
            ) from None
        with out:
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
                    f"cannot start the server of {self.name}: {self.command[0]}: {exc.strerror}"
                ) from None
        log.info(
            "started %s, pid %s, port %s, log %s", self.name, self.pid, self.port, self.log_path
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def describe_exit(self, then: str = "") -> str:
        """How the process ended, ``then`` (what comes next), and its log's tail."""
        code = self.returncode
        how = f"exited with code {code}"
        if code is not None and code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        return (
            f"the server of {self.name} {how}{then}; last lines of {self.log_path}:\n"
            f"{self.log_tail()}"
        )

    async def healthy(self, client: httpx.AsyncClient, timeout: float) -> str | None:
        """None when the health route answers 200; else what it did."""
        try:
            response = await client.get(self.url + self.health_route, timeout=timeout)
        except httpx.HTTPError as exc:
            return f"GET {self.health_route} failed: {exc!r}"
        if response.status_code != 200:
            return f"GET {self.health_route} answered {response.status_code}"
        return None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the server's whole process group."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def cpu_seconds(self) -> float | None:
        """CPU time the process has used (user + system), from ``/proc`` (Linux); None when
        unknown."""
        if self.proc is None:
            return None
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def stop_processes(processes: list[ServerProcess], grace: float) -> None:
    """SIGTERM each process, SIGKILL what is left after ``grace`` seconds, and reap them all.

    The SIGKILL goes to the whole group (anything the server spawned and left behind) while the
    server is not yet reaped: its pid, and so its group id, cannot be reused until then. A
    process reaped earlier (it died on its own) is not signalled at all.
    """
    live = [p for p in processes if p.proc is not None and p.proc.returncode is None]
    for process in live:
        process.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in live:
        assert process.proc is not None
        while not _exited(process.proc) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _exited(process.proc):
            log.warning("%s did not stop in %g s: SIGKILL", process.name, grace)
        process.signal(signal.SIGKILL)
        process.proc.wait()


async def stop_process(process: ServerProcess, grace: float) -> None:
    """:func:`stop_processes` for one process, waiting on the event loop: no thread is held,
    so any number of replicas drain at once."""
    proc = process.proc
    if proc is None or proc.returncode is not None:
        return
    process.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while not _exited(proc) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if not _exited(proc):
        log.warning("%s did not stop in %g s: SIGKILL", process.name, grace)
    process.signal(signal.SIGKILL)
    while not _exited(proc):
        await asyncio.sleep(0.01)
    proc.wait()


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether ``proc`` has exited, without reaping it (it stays a zombie, holding its ids)."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True
