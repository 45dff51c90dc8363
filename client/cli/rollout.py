"""``python -m client rollout``: :func:`client.rollout.rollout` from a shell. A line per step on
stderr as it starts and ends (``-q``: none), the timeline table and the verdict on stdout
(``--json``: the JSON report), ``--report FILE.json`` (rewritten as the run goes, verdict
"running", for ``client console --rollout-report``), ``--figure FILE.png``, ``--dry-run``.

SIGINT and SIGTERM set the run's stop event: the library restores the starting split (unless
``--no-restore``), then this exits 130 or 143. A failed guard exits :data:`EXIT_ROLLED_BACK`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from client import errors, vertex
from client.ab import ROUTES, image_files
from client.ab.measures import needs
from client.cli.options import (
    EXIT_ROLLED_BACK,
    ROUTE_OPTIONS,
    connection_options,
    inference_options,
    make_client,
    params,
    vertex_target,
    writing,
)
from client.deploy import Connection
from client.rollout import (
    Guards,
    RolloutInterrupted,
    RolloutReport,
    encode_report,
    parse_steps,
    plan,
    plan_lines,
    plot,
    render_table,
    rollout,
)


@contextlib.contextmanager
def stopping_on_signals(stop: threading.Event, received: list[int]) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (and are noted in ``received``) instead of ending the
    process, so the run can put the split back first. Main thread only (signal's rule)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _live(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _output(args: argparse.Namespace, report: RolloutReport) -> None:
    """The table (or JSON) first, so the verdict is out whatever happens to the files."""
    sys.stdout.write(encode_report(report).decode() if args.json else render_table(report) + "\n")
    sys.stdout.flush()
    if args.report:
        with writing(args.report):
            Path(args.report).write_bytes(encode_report(report))
    if args.figure:
        plot(report, args.figure)


def _write_report(path: str) -> Callable[[RolloutReport], None]:
    """Writes the report so far to ``path`` atomically (a reader never sees half of it)."""

    def write(report: RolloutReport) -> None:
        partial = Path(f"{path}.partial")
        with writing(path):
            partial.write_bytes(encode_report(report))
            os.replace(partial, path)

    return write


def run(args: argparse.Namespace) -> int:
    if args.deployed_model_id:
        raise errors.ParameterError(
            "rollout pins its probe calls itself: name the models with --from and --to"
        )
    steps = parse_steps(args.steps)
    for path in (args.report, args.figure):  # found out before the run, not after it
        if path and not Path(path).resolve().parent.is_dir():
            raise errors.ParameterError(f"{path}: its folder does not exist")
    try:  # the extras, checked before any call is made
        for module in (
            "numpy",
            "scipy",
            *(() if args.probe_images else ("PIL",)),
            *(("matplotlib",) if args.figure else ()),
        ):
            needs(module)
    except ImportError as exc:
        raise errors.ParameterError(str(exc)) from None
    guards = Guards(
        max_error_rate=args.max_error_rate,
        max_latency_ratio=args.max_latency_ratio,
        min_agreement=args.min_agreement,
    )
    target = vertex_target(args)
    connection = Connection(target.project, target.location, target.api_endpoint)
    if args.split is not None:
        if not args.dry_run:
            raise errors.ParameterError(
                "--split is for --dry-run (a rollout starts from the endpoint's own split)"
            )
        the_plan = plan(
            None, args.from_id, args.to_id, steps, split=args.split, endpoint=target.endpoint
        )
        print(connection.init_call())
        print("\n".join(plan_lines(the_plan)))
        return 0
    if not args.dry_run and not args.probe_images and not (args.url or target.emulator):
        raise errors.ParameterError(
            "off the emulator give --probe-images DIR (images like the endpoint's traffic): the "
            "default probes are synthetic shapes, which say nothing of a real model's agreement"
        )
    probes = list(image_files(args.probe_images)) if args.probe_images else None
    stop = threading.Event()
    received: list[int] = []  # the signals that stopped the run
    if args.dry_run:
        try:
            with make_client(args) as client, vertex.sdk_errors("the endpoint's control plane"):
                the_plan = plan(client, args.from_id, args.to_id, steps)
        except errors.AuthenticationError as exc:
            raise type(exc)(
                f"{exc}; --dry-run reads the endpoint's split and deployed models with Google "
                "credentials (gcloud auth application-default login), or give the split: "
                "--split A=80,B=20",
                **_api_fields(exc),
            ) from None
        print(connection.init_call())
        print("\n".join(plan_lines(the_plan)))
        return 0
    with make_client(args) as client:
        connection.init()
        with stopping_on_signals(stop, received):
            try:
                report = rollout(
                    client,
                    args.from_id,
                    args.to_id,
                    steps,
                    hold_s=args.hold,
                    guards=guards,
                    probes=probes,
                    concurrency=args.concurrency,
                    route=args.route,
                    iou_threshold=args.iou_threshold,
                    no_restore=args.no_restore,
                    stop=stop,
                    live=None if args.quiet else _live,
                    progress=_write_report(args.report) if args.report else None,
                    **params(args, ROUTE_OPTIONS),
                )
            except RolloutInterrupted as exc:
                _output(args, exc.report)
                return 128 + (received[0] if received else signal.SIGINT)
    _output(args, report)
    return EXIT_ROLLED_BACK if report.verdict == "rolled back" else 0


def _api_fields(exc: errors.VertexYoloError) -> dict[str, Any]:
    """An APIError's status, for one rebuilt with a longer message (none for others)."""
    status = getattr(exc, "status", None)
    return {"status": status} if isinstance(exc, errors.APIError) and status else {}


