"""``python -m client console``: the web console on 127.0.0.1 (:mod:`client.console`)."""

from __future__ import annotations

import argparse
import logging
import socket
import webbrowser
from typing import Any

from client import errors
from client.cli.options import connection_options, make_client, vertex_target
from client.deploy import Connection


def add(sub: Any, name: str, summary: str) -> None:
    p = sub.add_parser(
        name,
        parents=[connection_options()],
        help=summary,
        description=summary + ". Credentials stay in this process; the page talks to it only.",
    )
    g = p.add_argument_group("console")
    g.add_argument(
        "--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one, printed)"
    )
    g.add_argument("--no-browser", action="store_true", help="do not open a browser")
    g.add_argument(
        "--rollout-report",
        metavar="FILE.json",
        help="the report a `client rollout --report FILE.json` writes: shown on the rollout page",
    )
    p.set_defaults(func=run)


def _socket(port: int) -> socket.socket:
    if not 0 <= port <= 65535:
        raise errors.ParameterError(f"--port must be 0..65535, not {port}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise errors.ParameterError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    sock.listen(128)  # connections wait in the backlog until uvicorn serves: the URL works at once
    return sock


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from client.console import Console, create_app
    except ImportError as exc:
        raise errors.ParameterError(
            f"the console needs {exc.name} (the 'console' extra): pip install 'vertex-yolo[console]'"
        ) from None
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per call the page makes
    sock = _socket(args.port)
    client = make_client(args)
    endpoint = None
    where = args.url
    if not args.url:
        target = vertex_target(args)
        Connection(target.project, target.location, target.api_endpoint).init()
        endpoint = target.endpoint
        where = f"endpoint {target.endpoint}" + (" (emulator)" if target.emulator else "")
    console = Console(
        client,
        where=where or "",
        endpoint=endpoint,
        info_file=args.emulator_info,
        rollout_report=args.rollout_report,
    )
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    print(f"console on {url} ({where}); Ctrl-C stops it", flush=True)
    if not args.no_browser:
        webbrowser.open(url)
    config = uvicorn.Config(create_app(console), log_level="warning", timeout_graceful_shutdown=2)
    with client:
        uvicorn.Server(config).run(sockets=[sock])
    return 0
