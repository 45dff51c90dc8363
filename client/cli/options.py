"""What the commands share: connection and inference options, the client they describe, JSON
output, output files, and the exit codes.

Every command module imports from here, never from the dispatcher (``client.cli``) above it.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from client import errors, names, vertex
from client._client import Client

EXIT_BUG, EXIT_USAGE, EXIT_API, EXIT_CONNECTION, EXIT_STREAM = 1, 2, 3, 4, 5
EXIT_ROLLED_BACK = 6  # a rollout's guard failed: the starting split is back
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # SIGINT, SIGTERM (128 + the signal)
EXIT_BROKEN_PIPE = 141  # stdout's reader went away: 128 + SIGPIPE, as a killed command


def url(text: str) -> str:
    """``--url``: an ``http(s)://`` URL (a bare ``host:port`` is refused, naming the fix)."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} has no scheme: write http://{text}")
    if scheme.lower() not in ("http", "https") or not rest.strip("/"):
        raise argparse.ArgumentTypeError(f"{text!r} is not an http:// or https:// URL")
    return text


def number(
    kind: type, low: float | None = None, high: float | None = None, *, above: bool = False
) -> Callable[[str], Any]:
    """An argparse type: a ``kind`` (int or float) in ``[low, high]`` (``above``: ``low``
    excluded), refused in words: ``must be between 0 and 1, got 5``."""
    word = "an integer" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {word}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if (
            low is not None
            and high is not None
            and not ((value > low if above else value >= low) and value <= high)
        ):
            bounds = f"above {low} and at most {high}" if above else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        if low is not None and high is None and (value <= low if above else value < low):
            raise argparse.ArgumentTypeError(
                f"must be {'above' if above else 'at least'} {low}, got {text}"
            )
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


FRACTION = number(float, 0, 1)
POSITIVE = number(int, 1)
SECONDS = number(float, 0, above=True)

#: Where a Vertex option not given (nor read from --emulator-info) is taken from, first found
#: first: gcloud's own variables, then Google's client libraries' (the SDK also falls back to
#: the project of the default credentials).
ENV_DEFAULTS: dict[str, tuple[str, ...]] = {
    "project": ("CLOUDSDK_CORE_PROJECT", "GOOGLE_CLOUD_PROJECT"),
    "location": ("CLOUDSDK_COMPUTE_REGION", "GOOGLE_CLOUD_LOCATION"),
    "endpoint": ("VERTEX_YOLO_ENDPOINT",),
}


PROJECT_HELP = "Vertex project (default: $CLOUDSDK_CORE_PROJECT, $GOOGLE_CLOUD_PROJECT, the SDK's)"
LOCATION_HELP = (
    "Vertex region, e.g. us-central1 (default: $CLOUDSDK_COMPUTE_REGION, $GOOGLE_CLOUD_LOCATION)"
)


def connection_options() -> argparse.ArgumentParser:
    """The options every endpoint-facing command shares (an argparse parent parser)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection (one of --url, --endpoint, --emulator-info)")
    where = g.add_mutually_exclusive_group()
    where.add_argument(
        "--url", type=url, help="call one server directly (no Vertex), e.g. http://host:8080"
    )
    where.add_argument(
        "--endpoint", help="Vertex endpoint id or resource name (default: $VERTEX_YOLO_ENDPOINT)"
    )
    where.add_argument(
        "--emulator-info", metavar="FILE", help="read project/location/endpoint from this file"
    )
    g.add_argument("--project", help=PROJECT_HELP)
    g.add_argument("--location", help=LOCATION_HELP)
    g.add_argument("--api-endpoint", help="control-plane URL (the emulator's http://host:port)")
    g.add_argument("--ca-cert", help="CA bundle for the data plane's TLS (the emulator's CA)")
    g.add_argument(
        "--timeout",
        type=SECONDS,
        default=120.0,
        help="seconds per call, and at most to reach the endpoint (default 120)",
    )
    g.add_argument(
        "--retries",
        type=number(int, 0),
        default=2,
        help="retries on 429/503/connection errors (default 2)",
    )
    g.add_argument(
        "--deployed-model-id",
        metavar="ID_OR_NAME",
        help="send to this deployed model (its id or display name) instead of the traffic split",
    )
    g.add_argument("--json", action="store_true", help="print the full JSON result")
    return p


def inference_options(
    stream: bool = False, boxes: bool = True, any_route: bool = False
) -> argparse.ArgumentParser:
    """``/detect``'s parameters as options (``/classify``'s without ``boxes``; ``/stream``'s
    with ``stream``; every image route's with ``any_route``, for a command with ``--route``)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("inference parameters")
    g.add_argument("--model", help="model name on the server (default: the server's default)")
    if boxes:
        g.add_argument("--conf", type=FRACTION, help="confidence threshold, 0..1")
        g.add_argument("--iou", type=FRACTION, help="NMS IoU threshold, 0..1")
        g.add_argument("--max-det", type=POSITIVE, help="most detections per image")
        g.add_argument("--classes", help="comma-separated class names or ids to keep")
    g.add_argument("--imgsz", type=POSITIVE, help="inference size (pixels)")
    if stream or not boxes or any_route:
        g.add_argument("--top-k", type=POSITIVE, help="classes per image of a classification model")
    if stream:
        g.add_argument("--track", choices=["none", "bytetrack", "botsort"])
        g.add_argument("--vid-stride", type=POSITIVE, help="process every n-th frame")
        g.add_argument("--max-frames", type=POSITIVE, help="stop after this many processed frames")
    else:
        g.add_argument(
            "--max-side",
            type=number(int, 0),
            metavar="PIXELS",
            help="scale an image whose longer side is over this down before upload (results in "
            "the original's pixels); images over 10 MB or the server's pixel limit are scaled "
            "anyway; 0: never scale",
        )
    return p


