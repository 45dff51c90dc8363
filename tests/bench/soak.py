"""Soak: a real server under mixed load, then 100 dropped streams; checks nothing leaks.

Phases: warm-up; ``--duration`` seconds of ``--concurrency`` workers each sending, in turn,
``/detect``, ``/segment``, ``/annotate`` (PNG scenes) and ``/stream`` (a short video, read to its
``end`` event); then ``--disconnects`` streams of a long video, each dropped after two frames.
Checks (exit status 1 when one fails):

* no failure: every answer 2xx, or 429 (counted apart: the server shedding load is allowed);
  a stream must end with its ``end`` event; a connection error is a failure;
* resident memory of the server after the load within ``--max-growth`` % (5) of its size after
  the warm-up (printed only with ``--no-memory-verdict``: too short a run to tell a leak);
* after the disconnects: ``yolo_streams_active`` back to 0 (a stream stops counting once its
  source is closed, FFmpeg's decoder threads with it) and ``yolo_stream_frames_total`` no longer
  growing (the dropped streams' inference stopped), and its ``SERVE_TMP_DIR`` empty;
* threads: every Python thread of the server in a pool of bounded size (``yolo_threads``):
  inference (``SERVE_WORKERS``, shared by the models: exactly that many), workers (anyio's
  pool, at most its 40) and the main thread, none unaccounted for. So no stream owns a thread that could outlive
  it, and a pool growing to its size is not a leak. The process's other (native) threads, the
  libraries' own (PyTorch's OpenMP teams, one per thread that runs torch ops; FFmpeg's, per open
  video), are printed beside them.

It starts its own ``python -m app`` (``SERVE_METRICS=true``, a temp dir of its own) unless given
``--url`` (then ``--pid`` and ``--tmp-dir`` enable the memory, thread and temp-dir checks)::

    .venv/bin/python tests/bench/soak.py --duration 120 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from app.demo.shapes import moving_shape_frames, write_video  # noqa: E402
from client.stats import percentile  # noqa: E402
from helpers import encode, scenes  # noqa: E402
from servers import serving  # noqa: E402

ROUTES = ("/detect", "/segment", "/annotate", "/stream")
MiB = 1024 * 1024
WORKER_THREADS = 40  # anyio's default thread limiter: its pool never holds more


@dataclass
class Tally:
    """Answers per route: status counts, latencies, and the first few failures described."""

    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failures: list[str] = field(default_factory=list)
    failed: int = 0

    def ok(self, route: str, status: int, seconds: float) -> None:
        self.statuses[route][status] += 1
        self.seconds[route].append(seconds)

    def fail(self, route: str, status: int, what: str) -> None:
        self.statuses[route][status] += 1
        self.failed += 1
        if len(self.failures) < 5:
            self.failures.append(f"{route}: {what}")

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.statuses.values())

    @property
    def overloaded(self) -> int:
        return sum(c[429] for c in self.statuses.values())


@dataclass
class Inputs:
    images: list[bytes]
    short_video: bytes
    long_video: bytes


def make_inputs(workdir: Path) -> Inputs:
    images = [encode(img) for img, _ in scenes(12, seed=5)]
    videos = []
    for n in (8, 300):
        frames, _ = moving_shape_frames(n)
        path = workdir / f"clip-{n}.mp4"
        write_video(path, frames)
        videos.append(path.read_bytes())
    return Inputs(images, *videos)


async def sse_events(response: httpx.Response):
    """Event names of an SSE response, as they arrive."""
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            yield line.partition(":")[2].strip()


async def call(http: httpx.AsyncClient, route: str, inputs: Inputs, n: int, tally: Tally) -> None:
    started = time.perf_counter()
    try:
        if route == "/stream":
            headers = {"Content-Type": "video/mp4"}
            async with http.stream("POST", route, content=inputs.short_video, headers=headers) as r:
                if r.status_code != 200:
                    body = (await r.aread())[:200]
                    record(tally, route, r.status_code, started, body.decode(errors="replace"))
                    return
                last = None
                async for last in sse_events(r):  # noqa: B007 (the last one is kept)
                    pass
                if last != "end":
                    tally.fail(route, 200, f"the stream ended with {last!r}, not 'end'")
                    return
                tally.ok(route, 200, time.perf_counter() - started)
        else:
            image = inputs.images[n % len(inputs.images)]
            r = await http.post(route, content=image, headers={"Content-Type": "image/png"})
            record(tally, route, r.status_code, started, r.text[:200])
    except httpx.HTTPError as exc:
        tally.fail(route, 0, f"{type(exc).__name__}: {exc}")


def record(tally: Tally, route: str, status: int, started: float, body: str) -> None:
    if 200 <= status < 300 or status == 429:
        tally.ok(route, status, time.perf_counter() - started)
    else:
        tally.fail(route, status, f"{status} {body}")


async def load(
    url: str,
    inputs: Inputs,
    concurrency: int,
    seconds: float,
    tally: Tally,
    proc: psutil.Process | None = None,
    rss: list[int] | None = None,
) -> None:
    """``concurrency`` workers, each cycling through the routes (offset by its number); the
    server's resident memory sampled into ``rss`` every second."""
    until = time.monotonic() + seconds

    async def sample() -> None:
        while proc is not None and rss is not None and time.monotonic() < until:
            rss.append(proc.memory_info().rss)
            await asyncio.sleep(1.0)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:

        async def worker(i: int) -> None:
            for n in itertools.count(i):
                if time.monotonic() >= until:
                    return
                await call(http, ROUTES[n % len(ROUTES)], inputs, n, tally)

        await asyncio.gather(sample(), *(worker(i) for i in range(concurrency)))


