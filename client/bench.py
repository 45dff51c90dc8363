"""``python -m client bench``: a load generator for the server (like Triton's ``perf_analyzer``).

It sends the same requests a user's client sends, through the client's transports (httpx to one
``--url``; to a Vertex endpoint or the emulator the async Vertex transport, or with ``--sdk``
the SDK's ``Endpoint.invoke`` in a thread pool), keeps ``N`` requests in flight for each level
of a concurrency sweep, and reports throughput, latency percentiles, errors and the server's
``Server-Timing`` breakdown, as a table and as JSON.

The measuring core (:func:`run_level`) takes any ``send() -> Reply`` coroutine and imports
nothing beyond msgspec, so ``tests/bench/perf.py`` drives it with plain httpx on machines
without the client's SDK dependencies; the transports are imported only by the CLI.

Example:
    python -m client bench --url http://127.0.0.1:8080 bus.jpg --concurrency 1,2,4,8 \
        --duration 10 --warmup 5 --json bench.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import math
import mimetypes
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import msgspec

ROUTES = ("detect", "segment", "annotate", "predict", "models")


class Reply(msgspec.Struct, frozen=True):
    """What one request came back with: the HTTP status (``None`` when none arrived), the
    response headers (lower-case names) and, for a failure, what went wrong."""

    status: int | None
    headers: Mapping[str, str] = {}
    error: str | None = None


Send = Callable[[], Awaitable[Reply]]


class Latency(msgspec.Struct, frozen=True):
    """Milliseconds over the successful requests of a level."""

    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float


class Timing(msgspec.Struct, frozen=True):
    """One ``Server-Timing`` metric over the successful requests, in milliseconds."""

    mean: float
    p50: float


class Level(msgspec.Struct, frozen=True):
    """One concurrency level of a sweep."""

    concurrency: int
    requests: int  # requests completed (successful or not)
    errors: int
    seconds: float  # from the first send to the last answer
    throughput: float  # successful requests per second
    latency_ms: Latency | None  # None when no request succeeded
    server_timing_ms: dict[str, Timing]
    error_kinds: dict[str, int]  # "HTTP 503", "ConnectionError", ... -> count
    first_errors: dict[str, str]  # the first message of each kind
    served_by: dict[str, int]  # X-Deployed-Model-Id -> count


class Report(msgspec.Struct, frozen=True):
    """A whole sweep (``--json``)."""

    target: str
    route: str
    inputs: list[str]
    params: dict[str, str]
    warmup: int
    requests_per_level: int | None
    duration_s: float | None
    levels: list[Level]


# -- measuring ------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (linear interpolation, as numpy's default) of sorted values."""
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile {pct} is not within [0, 100]")
    rank = (len(sorted_values) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def server_timing(header: str | None) -> dict[str, float]:
    """``decode;dur=2.9, inference;dur=14.5`` -> ``{"decode": 2.9, "inference": 14.5}``."""
    out: dict[str, float] = {}
    for metric in (header or "").split(","):
        name, *params = (part.strip() for part in metric.split(";"))
        for param in params:
            key, _, value = param.partition("=")
            if name and key == "dur":
                with contextlib.suppress(ValueError):  # a malformed metric is skipped
                    out[name] = float(value.strip('"'))
    return out


async def _drive(
    send: Send, concurrency: int, count: int | None, duration: float | None
) -> tuple[list[tuple[float, Reply]], float]:
    """Keep ``concurrency`` sends in flight until ``count`` have been sent or ``duration``
    seconds have passed; return (latency in seconds, reply) pairs and the elapsed seconds."""
    samples: list[tuple[float, Reply]] = []
    remaining = count
    started = time.perf_counter()
    deadline = started + duration if duration is not None else None

    async def worker() -> None:
        nonlocal remaining
        while True:
            if remaining is not None:
                if remaining <= 0:
                    return
                remaining -= 1
            elif deadline is not None and time.perf_counter() >= deadline:
                return
            t = time.perf_counter()
            try:
                reply = await send()
            except Exception as exc:  # a failed request is a measured error, not a crash
                reply = Reply(None, error=f"{type(exc).__name__}: {exc}")
            samples.append((time.perf_counter() - t, reply))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, time.perf_counter() - started


def summarize(concurrency: int, samples: list[tuple[float, Reply]], seconds: float) -> Level:
    """The figures of one level from its samples."""
    ok = [(s, r) for s, r in samples if r.error is None and r.status is not None and r.status < 400]
    kinds: Counter[str] = Counter()
    first: dict[str, str] = {}
    for _, r in samples:
        if r.error is None and r.status is not None and r.status < 400:
            continue
        message = r.error or f"HTTP {r.status}"
        kind = message.split(":")[0]
        kinds[kind] += 1
        first.setdefault(kind, message)
    latency = None
    if ok:
        ms = sorted(s * 1000 for s, _ in ok)
        latency = Latency(
            p50=percentile(ms, 50),
            p90=percentile(ms, 90),
            p99=percentile(ms, 99),
            mean=statistics.fmean(ms),
            min=ms[0],
            max=ms[-1],
        )
    timings: dict[str, list[float]] = {}
    for _, r in ok:
        for name, value in server_timing(r.headers.get("server-timing")).items():
            timings.setdefault(name, []).append(value)
    served = Counter(r.headers.get("x-deployed-model-id", "?") for _, r in samples if r.status)
    return Level(
        concurrency=concurrency,
        requests=len(samples),
        errors=len(samples) - len(ok),
        seconds=seconds,
        throughput=len(ok) / seconds if seconds > 0 else 0.0,
        latency_ms=latency,
        server_timing_ms={
            k: Timing(mean=statistics.fmean(v), p50=statistics.median(v))
            for k, v in timings.items()
        },
        error_kinds=dict(kinds),
        first_errors=first,
        served_by=dict(served),
    )


async def run_level(
    send: Send,
    concurrency: int,
    *,
    requests: int | None = None,
    duration: float | None = None,
    warmup: int = 0,
) -> Level:
    """Measure one concurrency level: ``warmup`` requests first (not counted), then either
    ``requests`` requests or as many as ``duration`` seconds allow (exactly one of the two)."""
    if (requests is None) == (duration is None):
        raise ValueError("give exactly one of requests= and duration=")
    if warmup:
        await _drive(send, concurrency, warmup, None)
    samples, seconds = await _drive(send, concurrency, requests, duration)
    return summarize(concurrency, samples, seconds)


# -- reporting ------------------------------------------------------------------------------


def table(levels: Sequence[Level]) -> str:
    """The sweep as a fixed-width text table."""
    names = sorted({k for lv in levels for k in lv.server_timing_ms}, key=_timing_order)
    head = f"{'conc':>4} {'reqs':>6} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} "
    head += f"{'p99 ms':>8}" + "".join(f" {n[:10] + ' ms':>13}" for n in names)
    lines = [head]
    for lv in levels:
        lat = lv.latency_ms
        cells = [f"{v:>8.1f}" for v in (lat.p50, lat.p90, lat.p99)] if lat else [f"{'-':>8}"] * 3
        row = f"{lv.concurrency:>4} {lv.requests:>6} {lv.errors:>6} {lv.throughput:>8.1f} "
        row += " ".join(cells)
        for n in names:
            t = lv.server_timing_ms.get(n)
            row += f" {t.mean:>13.1f}" if t else f" {'-':>13}"
        lines.append(row)
    if names:
        lines.append("(server columns: mean Server-Timing durations of successful requests)")
    errors: Counter[str] = Counter()
    first: dict[str, str] = {}
    for lv in levels:
        errors.update(lv.error_kinds)
        for kind, message in lv.first_errors.items():
            first.setdefault(kind, message)
    for kind, count in sorted(errors.items()):
        lines.append(f"errors: {count} x {first[kind][:300]}")
    return "\n".join(lines)


def _timing_order(name: str) -> tuple[int, str]:
    known = ["queue", "read", "decode", "inference", "encode"]
    return (known.index(name) if name in known else len(known), name)


# -- the command ------------------------------------------------------------------------------


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


def add(sub: Any) -> None:
    """Add the ``bench`` subcommand (see :data:`client.cli.COMMANDS`)."""
    from client.cli import connection_options

    p = sub.add_parser(
        "bench",
        parents=[connection_options()],
        conflict_handler="resolve",  # --json takes an optional FILE here
        help="measure throughput and latency over a concurrency sweep",
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
    from client import errors

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
    from client import errors
    from client.cli import json_text, writing
    from client.transports import AsyncHttpTransport, AsyncVertexTransport, Request

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
    requests = [
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

    async def sweep() -> tuple[str, list[Level]]:
        import httpx

        limits = httpx.Limits(max_connections=max(most, 100), max_keepalive_connections=most)
        sync_send, client = None, None
        if args.url:
            target = args.url
            transport: Any = AsyncHttpTransport(args.url, verify=args.ca_cert, limits=limits)
        else:
            from client.cli import make_client

            client = make_client(args)  # the SDK endpoint: reads the emulator info, CA, etc.
            target = client.transport.name
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

        async def send() -> Reply:
            nonlocal turn
            request = requests[turn % len(requests)]
            turn += 1
            try:
                if pool is not None:
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

        levels = []
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
        return target, levels

    target, levels = asyncio.run(sweep())
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
        print(table(levels))
        if args.json:
            with writing(args.json):
                Path(args.json).write_text(encoded)
    if all(level.latency_ms is None for level in levels):
        from client.cli import EXIT_API, EXIT_CONNECTION

        kinds = {k for level in levels for k in level.error_kinds}
        print("error: no request succeeded", file=sys.stderr)
        return EXIT_CONNECTION if kinds <= {"ConnectionError", "TimeoutError"} else EXIT_API
    return 0
