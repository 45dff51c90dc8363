"""Benchmark: /detect through the emulator's dedicated endpoint with 1 and 2 replicas.

For each replica count, a fresh emulator (``--replicas shapes-a=N``, the demo detector); then
``/detect`` (one PNG per request, raw body) through the HTTPS data plane's ``/invoke`` at
concurrency C from closed-loop clients: requests/s, p50 and p95 latency, and how many requests
each replica answered (``X-Replica-Id``). A first row sends the same load straight to one
server (no emulator in the way), for the proxy's cost. A benchmark, not a test: it prints
figures and asserts nothing. Run::

    .venv/bin/python tests/bench/bench_replicas.py [--requests 200] [--concurrency 8]
        [--size 320] [--replicas 1 2]

Replicas share this machine's cores: on a 2-core box two replicas compete for the same two
cores that one replica's inference threads already use, so req/s cannot double; the figures
show the balancing (each replica's share) and the proxy's overhead, not Vertex's scaling,
where each replica has a machine of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import ssl
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from app.demo.shapes import draw_scene  # noqa: E402
from client.emulator import Emulator  # noqa: E402
from client.stats import percentile  # noqa: E402


def png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


async def load(
    url: str, blobs: list[bytes], concurrency: int, verify: ssl.SSLContext | bool = True
) -> tuple[float, list[float], Counter[str]]:
    """Post every blob once to ``url`` from ``concurrency`` closed-loop clients: (seconds,
    latencies in ms, requests per replica)."""
    queue = list(reversed(blobs))
    latencies: list[float] = []
    replicas: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits, verify=verify) as client:

        async def worker() -> None:
            while queue:
                blob = queue.pop()
                t = time.perf_counter()
                r = await client.post(url, content=blob, headers={"Content-Type": "image/png"})
                r.raise_for_status()
                latencies.append((time.perf_counter() - t) * 1000)
                replicas[r.headers.get("x-replica-id", "?")] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies, replicas


def row(label: str, blobs: list[bytes], elapsed: float, lat: list[float], shares: str) -> None:
    lat = sorted(lat)
    print(
        f"{label:>22} {len(blobs) / elapsed:>8.1f} {statistics.median(lat):>8.1f} "
        f"{percentile(lat, 95):>8.1f}  {shares}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--size", type=int, default=320, help="image side in pixels")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    rng = np.random.default_rng(7)
    blobs = [png(draw_scene(rng, args.size, args.size)[0]) for _ in range(args.requests)]
    print(
        f"{args.requests} PNG images of {args.size}x{args.size}, one per request, concurrency "
        f"{args.concurrency}, {os.cpu_count()} cores"
    )
    print(f"{'':>22} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8}  requests per replica")
    for n in args.replicas:
        with tempfile.TemporaryDirectory() as tmp:
            emulator = Emulator(
                args=["--deploy", "shapes-a=100", "--replicas", f"shapes-a={n}"],
                env={"YOLO_CONFIG_DIR": str(Path(tmp, "yolo")), "SERVE_LOG_LEVEL": "warning"},
                workdir=Path(tmp, "emulator"),
                startup_timeout=300,
            )
            with emulator as info:
                trust = ssl.create_default_context(cafile=info.ca_cert)
                invoke = info.invoke_url("/detect")
                if n == args.replicas[0]:
                    direct = info.servers["shapes-a"] + "/detect"
                    asyncio.run(load(direct, blobs[:10], 2))  # warm threads and connections
                    elapsed, lat, _ = asyncio.run(load(direct, blobs, args.concurrency))
                    row("1 server, direct", blobs, elapsed, lat, "")
                asyncio.run(load(invoke, blobs[:10], 2, trust))
                elapsed, lat, replicas = asyncio.run(load(invoke, blobs, args.concurrency, trust))
                shares = ", ".join(str(c) for _, c in sorted(replicas.items()))
                row(f"{n} replica(s), invoke", blobs, elapsed, lat, shares)


if __name__ == "__main__":
    main()
