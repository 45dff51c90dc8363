"""``python -m client annotate IMAGE -o OUT``: the image with its detections drawn."""

from __future__ import annotations

import argparse
from typing import Any, Literal

import msgspec

from client.cli.options import (
    connection_options,
    inference_options,
    make_client,
    params,
    print_json,
    served_by,
    writing,
)


def add(sub: Any, name: str, summary: str) -> None:
    p = sub.add_parser(
        name,
        parents=[connection_options(), inference_options()],
        help=summary,
        description=summary,
    )
    p.add_argument("image", help="image file")
    p.add_argument("--out", "-o", required=True, help="where to write the annotated image")
    p.add_argument("--format", choices=["jpeg", "png"], help="default: by --out's suffix")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fmt: Literal["jpeg", "png"] = args.format or (
        "png" if args.out.lower().endswith(".png") else "jpeg"
    )
    with make_client(args) as client:
        result = client.annotate(
            args.image, deployed_model_id=args.deployed_model_id, format=fmt, **params(args)
        )
    with writing(args.out):
        result.save(args.out)
    if args.json:
        print_json({k: v for k, v in msgspec.structs.asdict(result).items() if k != "image"})
        return 0
    print(
        f"wrote {args.out} ({result.media_type}, {len(result.image)} bytes): "
        f"{result.detection_count} detections {served_by(result, args)}"
    )
    return 0
