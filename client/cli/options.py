"""``python -m client``: the command line over :class:`~client.Client`.

Every subcommand takes the connection options (one of ``--url``, ``--endpoint`` with
``--project/--location`` and, for the emulator, ``--api-endpoint``/``--ca-cert``, or
``--emulator-info FILE``) and ``--json``. Errors print one line on stderr and exit non-zero,
without a traceback: 2 for a bad argument (or an unwritable output file), 3 for an API error
(4xx/5xx) or refused credentials, 4 for a connection failure or timeout, 5 for a stream that
failed after it started.

Adding a subcommand (``deploy``, ``ab``, ``bench``...): write ``add(subparsers)`` that adds its
parser with ``parents=[connection_options()]`` when it talks to an endpoint, and sets
``func=run(args) -> int``; then list ``add`` in :data:`COMMANDS`. Its ``run`` builds on
:func:`make_client` (or :func:`vertex_target` for the SDK alone), :func:`json_text` for
``--json`` and :func:`writing` around output files (imported inside the function: this module
imports the subcommands).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from client import errors
from client._client import Annotation, Client
from client.ab import add as add_ab
from client.bench import add as add_bench
from client.deploy import add as add_deploy
from client.schema import StreamEnd, StreamFrame, StreamStart

EXIT_USAGE, EXIT_API, EXIT_CONNECTION, EXIT_STREAM = 2, 3, 4, 5


class EmulatorInfo(msgspec.Struct):
    """The fields of the emulator's info file this CLI reads (others are ignored)."""

    project: str
    location: str
    endpoint_id: str
    control_plane_url: str
    ca_cert: str | None = None


class VertexTarget(NamedTuple):
    """Where Vertex calls go; the names are the connection options' (``args.<name>``)."""

    project: str | None
    location: str | None
    endpoint: str | None
    api_endpoint: str | None
    ca_cert: str | None


def is_emulator(api_endpoint: str | None) -> bool:
    """An ``http://`` control plane is the local emulator (Vertex's own are HTTPS hosts)."""
    return bool(api_endpoint and api_endpoint.startswith("http://"))


def loopback_without_proxy(api_endpoint: str | None) -> None:
    """An emulator's http:// control plane is on loopback: keep any HTTP(S)_PROXY off it."""
    if not is_emulator(api_endpoint):
        return
    hosts = [h for h in os.environ.get("NO_PROXY", "").split(",") if h.strip()]
    for host in ("127.0.0.1", "localhost"):
        if host not in hosts:
            hosts.append(host)
    os.environ["NO_PROXY"] = ",".join(hosts)


def vertex_target(args: argparse.Namespace) -> VertexTarget:
    """``--project``, ``--location``, ``--endpoint``, ``--api-endpoint`` and ``--ca-cert``, each
    one not given taken from the ``--emulator-info`` file when there is one."""
    given = VertexTarget(*(getattr(args, name, None) for name in VertexTarget._fields))
    if not args.emulator_info:
        return given
    try:
        info = msgspec.json.decode(Path(args.emulator_info).read_bytes(), type=EmulatorInfo)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise errors.ParameterError(f"cannot read {args.emulator_info}: {exc}") from None
    return VertexTarget(
        project=given.project or info.project,
        location=given.location or info.location,
        endpoint=given.endpoint or info.endpoint_id or None,
        api_endpoint=given.api_endpoint or info.control_plane_url,
        ca_cert=given.ca_cert or info.ca_cert,
    )


