"""Run the emulator: certificate, resources, replicas, both planes, then wait for a stop signal.

Everything runs in one asyncio loop on the main thread: the control plane (HTTP) and the data
plane (HTTPS) are two uvicorn servers on sockets bound up front (so port 0 resolves before any
URL is printed), the deployed models' replicas are child processes (see ``fleet`` and
``processes``), and the fleet's supervisor probes, restarts and scales them. SIGINT, SIGTERM and
SIGHUP stop it cleanly: every replica gets SIGTERM and the grace period to drain while the data
plane still relays (so open streams end with their ``shutting-down`` event), then SIGKILL; then
both planes close, and the info file and the temp directory (certificate and its key, default
log dir) are removed. A SIGKILL leaves the temp directory behind: give ``--work-dir`` a
directory its launcher removes (:class:`client.emulator.Emulator` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from client.emulator.config import EmulatorConfig
from client.emulator.control import create_control_app
from client.emulator.dataplane import DataPlane
from client.emulator.deployments import Deployments
from client.emulator.fleet import Fleet, FleetPolicy
from client.emulator.info import NO_PROXY, EmulatorInfo
from client.emulator.processes import StartupError
from client.emulator.resources import ContainerSpec, Endpoint, EnvVar, Port, Store, new_id
from client.emulator.tls import write_self_signed

log = logging.getLogger("client.emulator")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Callers' idle connections stay open longer than the servers' (uvicorn's default 5 s), and the
# proxy drops its idle ones to servers well before they do: a request is never sent on a
# connection the other side is closing at that moment (see also the retry in the data plane).
KEEP_ALIVE_S = 75
UPSTREAM_KEEP_ALIVE_S = 2.0


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to the emulator (two servers share one loop)."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the
    # socket says it is TCP, and without it Nagle + delayed ACKs add 40 ms to every answer.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(False)
    return sock


def _url_host(host: str) -> str:
    """How clients reach ``host``: loopback for a wildcard bind, brackets for IPv6."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def project_number(project: str) -> str:
    """A stable 12-digit stand-in for the project's number (Vertex names use numbers too)."""
    return str(int(hashlib.sha256(project.encode()).hexdigest(), 16) % 10**12).zfill(12)


