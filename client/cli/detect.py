"""``python -m client detect|segment IMAGE...``: one request, one result per image."""

from __future__ import annotations

import argparse
from typing import Any

from client.cli.options import (
    connection_options,
    inference_options,
    make_client,
    params,
    print_json,
    served_by,
)


def add(sub: Any, name: str, summary: str) -> None:
    p = sub.add_parser(
        name,
        parents=[connection_options(), inference_options()],
        help=summary,
        description=summary,
    )
    p.add_argument("images", nargs="+", help="image files (several go in one request)")
    if name == "segment":
        p.add_argument("--rle", action="store_true", help="add COCO RLE to each mask")
    p.set_defaults(func=run, route=name)


def run(args: argparse.Namespace) -> int:
    given = params(args)
    images = args.images if len(args.images) > 1 else args.images[0]
    with make_client(args) as client:
        if args.route == "segment":
            if args.rle:
                given["rle"] = True
            result = client.segment(images, deployed_model_id=args.deployed_model_id, **given)
        else:
            result = client.detect(images, deployed_model_id=args.deployed_model_id, **given)
    if args.json:
        print_json(result)
        return 0
    print(served_by(result))
    for path, image in zip(args.images, result.results, strict=True):
        print(f"{path}: {image.width}x{image.height}, {len(image.detections)} detections")
        for d in image.detections:
            b = d.box
            print(
                f"  {d.class_name:12} {d.confidence:.2f}  "
                f"({b.x1:.0f}, {b.y1:.0f}) - ({b.x2:.0f}, {b.y2:.0f})"
            )
    return 0
