"""Benchmark: JPEG draft-mode decoding (``SERVE_JPEG_DRAFT``, opt-in): its speed and accuracy cost.

1. Decode time of a 4000x3000 JPEG at full size and in draft mode for inputs of 640 and 160.
2. Accuracy: held-out shape scenes (default 1280x960, JPEG quality 90) through the server's own
   decode path (``app.images.to_bgr``) with draft off (exact, the default) and on, then the demo
   models in process, results scaled back (``app.results.restore_size``): box mAP50-95 against
   the drawn truth (Ultralytics' ``ap_per_class``, IoU thresholds 0.50..0.95), hit rate (right
   class, box IoU >= 0.5), mean box IoU of the hits, and for the segmenter mean mask IoU; plus
   how closely draft-on boxes match draft-off boxes.

Prints figures, asserts nothing. Run::

    .venv/bin/python tests/bench/bench_decode.py [--scenes 40] [--width 1280 --height 960]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import msgspec
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from app.demo.shapes import draw_scene  # noqa: E402
from app.images import open_image, to_bgr  # noqa: E402
from app.offline import configure_ultralytics  # noqa: E402
from app.results import image_result, restore_size  # noqa: E402
from helpers import box_iou, det_box, mask_iou, match, polygons_mask  # noqa: E402

DEMO = ROOT / "app/demo/weights"


def jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode(blob: bytes, draft_to: int | None):
    return to_bgr(blob, open_image(blob, "the image", 100_000_000), "the image", draft_to)


def decode_speed() -> None:
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (300, 400, 3), np.uint8)
    big = np.asarray(Image.fromarray(small).resize((4000, 3000), Image.Resampling.BICUBIC))
    blob = jpeg(big)
    print(f"decode of a 4000x3000 JPEG ({len(blob) / 1e6:.1f} MB), median of 7, to BGR:")
    for draft_to in (None, 640, 160):
        times = []
        for _ in range(7):
            started = time.perf_counter()
            out = decode(blob, draft_to)
            times.append((time.perf_counter() - started) * 1000)
        label = "full size" if draft_to is None else f"draft for imgsz {draft_to}"
        h, w = out.bgr.shape[:2]
        print(f"  {label:<22} {statistics.median(times):7.1f} ms  decoded {w}x{h}")


def predict(model, blob: bytes, draft_to: int | None, masks: bool) -> dict:
    image = decode(blob, draft_to)
    (result,) = model.predict(image.bgr, verbose=False)
    restore_size(result, image.width, image.height)
    return msgspec.to_builtins(image_result(result, with_masks=masks))


def box_map(truths: list[list], results: list[dict]) -> tuple[float, float]:
    """Box mAP50 and mAP50-95 of ``results`` against the drawn shapes (COCO-style thresholds,
    each prediction matched at most once per threshold, best IoU first)."""
    from ultralytics.utils.metrics import ap_per_class

    thresholds = np.linspace(0.5, 0.95, 10)
    tps, confs, classes, targets = [], [], [], []
    for truth, result in zip(truths, results, strict=True):
        targets += [shape.class_id for shape in truth]
        dets = sorted(result["detections"], key=lambda d: -d["confidence"])
        tp = np.zeros((len(dets), len(thresholds)), bool)
        for t, threshold in enumerate(thresholds):
            taken: set[int] = set()
            for i, d in enumerate(dets):
                best, best_j = threshold, -1
                for j, shape in enumerate(truth):
                    if j in taken or shape.class_id != d["class_id"]:
                        continue
                    iou = box_iou(det_box(d), shape.box)
                    if iou >= best:
                        best, best_j = iou, j
                if best_j >= 0:
                    taken.add(best_j)
                    tp[i, t] = True
        tps.append(tp)
        confs += [d["confidence"] for d in dets]
        classes += [d["class_id"] for d in dets]
    ap = ap_per_class(np.concatenate(tps), np.array(confs), np.array(classes), np.array(targets))[
        5
    ]  # (classes, 10 thresholds)
    return float(ap[:, 0].mean()), float(ap.mean())


def accuracy(args: argparse.Namespace) -> None:
    from ultralytics import YOLO

    rng = np.random.default_rng(20_261_207)  # held out: not a training or validation seed
    scenes = [draw_scene(rng, args.width, args.height) for _ in range(args.scenes)]
    blobs = [jpeg(rgb) for rgb, _ in scenes]
    shapes = sum(len(s) for _, s in scenes)
    print(
        f"\n{args.scenes} scenes of {args.width}x{args.height} (JPEG q90), {shapes} shapes; "
        "draft off vs on:"
    )
    for name, masks in (("shapes-detect", False), ("shapes-segment", True)):
        model = YOLO(str(DEMO / f"{name}.pt"))
        imgsz = int(model.overrides["imgsz"])
        model.predict(np.zeros((imgsz, imgsz, 3), np.uint8), verbose=False)  # warm-up
        runs = {}
        for draft_to in (None, imgsz):
            started = time.perf_counter()
            results = [predict(model, blob, draft_to, masks) for blob in blobs]
            elapsed = (time.perf_counter() - started) * 1000 / len(blobs)
            hits, ious, m_ious = 0, [], []
            for (rgb, truth), result in zip(scenes, results, strict=True):
                assert (result["width"], result["height"]) == (args.width, args.height)
                for shape in truth:
                    found, iou = match(shape, result["detections"])
                    if iou >= 0.5:
                        hits += 1
                        ious.append(iou)
                        if masks and found["mask"]:
                            drawn = polygons_mask(found["mask"]["polygons"], *rgb.shape[:2])
                            m_ious.append(mask_iou(drawn, shape.mask(*rgb.shape[:2])))
            runs[draft_to] = results
            label = "off" if draft_to is None else f"on ({imgsz})"
            extra = f", mask IoU {statistics.mean(m_ious):.3f}" if m_ious else ""
            map50, map50_95 = box_map([truth for _, truth in scenes], results)
            print(
                f"  {name:<15} draft {label:<9} box mAP50 {map50:.3f}, mAP50-95 {map50_95:.3f}, "
                f"hit rate {hits / shapes:.3f}, box IoU {statistics.mean(ious):.3f}{extra}, "
                f"{elapsed:.0f} ms/image (decode+predict)"
            )
        paired = []
        for off, on in zip(runs[None], runs[imgsz], strict=True):
            for d in off["detections"]:
                same = [box_iou(det_box(d), det_box(e)) for e in on["detections"]]
                same = [iou for iou, e in zip(same, on["detections"], strict=True)
                        if e["class_id"] == d["class_id"]]  # fmt: skip
                paired.append(max(same, default=0.0))
        print(
            f"  {name:<15} draft-on vs draft-off boxes: mean IoU {statistics.mean(paired):.3f}, "
            f"min {min(paired):.3f} over {len(paired)} detections"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=960)
    args = parser.parse_args()
    configure_ultralytics()
    decode_speed()
    accuracy(args)


if __name__ == "__main__":
    main()
