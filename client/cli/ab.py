"""``python -m client ab targeted|split``: the A/B checks of :mod:`client.ab`, with a table on
stdout (``--json``: the JSON report), ``--report FILE.json``, ``--figure FILE.png`` and a progress
bar on stderr."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from client import errors
from client.ab import (
    ROUTES,
    Report,
    TargetedInterrupted,
    encode_report,
    image_files,
    plot,
    render_table,
    split_check,
    targeted,
    video_frames,
)
from client.ab.measures import needs
from client.cli.options import (
    EXIT_INTERRUPTED,
    POSITIVE,
    ROUTE_OPTIONS,
    connection_options,
    inference_options,
    make_client,
    number,
    params,
    writing,
)
from client.media import ImageInput


def _inputs(args: argparse.Namespace) -> list[ImageInput] | None:
    if args.images:
        return list(image_files(args.images))
    if args.video:
        return list(video_frames(args.video, every=args.every, max_frames=args.max_frames))
    return None


def _output(args: argparse.Namespace, report: Report) -> None:
    if args.report:
        with writing(args.report):
            Path(args.report).write_bytes(encode_report(report))
    if args.figure:
        plot(report, args.figure)
    sys.stdout.write(encode_report(report).decode() if args.json else render_table(report) + "\n")


def run(args: argparse.Namespace) -> int:
    if args.deployed_model_id:
        raise errors.ParameterError(
            "ab sends to several deployed models: use --deployed-models A,B (targeted)"
        )
    try:  # the extras, checked before any call is made
        for module in ("numpy", "scipy", *(("matplotlib",) if args.figure else ())):
            needs(module)
    except ImportError as exc:
        raise errors.ParameterError(str(exc)) from None
    inputs = _inputs(args)
    given = params(args, ROUTE_OPTIONS)
    if args.mode == "split":
        # A retried call is routed again: it would count a failing model's calls as the other's.
        args.retries = 0
    with make_client(args) as client:
        if args.mode == "targeted":
            if inputs is None:
                raise errors.ParameterError("targeted: give --images DIR or --video FILE")
            ids = (
                [i.strip() for i in args.deployed_models.split(",") if i.strip()]
                if args.deployed_models
                else None
            )
            try:
                report: Report = targeted(
                    client,
                    inputs,
                    deployed_model_ids=ids,
                    concurrency=args.concurrency,
                    route=args.route,
                    iou_threshold=args.iou_threshold,
                    progress=not args.quiet,
                    **given,
                )
            except TargetedInterrupted as stop:  # Ctrl-C: report what every model answered
                _output(args, stop.report)
                wrote = f"; {args.report} holds them" if args.report else ""
                print(
                    f"interrupted: {stop.report.inputs} of {stop.inputs} inputs compared{wrote}",
                    file=sys.stderr,
                )
                return EXIT_INTERRUPTED
        else:
            report = split_check(
                client,
                args.n,
                concurrency=args.concurrency,
                inputs=inputs,
                route=args.route,
                progress=not args.quiet,
                **given,
            )
    _output(args, report)
    return 0


def add(sub: Any, name: str, summary: str) -> None:
    """``python -m client ab targeted|split``."""

    def shared() -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(add_help=False)
        g = p.add_argument_group("inputs and outputs")
        where = g.add_mutually_exclusive_group()
        where.add_argument("--images", metavar="DIR", help="a folder of jpg/png/webp/bmp images")
        where.add_argument("--video", metavar="FILE", help="a video; its frames are the inputs")
        g.add_argument("--every", type=POSITIVE, default=1, help="with --video: every n-th frame")
        g.add_argument("--max-frames", type=POSITIVE, help="with --video: at most this many frames")
        g.add_argument("--route", choices=ROUTES, default="detect")
        g.add_argument("--report", metavar="FILE.json", help="write the JSON report here")
        g.add_argument("--figure", metavar="FILE.png", help="write the PNG figure here")
        g.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
        return p

    parents = [connection_options(), inference_options(any_route=True), shared()]
    ab = sub.add_parser(
        name,
        help=summary,
        description="A/B checks of an endpoint's deployed models: a table on stdout (--json: "
        "the JSON report), --report FILE.json, --figure FILE.png, progress on stderr.",
    )
    modes = ab.add_subparsers(dest="mode", required=True, metavar="MODE")
    t = modes.add_parser(
        "targeted",
        parents=parents,
        help="the same inputs to each deployed model; latency, detections, agreement",
        description="Sends every input to each deployed model (pinned) and compares: latency "
        "p50/p95/p99, errors, detections per image, per-class counts, confidences; boxes of "
        "each model against the first (same class, IoU >= threshold, one to one): precision, "
        "recall, F1, mean IoU.",
    )
    t.add_argument(
        "--deployed-models",
        metavar="ID,ID",
        help="deployed model ids or display names, the reference first (default: all, largest "
        "traffic share first); one may repeat",
    )
    t.add_argument("--concurrency", type=POSITIVE, default=4, help="calls in flight (default 4)")
    t.add_argument(
        "--iou-threshold",
        type=number(float, 0, 1, above=True),
        default=0.5,
        help="IoU a match needs (0.5)",
    )
    t.set_defaults(func=run)
    s = modes.add_parser(
        "split",
        parents=parents,
        help="N untargeted calls against the configured traffic split (chi-square)",
        description="Makes N untargeted calls (/models, or --route over --images/--video) and "
        "compares the share each deployed model answered with the endpoint's traffic split "
        "(Vertex or the emulator only). Prints a chi-square goodness-of-fit p-value.",
    )
    s.add_argument("-n", type=POSITIVE, default=400, help="number of calls (default 400)")
    s.add_argument("--concurrency", type=POSITIVE, default=8, help="calls in flight (default 8)")
    s.set_defaults(func=run)
