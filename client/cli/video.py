"""``python -m client video SOURCE``: a whole video, a camera or a live URL, in windows over the
endpoint's replicas (``Client.video``), with results as JSON lines and an annotated copy."""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from typing import Any

import msgspec

from client import names
from client.cli.options import (
    POSITIVE,
    STREAM_OPTIONS,
    connection_options,
    inference_options,
    make_client,
    number,
    params,
    print_json,
    writing,
)
from client.video.engine import VideoOptions, VideoStats


def add(sub: Any, name: str, summary: str) -> None:
    p = sub.add_parser(
        name,
        parents=[connection_options(), inference_options(stream=True)],
        help=summary,
        description="Decodes SOURCE here, scales each frame to the model's input size, sends "
        "runs of frames (windows, each under the 10 MB request limit) to /stream, several at "
        "once, and puts the results back in source order (boxes in source pixels, one track id "
        "per object over the whole video). A window that fails is sent again from its first "
        "missing frame. Live sources drop their oldest frames when the endpoint falls behind.",
    )
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="a video file (any size or length), a camera index (0), or a live URL (rtsp://, "
        "http(s):// MJPEG or HLS...)",
    )
    g = p.add_argument_group("windows")
    live = g.add_mutually_exclusive_group()
    live.add_argument(
        "--live",
        action="store_true",
        default=None,
        help="bounded latency: drop the oldest frames when behind (default for cameras and URLs)",
    )
    live.add_argument(
        "--no-live", dest="live", action="store_false", help="every frame, even from a live URL"
    )
    g.add_argument(
        "--concurrency",
        type=POSITIVE,
        help="windows in flight (default: two per replica seen answering, plus one; at most 16)",
    )
    g.add_argument("--window", type=POSITIVE, help="frames per window (default 64; live 4)")
    g.add_argument(
        "--overlap", type=number(int, 0), help="frames windows share when tracking (4; live 1)"
    )
    g.add_argument(
        "--buffer", type=POSITIVE, help="live: frames waiting at most before dropping (2 windows)"
    )
    o = p.add_argument_group("output")
    o.add_argument("--out", metavar="FILE.jsonl", help="one JSON line per processed frame")
    o.add_argument(
        "--save", metavar="FILE.mp4", help="the frames with their detections drawn (.mp4, .avi)"
    )
    o.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from client.video.source import cv2_module

    cv2_module()  # the extra's error before any call
    options = VideoOptions(
        live=args.live,
        concurrency=args.concurrency,
        window=args.window,
        overlap=args.overlap,
        buffer=args.buffer,
        keep_frames=bool(args.save),
    )
    encode = msgspec.json.Encoder().encode
    done = [0]  # frames written (the bar does not count when disabled)
    args.on_interrupt = lambda: interrupted(args, done[0])
    with ExitStack() as stack:
        client = stack.enter_context(make_client(args))
        video = stack.enter_context(
            client.video(
                args.source,
                deployed_model_id=args.deployed_model_id,
                options=options,
                **params(args, STREAM_OPTIONS),
            )
        )
        stats = video.stats
        saver = None
        if args.save:  # checked before --out is truncated
            from client.video.draw import AnnotatedVideo

            stride = args.vid_stride or 1  # the drawn video plays at the source's pace
            saver = AnnotatedVideo(args.save, stats.fps_source and stats.fps_source / stride)
            stack.callback(saver.close)
        out = None
        if args.out:
            with writing(args.out):
                out = stack.enter_context(open(args.out, "wb"))  # noqa: SIM115
        bar = stack.enter_context(
            tqdm(
                total=stats.frames_expected,
                unit="frame",
                disable=args.quiet,
                file=sys.stderr,
                desc=stats.source,
            )
        )
        for frame in video:
            if out is not None:
                with writing(args.out):
                    out.write(encode(msgspec.structs.replace(frame, image=None)) + b"\n")
            if saver is not None and frame.image is not None:
                with writing(args.save):
                    saver.layout = stats.keypoints  # known once the run found its model
                    saver.write(frame.image, frame.detections)
            done[0] += 1
            bar.update(1)
            bar.set_postfix_str(progress(stats), refresh=False)
        bar.close()
        if args.json:
            print_json(video.stats)
        else:
            print(summary(video.stats, getattr(args, "deployed_names", None)))
    return 0


def interrupted(args: argparse.Namespace, frames: int) -> str:
    """After Ctrl-C: what was written (the files are closed whole), and that a run starts over."""
    written = [f"{frames} frames processed"]
    if args.out:
        written.append(f"{frames} lines in {args.out}")
    if args.save:
        written.append(f"{args.save} holds them (closed, playable)")
    return "; ".join(written) + "; a new run starts from the first frame and rewrites them"


def progress(stats: VideoStats) -> str:
    """``12.3 fps, 3 windows in flight, 2 replicas, 1 retry, 0 drops``."""
    return (
        f"{stats.fps:.1f} fps, {stats.in_flight} in flight, {len(stats.replicas)} replicas, "
        f"{stats.retries} retries, {stats.drops} drops"
    )


def summary(stats: VideoStats, known: dict[str, str] | None = None) -> str:
    """The final line: frames, speed, windows, tracks, classes, retries, drops (and latency);
    ``known``: deployed model names, when read (``--deployed-model-id``)."""
    classes = ", ".join(f"{k}={v}" for k, v in sorted(stats.class_counts.items()))
    line = (
        f"{stats.frames} frames in {stats.elapsed_s:.1f} s ({stats.fps:.1f} fps) on deployed "
        f"model {names.label(stats.deployed_model_id, known)} ({stats.model}), "
        f"{len(stats.replicas)} replicas; "
        f"{stats.windows} windows, {stats.retries} retries, {stats.drops} drops; "
        f"{stats.tracks} tracks; {classes or 'no detections'}"
    )
    if stats.latency_p50_ms is not None:
        line += f"; latency p50 {stats.latency_p50_ms:.0f} ms, p95 {stats.latency_p95_ms:.0f} ms"
    return line
