"""Test helpers: fresh shape scenes (a seed never used in training) and geometry."""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from app.demo.shapes import Shape, draw_scene

FRESH_SEED = 20_261_122  # training used seed 0


def scenes(n: int, seed: int = FRESH_SEED, sizes=((160, 160), (240, 200), (320, 320))):
    """``n`` (rgb image, shapes) pairs of varying size."""
    rng = np.random.default_rng(seed)
    return [draw_scene(rng, *sizes[i % len(sizes)]) for i in range(n)]


def encode(rgb: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **kw)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def det_box(d: dict) -> tuple[float, float, float, float]:
    b = d["box"]
    return b["x1"], b["y1"], b["x2"], b["y2"]


def match(shape: Shape, detections: list[dict]) -> tuple[dict | None, float]:
    """The same-class detection with the best box IoU for ``shape``."""
    best, best_iou = None, 0.0
    for d in detections:
        if d["class_name"] == shape.name:
            iou = box_iou(shape.box, det_box(d))
            if iou > best_iou:
                best, best_iou = d, iou
    return best, best_iou


def hit_rate(truth: list[list[Shape]], results: list[dict]) -> float:
    """Share of drawn shapes found with the right class and box IoU >= 0.5."""
    hits = total = 0
    for shapes, result in zip(truth, results, strict=True):
        for s in shapes:
            total += 1
            hits += match(s, result["detections"])[1] >= 0.5
    return hits / total


def polygons_mask(polygons: list[list[list[float]]], height: int, width: int) -> np.ndarray:
    out = np.zeros((height, width), np.uint8)
    pts = [np.round(np.array(p) * 16).astype(np.int32) for p in polygons]
    cv2.fillPoly(out, pts, 1, shift=4)
    return out


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def crossing_frames(
    n: int, width: int = 320, height: int = 240, class_id: int = 1, seed: int = FRESH_SEED
) -> tuple[list[np.ndarray], list[list[tuple[float, float]]]]:
    """``n`` RGB frames of two shapes of the same class crossing each other's path (one left to
    right above the middle, one right to left below it), and each frame's two centres (the
    first shape's first)."""
    from app.demo.shapes import draw_shape, make_shape, noisy_background, shape_colour

    rng = np.random.default_rng(seed)
    background = noisy_background(rng, height, width)
    colours = [shape_colour(rng, background) for _ in range(2)]
    size = min(width, height) * 0.3
    x0, x1 = size * 0.75, width - size * 0.75
    rows = (height * 0.3, height * 0.7)
    frames, centres = [], []
    for i in range(n):
        t = i / max(n - 1, 1)
        here = [(x0 + (x1 - x0) * t, rows[0]), (x1 - (x1 - x0) * t, rows[1])]
        frame = background.copy()
        for (cx, cy), colour in zip(here, colours, strict=True):
            draw_shape(frame, make_shape(class_id, cx, cy, size), colour)
        frames.append(frame)
        centres.append(here)
    return frames, centres


def upload(client, uri: str, source) -> None:
    """Put a local file (or every file under a folder) at ``gs://bucket/path`` on a storage
    client (the session's GCS API server)."""
    from pathlib import Path

    bucket_name, _, path = uri.removeprefix("gs://").partition("/")
    bucket = client.bucket(bucket_name)
    source = Path(source)
    if source.is_dir():
        for file in sorted(p for p in source.rglob("*") if p.is_file()):
            bucket.blob(f"{path}/{file.relative_to(source).as_posix()}").upload_from_filename(file)
    else:
        bucket.blob(path).upload_from_filename(source)


ROOT = Path(__file__).resolve().parents[1]


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli_process(*args: str) -> subprocess.Popen[str]:
    """``python -m client ARGS`` as an interactive shell starts it, its output in lines
    (unbuffered): with SIGINT at its default disposition. A suite started in the background by a
    non-interactive shell (``pytest ... &``, as a CI script may) runs with SIGINT and SIGQUIT
    ignored (POSIX shells do that to background jobs without job control), a child inherits
    that, and a Python started with SIGINT ignored never raises KeyboardInterrupt: a Ctrl-C
    test would see the command finish its work instead (seen here: 5 Ctrl-C tests failed so)."""
    return subprocess.Popen(
        [sys.executable, "-m", "client", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_default,  # noqa: PLW1509 (only signal.signal, before exec)
    )


def interrupt(
    job: subprocess.Popen[str], gates: Sequence[Any], before_exit: Callable[[], bool] = lambda: True
) -> tuple[str, str]:
    """SIGINT ``job`` (started by :func:`cli_process`); once ``before_exit`` holds (its output
    is written), open the gates (a call it left at a gate may end); its stdout (what is left of
    it) and stderr. The gates are opened and the job killed whatever happens."""
    from servers import PATIENCE_S, wait_until

    try:
        job.send_signal(signal.SIGINT)
        wait_until(before_exit, "the interrupted command's output")
        for gate in gates:
            gate.open()
        out, err = job.communicate(timeout=PATIENCE_S)
    finally:
        if job.poll() is None:
            job.kill()
        for gate in gates:
            gate.open()
    return out, err
