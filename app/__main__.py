"""``python -m app``: validate settings, then serve with uvicorn.

Flags override the environment variables of the same meaning (see README's configuration table).
``--prefetch`` loads every configured model once and exits (the Dockerfile bakes weights with it);
``--healthcheck`` asks the running server's health route (the Dockerfile's HEALTHCHECK).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from functools import partial
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from app.config import Settings

FLAGS = {
    "--host": "SERVE_HOST",
    "--port": "AIP_HTTP_PORT",
    "--models": "SERVE_MODELS",
    "--default-model": "SERVE_DEFAULT_MODEL",
    "--processes": "SERVE_PROCESSES",
    "--workers": "SERVE_WORKERS",
    "--torch-threads": "SERVE_TORCH_THREADS",
    "--device": "SERVE_DEVICE",
    "--log-level": "SERVE_LOG_LEVEL",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description="Serve YOLO models.")
    for flag, variable in FLAGS.items():
        parser.add_argument(flag, help=f"overrides ${variable}")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--prefetch",
        action="store_true",
        help="download and load every configured model once, then exit (0: all loaded)",
    )
    mode.add_argument(
        "--healthcheck",
        action="store_true",
        help="exit 0 if the server on $AIP_HTTP_PORT answers 200 on $AIP_HEALTH_ROUTE, else 1",
    )
    args = parser.parse_args(argv)
    env = dict(os.environ)
    for flag, name in FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            env[name] = value

    from app.config import Settings, SettingsError

    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        print(f"python -m app: {exc}", file=sys.stderr)
        return 2
    if args.healthcheck:
        return healthcheck(settings)

    from app.logs import setup_logging

    setup_logging(settings.log_level, settings.log_format)
    if args.prefetch:
        return prefetch(settings)
    from app import processes
    from app.model_sources import resolve_device
    from app.threads import prepare_process

    prepare_process()  # before torch loads (app/threads.py)
    # asks NVML, not CUDA: a CUDA context made here would be unusable in forked processes
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    count = processes.count(settings, resolve_device(settings.device))
    if count == 1:
        serve(settings)
    status = processes.supervise(settings, count, partial(serve, settings))
    logging.shutdown()  # and skip the interpreter's teardown (seconds with torch loaded), as
    sys.stdout.flush()  # serve() does
    sys.stderr.flush()
    os._exit(status)


# After SERVE_SHUTDOWN_SECONDS, uvicorn cancels what is left; worker threads (a model call
# cannot be interrupted) get this much longer before the process exits regardless.
EXIT_MARGIN_SECONDS = 2.0


def serve(settings: Settings, sock: socket.socket | None = None) -> NoReturn:
    """Serve until SIGTERM/SIGINT (or a model that fails to load, exit 1); exit 0 after a
    graceful shutdown, within ``SERVE_SHUTDOWN_SECONDS`` plus :data:`EXIT_MARGIN_SECONDS`.
    ``sock``: listen there (one of the server's processes, app/processes.py), not on the
    settings' host and port.

    On the signal uvicorn stops accepting connections and waits for the requests in flight;
    ``app.state.shutdown`` is marked first (``/health`` answers 503 ``shutting-down``) and open
    streams get their final event (see ``app/shutdown.py``).
    """
    import signal
    import threading
    import time

    import uvicorn

    from app.main import create_app

    failed = False
    server: uvicorn.Server | None = None

    def on_fatal() -> None:
        nonlocal failed
        failed = True
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=on_fatal)
    shutdown = app.state.shutdown

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            shutdown.begin(signal.Signals(sig).name)
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    server = Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            log_config=None,  # app.logs set up the handlers
            access_log=False,  # app.middleware.log_requests writes one line per request
            # uvicorn waits with this as a float timeout (typed int there): 1.5 s works
            timeout_graceful_shutdown=settings.shutdown_seconds,  # type: ignore[arg-type]
        )
    )
    # uvicorn re-raises the signal it handled once it has shut down; with Python's default
    # handlers that would end the process by SIGTERM (or KeyboardInterrupt), not with status 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, server.handle_exit)
    # one of the server's processes was forked with them blocked (app/processes.py): a signal
    # that came meanwhile is handled now, as a graceful shutdown
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    server.run(sockets=None if sock is None else [sock])

    deadline = (shutdown.since or time.monotonic()) + settings.shutdown_seconds
    deadline += EXIT_MARGIN_SECONDS
    main = threading.main_thread()
    busy = [t for t in threading.enumerate() if t is not main and not t.daemon]
    for thread in busy:
        thread.join(max(0.0, deadline - time.monotonic()))
    if stuck := [t.name for t in busy if t.is_alive()]:
        logging.getLogger("app").error(
            "exiting with %d thread(s) still busy past the shutdown deadline: %s", len(stuck), stuck
        )
    # Exit now: the interpreter's own teardown (torch and Ultralytics modules) takes seconds
    # (3-4 s measured on 2 cores) that the grace period does not have, and nothing needs it.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if failed else 0)


def prefetch(settings: Settings) -> int:
    """Resolve, download and warm every configured model once (one instance each); 0 if all load.

    The same code path as the server's start: weights named like ``yolo11n.pt`` land in
    ``SERVE_CACHE_DIR``, where the server later finds them without the network.
    """
    from dataclasses import replace

    from app.offline import configure_ultralytics
    from app.registry import Registry

    configure_ultralytics()
    try:  # the loader thread's work, without starting pools: nothing is served
        loaded = Registry(replace(settings, workers=1))._load_all()
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        print(f"python -m app --prefetch: loading models failed: {error}", file=sys.stderr)
        logging.getLogger("app").debug("prefetch failure", exc_info=exc)
        return 1
    for model in loaded:
        print(
            f"prefetched {model.name}: {model.task}, {len(model.names)} classes, "
            f"imgsz {model.imgsz}, version {model.version}, from {model.source}"
        )
    return 0


def healthcheck(settings: Settings) -> int:
    """Ask the local server's health route (no proxy); 0 on HTTP 200, 1 otherwise."""
    import urllib.error
    import urllib.request

    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    host = f"[{host}]" if ":" in host else host
    url = f"http://{host}:{settings.port}{settings.health_route}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        print(f"python -m app --healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"python -m app --healthcheck: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