def connection_options() -> argparse.ArgumentParser:
    """The options every endpoint-facing subcommand shares (an argparse parent parser)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection (one of --url, --endpoint, --emulator-info)")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--url", help="call one server directly (no Vertex), e.g. http://host:8080")
    where.add_argument("--endpoint", help="Vertex endpoint id or resource name")
    where.add_argument(
        "--emulator-info", metavar="FILE", help="read project/location/endpoint from this file"
    )
    g.add_argument("--project", help="Vertex project (else the SDK's default)")
    g.add_argument("--location", help="Vertex region, e.g. us-central1")
    g.add_argument("--api-endpoint", help="control-plane URL (the emulator's http://host:port)")
    g.add_argument("--ca-cert", help="CA bundle for the data plane's TLS (the emulator's CA)")
    g.add_argument("--timeout", type=float, default=120.0, help="seconds per call (default 120)")
    g.add_argument("--retries", type=int, default=2, help="retries on 429/503/connection errors")
    g.add_argument(
        "--deployed-model-id", help="send to this deployed model instead of the traffic split"
    )
    g.add_argument("--json", action="store_true", help="print the full JSON result")
    return p


def inference_options(stream: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("inference parameters")
    g.add_argument("--model", help="model name on the server (default: the server's default)")
    g.add_argument("--conf", type=float, help="confidence threshold, 0..1")
    g.add_argument("--iou", type=float, help="NMS IoU threshold, 0..1")
    g.add_argument("--max-det", type=int, help="most detections per image")
    g.add_argument("--classes", help="comma-separated class names or ids to keep")
    g.add_argument("--imgsz", type=int, help="inference size (pixels)")
    if stream:
        g.add_argument("--track", choices=["none", "bytetrack", "botsort"])
        g.add_argument("--vid-stride", type=int, help="process every n-th frame")
        g.add_argument("--max-frames", type=int, help="stop after this many processed frames")
    return p


def _params(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    out = {n: getattr(args, n, None) for n in names}
    if out.get("classes"):
        out["classes"] = [c.strip() for c in out["classes"].split(",") if c.strip()]
    return out


def make_client(args: argparse.Namespace) -> Client:
    """The client the connection options describe."""
    options = {"timeout": args.timeout, "retries": args.retries}
    if args.url:
        return Client.from_url(args.url, verify=args.ca_cert, **options)
    project, location, endpoint, api_endpoint, ca_cert = vertex_target(args)
    if not endpoint:
        raise errors.ParameterError("say where to send: --url, --endpoint or --emulator-info")
    if ca_cert:  # the SDK's data plane (requests) reads the CA bundle from the environment
        os.environ["REQUESTS_CA_BUNDLE"] = ca_cert
    loopback_without_proxy(api_endpoint)
    credentials = None
    emulator = is_emulator(api_endpoint)
    if emulator:  # no Google credentials needed (another --api-endpoint keeps the real ones)
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()
    import google.auth.exceptions

    try:
        return Client.from_vertex(
            project=project,
            location=location,
            endpoint=endpoint,
            credentials=credentials,
            api_endpoint=api_endpoint,
            api_transport="rest" if emulator else None,
            **options,
        )
    except google.auth.exceptions.TransportError as exc:
        raise errors.ConnectionError(str(exc).splitlines()[0]) from None
    except google.auth.exceptions.GoogleAuthError as exc:  # no project, no or refused login
        raise errors.AuthenticationError(str(exc).splitlines()[0]) from None


def json_text(value: Any) -> str:
    """``value`` as indented JSON and a newline: what ``--json`` prints."""
    return msgspec.json.format(msgspec.json.encode(value).decode(), indent=2) + "\n"


def _print_json(value: Any) -> None:
    sys.stdout.write(json_text(value))


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Around writing an output file: an ``OSError`` becomes a ParameterError naming the file
    (exit 2)."""
    try:
        yield
    except OSError as exc:
        raise errors.ParameterError(f"cannot write {path}: {exc.strerror or exc}") from None


def _served_by(result: Any) -> str:
    return f"[{result.model} {result.version} on deployed model {result.deployed_model_id}]"


# -- subcommands ----------------------------------------------------------------------------


