"""The load generator behind ``python -m client bench`` (like Triton's ``perf_analyzer``).

:func:`run_level` keeps ``N`` requests in flight, each a call of any ``send() -> Reply``
coroutine, for a count or a duration, and :func:`summarize` turns the samples into a
:class:`Level`: throughput, latency percentiles, errors by kind and the server's
``Server-Timing`` breakdown. It imports nothing beyond msgspec and the client's statistics, so
``tests/bench/perf.py`` drives it with plain httpx on machines without the SDK; the command
(``client/cli/bench.py``) sends through the client's transports.

Example:
    python -m client bench --url http://127.0.0.1:8080 bus.jpg --concurrency 1,2,4,8 \
        --duration 10 --warmup 5 --json bench.json
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence

import msgspec

from client.schema import parse_server_timing
from client.stats import percentile
from client.text import table as text_table


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
    # each deployed model's own latency, when several answered (a traffic split)
    latency_by_deployed_model_ms: dict[str, Latency] = {}


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
    latency = _latency([s for s, _ in ok])
    by_model: dict[str, list[float]] = {}
    for s, r in ok:
        by_model.setdefault(r.headers.get("x-deployed-model-id", "?"), []).append(s)
    timings: dict[str, list[float]] = {}
    for _, r in ok:
        for name, value in parse_server_timing(r.headers.get("server-timing")).items():
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
        latency_by_deployed_model_ms=(
            {k: lat for k, v in sorted(by_model.items()) if (lat := _latency(v))}
            if len(by_model) > 1
            else {}
        ),
    )


def _latency(seconds: Sequence[float]) -> Latency | None:
    if not seconds:
        return None
    ms = sorted(s * 1000 for s in seconds)
    return Latency(
        p50=percentile(ms, 50),
        p90=percentile(ms, 90),
        p99=percentile(ms, 99),
        mean=statistics.fmean(ms),
        min=ms[0],
        max=ms[-1],
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


def table(levels: Sequence[Level], labels: Mapping[str, str] | None = None) -> str:
    """The sweep as a text table; under a traffic split (several deployed models answered) a
    second one per deployed model (``labels``: id -> how to show it, e.g. ``name (id)``); then
    the errors (the first message of each kind)."""
    names = sorted({k for lv in levels for k in lv.server_timing_ms}, key=_timing_order)
    rows = []
    for lv in levels:
        lat = lv.latency_ms
        latency = [f"{v:.1f}" for v in (lat.p50, lat.p90, lat.p99)] if lat else ["-"] * 3
        timings = [f"{t.mean:.1f}" if (t := lv.server_timing_ms.get(n)) else "-" for n in names]
        rows.append(
            [lv.concurrency, lv.requests, lv.errors, f"{lv.throughput:.1f}", *latency, *timings]
        )
    headers = ["conc", "reqs", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms"]
    lines = [text_table(headers + [f"{n} ms" for n in names], rows, left=0)]
    if names:
        lines.append("(server columns: mean Server-Timing durations of successful requests)")
    split = [
        [lv.concurrency, (labels or {}).get(dm, dm), lv.served_by.get(dm, 0)]
        + [f"{v:.1f}" for v in (lat.p50, lat.p90, lat.p99)]
        for lv in levels
        for dm, lat in lv.latency_by_deployed_model_ms.items()
    ]
    if split:
        lines.append("several deployed models answered (the traffic split); each one's latency:")
        headers = ["conc", "deployed model", "reqs", "p50 ms", "p90 ms", "p99 ms"]
        lines.append(text_table(headers, split, left=2))
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