DETECT_OPTIONS = ("model", "conf", "iou", "max_det", "classes", "imgsz")
CLASSIFY_OPTIONS = ("model", "imgsz", "top_k")
ROUTE_OPTIONS = (*DETECT_OPTIONS, "top_k")  # a command with --route: the route checks them
STREAM_OPTIONS = (*DETECT_OPTIONS, "top_k", "track", "vid_stride", "max_frames")


def params(args: argparse.Namespace, names: tuple[str, ...] = DETECT_OPTIONS) -> dict[str, Any]:
    """The inference parameters given as options (``None`` for those not given)."""
    out = {n: getattr(args, n, None) for n in names}
    classes = getattr(args, "classes", None)
    if classes:
        out["classes"] = [c.strip() for c in classes.split(",") if c.strip()]
    return out


def vertex_target(args: argparse.Namespace) -> vertex.VertexTarget:
    """The Vertex connection options, each one not given taken from ``--emulator-info``, else
    from the environment (:data:`ENV_DEFAULTS`; not the endpoint next to ``--url`` or
    ``--emulator-info``)."""
    given = vertex.VertexTarget(*(getattr(args, f, None) for f in vertex.VertexTarget._fields))
    target = given.with_emulator(getattr(args, "emulator_info", None))
    defaults = {}
    for field, variables in ENV_DEFAULTS.items():
        if getattr(target, field) or (
            field == "endpoint"
            and (getattr(args, "url", None) or getattr(args, "emulator_info", None))
        ):
            continue
        defaults[field] = next((os.environ[v] for v in variables if os.environ.get(v)), None)
    return target._replace(**{k: v for k, v in defaults.items() if v})


def no_endpoint(args: argparse.Namespace) -> str:
    """Why there is nowhere to send: nothing given, or an emulator without an endpoint yet."""
    info = getattr(args, "emulator_info", None)
    if info:
        return (
            f"the emulator in {info} has no endpoint yet: create one and deploy to it "
            f"(python -m client deploy create-endpoint --emulator-info {info} ...), or give "
            "--endpoint"
        )
    return "say where to send: --url, --endpoint or --emulator-info"


def make_client(args: argparse.Namespace) -> Client:
    """The client the connection options describe."""
    options: dict[str, Any] = {"timeout": args.timeout, "retries": args.retries}
    if getattr(args, "max_side", None) is not None:
        options["max_side"] = args.max_side
    if args.url:
        return Client.from_url(args.url, verify=args.ca_cert, **options)
    target = vertex_target(args)
    if not target.endpoint:
        raise errors.ParameterError(no_endpoint(args))
    # The SDK's data plane (requests) reads the CA bundle from the environment. This is the CLI,
    # the process's own program, not a library: its environment is its own to set.
    if target.ca_cert:
        os.environ["REQUESTS_CA_BUNDLE"] = target.ca_cert
    with vertex.sdk_errors(f"endpoint {target.endpoint}"):
        client = Client.from_vertex(
            project=target.project,
            location=target.location,
            endpoint=target.endpoint,
            api_endpoint=target.api_endpoint,
            **options,
        )
        try:  # the control plane within --timeout and --retries, not the SDK's 120 s
            vertex.fetch_endpoint(
                client.transport.endpoint, timeout=args.timeout, retries=args.retries
            )
        except BaseException:
            client.close()
            raise
    if getattr(args, "deployed_model_id", None):  # an id or a display name: the id
        try:
            with vertex.sdk_errors(f"endpoint {target.endpoint}"):
                known = names.client_names(client)
            args.deployed_model_id = names.resolve(
                args.deployed_model_id, known, "--deployed-model-id",
                errors.DeployedModelNotFoundError,
            )  # fmt: skip
        except BaseException:
            client.close()
            raise
        args.deployed_names = known  # read anyway: `served_by` shows name (id)
    return client


def json_text(value: Any) -> str:
    """``value`` as indented JSON and a newline: what ``--json`` prints."""
    return msgspec.json.format(msgspec.json.encode(value).decode(), indent=2) + "\n"


def print_json(value: Any) -> None:
    sys.stdout.write(json_text(value))


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Around writing an output file: an ``OSError`` becomes a ParameterError naming the file
    (exit 2)."""
    try:
        yield
    except OSError as exc:
        raise errors.ParameterError(f"cannot write {path}: {exc.strerror or exc}") from None


def served_by(result: Any, args: argparse.Namespace | None = None) -> str:
    """``[model version on deployed model name (id)]``: who answered (its name when the command
    read the endpoint's names: ``--deployed-model-id`` given)."""
    who = names.label(result.deployed_model_id, getattr(args, "deployed_names", None))
    return f"[{result.model} {result.version} on deployed model {who}]"
