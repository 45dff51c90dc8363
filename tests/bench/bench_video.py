"""Benchmark P6: whole videos through the endpoint (``Client.video``), and live sources.

1. **Replicas**: one video over 10 MB (MJPG, ``--frames`` frames at 640x360, the demo shape
   moving), through a fresh emulator's data plane with the SDK, tracking on, with 1 and 2
   replicas of the demo detector: frames/s, and the ratio.
2. **The cost of windowing**: a video under 10 MB (an MP4 of 200 frames at 640x360) as one
   ``/stream`` call (``Client.stream``, the whole file in one body) against ``Client.video``
   (decoded here, windows of 64): frames/s each.
3. **Live**: an HTTP MJPEG source at ``--live-fps`` in real time (``--live-seconds`` long),
   faster than the server, with windows of 1 (pipelined per-frame calls), 4 and 8 frames and the
   default concurrency: results/s, drops, and glass-to-result latency p50/p95.

A benchmark, not a test: it prints figures and asserts nothing. Run::

    .venv/bin/python tests/bench/bench_video.py [--frames 600] [--live-fps 30] [--live-seconds 10]

Replicas share this machine's cores: on 2 cores two replicas cannot double the rate.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_video import MjpegSource  # noqa: E402

from app.demo.shapes import moving_shape, write_video  # noqa: E402
from client import Client  # noqa: E402
from client.emulator import Emulator  # noqa: E402
from client.video import VideoOptions  # noqa: E402


def frames(n: int) -> Iterator[np.ndarray]:
    for frame, _ in moving_shape(n, width=640, height=360):
        yield frame


def emulator(tmp: Path, replicas: int) -> Emulator:
    return Emulator(
        args=["--deploy", "shapes-a=100", "--replicas", f"shapes-a={replicas}"],
        env={"YOLO_CONFIG_DIR": str(tmp / "yolo"), "SERVE_LOG_LEVEL": "warning"},
        workdir=tmp / f"emulator-{replicas}",
        startup_timeout=300,
    )


def video_fps(client: Client, path: Path, options: VideoOptions | None = None) -> tuple[float, Any]:
    started = time.perf_counter()
    with client.video(path, track="bytetrack", options=options) as run:
        count = sum(1 for _ in run)
    return count / (time.perf_counter() - started), run.stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=600, help="frames of the big video")
    parser.add_argument("--live-fps", type=float, default=120)
    parser.add_argument("--live-seconds", type=float, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        big, small = tmp / "big.avi", tmp / "small.mp4"
        write_video(big, frames(args.frames), fps=25)
        write_video(small, frames(200), fps=25)
        mb = big.stat().st_size / 1e6
        print(f"{os.cpu_count()} cores; big: {args.frames} frames 640x360 MJPG, {mb:.1f} MB; small:"
              f" 200 frames MP4, {small.stat().st_size / 1e6:.1f} MB")  # fmt: skip

        print("\nP6a: the big video through the emulator, tracking, windows of 64")
        rates = {}
        for n in (1, 2):
            with emulator(tmp, n) as info:
                os.environ.update(info.env())
                with Client.from_vertex(endpoint=info.endpoint_id, **info.init_kwargs()) as client:
                    video_fps(client, small)  # warm the replicas
                    rate, stats = video_fps(client, big)
                rates[n] = rate
                print(f"  {n} replica(s): {rate:6.1f} frames/s  ({stats.windows} windows, "
                      f"{len(stats.replicas)} replicas answered, {stats.retries} retries)")  # fmt: skip
        print(f"  ratio 2/1: {rates[2] / rates[1]:.2f}x")

        print("\nP6b: the small video, one /stream call against windows (1 replica)")
        with emulator(tmp, 1) as info:
            os.environ.update(info.env())
            with Client.from_vertex(endpoint=info.endpoint_id, **info.init_kwargs()) as client:
                video_fps(client, small)
                best_one = best_windows = 0.0
                for _ in range(3):
                    started = time.perf_counter()
                    with client.stream(small, track="bytetrack") as stream:
                        count = sum(1 for _ in stream.frames())
                    best_one = max(best_one, count / (time.perf_counter() - started))
                    best_windows = max(best_windows, video_fps(client, small)[0])
                print(f"  one /stream call: {best_one:6.1f} frames/s")
                print(f"  windows (video):  {best_windows:6.1f} frames/s  "
                      f"({best_windows / best_one:.2f}x)")  # fmt: skip

            print(f"\nP6c: live MJPEG at {args.live_fps:g} fps for {args.live_seconds:g} s, "
                  "no tracking")  # fmt: skip
            with Client.from_vertex(endpoint=info.endpoint_id, **info.init_kwargs()) as client:
                for window in (1, 4, 8):
                    source = MjpegSource(args.live_fps, args.live_seconds)
                    try:
                        options = VideoOptions(window=window)
                        started = time.perf_counter()
                        with client.video(source.url, options=options) as run:
                            count = sum(1 for _ in run)
                        took = time.perf_counter() - started
                    finally:
                        source.close()
                    s = run.stats
                    print(f"  window {window}: {count / took:5.1f} results/s, {s.drops} of "
                          f"{s.read} dropped, latency p50 {s.latency_p50_ms:.0f} ms, "
                          f"p95 {s.latency_p95_ms:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
