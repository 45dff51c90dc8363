"""``python -m client bench``: a load test through the client's transports (the measuring core is
:mod:`client.bench`): httpx to one ``--url``; to a Vertex endpoint or the emulator the async
Vertex transport, or with ``--sdk`` the SDK's ``Endpoint.invoke`` in a thread pool."""

from __future__ import annotations

import argparse
import asyncio
import base64
import mimetypes
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import msgspec

from client import errors, names, vertex
from client.bench import Level, Reply, Report, run_level, table
from client.cli.options import (
    EXIT_API,
    EXIT_CONNECTION,
    EXIT_INTERRUPTED,
    connection_options,
    json_text,
    make_client,
    writing,
)
from client.transports import AsyncHttpTransport, AsyncVertexTransport, Request

ROUTES = ("detect", "segment", "classify", "pose", "obb", "annotate", "predict", "models")


def _concurrency(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of positive integers like 1,2,4")
    return values


def _param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} must look like key=value")
    return key.strip(), value


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
        return value

    return parse


def add(sub: Any, name: str, summary: str) -> None:
    p = sub.add_parser(
        name,
        parents=[connection_options()],
        conflict_handler="resolve",  # --json takes an optional FILE here
        help=summary,
        description="Send requests with N in flight for each N of --concurrency and report "
        "throughput, latency p50/p90/p99, errors and the server's Server-Timing breakdown. "
        "Requests are not retried: a failure is counted.",
    )
    p.add_argument("images", nargs="*", help="image files, sent one per request in turn")
    p.add_argument("--route", choices=ROUTES, default="detect", help="default: detect")
    p.add_argument(
        "--param",
        type=_param,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an inference parameter (query string), e.g. conf=0.5; repeatable",
    )
    p.add_argument(
        "--body",
        choices=["raw", "json"],
        default="raw",
        help="raw: the image bytes (default); json: Vertex-style base64 instances",
    )
    p.add_argument(
        "--concurrency",
        type=_concurrency,
        default=[1, 2, 4, 8, 16],
        metavar="N,N,...",
        help="requests in flight, one level each (default 1,2,4,8,16)",
    )
    how = p.add_mutually_exclusive_group()
    how.add_argument("--duration", type=_positive(float), help="seconds per level (default 10)")
    how.add_argument("--requests", type=_positive(int), help="requests per level")
    p.add_argument(
        "--warmup", type=int, default=4, help="requests before each level, not counted (default 4)"
    )
    p.add_argument(
        "--sdk",
        action="store_true",
        help="Vertex only: call the SDK's Endpoint.invoke in a thread pool instead of httpx",
    )
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="write the report as JSON to FILE (alone: print JSON instead of the table)",
    )
    p.set_defaults(func=run)


def _bodies(args: argparse.Namespace) -> list[tuple[bytes, str]]:
    """(body, content type) for each input, in the order they are sent."""
    if args.route == "models":
        return [(b"", "")]
    if not args.images:
        raise errors.ParameterError(f"--route {args.route} needs at least one image file")
    out = []
    for name in args.images:
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            raise errors.ParameterError(f"cannot read {name}: {exc.strerror or exc}") from None
        if args.body == "json":
            body = msgspec.json.encode({"instances": [{"image": base64.b64encode(data).decode()}]})
            out.append((body, "application/json"))
        else:
            kind = mimetypes.guess_type(name)[0] or ""
            out.append((data, kind if kind.startswith("image/") else "application/octet-stream"))
    return out