async def disconnects(url: str, video: bytes, count: int, parallel: int) -> int:
    """Open ``count`` streams of a long video, drop each after its second frame; how many
    reached two frames."""
    reached = 0
    gate = asyncio.Semaphore(parallel)
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:

        async def drop_one() -> None:
            nonlocal reached
            async with gate:
                headers = {"Content-Type": "video/mp4"}
                async with http.stream("POST", "/stream", content=video, headers=headers) as r:
                    frames = 0
                    async for name in sse_events(r):
                        frames += name == "frame"
                        if frames == 2:
                            reached += 1
                            break  # leaving the block closes the connection mid-stream

        await asyncio.gather(*(drop_one() for _ in range(count)))
    return reached


def metric_sum(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(
        float(v) for v in re.findall(rf'^{name}(?:\{{(?:[^"}}]|"[^"]*")*\}})? (\S+)$', text, re.M)
    )


def thread_pools(url: str) -> dict[str, int]:
    """The server's Python threads by pool (``yolo_threads``)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    found = re.findall(r'^yolo_threads\{pool="(\w+)"\} (\S+)$', text, re.M)
    return {pool: int(float(n)) for pool, n in found}


def thread_problems(pools: dict[str, int], workers: int) -> list[str]:
    """What is wrong with the server's threads: a pool over its size, or threads of no pool."""
    problems = []
    if pools.get("other", 0):
        problems.append(f"{pools['other']} Python thread(s) of no known pool")
    if pools.get("inference", 0) != workers:
        problems.append(f"{pools.get('inference', 0)} inference threads, not {workers}")
    if pools.get("worker", 0) > WORKER_THREADS:
        problems.append(f"{pools['worker']} worker threads, over {WORKER_THREADS}")
    return problems


def wait_for(check, timeout: float, step: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of mixed load")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=None, help="default: duration/4, ≤10 s")
    parser.add_argument("--disconnects", type=int, default=100)
    parser.add_argument("--max-growth", type=float, default=5.0, help="RSS growth limit, %%")
    parser.add_argument(
        "--no-memory-verdict",
        action="store_true",
        help="print the RSS growth without judging it (a few seconds' soak is allocator noise, "
        "not a leak: the long soak judges memory)",
    )
    parser.add_argument("--url", help="an already running server (started with SERVE_METRICS)")
    parser.add_argument("--pid", type=int, help="with --url: its process id (memory, threads)")
    parser.add_argument("--tmp-dir", type=Path, help="with --url: its SERVE_TMP_DIR")
    parser.add_argument("--workers", type=int, default=1, help="with --url: its SERVE_WORKERS (1)")
    args = parser.parse_args(argv)
    warmup = args.warmup if args.warmup is not None else min(10.0, args.duration / 4)

    with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
        workdir = Path(scratch)
        inputs = make_inputs(workdir)
        if args.url is not None:
            return soak(args, warmup, inputs, args.url, args.pid, args.tmp_dir)
        tmp_dir = workdir / "server-tmp"
        tmp_dir.mkdir()
        # MALLOC_ARENA_MAX as the Dockerfile sets it: glibc's per-thread arenas otherwise
        # keep growing resident memory under concurrent load (measured: +6.4 % in 60 s at
        # concurrency 16 without it, +2.3 % with it).
        env = {"SERVE_METRICS": "true", "SERVE_TMP_DIR": str(tmp_dir), "MALLOC_ARENA_MAX": "2"}
        with serving(workdir, env) as server:
            return soak(args, warmup, inputs, server.url, server.proc.pid, tmp_dir)


def soak(args, warmup: float, inputs: Inputs, url: str, pid, tmp_dir) -> int:
    proc = psutil.Process(pid) if pid else None
    problems: list[str] = []
    tally = Tally()

    asyncio.run(load(url, inputs, args.concurrency, warmup, tally))
    rss0 = proc.memory_info().rss if proc else None
    threads0 = proc.num_threads() if proc else None
    frames_before = metric_sum(url, "yolo_stream_frames_total")

    started = time.monotonic()
    samples: list[int] = []
    asyncio.run(load(url, inputs, args.concurrency, args.duration, tally, proc, samples))
    elapsed = time.monotonic() - started
    rss1 = proc.memory_info().rss if proc else None

    print(
        f"soak: {warmup:.0f} s warm-up + {elapsed:.1f} s at concurrency {args.concurrency}: "
        f"{tally.total} requests, {tally.failed} failures, {tally.overloaded} x 429"
    )
    for route in ROUTES:
        times = sorted(tally.seconds[route]) or [0.0]
        p95 = percentile(times, 95)
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(tally.statuses[route].items()))
        print(
            f"  {route:<10} {statuses:<24} p50 {statistics.median(times) * 1000:7.1f} ms"
            f"  p95 {p95 * 1000:7.1f} ms"
        )
    for failure in tally.failures:
        print(f"  failure: {failure}")
    if tally.failed:
        problems.append(f"{tally.failed} failed requests")
    frames_load = metric_sum(url, "yolo_stream_frames_total") - frames_before
    print(f"  stream frames inferred: {frames_load:.0f}")

    if proc:
        growth = (rss1 - rss0) / rss0 * 100
        print(
            f"rss: {rss0 / MiB:.1f} MiB after warm-up, {rss1 / MiB:.1f} MiB after the load: "
            f"{growth:+.2f} % (limit {args.max_growth:g} %); during the load "
            f"{min(samples) / MiB:.1f}..{max(samples) / MiB:.1f} MiB"
        )
        if growth >= args.max_growth and not args.no_memory_verdict:
            problems.append(f"memory grew {growth:.2f} %")

    t = time.monotonic()
    reached = asyncio.run(disconnects(url, inputs.long_video, args.disconnects, parallel=8))
    print(
        f"disconnects: {args.disconnects} streams of 300 frames dropped after 2 frames "
        f"({reached} reached them) in {time.monotonic() - t:.1f} s"
    )
    if reached != args.disconnects:
        problems.append(f"only {reached} of {args.disconnects} dropped streams sent 2 frames")
    idle = wait_for(lambda: metric_sum(url, "yolo_streams_active") == 0, timeout=30)
    frames_a = metric_sum(url, "yolo_stream_frames_total")
    time.sleep(2.0)
    frames_b = metric_sum(url, "yolo_stream_frames_total")
    print(
        f"  streams active: {metric_sum(url, 'yolo_streams_active'):.0f}; "
        f"frames {frames_a:.0f} -> {frames_b:.0f} over 2 s"
    )
    if not idle:
        problems.append("streams still active after the disconnects")
    if frames_b != frames_a:
        problems.append("dropped streams are still being inferred")
    pools = thread_pools(url)
    native = f"; all threads {threads0} after warm-up, {proc.num_threads()} now" if proc else ""
    print(f"  python threads by pool: {pools}{native}")
    problems += thread_problems(pools, args.workers)
    if tmp_dir is not None:
        left = sorted(p.name for p in Path(tmp_dir).iterdir())
        print(f"  temp dir: {len(left)} entries{': ' + ', '.join(left[:5]) if left else ''}")
        if left:
            problems.append(f"{len(left)} files left in the temp dir")
    check = httpx.post(
        url + "/detect", content=inputs.images[0], headers={"Content-Type": "image/png"}
    )
    if check.status_code != 200:
        problems.append(f"/detect after the soak answered {check.status_code}")

    print("FAIL: " + "; ".join(problems) if problems else "PASS")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
