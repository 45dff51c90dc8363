"""Benchmark: image decoders, per call on one thread and at concurrency: Pillow, OpenCV (``cv2.imdecode``) and the
libjpeg-turbo bindings simplejpeg and PyTurboJPEG (where installed), on 640x480, 1920x1080 and
3840x2160 JPEGs (quality 90) and PNGs of drawn shape scenes, bytes to a BGR uint8 array.

"same" says whether a decoder's pixels are identical to what Ultralytics' ``predict(path)``
reads (``ultralytics.utils.patches.imread``: ``cv2.imdecode(..., cv2.IMREAD_COLOR)``); only an
identical decoder gives identical answers. Also Pillow's reduced JPEG decode (draft mode, for a
640 input), the opt-in ``SERVE_JPEG_DRAFT``, for reference: its pixels differ by design.

"at cN": images/s with N threads decoding side by side (``--threads``, default every usable
core: what the server's decode threads do under load; every decoder here releases the GIL).

Prints a table, asserts nothing. Run::

    .venv/bin/python tests/bench/bench_decoders.py [--repeat 15] [--threads 2]
    .venv/bin/pip install simplejpeg PyTurboJPEG  # optional: their rows
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

from app.demo.shapes import draw_scene  # noqa: E402

SIZES = ((640, 480), (1920, 1080), (3840, 2160))
Decoder = Callable[[bytes], np.ndarray]


def pillow(blob: bytes) -> np.ndarray:
    from PIL import ImageOps

    image = ImageOps.exif_transpose(Image.open(io.BytesIO(blob))).convert("RGB")
    return cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)


def pillow_draft(blob: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(blob))
    image.draft("RGB", (640, 640 * image.size[1] // image.size[0]))
    return cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)


def opencv(blob: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)


def decoders() -> dict[str, tuple[Decoder, bool]]:
    """name -> (decode, JPEG only)."""
    out: dict[str, tuple[Decoder, bool]] = {"Pillow": (pillow, False), "OpenCV": (opencv, False)}
    try:
        import simplejpeg

        out[f"simplejpeg {simplejpeg.__version__}"] = (
            lambda b: simplejpeg.decode_jpeg(b, colorspace="BGR"),
            True,
        )
    except ImportError:
        print("simplejpeg: not installed")
    try:
        from turbojpeg import TurboJPEG

        turbo = TurboJPEG()
        out["PyTurboJPEG"] = (turbo.decode, True)
    except Exception as exc:  # ImportError, or no libturbojpeg on the machine
        print(f"PyTurboJPEG: unavailable ({type(exc).__name__}: {exc})")
    out["Pillow draft (640)"] = (pillow_draft, True)
    return out


def per_call_ms(fns: list[Decoder], blob: bytes, repeat: int) -> list[tuple[float, float]]:
    """(best, median) ms of each decoder, in rounds that take each in turn (so a burst of load
    from elsewhere hits them alike)."""
    for fn in fns:
        fn(blob)  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times, strict=True):
            started = time.perf_counter()
            fn(blob)
            out.append((time.perf_counter() - started) * 1000)
    return [(min(t), statistics.median(t)) for t in times]


def rate(fn: Decoder, blob: bytes, threads: int, calls: int) -> float:
    """Images per second with ``threads`` threads each decoding ``blob`` ``calls`` times."""
    from concurrent.futures import ThreadPoolExecutor

    def work() -> None:
        for _ in range(calls):
            fn(blob)

    with ThreadPoolExecutor(threads) as pool:
        started = time.perf_counter()
        for future in [pool.submit(work) for _ in range(threads)]:
            future.result()
        return threads * calls / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--threads", type=int, help="decoding side by side (default: the cores)")
    args = parser.parse_args()
    from app.threads import usable_cores

    threads = args.threads or usable_cores()
    cv2.setNumThreads(1)
    from ultralytics.utils.patches import imread

    table = decoders()
    print(
        f"ms per call, best and median of {args.repeat} interleaved rounds, one thread; "
        "same = pixels identical to imread"
    )
    print(
        f"{'image':<22}{'decoder':<22}{'best':>8}{'median':>8}{'img/s c' + str(threads):>11}  same"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for width, height in SIZES:
            rgb, _ = draw_scene(np.random.default_rng(width), width, height, max_shapes=4)
            for fmt, suffix, kw in (("JPEG", ".jpg", {"quality": 90}), ("PNG", ".png", {})):
                buf = io.BytesIO()
                Image.fromarray(rgb).save(buf, format=fmt, **kw)
                blob = buf.getvalue()
                path = Path(tmp) / f"{width}{suffix}"
                path.write_bytes(blob)
                expected = imread(str(path))
                label = f"{width}x{height} {fmt} {len(blob) / 1e6:.1f}MB"
                chosen = {
                    n: fn for n, (fn, jpeg_only) in table.items() if fmt == "JPEG" or not jpeg_only
                }
                timings = per_call_ms(list(chosen.values()), blob, args.repeat)
                for (name, fn), (best, median) in zip(chosen.items(), timings, strict=True):
                    out = fn(blob)
                    same = out.shape == expected.shape and bool(np.array_equal(out, expected))
                    if not same and out.shape == expected.shape:
                        diff = np.abs(out.astype(int) - expected).max()
                        verdict = f"no (max diff {diff})"
                    else:
                        verdict = "yes" if same else f"no ({out.shape[1]}x{out.shape[0]})"
                    per_s = rate(fn, blob, threads, max(2, args.repeat // 2))
                    print(f"{label:<22}{name:<22}{best:8.2f}{median:8.2f}{per_s:11.1f}  {verdict}")


if __name__ == "__main__":
    main()