class Emulation:
    """The running state of one emulator (built by :func:`serve`)."""

    def __init__(self, config: EmulatorConfig, workdir: Path) -> None:
        self.config = config
        self.number = config.project_number or project_number(config.project)
        self.store = Store(config.project, self.number, config.location, config.split_seed)
        self.fleet = Fleet(
            FleetPolicy(
                probe_interval=config.probe_interval,
                startup_timeout=config.startup_timeout,
                restart_backoff=config.restart_backoff,
                grace_period=config.grace_period,
                replica_capacity=config.replica_capacity,
                autoscale_window=config.autoscale_window,
                scale_down_delay=config.scale_down_delay,
            )
        )
        self.cert, self.key = write_self_signed(workdir, (config.host,))
        self.control_sock = _bind(config.host, config.control_port)
        self.data_sock = _bind(config.host, config.data_port)
        host = _url_host(config.host)
        self.control_url = f"http://{host}:{self.control_sock.getsockname()[1]}"
        self.dns = f"{host}:{self.data_sock.getsockname()[1]}"
        log_dir = Path(config.log_dir) if config.log_dir else workdir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.deployments = Deployments(
            self.store,
            self.fleet,
            dns=self.dns,
            log_dir=log_dir,
            startup_timeout=config.startup_timeout,
        )
        # The endpoint the info file describes: the declared one, or (--empty) the first created.
        self.endpoint_id: str | None = None
        if config.empty:
            self.store.on_change.append(self._adopt)
            return
        self.endpoint_id = config.endpoint_id or new_id()
        self.store.add_endpoint(
            self.endpoint_id, config.display_name, self.dns, config.inference_timeout
        )
        split: dict[str, int] = {}
        for spec in config.deployed_models:
            extra = spec.server_env()
            model = self.store.add_model(
                new_id(),
                spec.name,
                ContainerSpec(
                    image_uri=f"local/{shlex.join(spec.command)}",
                    command=list(spec.command),
                    env=[EnvVar(name=k, value=v) for k, v in extra.items()],
                    ports=[Port(container_port=8080)],
                    health_route=spec.health_route,
                    invoke_route_prefix="/*",
                ),
                artifact_uri=spec.storage_uri,
            )
            self.deployments.commands[model.id] = spec.command
            deployed = self.store.deploy(self.endpoint_id, model.id, spec.id or new_id(), spec.name)
            split[deployed.id] = spec.percent or 0
            self.fleet.add(self.deployments.replica_set(spec, deployed.id, self.endpoint_id))
        self.store.set_traffic_split(self.endpoint_id, split)

    def start(self) -> None:
        """Start the declared deployed models' replicas (on the main thread, see ``processes``)."""
        for replicas in self.fleet.sets.values():
            replicas.start()

    async def wait_healthy(self, timeout: float) -> None:
        """Until every declared replica is ready; the first failure cancels the other waits."""
        deadline = time.monotonic() + timeout
        try:
            async with httpx.AsyncClient(trust_env=False) as client, asyncio.TaskGroup() as tasks:
                for replicas in self.fleet.sets.values():
                    tasks.create_task(replicas.wait_ready(client, deadline))
        except* StartupError as failures:
            raise failures.exceptions[0] from None

    def _adopt(self, endpoint: Endpoint) -> None:
        if self.endpoint_id is not None and self.endpoint_id not in self.store.endpoints:
            self.endpoint_id = None  # the adopted endpoint was deleted: adopt the next one
        if self.endpoint_id is None and endpoint.id in self.store.endpoints:
            self.endpoint_id = endpoint.id

    def info(self) -> EmulatorInfo:
        endpoint = self.store.endpoints.get(self.endpoint_id) if self.endpoint_id else None
        deployed = endpoint.deployed_models if endpoint else []
        sets = list(self.fleet.sets.values())
        first = {s.name: s.replicas[0].process for s in sets if s.replicas}
        return EmulatorInfo(
            project=self.config.project,
            location=self.config.location,
            endpoint_id=endpoint.id if endpoint else "",
            endpoint=endpoint.name if endpoint else "",
            control_plane_url=self.control_url,
            dedicated_endpoint_dns=self.dns,
            ca_cert=str(self.cert),
            deployed_models={d.display_name: d.id for d in deployed},
            traffic_split=dict(endpoint.traffic_split) if endpoint else {},
            pid=os.getpid(),
            project_number=self.number,
            servers={name: p.url for name, p in first.items()},
            server_pids={name: p.pid for name, p in first.items() if p.pid is not None},
            logs={name: str(p.log_path) for name, p in first.items()},
            replicas={s.deployed_model_id: s.status() for s in sets},
            scale_events=self.fleet.events(),
        )

    def summary(self) -> str:
        info = self.info()
        lines = [
            f"Vertex AI dedicated endpoint emulator ready (pid {info.pid})",
            f"  endpoint       {info.endpoint or '(none yet: create one with the SDK)'}",
            f"  control plane  {info.control_plane_url}   (REST, plain HTTP)",
            f"  data plane     {info.data_plane_url}   (HTTPS, CA certificate {info.ca_cert})",
        ]
        for name, dm_id in info.deployed_models.items():
            lines.append(
                f"  deployed model {name} = {dm_id}: {info.traffic_split.get(dm_id, 0)}% "
                f"of traffic, replicas:"
            )
            for replica in info.replicas.get(dm_id, []):
                lines.append(
                    f"    {replica.id}: {replica.url}, pid {replica.pid}, log {replica.log}"
                )
        lines += [
            "Point the SDK at it:",
            f"  export REQUESTS_CA_BUNDLE={info.ca_cert} NO_PROXY={NO_PROXY}",
            "  from google.auth.credentials import AnonymousCredentials",
            f'  aiplatform.init(project="{info.project}", location="{info.location}", '
            f'api_endpoint="{info.control_plane_url}", api_transport="rest", '
            "credentials=AnonymousCredentials())",
            f'  endpoint = aiplatform.Endpoint("{info.endpoint_id or "ENDPOINT_ID"}")',
            '  endpoint.invoke("/detect", image_bytes, {"Content-Type": "image/jpeg"})',
            "Ctrl-C (or SIGTERM) stops it and its servers.",
        ]
        return "\n".join(lines)


def _proxy_client() -> httpx.AsyncClient:
    """The data plane's client to the servers: no proxies from the environment, no timeout but
    for connecting (the data plane enforces the endpoint's total inference timeout), and only
    the caller's headers (httpx's defaults removed)."""
    client = httpx.AsyncClient(
        trust_env=False,
        timeout=httpx.Timeout(None, connect=5.0),
        limits=httpx.Limits(
            max_connections=None,
            max_keepalive_connections=64,
            keepalive_expiry=UPSTREAM_KEEP_ALIVE_S,
        ),
    )
    for default in ("accept", "accept-encoding", "user-agent"):
        del client.headers[default]
    return client


