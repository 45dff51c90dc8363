"""Measure a demo model on a held-out synthetic set: the figures its model card states.

The scenes come from :mod:`app.demo.shapes` with a seed the training never used, so the ground
truth is exact. Predictions go through the server's own conversion (:mod:`app.results`) and are
compared with the client's matcher (:mod:`client.matching`), the one A/B testing uses.

    python -m app.demo.evaluate app/demo/weights/shapes-pose.pt --task pose --images 200
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from app.demo.shapes import CLASSIFY_SCALE, SQUARE, Shape, draw_scene, rotated_box, square_corners
from client.matching import match, oks, similarity_for
from client.schema import Box, Detection, Keypoint, RotatedBox


def truth(shape: Shape, task: str) -> Detection:
    """A drawn shape as the detection a perfect model would answer."""
    x1, y1, x2, y2 = shape.box
    keypoints = rotated = None
    if task == "pose":
        keypoints = [
            Keypoint(x=float(x), y=float(y), confidence=1.0) for x, y in square_corners(shape)
        ]
    if task == "obb":
        corners = rotated_box(shape).tolist()
        rotated = RotatedBox(cx=0, cy=0, width=0, height=0, angle=0, corners=corners)
    return Detection(
        class_id=0 if task == "pose" else shape.class_id,
        class_name=shape.name,
        confidence=1.0,
        box=Box(x1=x1, y1=y1, x2=x2, y2=y2),
        keypoints=keypoints,
        rotated_box=rotated,
    )


def evaluate(task: str, weights: Path, images: int, seed: int) -> list[tuple[str, str]]:
    """The held-out figures of a classify, pose or obb model (none for detect and segment,
    whose card rows are Ultralytics' own validation)."""
    if task not in ("classify", "pose", "obb"):
        return []
    from ultralytics import YOLO

    from app.results import classifications, detections

    model = YOLO(str(weights))
    imgsz = int(model.overrides.get("imgsz", 160))
    rng = np.random.default_rng(seed)
    held_out = f"held-out ({images} images, seed {seed})"
    if task == "classify":
        right = 0
        for _ in range(images):
            rgb, shapes = draw_scene(rng, imgsz, imgsz, max_shapes=1, scale=CLASSIFY_SCALE)
            (result,) = model.predict(rgb[:, :, ::-1], verbose=False)
            right += classifications(result, 1)[0].class_name == shapes[0].name
        return [(f"{held_out} top-1", f"{right / images:.3f}")]
    found = expected = 0
    errors: list[float] = []
    similarity: list[float] = []
    predicted = 0
    for _ in range(images):
        rgb, shapes = draw_scene(rng, imgsz, imgsz)
        if task == "pose":
            shapes = [s for s in shapes if s.class_id == SQUARE]
        (result,) = model.predict(rgb[:, :, ::-1], verbose=False)
        answer = detections(result)
        reference = [truth(s, task) for s in shapes]
        predicted += len(answer)
        expected += len(reference)
        for r, c, score in match(reference, answer, similarity=similarity_for(task)):
            found += 1
            if task == "obb":
                similarity.append(score)
                continue
            ref, cand = reference[r].keypoints or [], answer[c].keypoints or []
            errors += [
                float(np.hypot(a.x - b.x, a.y - b.y)) for a, b in zip(ref, cand, strict=True)
            ]
            similarity.append(oks(reference[r], answer[c]) or 0.0)
    rows = [
        (f"{held_out} recall", f"{found / max(expected, 1):.3f}"),
        (f"{held_out} precision", f"{found / max(predicted, 1):.3f}"),
    ]
    if task == "obb":
        rows.append(
            (f"{held_out} mean rotated IoU (matched)", f"{statistics.fmean(similarity or [0]):.3f}")
        )
    else:
        rows.append(
            (f"{held_out} mean keypoint error (px)", f"{statistics.fmean(errors or [0]):.2f}")
        )
        rows.append(
            (f"{held_out} mean OKS (matched)", f"{statistics.fmean(similarity or [0]):.3f}")
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("--task", required=True, choices=("classify", "pose", "obb"))
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args(argv)
    from app.offline import configure_ultralytics

    configure_ultralytics()
    for label, value in evaluate(args.task, args.weights, args.images, args.seed):
        print(f"{label}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
