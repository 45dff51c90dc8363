"""``python -m client stream VIDEO|IMAGES``: ``/stream`` with a progress bar and a line per frame."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from client.cli.options import (
    STREAM_OPTIONS,
    connection_options,
    inference_options,
    make_client,
    params,
    served_by,
)
from client.schema import StreamEnd, StreamFrame, StreamStart

EVENT_NAMES = {StreamStart: "start", StreamFrame: "frame", StreamEnd: "end"}


def add(sub: Any, name: str, summary: str) -> None:
    p = sub.add_parser(
        name,
        parents=[connection_options(), inference_options(stream=True)],
        help=summary,
        description="Prints the stream's start line, one summary line per frame (classes, "
        "track ids, inference time) under a progress bar, then the end summary.",
    )
    p.add_argument(
        "source",
        nargs="+",
        metavar="VIDEO|IMAGES",
        help="a video file (mp4, webm, mkv, avi, mov), or several image files sent as frames",
    )
    p.add_argument(
        "--quiet", "-q", action="store_true", help="no progress bar and no per-frame lines"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    source = args.source[0] if len(args.source) == 1 else args.source
    with make_client(args) as client:
        stream = client.stream(
            source, deployed_model_id=args.deployed_model_id, **params(args, STREAM_OPTIONS)
        )
        with (
            stream,
            tqdm(
                total=stream.start.frames,
                unit="frame",
                disable=args.json or args.quiet,
                file=sys.stderr,
            ) as bar,
        ):
            seen = [0]  # frames (the bar does not count when disabled)
            args.on_interrupt = lambda: (
                f"{seen[0]} of {stream.start.frames or '?'} frames streamed; a stream does not "
                "resume: run it again (or `video SOURCE --out FILE.jsonl`, in windows)"
            )
            for event in stream:
                seen[0] += isinstance(event, StreamFrame)
                if args.json:
                    line = {"event": EVENT_NAMES[type(event)], "data": event}
                    sys.stdout.write(msgspec.json.encode(line).decode() + "\n")
                elif isinstance(event, StreamStart):
                    bar.write(
                        f"{' '.join(args.source)}: {event.width}x{event.height}, "
                        f"{event.fps or '?'} fps, {event.frames or '?'} frames, "
                        f"track={event.track} {served_by(event, args)}"
                    )
                elif isinstance(event, StreamFrame):
                    bar.update(1)
                    if not args.quiet:
                        bar.write(frame_summary(event))
                else:
                    bar.close()
                    counts = ", ".join(f"{k}={v}" for k, v in sorted(event.class_counts.items()))
                    print(
                        f"{event.frames} frames in {event.elapsed_ms / 1000:.1f} s "
                        f"({event.fps:.1f} fps); {counts or 'no detections'}; "
                        f"{event.tracks} tracks"
                    )
    return 0


def frame_summary(frame: StreamFrame) -> str:
    """``frame 3: 1 circle, 2 square tracks [1, 2] (12.5 ms)``; a classification's frame:
    ``frame 3: circle 0.97, square 0.02 (4.1 ms)``."""
    if frame.classes is not None:
        top = ", ".join(f"{c.class_name} {c.confidence:.2f}" for c in frame.classes)
        return f"frame {frame.index}: {top} ({frame.inference_ms:.1f} ms)"
    counts: dict[str, int] = {}
    for d in frame.detections:
        counts[d.class_name] = counts.get(d.class_name, 0) + 1
    what = ", ".join(f"{n} {name}" for name, n in sorted(counts.items())) or "nothing"
    tracks = sorted({d.track_id for d in frame.detections if d.track_id is not None})
    ids = f" tracks {tracks}" if tracks else ""
    return f"frame {frame.index}: {what}{ids} ({frame.inference_ms:.1f} ms)"
