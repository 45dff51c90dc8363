"""``python -m app.demo``: serve the bundled demo models and send them one real request.

Starts ``python -m app`` on a free loopback port, waits for ``/health``, draws a fresh shapes
image, posts it to ``/detect`` and prints what was drawn next to what the model found.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
from PIL import Image

from app.demo.shapes import draw_scene


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2026, help="seed of the drawn test image")
    parser.add_argument("--timeout", type=float, default=180, help="seconds to wait for /health")
    args = parser.parse_args(argv)

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "AIP_HTTP_PORT": str(port), "SERVE_HOST": "127.0.0.1"}
    env.setdefault("SERVE_LOG_LEVEL", "warning")
    server = subprocess.Popen([sys.executable, "-m", "app"], env=env)
    try:
        started = time.monotonic()
        while True:
            if server.poll() is not None:
                print(f"server exited with status {server.returncode}", file=sys.stderr)
                return 1
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - started > args.timeout:
                print("server did not become healthy in time", file=sys.stderr)
                return 1
            time.sleep(0.2)
        print(f"server healthy at {url} after {time.monotonic() - started:.1f} s")

        rgb, shapes = draw_scene(np.random.default_rng(args.seed), 320, 240)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        r = httpx.post(
            url + "/detect",
            content=buf.getvalue(),
            headers={"Content-Type": "image/png"},
            timeout=60,
        )
        print(f"POST /detect -> {r.status_code}  Server-Timing: {r.headers.get('server-timing')}")
        r.raise_for_status()
        body = r.json()
        print("drawn:")
        for s in shapes:
            print(f"  {s.name:<8} box={tuple(round(v) for v in s.box)}")
        print(f"found by {body['model']} (version {body['version']}):")
        for d in body["results"][0]["detections"]:
            b = d["box"]
            box = tuple(round(b[k]) for k in ("x1", "y1", "x2", "y2"))
            print(f"  {d['class_name']:<8} box={box} confidence={d['confidence']:.2f}")
        print(json.dumps(body, indent=2))
        return 0
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    raise SystemExit(main())
