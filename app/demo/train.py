"""Train the bundled demo models from scratch on a seeded synthetic shapes data set (CPU).

The committed weights in ``app/demo/weights`` and their ``MODEL_CARD.md`` were made by::

    python -m app.demo.train --out app/demo/weights

A toy run (the test suite does this) proves the script still works without touching them::

    python -m app.demo.train --out /tmp/toy --train-images 16 --val-images 8 \
        --detect-epochs 1 --segment-epochs 1
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from app.offline import configure_ultralytics, disable_sync

DETECT_NAME = "shapes-detect"
SEGMENT_NAME = "shapes-segment"


def _train(
    cfg: str, data: Path, workdir: Path, name: str, epochs: int, args: argparse.Namespace, init=None
):
    from ultralytics import YOLO

    model = YOLO(cfg)
    if init is not None:
        model.load(str(init))  # reuse the detector's backbone: same data, faster convergence
    started = time.perf_counter()
    metrics = model.train(
        data=str(data),
        imgsz=args.imgsz,
        epochs=epochs,
        batch=args.batch,
        mosaic=0.0,
        cache="ram",
        workers=0,
        device="cpu",
        seed=args.seed,
        deterministic=True,
        project=str(workdir / "runs"),
        name=name,
        exist_ok=True,
        plots=False,
        amp=False,
        verbose=False,
    )
    wall = time.perf_counter() - started
    best = workdir / "runs" / name / "weights" / "best.pt"
    return best, metrics, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where the .pt files and card go")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--train-images", type=int, default=400)
    parser.add_argument("--val-images", type=int, default=80)
    parser.add_argument("--detect-epochs", type=int, default=60)
    parser.add_argument("--segment-epochs", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args(argv)

    configure_ultralytics()
    import ultralytics.utils.torch_utils as torch_utils

    torch_utils.NUM_THREADS = os.cpu_count() or 1  # Ultralytics leaves one core idle by default
    disable_sync()
    from app.demo.shapes import write_dataset

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shapes-train-") as tmp:
        work = Path(tmp)
        data = write_dataset(
            work / "data", args.train_images, args.val_images, args.seed, args.imgsz
        )
        det_best, det_metrics, det_wall = _train(
            "yolo11n.yaml", data, work, "detect", args.detect_epochs, args
        )
        seg_best, seg_metrics, seg_wall = _train(
            "yolo11n-seg.yaml", data, work, "segment", args.segment_epochs, args, init=det_best
        )
        shutil.copyfile(det_best, args.out / f"{DETECT_NAME}.pt")
        shutil.copyfile(seg_best, args.out / f"{SEGMENT_NAME}.pt")

    command = "python -m app.demo.train " + shlex.join(argv if argv is not None else sys.argv[1:])
    card = f"""# Demo model card: {DETECT_NAME}, {SEGMENT_NAME}

Two tiny YOLO11n models trained from scratch (no pretrained weights) on a synthetic data set
drawn by `app/demo/shapes.py`: coloured circles, squares and triangles on noisy backgrounds.
Classes: `0: circle`, `1: square`, `2: triangle`. They exist so that the server, the client and
the tests have real models to run offline; they know nothing about real photos.

| | {DETECT_NAME} | {SEGMENT_NAME} |
|---|---|---|
| architecture | `yolo11n.yaml` | `yolo11n-seg.yaml` (backbone initialised from {DETECT_NAME}) |
| task | detect | segment |
| image size | {args.imgsz} | {args.imgsz} |
| epochs | {args.detect_epochs} | {args.segment_epochs} |
| wall time (CPU, {os.cpu_count()} cores) | {det_wall:.0f} s | {seg_wall:.0f} s |
| val box mAP50 | {det_metrics.box.map50:.3f} | {seg_metrics.box.map50:.3f} |
| val box mAP50-95 | {det_metrics.box.map:.3f} | {seg_metrics.box.map:.3f} |
| val mask mAP50 | n/a | {seg_metrics.seg.map50:.3f} |
| val mask mAP50-95 | n/a | {seg_metrics.seg.map:.3f} |

Data: {args.train_images} training and {args.val_images} validation images of
{args.imgsz}x{args.imgsz} pixels, 1 to 3 shapes each, generated with seed {args.seed}
(validation images follow the training images in the same seeded stream).
Training: batch {args.batch}, mosaic off, `device="cpu"`, deterministic, Ultralytics defaults
otherwise. Command:

```
{command}
```
"""
    (args.out / "MODEL_CARD.md").write_text(card)
    print(card)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
