"""``python -m client detect|segment|classify|pose|obb IMAGE...``: one request, one result per
image, printed in a form that fits the task (boxes, masks, top classes, keypoints, rotated
boxes)."""

from __future__ import annotations

import argparse
import math
from typing import Any

from client.cli.options import (
    CLASSIFY_OPTIONS,
    DETECT_OPTIONS,
    connection_options,
    inference_options,
    make_client,
    params,
    print_json,
    served_by,
)
from client.schema import ClassifyResult, Detection, ImageResult, KeypointLayout


def add(sub: Any, name: str, summary: str) -> None:
    p = sub.add_parser(
        name,
        parents=[connection_options(), inference_options(boxes=name != "classify")],
        help=summary,
        description=summary,
    )
    p.add_argument("images", nargs="+", help="image files (several go in one request)")
    if name == "segment":
        p.add_argument("--rle", action="store_true", help="add COCO RLE to each mask")
    p.set_defaults(func=run, route=name)


def run(args: argparse.Namespace) -> int:
    given = params(args, CLASSIFY_OPTIONS if args.route == "classify" else DETECT_OPTIONS)
    if getattr(args, "rle", False):
        given["rle"] = True
    images = args.images if len(args.images) > 1 else args.images[0]
    with make_client(args) as client:
        call = getattr(client, args.route)  # detect, segment, classify, pose, obb
        result = call(images, deployed_model_id=args.deployed_model_id, **given)
    if args.json:
        print_json(result)
        return 0
    print(served_by(result, args))
    layout = getattr(result, "keypoints", None)
    for path, image in zip(args.images, result.results, strict=True):
        for line in describe(path, image, layout):
            print(line)
    return 0


def describe(
    name: str, image: ImageResult | ClassifyResult, layout: KeypointLayout | None = None
) -> list[str]:
    """The text lines for one image's result: a heading, then a line per object (or the top
    classes of a classification on the heading)."""
    if isinstance(image, ClassifyResult):
        top = ", ".join(f"{c.class_name} {c.confidence:.2f}" for c in image.classes)
        return [f"{name}: {image.width}x{image.height}, {top}"]
    lines = [f"{name}: {image.width}x{image.height}, {len(image.detections)} detections"]
    lines += [f"  {detection_text(d, layout)}" for d in image.detections]
    return lines


def detection_text(d: Detection, layout: KeypointLayout | None = None) -> str:
    """One detection on one line: class, confidence, track id, then its box, rotated box
    (centre, size, angle in degrees) or keypoints (named when the model names them)."""
    head = f"{d.class_name:12} {d.confidence:.2f}"
    if d.track_id is not None:
        head += f"  #{d.track_id}"
    if d.rotated_box is not None:
        r = d.rotated_box
        return (
            f"{head}  centre ({r.cx:.0f}, {r.cy:.0f}) {r.width:.0f}x{r.height:.0f} "
            f"at {math.degrees(r.angle):.1f} deg"
        )
    b = d.box
    text = f"{head}  ({b.x1:.0f}, {b.y1:.0f}) - ({b.x2:.0f}, {b.y2:.0f})"
    if d.keypoints:
        names = layout.names if layout is not None and layout.names else None
        points = []
        for i, k in enumerate(d.keypoints):
            label = names[i] if names and i < len(names) else str(i)
            seen = f" {k.confidence:.2f}" if k.confidence is not None else ""
            points.append(f"{label} ({k.x:.0f}, {k.y:.0f}){seen}")
        text += "  keypoints: " + ", ".join(points)
    return text
