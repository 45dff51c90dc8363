"""Benchmark: what a batch buys in process on the CPU, by batch size and torch thread count.

The ceiling any server policy works under: the same 640x480 JPEG decoded (``cv2.imdecode``) and
predicted by Ultralytics in batches of 1, 2, 4 and 8 images, at each torch thread count, on one
thread that is not the main one (as the server's inference threads; OpenMP teams per thread).
Rounds interleave every configuration (a slow minute of a shared machine hits them all); each
line is one round at one thread count, in images/s. ``--side-by-side N``: N processes measure
at once, each its own model (the layout of the server's processes at full load), their images/s
summed, each configuration started together and counted over the same window. A benchmark, not a test: it prints figures and
asserts nothing. Run::

    .venv/bin/python tests/bench/bench_batch_sizes.py [--model yolo11n.yaml] [--imgsz 640]
        [--seconds 4] [--rounds 3] [--sizes 1,2,4,8] [--threads 1,2] [--side-by-side 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # as the server (app/threads.py)

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

from app.demo.shapes import draw_scene  # noqa: E402
from app.offline import configure_ultralytics  # noqa: E402
from app.threads import hold_ultralytics_threads, usable_cores  # noqa: E402

DEMO_MODEL = ROOT / "app/demo/weights/shapes-detect.pt"
#: a run's header and its rows: (round and thread count, images/s by batch size)
Report = tuple[str, list[tuple[str, list[float]]]]


def measure(args: argparse.Namespace, jpeg: bytes, together: Any = None) -> Report:
    """Every configuration, round after round: the header and one row per round and thread
    count; ``together``: a barrier the processes side by side meet at before each one."""
    import torch
    from ultralytics import YOLO

    hold_ultralytics_threads()  # as the server: this thread's OpenMP team is set per count below
    model = YOLO(args.model)
    size = model.overrides.get("imgsz", 640)
    imgsz = args.imgsz or int(max(size) if isinstance(size, list | tuple) else size)

    def batch(size: int) -> None:
        images = [
            cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) for _ in range(size)
        ]
        model.predict(images, imgsz=imgsz, device="cpu", verbose=False)

    batch(1)  # the device set-up
    for threads in args.threads:
        torch.set_num_threads(threads)
        for size in args.sizes:
            batch(size)  # warm: each shape once
    header = f"{Path(args.model).name} at {imgsz}, {usable_cores()} usable cores; images/s"
    rows: list[tuple[str, list[float]]] = []
    for round_ in range(args.rounds):
        for threads in args.threads:
            torch.set_num_threads(threads)
            rates = []
            for size in args.sizes:
                if together is not None:
                    together.wait()
                done, started = 0, time.perf_counter()
                while time.perf_counter() - started < args.seconds:
                    batch(size)
                    if together is None or time.perf_counter() - started <= args.seconds:
                        done += size
                # side by side, only the batches done within the window all share (the one
                # that overruns it may run alone at the end): a slight underestimate
                window = time.perf_counter() - started if together is None else args.seconds
                rates.append(done / window)
            rows.append((f"{round_ + 1}, {threads}", rates))
            if together is None:
                show(rows[-1:], args.sizes, header if len(rows) == 1 else None)
    return header, rows


def show(rows: list[tuple[str, list[float]]], sizes: list[int], header: str | None) -> None:
    if header:
        print(header)
        print(f"{'round, threads':16}" + "".join(f"{'batch ' + str(s):>10}" for s in sizes))
    for label, rates in rows:
        print(f"{label:16}" + "".join(f"{r:10.1f}" for r in rates), flush=True)


def in_thread(args: argparse.Namespace, jpeg: bytes, together: Any = None) -> Report:
    """:func:`measure` on a thread that is not the main one, as the server's calls."""
    configure_ultralytics()
    with ThreadPoolExecutor(1) as worker:
        return worker.submit(measure, args, jpeg, together).result()  # an error re-raised here


def side_by_side(args: argparse.Namespace, jpeg: bytes) -> None:
    """``args.side_by_side`` processes measuring at once; their images/s summed per row."""
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter each: no OpenMP team yet
    n = args.side_by_side
    with spawn.Manager() as manager, spawn.Pool(n) as pool:
        together = manager.Barrier(n, timeout=600)  # one failed: the others give up
        reports = pool.starmap(in_thread, [(args, jpeg, together)] * n)
    header, first = reports[0]
    rows = []
    for i, (label, _) in enumerate(first):
        per_process = [rows_of[i][1] for _, rows_of in reports]
        rows.append((label, [sum(rates) for rates in zip(*per_process, strict=True)]))
    show(rows, args.sizes, f"{header}, {n} processes side by side, summed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEMO_MODEL), help="weights or e.g. yolo11n.yaml")
    parser.add_argument("--imgsz", type=int, help="default: the model's")
    parser.add_argument("--seconds", type=float, default=4.0, help="per configuration and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="1,2,4,8")
    parser.add_argument("--threads", help="torch thread counts (default: 1 and every core)")
    parser.add_argument(
        "--side-by-side", type=int, default=1, metavar="N", help="processes measuring at once"
    )
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if min(args.sizes) < 1:
        parser.error("--sizes: each batch size must be at least 1")
    cores = usable_cores()
    args.threads = [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, cores})
    if min(args.threads) < 1:
        parser.error("--threads: each count must be at least 1")
    if args.side_by_side < 1:
        parser.error("--side-by-side: at least 1")
    with tempfile.TemporaryDirectory(prefix="batch-sizes-") as tmp:
        os.environ["YOLO_CONFIG_DIR"] = str(Path(tmp) / "yolo-config")
        rgb, _ = draw_scene(np.random.default_rng(7), 640, 480)
        jpeg = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
        if args.side_by_side > 1:
            side_by_side(args, jpeg)
        else:
            in_thread(args, jpeg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
