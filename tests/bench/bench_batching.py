"""Benchmark: /detect with dynamic batching off and on (``SERVE_BATCHING``).

For each setting, a fresh server; then ``/detect`` (one PNG per request, raw body) at
concurrency 1 (p50 latency) and at concurrency N (requests/s, p50 and p95 latency), each client a
closed loop. Also prints the mean images per predict call at concurrency N (``/metrics``). A benchmark, not a
test: it prints figures and asserts nothing. Run::

    .venv/bin/python tests/bench/bench_batching.py [--requests 200] [--concurrency 8]
        [--device cpu|cuda:0] [--model yolo11n.yaml] [--size 320] [--max-size 8] [--delay-ms 5]
        [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from app.demo.shapes import draw_scene  # noqa: E402
from client.stats import percentile  # noqa: E402
from servers import serving  # noqa: E402


def png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


async def load(url: str, blobs: list[bytes], concurrency: int) -> tuple[float, list[float]]:
    """Send every blob once from ``concurrency`` closed-loop clients: (seconds, latencies ms)."""
    queue = list(reversed(blobs))
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def worker() -> None:
            while queue:
                blob = queue.pop()
                t = time.perf_counter()
                r = await client.post(
                    "/detect", content=blob, headers={"Content-Type": "image/png"}
                )
                r.raise_for_status()
                latencies.append((time.perf_counter() - t) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


def predict_calls(url: str) -> tuple[float, float]:
    """Images and predict calls so far, from the ``yolo_batch_size`` histogram."""
    text = httpx.get(url + "/metrics").text
    values = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("yolo_batch_size_")
    }
    return values["yolo_batch_size_sum"], values["yolo_batch_size_count"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--size", type=int, default=320, help="image side in pixels")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default=None, help="SERVE_MODELS source (default: demo)")
    parser.add_argument("--max-size", type=int, default=8, help="SERVE_BATCH_MAX_SIZE")
    parser.add_argument("--delay-ms", type=float, default=5, help="SERVE_BATCH_MAX_DELAY_MS")
    parser.add_argument("--rounds", type=int, default=1, help="off/on pairs, alternated")
    args = parser.parse_args()

    rng = np.random.default_rng(7)
    blobs = [png(draw_scene(rng, args.size, args.size)[0]) for _ in range(args.requests)]
    base = {
        "SERVE_LOG_LEVEL": "warning",
        "SERVE_METRICS": "true",
        "SERVE_DEVICE": args.device,
        "SERVE_QUEUE_SIZE": str(max(64, 2 * args.concurrency)),
        "SERVE_BATCH_MAX_SIZE": str(args.max_size),
        "SERVE_BATCH_MAX_DELAY_MS": str(args.delay_ms),
    }
    if args.model:
        base["SERVE_MODELS"] = f"bench={args.model}"
    print(
        f"{args.requests} PNG images of {args.size}x{args.size}, one per request, device "
        f"{args.device}, max batch {args.max_size}, max delay {args.delay_ms:g} ms"
    )
    print(
        f"{'batching':>8} {'c=1 p50 ms':>11} {f'c={args.concurrency} req/s':>11} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'img/predict':>12}"
    )
    for mode in ("off", "on") * args.rounds:
        with (
            tempfile.TemporaryDirectory() as tmp,
            serving(Path(tmp), {**base, "SERVE_BATCHING": mode}) as srv,
        ):
            asyncio.run(load(srv.url, blobs[:10], 2))  # warm connections and threads
            _, single = asyncio.run(load(srv.url, blobs[: max(20, args.requests // 4)], 1))
            images, calls = predict_calls(srv.url)
            elapsed, lat = asyncio.run(load(srv.url, blobs, args.concurrency))
            images2, calls2 = predict_calls(srv.url)
            lat.sort()
            print(
                f"{mode:>8} {statistics.median(single):>11.1f} "
                f"{len(blobs) / elapsed:>11.1f} {statistics.median(lat):>8.1f} "
                f"{percentile(lat, 95):>8.1f} {(images2 - images) / (calls2 - calls):>12.2f}"
            )


if __name__ == "__main__":
    main()
