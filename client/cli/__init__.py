"""``python -m client COMMAND``: the command line over the client library and its tools.

One module per command (``client/cli/<command>.py``), each with ``add(subparsers, name,
summary)`` and the ``run(args) -> int`` it registers; the options they share live in
:mod:`client.cli.options`, below every command. :data:`COMMANDS` is the table this dispatcher
reads: only the command being run is imported (``--help`` lists all from the table), and no
command module imports this one.

Errors print one line on stderr and exit non-zero, without a traceback (``--debug``, anywhere on
the line, prints it): 1 for an unexpected error (a bug), 2 for a bad argument (or an unwritable
output file), 3 for an API error (4xx/5xx) or missing or refused credentials, 4 for a connection
failure or timeout (an emulator that is not running included), 5 for a stream that failed after
it started, 6 for a rollout rolled back by a failed guard; 130 and 143 for a run stopped by SIGINT
or SIGTERM (a rollout restores its starting split first; ``bench``, ``ab``, ``batch``, ``stream``
and ``video`` write what they finished and say how to go on); 141 when the reader of stdout went
away (``... | head -1``), quietly, as a command killed by SIGPIPE.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from client import errors
from client.cli.options import (
    EXIT_API,
    EXIT_BROKEN_PIPE,
    EXIT_BUG,
    EXIT_CONNECTION,
    EXIT_INTERRUPTED,
    EXIT_STREAM,
    EXIT_USAGE,
)

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
        "upload, create an endpoint, deploy, split traffic, undeploy, delete (Vertex or emulator)",
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
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on an error, print its traceback too (accepted anywhere on the line)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        if name == command:
            importlib.import_module(module).add(sub, name, summary)
        else:
            sub.add_parser(name, help=summary, add_help=False)
    return parser


def deepest_parser(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.ArgumentParser:
    """The (sub)parser ``argv`` names: ``detect`` for ``detect ...``, ``deploy``'s ``status`` for
    ``deploy status ...``, so a usage error shows that command's usage, not the top level's."""
    for token in argv:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if subs and token in subs[0].choices:
            parser = subs[0].choices[token]
    return parser


def _error(exc: BaseException, extra: str = "") -> None:
    """One line on stderr, then any notes the error carries (e.g. what a rollout restored)."""
    print(f"error: {exc}{extra}", file=sys.stderr)
    for note in getattr(exc, "__notes__", ()):
        print(f"  {note}", file=sys.stderr)


def exit_code(exc: BaseException) -> int:
    """The documented exit code of an error (see the module docstring)."""
    if isinstance(exc, errors.ParameterError):
        return EXIT_USAGE
    if isinstance(exc, errors.ConnectionError | errors.TimeoutError):
        return EXIT_CONNECTION
    if isinstance(exc, errors.StreamError):
        return EXIT_STREAM
    if isinstance(exc, errors.VertexYoloError):
        return EXIT_API  # API errors, credentials
    return EXIT_BUG


def quiet_broken_pipe() -> int:
    """The reader of stdout went away (``| head``): end quietly. As the Python docs advise (the
    ``signal`` module's note on SIGPIPE), stdout is pointed at /dev/null so that the interpreter's
    last flush at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (an in-process caller's capture)
        pass
    return EXIT_BROKEN_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m client``: the exit code (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        code = _main(argv, debug)
        sys.stdout.flush()  # a reader gone shows here, not at the interpreter's exit
    except BrokenPipeError:
        return quiet_broken_pipe()
    return code


def _main(argv: list[str], debug: bool) -> int:
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    try:  # --help (0) and usage errors (2: the command's usage and one error line)
        args, extra = parser.parse_known_args(argv)
        if extra and not getattr(args, "runner", None):  # batch --runner: the rest is Beam's
            deepest_parser(parser, argv).error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    args.extra = extra
    args.argv = argv
    args.debug = debug
    try:
        return int(args.func(args))
    except KeyboardInterrupt:  # what was done and how to go on, when the command said
        if debug:
            traceback.print_exc()
        note = getattr(args, "on_interrupt", None)
        print(f"interrupted: {note()}" if note else "interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise
    except Exception as exc:
        if debug:
            traceback.print_exc()
        code = exit_code(exc)
        if code == EXIT_BUG:
            where = "" if debug else " (--debug prints the traceback)"
            print(f"error: unexpected {type(exc).__name__}: {exc}{where}", file=sys.stderr)
        elif isinstance(exc, errors.APIError) and exc.request_id:
            _error(exc, f" (request id {exc.request_id})")
        else:
            _error(exc)
        return code
