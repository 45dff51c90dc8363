"""The server's processes: on CPU one per usable core (at most 4), each a whole server, all
listening on one port.

Why processes: a request's Python work (HTTP, the route, Ultralytics' pre- and post-processing,
and for a small model most of the forward pass: hundreds of module calls) holds the
interpreter's lock, so inference threads in one process wait on each other. Measured on the
project's 2-core machine (demo detector at 160, 640x480 JPEG, 8 clients): one process with two
inference threads 134.8 req/s, two separate servers of one inference thread each (4 clients
each) 192-198, these processes 230 (README "Benchmarks").

How:

* ``python -m app`` (:func:`supervise`) checks that the port is free, then forks the processes
  before any model loads (torch, torchvision, Ultralytics and the app imported once; no thread,
  no OpenMP team has run, and the device check asked NVML, not CUDA, so forking is safe). Each child is the whole server
  (``app.main.create_app``) on a listening socket of its own with ``SO_REUSEPORT``: the kernel
  spreads new connections over them by their addresses. (One socket shared by all was uneven:
  whichever process woke first took a whole burst of connections, in one measured run all 8 of
  the benchmark's.)
* The children share one small page of memory (app/siblings.py): the requests each has
  admitted and not answered, whether one of its calls is *wide*, and whether its models are
  ready. The thread policy (app/threads.py) spans the processes through it: a call that starts
  while no other request is in any process gets every usable core; calls side by side get one
  thread each. So a lone request is as fast as with one process, and a full queue keeps every
  core busy with one call each. (Counting requests, not running calls: at full load a process
  is briefly between two calls, and a call elsewhere that took both cores in that moment
  would run oversubscribed once the first starts again: measured, 111-135 req/s against
  170-182 with one thread each.)
* ``/health`` answers 200 once every process has loaded its models. A process started again
  later listens only once its models are warm (the others serve meanwhile), so no request
  meets a loading process after the server was ready.
* Signals: SIGTERM or SIGINT to ``python -m app`` go to every child, which drains like a lone
  server (app/shutdown.py); it exits 0 when they all did. A child whose models fail to load exits
  1: the others are stopped and ``python -m app`` exits 1 (Vertex sees a failed container). A
  child that dies of a signal once serving (the OOM killer) is started again, at most
  :data:`MAX_RESTARTS` times a minute (then the server stops, exit 1). If ``python -m
  app`` itself dies, the kernel sends its children SIGTERM (``PR_SET_PDEATHSIG``).

``SERVE_PROCESSES=1`` (the default on a GPU, and with ``SERVE_METRICS=true``: each process would
count only its own requests) serves in the one process, no fork.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import mmap
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable

from app.config import Settings
from app.siblings import Siblings, join, size
from app.threads import MAX_DEFAULT_WORKERS, is_accelerator, usable_cores

log = logging.getLogger("app")


def count(settings: Settings, device: str) -> int:
    """Server processes: ``SERVE_PROCESSES``, else one per usable core up to
    :data:`~app.threads.MAX_DEFAULT_WORKERS` on CPU; one on an accelerator (the device is the
    shared resource there), with ``SERVE_METRICS=true``, or off Linux."""
    if settings.processes:
        return settings.processes
    if is_accelerator(device) or settings.metrics or not sys.platform.startswith("linux"):
        return 1
    return min(usable_cores(), MAX_DEFAULT_WORKERS)


def supervise(settings: Settings, processes: int, serve: Callable[[socket.socket], int]) -> int:
    """Check that the port is free, fork ``processes`` children that each run ``serve(sock)``
    (the whole server, on a socket of its own: :func:`bound`; its place on the shared page set by
    :func:`app.siblings.join`), and watch them (see the module docstring). The exit status: 0
    when every child ended 0 after a shutdown signal, else 1."""
    children: dict[int, int] = {}  # pid: index
    stopping = False

    def stop(sig: int, _frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    signal.signal(signal.SIGTERM, stop)  # first: as a container's PID 1, a signal with no
    signal.signal(signal.SIGINT, stop)  # handler would be dropped
    try:  # the port is free: a server already there must not silently get every other connection
        bound(settings.host, settings.port, reuse_port=False).close()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
        return 1
    preload()
    page = mmap.mmap(-1, size(processes))
    view = Siblings(processes, 0, page)  # the supervisor's: readiness, resets
    parent = os.getpid()
    restarts: deque[float] = deque(maxlen=MAX_RESTARTS)

    def start(index: int) -> None:
        view.reset(index)
        # blocked across the fork: the child handles a signal once it has its own handlers
        # (app/__main__.py's serve unblocks them), never with this process's
        signals = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        pid = os.fork()
        if pid == 0:  # the child: the whole server
            code = 1
            try:
                for sig in (*signals, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the supervisor, which forwards it
                _end_with(parent)
                join(Siblings(processes, index, page))
                code = serve(bound(settings.host, settings.port))
            except SystemExit as exc:  # uvicorn's, when it cannot start
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                log.exception("server process %d failed", index)
            finally:
                os._exit(code)
        children[pid] = index
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
        if stopping:  # the signal came while it was being forked
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    for index in range(processes):
        if not stopping:
            start(index)
    log.info("serving on %s:%d with %d processes: %s", settings.host, settings.port, processes,
             ", ".join(str(pid) for pid in children))  # fmt: skip
    status = 0
    while children:
        pid, wait_status = os.wait()
        if pid not in children:
            continue
        index = children.pop(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        was_ready = view.all_ready()
        view.reset(index)
        if stopping:
            status = status or (1 if code else 0)
        elif code < 0 and was_ready and not _too_many(restarts):
            name = signal.strsignal(-code) or f"signal {-code}"
            log.error("server process %d (pid %d) died (%s); starting it again", index, pid, name)
            restarts.append(time.monotonic())
            start(index)
        elif code < 0 and was_ready:
            log.error("server process %d (pid %d) died again: %d restarts in %.0f s; stopping "
                      "the server", index, pid, MAX_RESTARTS, RESTART_WINDOW_S)  # fmt: skip
            status = 1
            stop(signal.SIGTERM)
        else:
            log.error("server process %d (pid %d) exited with %d; stopping the server",
                      index, pid, code)  # fmt: skip
            status = 1
            stop(signal.SIGTERM)
    return status


#: a process that died is started again unless this many were in the last RESTART_WINDOW_S
#: seconds: then something kills every new one (a request that crashes it, memory that is
#: never enough), and the server stops (exit 1) rather than restart forever
MAX_RESTARTS, RESTART_WINDOW_S = 5, 60.0


def _too_many(restarts: deque[float]) -> bool:
    return len(restarts) == MAX_RESTARTS and time.monotonic() - restarts[0] < RESTART_WINDOW_S


def preload() -> None:
    """Import, once before forking, what every process imports (torch, torchvision, Ultralytics,
    the app: about 2.5 s of CPU each on the project's machine, and memory the processes then
    share until written). Importing them starts no thread and no OpenMP team."""
    from app.offline import configure_ultralytics

    configure_ultralytics()  # before Ultralytics is imported, as create_app does
    import torchvision.ops  # noqa: F401  (Ultralytics' NMS; the slow half of the imports)
    import ultralytics  # noqa: F401

    import app.main  # noqa: F401


def _end_with(parent: int) -> None:
    """Have the kernel send this process SIGTERM when ``parent`` ends (Linux), so a supervisor
    killed outright leaves no server behind."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it ended before the call
        os.kill(os.getpid(), signal.SIGTERM)


def bound(host: str, port: int, reuse_port: bool = True) -> socket.socket:
    """A TCP socket bound to ``host:port``, not yet listening; ``reuse_port``: with
    ``SO_REUSEPORT``, for one of the server's processes: uvicorn listens once the app has started
    (a process started again: once its models are warm), and only then does the kernel give it
    connections. IPv6 only on an IPv6 address, as uvicorn's own socket."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock
