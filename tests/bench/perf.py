"""Benchmark P1-P5: the server (``python -m app``) against Ultralytics in process, one machine.

* P1 per-request overhead: ``/detect`` p50 for one 640x480 JPEG at concurrency 1 (raw body),
  minus the in-process p50 of decoding the same JPEG bytes and predicting. Target <= 2 ms.
* P2 throughput: ``/detect`` requests/s at concurrency 8 over in-process sequential
  decode+predict images/s. Target >= 1.0x.
* P3 ``/stream`` frames/s over in-process ``predict(source=video, stream=True)`` on the same
  video. Target >= 1.0x.
* P4 request bytes per image: the Vertex-style base64 JSON body over the raw JPEG body.
* P5 cold start: ``Popen`` to ``/health`` 200 against a fresh process that imports Ultralytics,
  loads the model and runs one warm-up predict (both from process start).

The baseline is the machine's limit, not a library default: in process, on the main thread, at
each torch thread count of 1, the powers of two and every core, the best of each figure (the
table also shows every count, Ultralytics' default ``min(8, cores - 1)`` marked). The server runs
with its defaults (its own thread policy, app/threads.py) unless ``--threads`` pins both sides.
The same model file, device and input size on both sides; the server and the in-process
baseline never run at the same time, but take turns for ``--rounds`` rounds (a slow minute of a
shared machine hits both sides), each side's best round kept. HTTP load goes
through :func:`client.bench.run_level` (the ``python -m client bench`` core) over plain httpx, so
this runs where only the server's dependencies are installed (a GPU box). A benchmark: it prints
figures and a pass/fail per target, and always exits 0 once measured. Run::

    .venv/bin/python tests/bench/perf.py [--short] [--model yolo11n.yaml] [--device cuda]
        [--server-env SERVE_WORKERS=2] [--json perf.json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import httpx
import msgspec
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "bench")]

from app.demo.shapes import draw_scene, moving_shape_frames, write_video  # noqa: E402
from app.offline import configure_ultralytics  # noqa: E402
from app.threads import usable_cores  # noqa: E402
from client.bench import Level, Reply, run_level  # noqa: E402
from client.schema import DetectParameters, StreamFrame  # noqa: E402
from client.sse import StreamDecoder, iter_lines  # noqa: E402
from client.stats import percentile  # noqa: E402
from rawhttp import Connections, request_bytes  # noqa: E402
from servers import start_server  # noqa: E402

DEMO_MODEL = ROOT / "app/demo/weights/shapes-detect.pt"
WIDTH, HEIGHT = 640, 480
CONCURRENCY = 8

# A fresh process: import, load, one warm-up predict (what the server does before /health is 200).
COLD_START = """
import sys
from app.offline import configure_ultralytics, disable_sync
configure_ultralytics()
import numpy as np
from ultralytics import YOLO
disable_sync()
model = YOLO(sys.argv[1])
imgsz = model.overrides.get("imgsz", 640)
imgsz = int(max(imgsz) if isinstance(imgsz, (list, tuple)) else imgsz)
model.predict(np.zeros((imgsz, imgsz, 3), np.uint8), device=sys.argv[2], verbose=False)
print("ready", flush=True)
"""


class Figure(msgspec.Struct, kw_only=True):
    """One P-figure: the served ``measured`` against the in-process ``baseline``."""

    what: str
    unit: str
    measured: float
    baseline: float
    figure: float  # measured - baseline, or measured / baseline
    compare: str  # "difference" or "ratio"
    target: str | None = None
    passed: bool | None = None


class Report(msgspec.Struct, kw_only=True):
    machine: str
    model: str
    device: str
    imgsz: int
    threads: str
    command: str
    figures: dict[str, Figure]
    details: dict[str, Any]


def say(text: str) -> None:
    """Progress, on stderr (the table goes to stdout)."""
    print(f"[perf] {text}", file=sys.stderr, flush=True)


# -- the server -------------------------------------------------------------------------------


def cold_start(model: str, device: str, env: dict[str, str]) -> float:
    """Seconds from spawn until a fresh process has loaded ``model`` and predicted once."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", COLD_START, model, device],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    elapsed = time.perf_counter() - started
    proc.wait()
    if line.strip() != "ready":
        raise RuntimeError(f"the cold-start process failed (exit {proc.returncode})")
    return elapsed


async def detect_load(url: str, query: str, body: bytes, concurrency: int, args: Any) -> Level:
    """``/detect`` with a raw JPEG body, ``concurrency`` in flight, via the bench core; the
    client: :mod:`rawhttp` (a minimal keep-alive loop, the default) or httpx."""
    if args.client == "raw":
        request = request_bytes(url, "/detect" + query, body, "image/jpeg")
        async with Connections(url, concurrency) as connections:
            return await run_level(
                connections.sender(request), concurrency, requests=args.requests,
                warmup=args.warmup * concurrency,
            )  # fmt: skip
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        headers = {"Content-Type": "image/jpeg", "Accept": "application/json"}

        async def send() -> Reply:
            r = await http.post("/detect" + query, content=body, headers=headers)
            error = None if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:300]}"
            return Reply(r.status_code, {k.lower(): v for k, v in r.headers.items()}, error)

        return await run_level(
            send, concurrency, requests=args.requests, warmup=args.warmup * concurrency
        )


def stream_fps(url: str, query: str, video: bytes, frames: int) -> float:
    """Frames per second of one ``/stream`` of the video, SSE decoded as the client does."""
    started = time.perf_counter()
    n = 0
    with (
        httpx.Client(base_url=url, timeout=600) as http,
        http.stream(
            "POST", "/stream" + query, content=video, headers={"Content-Type": "video/mp4"}
        ) as response,
    ):
        response.raise_for_status()
        decoder = StreamDecoder(status=response.status_code)
        for line in iter_lines(response.iter_bytes()):
            n += isinstance(decoder.feed(line), StreamFrame)
    if n != frames:
        raise RuntimeError(f"/stream sent {n} frames of {frames}")
    return n / (time.perf_counter() - started)


def serve_round(
    args: Any, workdir: Path, env: dict[str, str], inputs: dict[str, Any], check: bool
) -> dict[str, Any]:
    """One server, started and stopped: its cold start, P1 and P2 levels and one P3 stream
    (after a warm-up one); ``check``: also that raw and JSON bodies give the same results."""
    query = f"?imgsz={args.imgsz}" if args.imgsz else ""
    stream_query = query + ("&" if query else "?") + f"track={args.track}"
    server = start_server(workdir, env)
    try:  # seconds from spawn to the first /health 200, polled every 20 ms
        out: dict[str, Any] = {"cold_start_s": server.wait_healthy(timeout=600, poll=0.02)}
        say(f"server healthy after {out['cold_start_s']:.2f} s")
        jpeg = inputs["jpeg"]
        p1 = asyncio.run(detect_load(server.url, query, jpeg, 1, args))
        p2 = asyncio.run(detect_load(server.url, query, jpeg, args.concurrency, args))
        for level in (p1, p2):
            if level.errors:
                raise RuntimeError(f"/detect errors: {level.first_errors}")
        out["p1"], out["p2"] = p1, p2
        stream_fps(server.url, stream_query, inputs["video"], args.frames)  # warm-up
        out["stream_fps"] = stream_fps(server.url, stream_query, inputs["video"], args.frames)
        assert p1.latency_ms is not None
        say(
            f"served: /detect p50 {p1.latency_ms.p50:.2f} ms at c=1, {p2.throughput:.1f} req/s "
            f"at c={args.concurrency}; /stream {out['stream_fps']:.1f} frames/s"
        )
        if check:
            with httpx.Client(base_url=server.url, timeout=120) as http:  # P4: both bodies work
                raw = http.post(
                    "/detect" + query, content=jpeg, headers={"Content-Type": "image/jpeg"}
                )
                js = http.post(
                    "/detect" + query,
                    content=inputs["json_body"],
                    headers={"Content-Type": "application/json"},
                )
            if (
                raw.status_code != 200
                or js.status_code != 200
                or raw.json()["results"] != js.json()["results"]
            ):
                raise RuntimeError(
                    f"raw and JSON bodies disagree: {raw.text[:200]} / {js.text[:200]}"
                )
    finally:
        server.stop()
    return out