def _split(text: str) -> dict[str, int]:
    """``A=80,B=20`` (ids or display names) as a split."""
    split: dict[str, int] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        try:
            split[key.strip()] = int(value)
        except ValueError:
            split = {}
        if not sep or not key.strip() or not split:
            raise argparse.ArgumentTypeError(
                f"{text!r} must look like A=80,B=20 (deployed model ids or names = percents)"
            )
    return split


def add(sub: Any, name: str, summary: str) -> None:
    """``python -m client rollout``."""
    p = sub.add_parser(
        name,
        parents=[connection_options(), inference_options(any_route=True)],
        help=summary,
        description="Move traffic from deployed model A to B in steps (percents of the share A "
        "and B hold together; the others keep theirs), holding each step while probe calls "
        "pinned to A and B and untargeted ones measure; a failed guard rolls back to the "
        "starting split and exits 6. SIGINT/SIGTERM restore it too (exit 130/143). A re-run "
        "continues from the endpoint's current split.",
    )
    g = p.add_argument_group("rollout")
    g.add_argument(
        "--from",
        dest="from_id",
        required=True,
        metavar="DEPLOYED_A",
        help="the deployed model traffic moves from (id or display name)",
    )
    g.add_argument(
        "--to",
        dest="to_id",
        required=True,
        metavar="DEPLOYED_B",
        help="the deployed model traffic moves to (id or display name)",
    )
    g.add_argument(
        "--steps",
        required=True,
        metavar="P,P,...",
        help="B's share of the pool at each step, increasing, in 1..100 (e.g. 10,50,100)",
    )
    g.add_argument(
        "--hold",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long each step holds while measuring (default 60)",
    )
    g.add_argument(
        "--probe-images",
        metavar="DIR",
        help="the probe set: images like the endpoint's traffic (required off the emulator; on "
        "it the default is 6 synthetic demo scenes drawn here)",
    )
    g.add_argument("--route", choices=ROUTES, default="detect")
    g.add_argument("--concurrency", type=int, default=4, help="calls in flight (default 4)")
    g.add_argument(
        "--iou-threshold",
        type=float,
        default=0.5,
        help="IoU a box match needs, for agreement (0.5)",
    )
    g.add_argument(
        "--no-restore",
        action="store_true",
        help="on SIGINT/SIGTERM or an error, leave the split as it is",
    )
    g.add_argument(
        "--dry-run", action="store_true", help="print the plan and the SDK calls; change nothing"
    )
    g.add_argument(
        "--split",
        type=_split,
        metavar="A=80,B=20",
        help="with --dry-run: plan from this split (deployed model ids or names) instead of "
        "reading the endpoint's; no call is made, so no credentials are needed",
    )
    g.add_argument("--report", metavar="FILE.json", help="write the JSON report here")
    g.add_argument("--figure", metavar="FILE.png", help="write the PNG figure here")
    g.add_argument("--quiet", "-q", action="store_true", help="no live lines on stderr")
    guards = p.add_argument_group("guards (each optional; a step failing one rolls back)")
    guards.add_argument(
        "--max-error-rate",
        type=float,
        metavar="RATE",
        help="B's share of failed pinned calls in a step, 0..1",
    )
    guards.add_argument(
        "--max-latency-ratio",
        type=float,
        metavar="RATIO",
        help="B's p95 over A's p95 (pinned calls, same step)",
    )
    guards.add_argument(
        "--min-agreement",
        type=float,
        metavar="F1",
        help="F1 of B's boxes against A's on the probe images, 0..1",
    )
    p.set_defaults(func=run)
