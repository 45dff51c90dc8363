"""Benchmark: CPU speed of PyTorch against its ONNX (onnxruntime) and OpenVINO exports.

Exports the demo detector (imgsz 160) and a randomly initialised YOLO11n (``yolo11n.yaml``,
imgsz 640) with Ultralytics, offline, into a temporary directory, then times in-process
``model.predict`` on one image at a time (p50 and p90 over ``--runs`` calls each, after
warm-up, the three formats' calls interleaved).
PyTorch runs with as many threads as there are cores (as the runtimes do by default).

Prints figures, asserts nothing. Run::

    .venv/bin/python tests/bench/bench_formats.py [--runs 50]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from app.demo.shapes import draw_scene  # noqa: E402
from app.offline import configure_ultralytics  # noqa: E402

FORMATS = ("pt", "onnx", "openvino")
CASES = (("shapes-detect", str(ROOT / "app/demo/weights/shapes-detect.pt"), 160),
         ("yolo11n (random)", "yolo11n.yaml", 640))  # fmt: skip


def time_predict(models: list, image: np.ndarray, imgsz: int, runs: int) -> list[list[float]]:
    """Milliseconds per call for each model, calls interleaved so that the load of a shared
    machine falls on every model alike."""
    times: list[list[float]] = [[] for _ in models]
    for i in range(runs + 3):  # 3 warm-up rounds
        for model, row in zip(models, times, strict=True):
            started = time.perf_counter()
            model.predict(image, imgsz=imgsz, verbose=False)
            if i >= 3:
                row.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-formats-"))
    os.environ.setdefault("YOLO_CONFIG_DIR", str(work / "yolo-config"))
    configure_ultralytics()
    import torch
    from ultralytics import YOLO

    os.chdir(work)  # a model built from a .yaml exports into the working directory
    rgb, _ = draw_scene(np.random.default_rng(3), 640, 480)
    image = np.ascontiguousarray(rgb[:, :, ::-1])
    print(f"one 640x480 image per call, {args.runs} calls, {os.cpu_count()} cores")
    for label, source, imgsz in CASES:
        if source.endswith(".pt"):  # exports land beside it: not in the repository
            source = str(shutil.copy(source, work))
        model = YOLO(source)
        model.predict(image, imgsz=imgsz, verbose=False)
        torch.set_num_threads(os.cpu_count() or 1)  # after the first predict, so it sticks
        models = [model]
        for fmt in FORMATS[1:]:
            exporter = YOLO(source)
            if source.endswith(".yaml"):
                exporter.model = model.model  # the same random weights as the PyTorch row
            path = exporter.export(format=fmt, imgsz=imgsz, device="cpu", verbose=False)
            models.append(YOLO(path))
        rows = []
        for fmt, times in zip(FORMATS, time_predict(models, image, imgsz, args.runs), strict=True):
            times.sort()
            rows.append((fmt, statistics.median(times), times[int(0.9 * (len(times) - 1))]))
        base = rows[0][1]
        for fmt, p50, p90 in rows:
            print(
                f"  {label:<17} imgsz {imgsz:<4} {fmt:<9} p50 {p50:6.1f} ms  p90 {p90:6.1f} ms"
                f"  ({base / p50:.2f}x PyTorch)"
            )


if __name__ == "__main__":
    main()