def best_served(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The best of the server's rounds: P1's lowest p50, P2's highest rate, P3's highest fps."""

    def p50(r: dict[str, Any]) -> float:
        return r["p1"].latency_ms.p50 if r["p1"].latency_ms else math.inf

    return {
        "p1": min(rounds, key=p50)["p1"],
        "p2": max(rounds, key=lambda r: r["p2"].throughput)["p2"],
        "stream_fps": [r["stream_fps"] for r in rounds],
        "cold_start_s": [r["cold_start_s"] for r in rounds],
    }


# -- in process -----------------------------------------------------------------------------


def thread_counts(args: Any) -> list[int]:
    """The torch thread counts the in-process baseline tries: 1, powers of two and every core
    (``--threads``: that one only)."""
    if args.threads:
        return [args.threads]
    cores = usable_cores()
    return sorted({1, cores, *(2**k for k in range(1, cores.bit_length()) if 2**k < cores)})


class InProcess:
    """The in-process baselines: the same model, device and imgsz, the JPEG bytes decoded and
    predicted in this process's main thread, at each torch thread count of
    :func:`thread_counts`; the best of each figure over counts and rounds is the machine's
    limit."""

    def __init__(self, args: Any, inputs: dict[str, Any]) -> None:
        from ultralytics import YOLO
        from ultralytics.utils import NUM_THREADS

        from app.offline import disable_sync

        disable_sync()
        p = DetectParameters()
        self.args, self.inputs = args, inputs
        self.model = YOLO(args.model)
        self.kwargs = dict(
            conf=p.conf, iou=p.iou, max_det=p.max_det, imgsz=args.imgsz, device=args.device,
            half=args.half, verbose=False,
        )  # fmt: skip
        self.jpeg = np.frombuffer(inputs["jpeg"], np.uint8)
        self.ultralytics_threads = NUM_THREADS
        self.by_threads: dict[int, dict[str, float]] = {}
        self.cold: list[float] = []
        self.one()  # sets the device up (Ultralytics resets the thread count there)

    def one(self) -> None:
        self.model.predict(cv2.imdecode(self.jpeg, cv2.IMREAD_COLOR), **self.kwargs)

    def stream(self) -> float:
        args, started = self.args, time.perf_counter()
        video = self.inputs["video_path"]
        if args.track == "none":
            run = self.model.predict(source=video, stream=True, **self.kwargs)
        else:
            tracker = f"{args.track}.yaml"
            run = self.model.track(source=video, stream=True, tracker=tracker, **self.kwargs)
        n = sum(1 for _ in run)
        if n != args.frames:
            raise RuntimeError(f"in-process streaming gave {n} frames of {args.frames}")
        return n / (time.perf_counter() - started)

    def round(self) -> None:
        """Every thread count once; each figure kept when it beats the earlier rounds'."""
        import torch

        args = self.args
        for threads in thread_counts(args):
            torch.set_num_threads(threads)
            for _ in range(args.warmup):
                self.one()
            latencies = []
            started = time.perf_counter()
            for _ in range(args.requests):
                t = time.perf_counter()
                self.one()
                latencies.append((time.perf_counter() - t) * 1000)
            rate = args.requests / (time.perf_counter() - started)
            self.stream()  # warm-up (opens the video reader once)
            fps = self.stream()
            p50 = percentile(sorted(latencies), 50)
            say(
                f"in process, {threads} torch threads: decode+predict p50 {p50:.2f} ms, "
                f"{rate:.1f} img/s, streaming {fps:.1f} fps"
            )
            seen = self.by_threads.setdefault(threads, {"p50_ms": math.inf, "rate": 0.0})
            seen["p50_ms"] = min(seen["p50_ms"], p50)
            seen["rate"] = max(seen["rate"], rate)
            seen["stream_fps"] = max(seen.get("stream_fps", 0.0), fps)
        self.cold.append(cold_start(args.model, args.device, self.inputs["env"]))

    def figures(self) -> dict[str, Any]:
        by_threads = self.by_threads
        best = {
            "p50_ms": min(f["p50_ms"] for f in by_threads.values()),
            "rate": max(f["rate"] for f in by_threads.values()),
            "stream_fps": max(f["stream_fps"] for f in by_threads.values()),
        }
        return {
            **best,
            "best_threads": {k: _best_key(by_threads, k) for k in best},
            "by_threads": by_threads,
            "ultralytics_default_threads": self.ultralytics_threads,
            "cold_start_s": self.cold,
        }


def _best_key(by_threads: dict[int, dict[str, float]], figure: str) -> int:
    pick = min if figure.endswith("_ms") else max
    return pick(by_threads, key=lambda t: by_threads[t][figure])


# -- putting it together --------------------------------------------------------------------


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def figures(
    served: dict[str, Any], local: dict[str, Any], inputs: dict[str, Any], concurrency: int
) -> dict:
    p1, p2 = served["p1"], served["p2"]
    assert p1.latency_ms is not None
    f: dict[str, Figure] = {}
    diff = p1.latency_ms.p50 - local["p50_ms"]
    f["P1"] = Figure(
        what="/detect p50 - decode+predict p50, 640x480 JPEG, c=1",
        unit="ms",
        measured=p1.latency_ms.p50,
        baseline=local["p50_ms"],
        figure=diff,
        compare="difference",
        target="<= 2 ms",
        passed=diff <= 2.0,
    )
    ratio = p2.throughput / local["rate"]
    f["P2"] = Figure(
        what=f"/detect req/s at c={concurrency} / sequential decode+predict img/s",
        unit="1/s",
        measured=p2.throughput,
        baseline=local["rate"],
        figure=ratio,
        compare="ratio",
        target=">= 1.0x",
        passed=ratio >= 1.0,
    )
    hi, lo = max(served["stream_fps"]), local["stream_fps"]
    f["P3"] = Figure(
        what="/stream fps / in-process stream fps",
        unit="frames/s",
        measured=hi,
        baseline=lo,
        figure=hi / lo,
        compare="ratio",
        target=">= 1.0x",
        passed=hi / lo >= 1.0,
    )
    raw, js = len(inputs["jpeg"]), len(inputs["json_body"])
    f["P4"] = Figure(
        what="request bytes per image: base64 JSON / raw JPEG",
        unit="bytes",
        measured=js,
        baseline=raw,
        figure=js / raw,
        compare="ratio",
    )
    up, load = statistics.median(served["cold_start_s"]), statistics.median(local["cold_start_s"])
    f["P5"] = Figure(
        what="cold start: spawn to /health 200 - spawn to loaded+warm",
        unit="s",
        measured=up,
        baseline=load,
        figure=up - load,
        compare="difference",
    )
    return f


def table(report: Report) -> str:
    lines = [
        f"{report.machine}; model {report.model}, device {report.device}, imgsz {report.imgsz}, "
        f"torch threads: {report.threads}",
        f"{'':3}{'what':58} {'served':>10} {'in-proc':>10} {'figure':>10} {'target':>9} {'result':>6}",
    ]
    for key, fig in report.figures.items():
        shown = (
            f"{fig.figure:+.2f} {fig.unit}" if fig.compare == "difference" else f"{fig.figure:.3f}x"
        )
        result = "-" if fig.passed is None else ("pass" if fig.passed else "FAIL")
        lines.append(
            f"{key:3}{fig.what + ' (' + fig.unit + ')':58} {fig.measured:>10.2f} "
            f"{fig.baseline:>10.2f} {shown:>10} {fig.target or '-':>9} {result:>6}"
        )
    local = report.details["in_process"]
    lines.append("in process by torch threads (decode+predict p50 ms, img/s, stream fps):")
    for threads, f in local["by_threads"].items():
        default = (
            "  (Ultralytics' default)"
            if int(threads) == local["ultralytics_default_threads"]
            else ""
        )
        lines.append(
            f"   {threads:>3}: {f['p50_ms']:8.2f} {f['rate']:8.1f} {f['stream_fps']:8.1f}{default}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="small counts (CI; under a minute)")
    parser.add_argument(
        "--model", default=str(DEMO_MODEL), help="weights or a config such as yolo11n.yaml"
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if present")
    parser.add_argument("--imgsz", type=int, help="inference size (default: the model's)")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads on both sides (default: the server's policy, and in process the "
        "best of 1, powers of two and every core)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=CONCURRENCY, help="P2's calls in flight (default 8)"
    )
    parser.add_argument(
        "--half",
        action="store_true",
        help="FP16 on both sides (SERVE_HALF=on; CUDA only); default: SERVE_HALF=off, FP32",
    )
    parser.add_argument("--requests", type=int, help="requests per /detect figure (default 200)")
    parser.add_argument("--frames", type=int, help="frames of the P3 video (default 300)")
    parser.add_argument(
        "--rounds",
        type=int,
        help="rounds, the server and in process by turns: P1-P3 best of, P5 median of (default 3)",
    )
    parser.add_argument("--warmup", type=int, default=5, help="warm-up requests per in-flight slot")
    parser.add_argument("--track", choices=["none", "bytetrack", "botsort"], default="none")
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="KEY=VALUE",
        help="an environment variable for the server (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--client", choices=["raw", "httpx"], default="raw",
        help="P1/P2's load client: a minimal keep-alive HTTP/1.1 loop (tests/bench/rawhttp.py: "
        "the server's cost, not the client's) or httpx (what an application would use)",
    )  # fmt: skip
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    args = parser.parse_args(argv)
    short = args.short
    args.requests = args.requests or (30 if short else 200)
    args.frames = args.frames or (60 if short else 300)
    args.rounds = args.rounds or (1 if short else 3)
    if Path(args.model).is_file():
        args.model = str(Path(args.model).resolve())

    with tempfile.TemporaryDirectory(prefix="perf-") as tmp:
        workdir = Path(tmp)
        env = {"YOLO_CONFIG_DIR": str(workdir / "yolo-config"), "PYTHONUNBUFFERED": "1"}
        os.environ.update(env)
        configure_ultralytics()
        import torch

        args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if args.half and args.device != "cuda":
            parser.error("--half is FP16 on a CUDA device; this run's device is cpu")
        if args.imgsz is None:
            from ultralytics import YOLO

            size = YOLO(args.model).overrides.get("imgsz", 640)
            args.imgsz = int(max(size) if isinstance(size, list | tuple) else size)

        rng = np.random.default_rng(7)
        rgb, _ = draw_scene(rng, WIDTH, HEIGHT)
        jpeg = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
        json_body = msgspec.json.encode({"instances": [{"image": base64.b64encode(jpeg).decode()}]})
        video_path = workdir / "moving.mp4"
        write_video(video_path, moving_shape_frames(args.frames, WIDTH, HEIGHT)[0], fps=30)
        inputs = {
            "jpeg": jpeg,
            "json_body": json_body,
            "video": video_path.read_bytes(),
            "video_path": str(video_path),
            "env": env,
        }
        server_env = {
            **env,
            "SERVE_MODELS": f"bench={args.model}",
            "SERVE_DEVICE": args.device,
            "SERVE_HALF": "on" if args.half else "off",
            **({"SERVE_TORCH_THREADS": str(args.threads)} if args.threads else {}),
            "SERVE_LOG_LEVEL": "warning",
        }
        for item in args.server_env:
            key, sep, value = item.partition("=")
            if not sep:
                parser.error(f"--server-env {item!r} must look like KEY=VALUE")
            server_env[key] = value
        # Warm the file cache (torch, ultralytics, the server's imports) before timing starts;
        # not in --short (CI), where speed is not judged and a whole interpreter start is not free.
        if not short:
            subprocess.run(
                [sys.executable, "-c", "import torch, ultralytics, litestar, uvicorn"],
                cwd=ROOT, check=True,
            )  # fmt: skip
        baseline = InProcess(args, inputs)
        rounds = []
        for round_ in range(args.rounds):  # the two sides by turns: a slow minute hits both
            say(f"round {round_ + 1} of {args.rounds}")
            rounds.append(serve_round(args, workdir, server_env, inputs, check=round_ == 0))
            baseline.round()
        served, local = best_served(rounds), baseline.figures()

    report = Report(
        machine=machine(),
        model=Path(args.model).name,
        device=args.device,
        imgsz=args.imgsz,
        threads=(
            f"server {args.threads if args.threads else 'default (app/threads.py)'}; in process "
            + ", ".join(f"{k}: {v}" for k, v in local["best_threads"].items())
        ),
        command=" ".join([Path(sys.executable).name, *sys.argv]),
        figures=figures(served, local, inputs, args.concurrency),
        details={"served": served, "in_process": local},
    )
    print(table(report))
    if any(not math.isfinite(f.figure) for f in report.figures.values()):
        print("warning: a figure is not finite", file=sys.stderr)
    if args.json:
        Path(args.json).write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