def run_models(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        result = client.models(deployed_model_id=args.deployed_model_id)
    if args.json:
        _print_json(result)
        return 0
    print(f"deployed model {result.deployed_model_id}; default model {result.default_model}")
    for m in result.models:
        mark = "*" if m.default else " "
        print(f"{mark} {m.name:24} {m.task:8} version {m.version} imgsz {m.imgsz} on {m.device}")
    return 0


def _run_inference(args: argparse.Namespace, route: str) -> int:
    names = ["model", "conf", "iou", "max_det", "classes", "imgsz"]
    params = _params(args, *names)
    if route == "segment":
        params["rle"] = args.rle or None
    images = args.images if len(args.images) > 1 else args.images[0]
    with make_client(args) as client:
        method = client.segment if route == "segment" else client.detect
        result = method(images, deployed_model_id=args.deployed_model_id, **params)
    if args.json:
        _print_json(result)
        return 0
    print(_served_by(result))
    for path, image in zip(args.images, result.results, strict=True):
        print(f"{path}: {image.width}x{image.height}, {len(image.detections)} detections")
        for d in image.detections:
            b = d.box
            print(
                f"  {d.class_name:12} {d.confidence:.2f}  "
                f"({b.x1:.0f}, {b.y1:.0f}) - ({b.x2:.0f}, {b.y2:.0f})"
            )
    return 0


def run_detect(args: argparse.Namespace) -> int:
    return _run_inference(args, "detect")


def run_segment(args: argparse.Namespace) -> int:
    return _run_inference(args, "segment")


def run_annotate(args: argparse.Namespace) -> int:
    fmt = args.format or ("png" if args.out.lower().endswith(".png") else "jpeg")
    params = _params(args, "model", "conf", "iou", "max_det", "classes", "imgsz")
    with make_client(args) as client:
        result = client.annotate(
            args.image, deployed_model_id=args.deployed_model_id, format=fmt, **params
        )
    assert isinstance(result, Annotation)
    with writing(args.out):
        result.save(args.out)
    if args.json:
        _print_json({k: v for k, v in msgspec.structs.asdict(result).items() if k != "image"})
        return 0
    print(
        f"wrote {args.out} ({result.media_type}, {len(result.image)} bytes): "
        f"{result.detection_count} detections [{result.model} {result.version} on deployed "
        f"model {result.deployed_model_id}]"
    )
    return 0


def run_stream(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    names = ["model", "conf", "iou", "max_det", "classes", "imgsz", "track", "vid_stride"]
    params = _params(args, *names, "max_frames")
    source = args.source[0] if len(args.source) == 1 else args.source
    with make_client(args) as client:
        stream = client.stream(source, deployed_model_id=args.deployed_model_id, **params)
        with (
            stream,
            tqdm(
                total=stream.start.frames,
                unit="frame",
                disable=args.json or args.quiet,
                file=sys.stderr,
            ) as bar,
        ):
            for event in stream:
                if args.json:
                    name = {StreamStart: "start", StreamFrame: "frame", StreamEnd: "end"}
                    sys.stdout.write(
                        msgspec.json.encode({"event": name[type(event)], "data": event}).decode()
                        + "\n"
                    )
                    continue
                if isinstance(event, StreamStart):
                    bar.write(
                        f"{' '.join(args.source)}: {event.width}x{event.height}, {event.fps or '?'} fps, "
                        f"{event.frames or '?'} frames, track={event.track} "
                        f"{_served_by(event)}"
                    )
                elif isinstance(event, StreamFrame):
                    bar.update(1)
                    if not args.quiet:
                        bar.write(_frame_summary(event))
                elif isinstance(event, StreamEnd):
                    bar.close()
                    counts = ", ".join(f"{k}={v}" for k, v in sorted(event.class_counts.items()))
                    print(
                        f"{event.frames} frames in {event.elapsed_ms / 1000:.1f} s "
                        f"({event.fps:.1f} fps); {counts or 'no detections'}; "
                        f"{event.tracks} tracks"
                    )
    return 0


def _frame_summary(frame: StreamFrame) -> str:
    counts: dict[str, int] = {}
    for d in frame.detections:
        counts[d.class_name] = counts.get(d.class_name, 0) + 1
    what = ", ".join(f"{n} {name}" for name, n in sorted(counts.items())) or "nothing"
    tracks = sorted({d.track_id for d in frame.detections if d.track_id is not None})
    ids = f" tracks {tracks}" if tracks else ""
    return f"frame {frame.index}: {what}{ids} ({frame.inference_ms:.1f} ms)"


# -- wiring ---------------------------------------------------------------------------------


def add_models(sub: Any) -> None:
    p = sub.add_parser("models", parents=[connection_options()], help="list the served models")
    p.set_defaults(func=run_models)


def add_detect(sub: Any) -> None:
    p = sub.add_parser(
        "detect",
        parents=[connection_options(), inference_options()],
        help="detect objects in images",
    )
    p.add_argument("images", nargs="+", help="image files (several go in one request)")
    p.set_defaults(func=run_detect)


def add_segment(sub: Any) -> None:
    p = sub.add_parser(
        "segment",
        parents=[connection_options(), inference_options()],
        help="segment instances in images (a segmentation model)",
    )
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--rle", action="store_true", help="add COCO RLE to each mask")
    p.set_defaults(func=run_segment)


def add_annotate(sub: Any) -> None:
    p = sub.add_parser(
        "annotate",
        parents=[connection_options(), inference_options()],
        help="draw the detections on an image",
    )
    p.add_argument("image", help="image file")
    p.add_argument("--out", "-o", required=True, help="where to write the annotated image")
    p.add_argument("--format", choices=["jpeg", "png"], help="default: by --out's suffix")
    p.set_defaults(func=run_annotate)


def add_stream(sub: Any) -> None:
    p = sub.add_parser(
        "stream",
        parents=[connection_options(), inference_options(stream=True)],
        help="run a video (or image frames) through /stream, with progress",
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
    p.set_defaults(func=run_stream)


#: Subcommand builders, in --help order. Later issues append deploy, ab, bench.
COMMANDS: list[Callable[[Any], None]] = [
    add_models,
    add_detect,
    add_segment,
    add_annotate,
    add_stream,
    add_ab,
    add_bench,
    add_deploy,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m client",
        description="Call the vertex-yolo server through Vertex AI (Endpoint.invoke) or a URL.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except errors.ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except errors.APIError as exc:
        rid = f" (request id {exc.request_id})" if exc.request_id else ""
        print(f"error: {exc}{rid}", file=sys.stderr)
        return EXIT_API
    except (errors.ConnectionError, errors.TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONNECTION
    except errors.StreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STREAM
    except errors.VertexYoloError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_API
    except KeyboardInterrupt:
        return 130
