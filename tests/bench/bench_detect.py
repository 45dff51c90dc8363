"""Benchmark: /detect over HTTP against in-process ``model.predict`` on the same images.

Prints milliseconds per image for both paths, at batch 1 (raw body) and batch 8 (multipart),
and the HTTP/in-process rate ratio. A benchmark, not a test: it prints figures and asserts
nothing. Run::

    .venv/bin/python tests/bench/bench_detect.py [--requests 60]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from app.demo.shapes import draw_scene  # noqa: E402
from app.offline import configure_ultralytics  # noqa: E402
from conftest import start_server  # noqa: E402


def png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--size", type=int, default=320, help="image side in pixels")
    args = parser.parse_args()

    rng = np.random.default_rng(7)
    images = [draw_scene(rng, args.size, args.size)[0] for _ in range(args.requests)]
    blobs = [png(im) for im in images]

    configure_ultralytics()
    from ultralytics import YOLO

    model = YOLO(str(ROOT / "app/demo/weights/shapes-detect.pt"))
    bgr = [im[:, :, ::-1].copy() for im in images]
    model.predict(bgr[0], verbose=False)

    def local(batch: int) -> float:
        started = time.perf_counter()
        for i in range(0, len(bgr), batch):
            model.predict(bgr[i : i + batch], verbose=False)
        return (time.perf_counter() - started) * 1000 / len(bgr)

    with tempfile.TemporaryDirectory() as tmp:
        srv = start_server(Path(tmp), {"SERVE_LOG_LEVEL": "warning"})
        try:
            srv.wait_healthy()
            with httpx.Client(base_url=srv.url, timeout=120) as client:

                def http(batch: int) -> tuple[float, float]:
                    latencies = []
                    started = time.perf_counter()
                    for i in range(0, len(blobs), batch):
                        t = time.perf_counter()
                        if batch == 1:
                            r = client.post(
                                "/detect", content=blobs[i], headers={"Content-Type": "image/png"}
                            )
                        else:
                            files = [
                                ("image", ("f.png", b, "image/png")) for b in blobs[i : i + batch]
                            ]
                            r = client.post("/detect", files=files)
                        r.raise_for_status()
                        latencies.append((time.perf_counter() - t) * 1000)
                    per_image = (time.perf_counter() - started) * 1000 / len(blobs)
                    return per_image, statistics.median(latencies)

                http(1)  # warm the connection and the server's threads
                print(
                    f"{args.requests} PNG images of {args.size}x{args.size}, model shapes-detect (imgsz 160), CPU"
                )
                print(
                    f"{'batch':>5} {'in-process ms/img':>18} {'HTTP ms/img':>12} {'HTTP p50 ms/req':>16} {'ratio':>6}"
                )
                for batch in (1, 8):
                    lo = local(batch)
                    hi, p50 = http(batch)
                    print(f"{batch:>5} {lo:>18.1f} {hi:>12.1f} {p50:>16.1f} {lo / hi:>6.2f}")
        finally:
            srv.stop()


if __name__ == "__main__":
    main()