def _planes(emulation: Emulation, proxy: httpx.AsyncClient) -> list[tuple[_Server, socket.socket]]:
    """The control plane (HTTP) and the data plane (HTTPS) as uvicorn servers on their sockets."""
    tls = {"ssl_certfile": str(emulation.cert), "ssl_keyfile": str(emulation.key)}
    apps: list[tuple[Any, socket.socket, dict[str, Any]]] = [
        (
            create_control_app(emulation.store, emulation.deployments),
            emulation.control_sock,
            {},
        ),
        (DataPlane(emulation.store, emulation.fleet, proxy), emulation.data_sock, tls),
    ]
    common: dict[str, Any] = {
        "lifespan": "off",
        "log_level": "warning",
        "access_log": False,
        "timeout_keep_alive": KEEP_ALIVE_S,
    }
    # A short graceful shutdown: open streams are cut rather than waited for.
    return [
        (_Server(uvicorn.Config(app, timeout_graceful_shutdown=2, **common, **extra)), sock)
        for app, sock, extra in apps
    ]


async def _until(stop: asyncio.Event, planes: list[asyncio.Task[None]], work: Any = None) -> Any:
    """Await ``work`` (if any) unless a stop signal comes first (then None) or a plane dies."""
    waiters = {asyncio.ensure_future(stop.wait()), *planes}
    job = asyncio.ensure_future(work) if work is not None else None
    try:
        done, _ = await asyncio.wait(
            waiters | ({job} if job else set()), return_when=asyncio.FIRST_COMPLETED
        )
        for plane in planes:
            if plane in done:
                raise StartupError(f"a plane of the emulator stopped: {plane.exception()!r}")
        return job.result() if job is not None and job in done else None
    finally:
        for task in waiters - set(planes) | ({job} if job else set()):
            task.cancel()


async def serve(
    config: EmulatorConfig, info_file: Path | None = None, work_dir: Path | None = None
) -> int:
    """Run until SIGINT/SIGTERM/SIGHUP: 0 after a clean stop, 1 if it could not start or broke.

    Its temp directory is made in ``work_dir`` (default: the system's temp dir).
    """
    try:
        if work_dir is not None:
            work_dir.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="vertex-emulator-", dir=work_dir))
    except OSError as exc:
        log.error("cannot make a temp dir in %s: %s", work_dir or tempfile.gettempdir(), exc)
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    emulation: Emulation | None = None
    servers: list[tuple[_Server, asyncio.Task[None]]] = []
    wrote_info = False
    proxy = _proxy_client()
    try:
        emulation = Emulation(config, workdir)
        for server, sock in _planes(emulation, proxy):
            servers.append((server, asyncio.create_task(server.serve(sockets=[sock]))))
        planes = [task for _, task in servers]
        emulation.start()  # on this (main) thread: the children's death signal needs it
        await _until(stop, planes, emulation.wait_healthy(config.startup_timeout))
        if stop.is_set():
            log.info("stopped before every server was healthy")
            return 0
        if info_file is not None:
            emulation.info().write(info_file)
            wrote_info = True

            def rewrite(*_: object) -> None:
                try:
                    emulation.info().write(info_file)
                except OSError as exc:  # a full disk must not stop the fleet or the planes
                    log.error("cannot rewrite the info file %s: %s", info_file, exc)

            emulation.store.on_change.append(rewrite)
            emulation.fleet.on_change.append(rewrite)
        print(emulation.summary(), flush=True)
        await _until(stop, planes, emulation.fleet.supervise())
        log.info("stopping: the replicas drain (up to %g s), then the planes close",
                 config.grace_period)  # fmt: skip
        return 0
    except StartupError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:  # a log dir, the certificate or the info file could not be written
        log.error("cannot run the emulator: %s", exc)
        return 1
    finally:
        if emulation is not None:
            emulation.deployments.cancel()
            await emulation.fleet.stop()  # while the data plane still relays their last events
        for server, _ in servers:
            server.should_exit = True
        if servers:
            await asyncio.gather(*(task for _, task in servers), return_exceptions=True)
        if emulation is not None:
            emulation.control_sock.close()
            emulation.data_sock.close()
        await proxy.aclose()
        if wrote_info and info_file is not None:
            info_file.unlink(missing_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


def run(config: EmulatorConfig, info_file: Path | None = None, work_dir: Path | None = None) -> int:
    """:func:`serve` in a fresh event loop (call from the main thread)."""
    if sys.platform == "win32":  # pragma: no cover
        raise SystemExit("the emulator needs a POSIX system (signals, process groups)")
    return asyncio.run(serve(config, info_file, work_dir))
