"""Side by side: this server against LitServe, the peer a user would pick instead (one machine).

Two figures, the ones a user feels: ``p50`` latency of one 640x480 JPEG at concurrency 1 (ms)
and requests/s at concurrency 8. Each configuration is started, measured and stopped in turn,
round after round (the machine's drift hits every configuration alike), and its best round
kept. The same JPEG, the same client (:func:`client.bench.run_level` over :mod:`rawhttp`), the same
model file and input size everywhere:

* ``ours``: ``python -m app`` with its defaults (a process per core, app/processes.py, and the
  thread policy that follows the load across them, app/threads.py), raw JPEG body;
  ``ours, JSON``: the same server given the base64 JSON body LitServe gets; ``ours, 1 process``
  (``SERVE_PROCESSES=1``: the default before the processes, inference threads in one process),
  ``ours, 1 process, 1 x cores`` (and ``SERVE_WORKERS=1``: one call at a time with every core)
  and ``ours, cores x 1 fixed`` (``SERVE_TORCH_THREADS=1``: the processes, one thread each
  whatever the load);
* ``LitServe W x T``: ``tests/bench/litserve_peer.py``, W inference worker processes of T torch
  threads each, batches of up to 8 with a 5 ms timeout, its fast (ZeroMQ) queue: 1 x cores and
  cores x 1, its best configurations on the project's machine;
* ``in process``: the JPEG decoded and predicted on the main thread, the best torch thread
  count (p50 at concurrency 1; sequential images/s in the second column): the machine's limit
  for one call at a time.

Needs ``litserve`` (``pip install litserve==0.2.19``; not a dependency of the project). Run::

    .venv/bin/python tests/bench/bench_peers.py [--model yolo11n.yaml --imgsz 640] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "bench")]

from app.demo.shapes import draw_scene  # noqa: E402
from app.offline import configure_ultralytics  # noqa: E402
from app.threads import usable_cores  # noqa: E402
from client.bench import Level, run_level  # noqa: E402
from client.stats import percentile  # noqa: E402
from rawhttp import Connections, request_bytes  # noqa: E402
from servers import free_port, start_server  # noqa: E402

DEMO_MODEL = ROOT / "app/demo/weights/shapes-detect.pt"
PEER = ROOT / "tests/bench/litserve_peer.py"


@dataclass
class Config:
    label: str
    kind: str  # "ours" or "litserve"
    env: dict[str, str] = field(default_factory=dict)  # ours: server settings
    json_body: bool = False  # ours: the base64 JSON body instead of the raw JPEG
    workers: int = 1  # litserve
    threads: int = 1  # litserve
    p50: list[float] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)


def say(text: str) -> None:
    print(f"[peers] {text}", file=sys.stderr, flush=True)


async def load(
    url: str, path: str, body: bytes, ctype: str, concurrency: int, n: int, warmup: int
) -> Level:
    """``n`` requests, ``concurrency`` in flight, through the minimal keep-alive client."""
    async with Connections(url, concurrency) as connections:
        send = connections.sender(request_bytes(url, path, body, ctype))
        level = await run_level(send, concurrency, requests=n, warmup=warmup)
    if level.errors:
        raise RuntimeError(f"{url}{path}: {level.first_errors}")
    return level


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not healthy after {timeout} s")


def stop(proc: subprocess.Popen, group: bool) -> None:
    """Stop a server; LitServe's whole process group (its API server and inference workers
    outlive a SIGTERM to its main process, and poll their queues meanwhile)."""
    if group:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure(config: Config, args: Any, workdir: Path, inputs: dict[str, bytes]) -> None:
    """One round of one configuration: start it, p50 at c=1 and req/s at c=8, stop it."""
    if config.kind == "ours":
        env = {
            "SERVE_MODELS": f"bench={args.model}",
            "SERVE_DEVICE": "cpu",
            "SERVE_LOG_LEVEL": "warning",
            **config.env,
        }
        server = start_server(workdir, env)
        proc, url, log = server.proc, server.url, server.log
        path = f"/detect?imgsz={args.imgsz}"
        body, ctype = inputs["jpeg"], "image/jpeg"
        if config.json_body:
            body, ctype = inputs["vertex_json"], "application/json"
    else:
        port = free_port()
        url, log = f"http://127.0.0.1:{port}", workdir / f"litserve-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable, str(PEER), "--model", args.model, "--imgsz", str(args.imgsz),
                    "--port", str(port), "--workers", str(config.workers),
                    "--threads", str(config.threads),
                ],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        path, body, ctype = "/predict", inputs["peer_json"], "application/json"
    try:
        wait_http(url, proc, log)
        c1 = asyncio.run(load(url, path, body, ctype, 1, args.requests, args.warmup))
        c8 = asyncio.run(
            load(url, path, body, ctype, args.concurrency, args.requests * 2, args.warmup * 8)
        )
    finally:
        stop(proc, group=config.kind == "litserve")
    assert c1.latency_ms is not None
    config.p50.append(c1.latency_ms.p50)
    config.rate.append(c8.throughput)
    say(
        f"{config.label}: p50 {c1.latency_ms.p50:.1f} ms at c=1, {c8.throughput:.1f} req/s at "
        f"c={args.concurrency}"
    )


def in_process(args: Any, jpeg: bytes, config: Config) -> None:
    """Decode + predict on the main thread at each torch thread count; the best of each."""
    import torch
    from ultralytics import YOLO

    from app.offline import disable_sync

    disable_sync()
    model = YOLO(args.model)
    data = np.frombuffer(jpeg, np.uint8)
    kwargs = dict(imgsz=args.imgsz, device="cpu", verbose=False)

    def one() -> None:
        model.predict(cv2.imdecode(data, cv2.IMREAD_COLOR), **kwargs)

    one()
    best_p50, best_rate = float("inf"), 0.0
    cores = usable_cores()
    for threads in sorted({1, cores, *(2**k for k in range(1, cores.bit_length()))}):
        if threads > cores:
            continue
        torch.set_num_threads(threads)
        for _ in range(args.warmup):
            one()
        latencies = []
        started = time.perf_counter()
        for _ in range(args.requests):
            t = time.perf_counter()
            one()
            latencies.append((time.perf_counter() - t) * 1000)
        rate = args.requests / (time.perf_counter() - started)
        best_p50 = min(best_p50, percentile(sorted(latencies), 50))
        best_rate = max(best_rate, rate)
    config.p50.append(best_p50)
    config.rate.append(best_rate)
    say(f"in process: p50 {best_p50:.1f} ms, {best_rate:.1f} img/s sequential")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEMO_MODEL))
    parser.add_argument("--imgsz", type=int, help="default: the model's")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200, help="at c=1 (twice that at c=8)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--only", help="labels to run, ';'-separated (default: all), e.g. 'ours;LitServe 2 x 1'"
    )
    args = parser.parse_args(argv)
    if Path(args.model).is_file():
        args.model = str(Path(args.model).resolve())
    cores = usable_cores()
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        workdir = Path(tmp)
        os.environ.update({"YOLO_CONFIG_DIR": str(workdir / "yolo-config")})
        configure_ultralytics()
        if args.imgsz is None:
            from ultralytics import YOLO

            size = YOLO(args.model).overrides.get("imgsz", 640)
            args.imgsz = int(max(size) if isinstance(size, list | tuple) else size)
        rgb, _ = draw_scene(np.random.default_rng(7), 640, 480)
        jpeg = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
        b64 = base64.b64encode(jpeg).decode()
        inputs = {
            "jpeg": jpeg,
            "vertex_json": json.dumps({"instances": [{"image": b64}]}).encode(),
            "peer_json": json.dumps({"image": b64}).encode(),
        }
        configs = [
            Config("ours", "ours"),
            Config("ours, JSON", "ours", json_body=True),
            Config("ours, 1 process", "ours", env={"SERVE_PROCESSES": "1"}),
            Config(
                f"ours, 1 process, 1 x {cores}",
                "ours",
                env={"SERVE_PROCESSES": "1", "SERVE_WORKERS": "1"},
            ),
            Config(f"ours, {cores} x 1 fixed", "ours", env={"SERVE_TORCH_THREADS": "1"}),
            Config(f"LitServe 1 x {cores}", "litserve", workers=1, threads=cores),
            Config(f"LitServe {cores} x 1", "litserve", workers=cores, threads=1),
        ]
        if args.only:
            wanted = {label.strip() for label in args.only.split(";")}
            configs = [c for c in configs if c.label in wanted]
        local = Config("in process (best threads)", "local")
        for round_ in range(args.rounds):
            say(f"round {round_ + 1} of {args.rounds}")
            for config in configs:
                measure(config, args, workdir, inputs)
            in_process(args, jpeg, local)
    print(
        f"{Path(args.model).name} at {args.imgsz}, {cores} usable cores, best of {args.rounds} "
        f"rounds; p50 at c=1 (ms), req/s at c={args.concurrency}"
    )
    print(f"{'':28} {'p50 c=1':>9} {'req/s c=' + str(args.concurrency):>11}")
    for config in [*configs, local]:
        rate = max(config.rate)
        suffix = " (sequential)" if config is local else ""
        print(f"{config.label:28} {min(config.p50):9.1f} {rate:11.1f}{suffix}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
