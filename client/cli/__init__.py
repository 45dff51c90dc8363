"""``python -m client COMMAND``: the command line over the client library and its tools.

One module per command (``client/cli/<command>.py``), each with ``add(subparsers, name,
summary)`` and the ``run(args) -> int`` it registers; the options they share live in
:mod:`client.cli.options`, below every command. :data:`COMMANDS` is the table this dispatcher
reads: only the command being run is imported (``--help`` lists all from the table), and no
command module imports this one.

Errors print one line on stderr and exit non-zero, without a traceback: 2 for a bad argument (or
an unwritable output file), 3 for an API error (4xx/5xx) or refused credentials, 4 for a
connection failure or timeout, 5 for a stream that failed after it started, 6 for a rollout
rolled back by a failed guard; 130 and 143 for a run stopped by SIGINT or SIGTERM (a rollout
restores its starting split first).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from client import errors
from client.cli.options import EXIT_API, EXIT_CONNECTION, EXIT_STREAM, EXIT_USAGE

#: command -> (its module, its one-line summary), in --help order
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("client.cli.models", "list the served models"),
    "detect": ("client.cli.detect", "detect objects in images"),
    "segment": ("client.cli.detect", "segment instances in images (a segmentation model)"),
    "classify": ("client.cli.detect", "classify images: the top classes (a classification model)"),
    "pose": ("client.cli.detect", "detect objects with their keypoints (a pose model)"),
    "obb": ("client.cli.detect", "detect oriented (rotated) boxes (an OBB model)"),
    "annotate": ("client.cli.annotate", "draw the detections on an image"),
    "stream": ("client.cli.stream", "run a video (or image frames) through /stream, with progress"),
    "video": (
        "client.cli.video",
        "a whole video, a camera or a live URL, in windows over the endpoint's replicas",
    ),
    "batch": (
        "client.cli.batch",
        "every image of a folder, glob or bucket through the endpoint, a JSON line each",
    ),
    "ab": ("client.cli.ab", "compare deployed models (targeted) or check the traffic split"),
    "bench": ("client.cli.bench", "measure throughput and latency over a concurrency sweep"),
    "deploy": (
        "client.cli.deploy",
        "upload, create an endpoint, deploy, split traffic, undeploy (Vertex or emulator)",
    ),
    "rollout": (
        "client.cli.rollout",
        "move traffic from one deployed model to another in steps, guarded by A/B figures",
    ),
    "console": (
        "client.cli.console",
        "a web console on 127.0.0.1: the endpoint, a playground, compare, a rollout",
    ),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with ``command``'s own options (the others are listed by name only)."""
    parser = argparse.ArgumentParser(
        prog="python -m client",
        description="Call the vertex-yolo server through Vertex AI (Endpoint.invoke) or a URL.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        if name == command:
            importlib.import_module(module).add(sub, name, summary)
        else:
            sub.add_parser(name, help=summary, add_help=False)
    return parser


def _error(exc: BaseException, extra: str = "") -> None:
    """One line on stderr, then any notes the error carries (e.g. what a rollout restored)."""
    print(f"error: {exc}{extra}", file=sys.stderr)
    for note in getattr(exc, "__notes__", ()):
        print(f"  {note}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "runner", None):  # batch --runner: the rest is Beam's
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        return int(args.func(args))
    except errors.ParameterError as exc:
        _error(exc)
        return EXIT_USAGE
    except errors.APIError as exc:
        _error(exc, f" (request id {exc.request_id})" if exc.request_id else "")
        return EXIT_API
    except (errors.ConnectionError, errors.TimeoutError) as exc:
        _error(exc)
        return EXIT_CONNECTION
    except errors.StreamError as exc:
        _error(exc)
        return EXIT_STREAM
    except errors.VertexYoloError as exc:
        _error(exc)
        return EXIT_API
    except KeyboardInterrupt:
        return 130