def run(args: argparse.Namespace) -> int:
    """``python -m client bench``."""
    bodies = _bodies(args)
    if args.warmup < 0:
        raise errors.ParameterError("--warmup must be 0 or more")
    if args.sdk and args.url:
        raise errors.ParameterError(
            "--sdk calls a Vertex endpoint: use --endpoint or --emulator-info"
        )
    params = dict(args.param)
    path = f"/{args.route}" + (f"?{urlencode(list(args.param))}" if params else "")
    accept = "image/jpeg" if args.route == "annotate" else "application/json"

    def requests() -> list[Request]:  # after make_client: --deployed-model-id NAME is an id
        return [
            Request(
                path,
                body,
                {"Accept": accept, **({"Content-Type": kind} if kind else {})},
                deployed_model_id=args.deployed_model_id,
                timeout=args.timeout,
            )
            for body, kind in bodies
        ]

    duration = None if args.requests else (args.duration or 10.0)
    most = max(args.concurrency)

    labels: dict[str, str] = {}
    levels: list[Level] = []  # kept on Ctrl-C: the finished levels are reported
    target = args.url or ""

    async def sweep() -> None:
        import httpx

        nonlocal target

        limits = httpx.Limits(max_connections=max(most, 100), max_keepalive_connections=most)
        sync_send, client = None, None
        if args.url:
            target = args.url
            transport: Any = AsyncHttpTransport(args.url, verify=args.ca_cert, limits=limits)
        else:
            client = make_client(args)  # the SDK endpoint: reads the emulator info, CA, etc.
            target = client.transport.name
            with vertex.sdk_errors(f"endpoint {target}"):
                known = names.client_names(client) or {}
            labels.update({dm: names.label(dm, known) for dm in known})
            if args.sdk:
                transport = client.transport
                sync_send = transport.send
            else:
                transport = AsyncVertexTransport.from_endpoint(
                    client.transport.endpoint, limits=limits
                )
        pool = ThreadPoolExecutor(most) if sync_send else None
        loop = asyncio.get_running_loop()
        turn = 0
        sent = requests()

        async def send() -> Reply:
            nonlocal turn
            request = sent[turn % len(sent)]
            turn += 1
            try:
                if pool is not None and sync_send is not None:
                    response = await loop.run_in_executor(pool, sync_send, request)
                else:
                    response = await transport.send(request)
            except errors.VertexYoloError as exc:
                return Reply(None, error=f"{type(exc).__name__}: {exc}")
            status, served = response.status, response.deployed_model_id
            if status is not None and status >= 400:
                detail = response.content.decode("utf-8", "replace").strip()
                return Reply(status, response.headers, f"HTTP {status}: {detail}")
            if args.deployed_model_id and served and served != args.deployed_model_id:
                wrong = f"WrongDeployedModel: answered by {served}"
                return Reply(status, response.headers, wrong)
            return Reply(status, response.headers)

        try:
            for n in args.concurrency:
                level = await run_level(
                    send, n, requests=args.requests, duration=duration, warmup=args.warmup
                )
                levels.append(level)
                if args.json != "-":
                    lat = f"p50 {level.latency_ms.p50:.1f} ms" if level.latency_ms else "no answer"
                    print(
                        f"concurrency {n}: {level.throughput:.1f} req/s, {lat}, "
                        f"{level.errors} errors",
                        file=sys.stderr,
                    )
        finally:
            if pool is not None:
                pool.shutdown()
            else:
                await transport.aclose()
            if client is not None:
                client.close()  # the SDK endpoint's session

    interrupted = False
    try:
        asyncio.run(sweep())
    except KeyboardInterrupt:
        interrupted = True
        if not levels:
            raise  # nothing finished: nothing to report
    report = Report(
        target=target,
        route=args.route,
        inputs=list(args.images),
        params=params,
        warmup=args.warmup,
        requests_per_level=args.requests,
        duration_s=duration,
        levels=levels,
    )
    encoded = json_text(report)
    if args.json == "-":
        sys.stdout.write(encoded)
    else:
        print(f"{args.route} on {target}, {len(args.images)} input file(s)")
        print(table(levels, labels))
        if args.json:
            with writing(args.json):
                Path(args.json).write_text(encoded)
    if interrupted:
        wrote = f"; {args.json} holds them" if args.json and args.json != "-" else ""
        print(
            f"interrupted: {len(levels)} of {len(args.concurrency)} concurrency levels done "
            f"({', '.join(str(level.concurrency) for level in levels)}){wrote}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if all(level.latency_ms is None for level in levels):
        kinds = {k for level in levels for k in level.error_kinds}
        print("error: no request succeeded", file=sys.stderr)
        return EXIT_CONNECTION if kinds <= {"ConnectionError", "TimeoutError"} else EXIT_API
    return 0
