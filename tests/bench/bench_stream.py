"""Benchmark: /stream over HTTP against in-process ``model.predict(source=video, stream=True)``.

Same video file, same model, one run: prints frames per second for both paths and their ratio,
without and with tracking (``model.track`` in process). A benchmark, not a test: it prints
figures and asserts nothing. Run::

    .venv/bin/python tests/bench/bench_stream.py [--frames 300] [--size 640x480] [--model detect]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx
from httpx_sse import connect_sse

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from app.demo.shapes import moving_shape_frames, write_video  # noqa: E402
from app.offline import configure_ultralytics  # noqa: E402
from conftest import start_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", default="640x480", help="video WIDTHxHEIGHT")
    parser.add_argument("--model", choices=["detect", "segment"], default="detect")
    parser.add_argument("--rounds", type=int, default=2, help="best of N for each path")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    configure_ultralytics()
    from ultralytics import YOLO

    name = f"shapes-{args.model}"
    weights = str(ROOT / f"app/demo/weights/{name}.pt")
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "moving.mp4"
        frames, _ = moving_shape_frames(args.frames, width, height)
        write_video(video, frames, fps=30)
        data = video.read_bytes()

        model = YOLO(weights)
        model.predict(frames[0][:, :, ::-1], verbose=False)

        def local(track: bool) -> float:
            started = time.perf_counter()
            run = model.track if track else model.predict
            n = sum(1 for _ in run(source=str(video), stream=True, verbose=False))
            assert n == args.frames, n
            return n / (time.perf_counter() - started)

        srv = start_server(Path(tmp), {"SERVE_LOG_LEVEL": "warning", "SERVE_DEFAULT_MODEL": name})
        try:
            srv.wait_healthy()
            with httpx.Client(base_url=srv.url, timeout=600) as client:

                def http(track: bool) -> float:
                    started = time.perf_counter()
                    n = 0
                    with connect_sse(
                        client,
                        "POST",
                        "/stream",
                        content=data,
                        params={"track": "bytetrack" if track else "none"},
                        headers={"Content-Type": "video/mp4"},
                    ) as source:
                        source.response.raise_for_status()
                        for sse in source.iter_sse():
                            n += sse.event == "frame"
                    assert n == args.frames, n
                    return n / (time.perf_counter() - started)

                http(False)  # warm up the connection and the server's threads
                print(
                    f"{args.frames} frames {width}x{height} mp4v, model {name} (imgsz 160), "
                    f"CPU, best of {args.rounds}"
                )
                print(f"{'tracking':>9} {'in-process fps':>15} {'/stream fps':>12} {'ratio':>6}")
                for track in (False, True):
                    lo = max(local(track) for _ in range(args.rounds))
                    hi = max(http(track) for _ in range(args.rounds))
                    label = "bytetrack" if track else "none"
                    print(f"{label:>9} {lo:>15.1f} {hi:>12.1f} {hi / lo:>6.2f}")
        finally:
            srv.stop()


if __name__ == "__main__":
    main()
