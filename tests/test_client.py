"""The client library: SSE parsing, every method against a real server, typed errors, retries.

No mocks: the server is the real ``python -m app`` (the ``server`` fixture); retries are proved
against a tiny real HTTP server of this module; the CRLF pitfall is reproduced with the real
``requests.Response.iter_lines`` the SDK uses. The SDK path (the emulator) is at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import io
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import msgspec
import numpy as np
import pytest
import requests
from PIL import Image

from app.config import DEMO_MODELS
from app.demo.shapes import moving_shape_frames, write_video
from client import (
    NO_RETRIES,
    Annotation,
    APIError,
    AsyncClient,
    AsyncHttpTransport,
    AsyncVertexTransport,
    AuthenticationError,
    BadRequestError,
    Client,
    DeployedModelNotFoundError,
    HttpTransport,
    MockTransport,
    NotFoundError,
    ParameterError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    Request,
    Response,
    RetryPolicy,
    StreamEnd,
    StreamError,
    StreamFrame,
    StreamStart,
    UnavailableError,
    UnsupportedMediaTypeError,
)
from client import errors as client_errors
from client._retry import parse_retry_after
from client.media import encode_image, sniff
from client.schema import AnnotateResponse, InferenceResponse, ModelList
from client.sse import LineSplitter, SSEDecoder, StreamDecoder, iter_sse
from client.transports import _sdk_lines
from conftest import PATIENCE_S
from helpers import encode, scenes

# --- SSE parsing on byte lines (as Endpoint.invoke(stream=True) yields them) ------------------

START = {
    "model": "m",
    "version": "v1",
    "deployed_model_id": "dm-1",
    "task": "detect",
    "source": "video",
    "fps": 10.0,
    "frames": 2,
    "width": 64,
    "height": 48,
    "track": "none",
}
END = {"frames": 2, "elapsed_ms": 5.0, "fps": 400.0, "class_counts": {}, "tracks": 0}


def frame(i: int) -> dict:
    return {"index": i, "timestamp_ms": i * 100.0, "inference_ms": 1.0, "detections": []}


def sse(event: str, data: dict, id: int | None = None, sep: str = "\n") -> str:
    head = f"id: {id}{sep}" if id is not None else ""
    return f"{head}event: {event}{sep}data: {json.dumps(data)}{sep}{sep}"


def lines_of(text: str) -> list[bytes]:
    return text.encode().split(b"\n")[:-1]


def test_sse_multiline_data_comments_ids_retry():
    lines = [b": ping", b"retry: 1500", b"id: 7", b"event: note", b"data: one", b"data:two"]
    lines += [b"data", b"", b"data: plain", b""]
    events = list(iter_sse(lines))
    assert [(e.event, e.data, e.id) for e in events] == [
        ("note", "one\ntwo\n", "7"),
        ("message", "plain", "7"),  # the last event id persists, the name does not
    ]
    assert events[0].retry == 1500


def test_sse_stray_blank_line_keeps_the_event_name():
    """The CRLF pitfall: ``event: frame\\r|\\n`` split by a read boundary gives an extra b''."""
    lines = [b"event: frame", b"", b"data: {}", b"", b"", b"data: next", b""]
    assert [(e.event, e.data) for e in iter_sse(lines)] == [("frame", "{}"), ("message", "next")]


def test_sse_crlf_pitfall_through_requests_iter_lines():
    """Real ``requests`` line splitting (512-byte reads) over a CRLF stream: no event lost."""
    body = sse("start", START, sep="\r\n") + "".join(
        sse("frame", frame(i), id=i, sep="\r\n") for i in range(2000)
    )
    response = requests.Response()
    response.raw = io.BytesIO(body.encode())
    lines = list(response.iter_lines())
    assert len(lines) > body.count("\r\n")  # the pitfall happened: stray blank lines
    decoder = StreamDecoder()
    events = [e for e in (decoder.feed(x) for x in lines) if e is not None]
    assert isinstance(events[0], StreamStart)
    assert [e.index for e in events[1:]] == list(range(2000))


def test_line_splitter_handles_every_ending_across_chunks():
    splitter = LineSplitter()
    chunks = [b"a\r", b"\nb\n", b"c\rd", b"e\r\n\r", b"\n", b"tail"]
    out = [line for chunk in chunks for line in splitter.feed(chunk)] + splitter.flush()
    assert out == [b"a", b"b", b"c", b"de", b"", b"tail"]


def test_sse_agrees_with_httpx_sse_on_a_clean_stream():
    """Cross-check with httpx-sse's decoder (a kept implementation of the same spec). It
    dispatches data-less events once an id was seen; the spec (and we) do not."""
    from httpx_sse._decoders import SSEDecoder as Reference

    text = sse("start", START) + ": ping\n" + sse("frame", frame(0), id=0) + "data: x\ndata: y\n\n"
    ref, ours = Reference(), SSEDecoder()
    expected = [(e.event, e.data, e.id) for e in map(ref.decode, text.split("\n")) if e and e.data]
    got = [(e.event, e.data, e.id) for e in map(ours.decode, text.split("\n")) if e]
    assert got == [(ev, d, i or None) for ev, d, i in expected]


def decode_all(lines: list[bytes]) -> list:
    decoder = StreamDecoder()
    events = [e for e in (decoder.feed(x) for x in lines) if e is not None]
    decoder.close()
    return events


def test_stream_decoder_typed_events():
    text = sse("start", START) + sse("frame", frame(0), 0) + sse("frame", frame(1), 1)
    events = decode_all(lines_of(text + sse("end", END)))
    assert [type(e) for e in events] == [StreamStart, StreamFrame, StreamFrame, StreamEnd]
    assert events[0].deployed_model_id == "dm-1"


def test_stream_decoder_error_event_raises_with_problem():
    problem = {
        "type": "urn:vertex-yolo:problem:invalid-video",
        "title": "Invalid video",
        "status": 400,
        "detail": "frame 3 cannot be decoded",
        "code": "invalid-video",
    }
    text = sse("start", START) + sse("frame", frame(0), 0) + sse("error", problem)
    with pytest.raises(StreamError) as info:
        decode_all(lines_of(text))
    assert info.value.problem.code == "invalid-video"
    assert info.value.last_event_id == "0"


def test_stream_decoder_error_before_start_is_the_typed_api_error():
    """Nothing streamed yet: an ``error`` event is the call's failure (503: retried)."""
    problem = json.loads(PROBLEM_503)
    with pytest.raises(UnavailableError, match="models loading") as info:
        decode_all(lines_of(sse("error", problem)))
    assert info.value.code == "not-ready" and info.value.status == 503


def test_stream_decoder_deployed_model_404_only_when_routed():
    """Through the SDK a stream's error body arrives as lines: a Google-style 404 naming the
    deployed model is that model missing only when the transport routed by it (Vertex)."""
    body = b'{"error": {"code": 404, "message": "Deployed model 999 not found", "status": "x"}}'
    with pytest.raises(DeployedModelNotFoundError):
        _feed_close(body, pinned="999")
    with pytest.raises(NotFoundError) as info:
        _feed_close(body, pinned=None)
    assert not isinstance(info.value, DeployedModelNotFoundError)
    other = b'{"error": {"code": 404, "message": "no such route", "status": "NOT_FOUND"}}'
    with pytest.raises(NotFoundError) as info:
        _feed_close(other, pinned="999")
    assert not isinstance(info.value, DeployedModelNotFoundError)


def _feed_close(body: bytes, pinned: str | None) -> None:
    decoder = StreamDecoder(pinned=pinned)
    for line in body.split(b"\n"):
        decoder.feed(line)
    decoder.close()


def test_stream_decoder_cut_stream_raises():
    with pytest.raises(StreamError, match="cut before its end event"):
        decode_all(lines_of(sse("start", START) + sse("frame", frame(0), 0)))
    with pytest.raises(StreamError, match="before any event"):
        decode_all([])


@pytest.mark.parametrize(
    ("body", "kind", "text"),
    [
        (
            b'{"type":"urn:vertex-yolo:problem:unknown-model","title":"Unknown model",'
            b'"status":404,"detail":"no model named x","code":"unknown-model"}',
            NotFoundError,
            "no model named x",
        ),
        (
            b'{\n  "error": {\n    "code": 503,\n    "message": "no replica",\n'
            b'    "status": "UNAVAILABLE"\n  }\n}',
            UnavailableError,
            "no replica",
        ),
        (b"<html><body>Bad Gateway</body></html>", client_errors.ServerError, "Bad Gateway"),
    ],
)
def test_stream_decoder_error_body_raises_typed(body, kind, text):
    """An error answer to a stream arrives through the SDK as lines of the body."""
    with pytest.raises(kind, match=text):
        decode_all(body.split(b"\n"))


def test_stream_decoder_malformed_event_raises():
    with pytest.raises(StreamError, match="malformed 'frame'"):
        decode_all(lines_of(sse("start", START) + sse("frame", {"index": "x"})))


# --- media ------------------------------------------------------------------------------------


def test_numpy_arrays_are_bgr_by_default():
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255  # red
    data, media_type = encode_image(rgb[:, :, ::-1].copy(), image_format="png")
    assert media_type == "image/png"
    assert np.asarray(Image.open(io.BytesIO(data)))[0, 0].tolist() == [255, 0, 0]
    data, _ = encode_image(rgb, image_format="png", channels="rgb")
    assert np.asarray(Image.open(io.BytesIO(data)))[0, 0].tolist() == [255, 0, 0]
    with pytest.raises(ParameterError, match="uint8"):
        encode_image(rgb.astype(np.float32))
    with pytest.raises(ParameterError, match="cannot send a dict"):
        encode_image({})


def test_sniff():
    png = encode(np.zeros((4, 4, 3), np.uint8))
    assert sniff(png) == "image/png"
    assert sniff(b"\x00\x00\x00\x18ftypisom") == "video/mp4"
    assert sniff(b"nothing") == "application/octet-stream"


def test_bad_inputs_fail_before_sending(tmp_path):
    """Refused with a clear error at construction or before any request (no server needed:
    nothing is sent)."""
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for bad in (np.zeros((0, 8, 3), np.uint8), np.zeros((8, 0), np.uint8), empty, [], b""):
        with pytest.raises(ParameterError, match="empty"):
            Client.from_url("http://127.0.0.1:1", retries=NO_RETRIES).detect(bad)
    for options in ({"timeout": 0}, {"timeout": -1}, {"image_format": "gif"}, {"channels": "x"}):
        with pytest.raises(ParameterError):
            Client.from_url("http://127.0.0.1:1", **options)
    with pytest.raises(TypeError, match="from_vertex"):
        Client("123")
    with pytest.raises(TypeError, match="from_vertex"):
        AsyncClient("123")
    with pytest.raises(TypeError, match="async transport"):
        AsyncClient(HttpTransport("http://127.0.0.1:1"))
    with pytest.raises(TypeError, match="verify"):
        AsyncClient(AsyncHttpTransport("http://127.0.0.1:1"), verify=False)
    offline = Client.from_url("http://127.0.0.1:1", retries=NO_RETRIES)
    with pytest.raises(ParameterError, match="unknown field `colour`"):
        offline.detect(b"x", colour="red")  # keyword parameters are checked, not forwarded
    with pytest.raises(ParameterError, match="track"):
        offline.stream(b"x", track="deepsort")


# --- Client.from_url against the real server ---------------------------------------------------


@pytest.fixture(scope="module")
def url_client(server) -> Iterator[Client]:
    with Client.from_url(server.url, image_format="png", retries=NO_RETRIES) as c:
        yield c


@pytest.fixture(scope="module")
def scene():
    ((rgb, shapes),) = scenes(1)
    return rgb, shapes


def boxes(result: InferenceResponse, i: int = 0) -> list:
    return [(d.class_name, round(d.box.x1), round(d.box.y1)) for d in result.results[i].detections]


def test_models(url_client):
    listing = url_client.models()
    assert isinstance(listing, ModelList)
    assert listing.deployed_model_id == "dm-test-1"
    assert {m.name for m in listing.models} == {name for name, _ in DEMO_MODELS}


def test_detect_every_input_kind_gives_the_same_result(url_client, scene, tmp_path):
    rgb, shapes = scene
    png = encode(rgb)
    path = tmp_path / "scene.png"
    path.write_bytes(png)
    reference = url_client.detect(png)
    assert reference.deployed_model_id == "dm-test-1" and reference.version
    assert sorted(d.class_name for d in reference.results[0].detections) == sorted(
        s.name for s in shapes
    )
    inputs = {
        "path": path,
        "str path": str(path),
        "PIL": Image.open(io.BytesIO(png)),
        "numpy BGR": rgb[:, :, ::-1].copy(),
    }
    for name, value in inputs.items():
        assert boxes(url_client.detect(value)) == boxes(reference), name
    rgb_client = Client.from_url(url_client.transport.base_url, image_format="png", channels="rgb")
    with rgb_client:
        assert boxes(rgb_client.detect(rgb)) == boxes(reference)


def test_detect_several_images_in_order(url_client):
    images = scenes(3)
    result = url_client.detect([rgb[:, :, ::-1].copy() for rgb, _ in images], conf=0.3)
    assert [(r.width, r.height) for r in result.results] == [(160, 160), (240, 200), (320, 320)]


def test_parameters_reach_the_server(url_client, scene):
    png = encode(scene[0])
    only = url_client.detect(png, classes="triangle", max_det=1, conf=0.05)
    assert [d.class_name for d in only.results[0].detections] == ["triangle"]


def test_segment_with_rle(url_client, scene):
    result = url_client.segment(encode(scene[0]), model="shapes-segment", rle=True)
    assert result.task == "segment" and result.model == "shapes-segment"
    mask = result.results[0].detections[0].mask
    assert mask.polygons and mask.rle.size == [160, 160]


def test_annotate_image_and_json(url_client, scene):
    png = encode(scene[0])
    drawn = url_client.annotate(png, format="png")
    assert isinstance(drawn, Annotation)
    assert drawn.media_type == "image/png" and drawn.detection_count == len(scene[1])
    assert drawn.deployed_model_id == "dm-test-1" and drawn.version and drawn.request_id
    assert Image.open(io.BytesIO(drawn.image)).size == (160, 160)
    both = url_client.annotate([png, png], json=True)
    assert isinstance(both, AnnotateResponse) and len(both.results) == 2
    with pytest.raises(ParameterError, match="json=True"):
        url_client.annotate([png, png])


def test_typed_errors(url_client, scene):
    png = encode(scene[0])
    with pytest.raises(BadRequestError) as bad:
        url_client.detect(png, classes=["hexagon"])
    assert bad.value.status == 400 and bad.value.code == "invalid-parameter"
    assert bad.value.problem.field == "classes" and bad.value.request_id
    with pytest.raises(BadRequestError, match="Invalid image"):
        url_client.detect(b"not an image")
    with pytest.raises(NotFoundError) as missing:
        url_client.detect(png, model="no-such-model")
    assert missing.value.code == "unknown-model" and missing.value.deployed_model_id == "dm-test-1"
    with pytest.raises(PayloadTooLargeError):  # the server fixture allows 8 images
        url_client.detect([png] * 9)
    gif = io.BytesIO()
    Image.fromarray(scene[0]).save(gif, format="GIF")
    with pytest.raises(UnsupportedMediaTypeError) as unsupported:
        url_client.detect(gif.getvalue())
    assert "image/png" in unsupported.value.problem.allowed


def test_parameters_are_checked_before_sending(url_client, scene):
    for bad in ({"conf": 1.5}, {"max_det": 0}, {"imgsz": 8}):
        with pytest.raises(ParameterError, match="invalid parameter"):
            url_client.detect(b"unused", **bad)
    with pytest.raises(ParameterError, match="track"):
        url_client.stream(b"unused", track="sort")  # type: ignore[arg-type]


def test_from_url_checks_the_pinned_deployed_model(url_client, scene):
    png = encode(scene[0])
    assert url_client.detect(png, deployed_model_id="dm-test-1").deployed_model_id == "dm-test-1"
    with pytest.raises(DeployedModelNotFoundError, match="from_url"):
        url_client.detect(png, deployed_model_id="dm-other")


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    frames, _ = moving_shape_frames(12)
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_video(path, frames)
    return path


def test_stream_video_with_tracking(url_client, video):
    with url_client.stream(video, track="bytetrack") as stream:
        assert stream.start.deployed_model_id == "dm-test-1" and stream.start.frames == 12
        events = list(stream)
    assert isinstance(events[0], StreamStart) and isinstance(events[-1], StreamEnd)
    frames = [e for e in events if isinstance(e, StreamFrame)]
    assert [f.index for f in frames] == list(range(12))
    assert {d.track_id for f in frames for d in f.detections} == {1}
    assert stream.end.frames == 12 and stream.end.tracks == 1


def test_stream_frames_and_parameters(url_client):
    frames, _ = moving_shape_frames(6)
    stream = url_client.stream([f[:, :, ::-1].copy() for f in frames], vid_stride=2)
    assert stream.start.source == "frames"
    assert [f.index for f in stream.frames()] == [0, 2, 4]


def test_stream_error_event_after_start_is_a_stream_error(url_client, scene):
    """The real server checks the frames' headers before ``start`` and decodes each frame as it
    goes: a PNG cut after its header fails at frame 2, as an ``error`` event."""
    png = encode(scene[0])
    stream = url_client.stream([png, png, png[: len(png) // 2]])
    with pytest.raises(StreamError) as info:
        list(stream.frames())
    assert info.value.problem.code == "invalid-image" and info.value.last_event_id == "1"


def test_stream_errors_before_the_first_event(url_client, video):
    with pytest.raises(BadRequestError, match="video"):
        url_client.stream(b"\x00" * 64)
    with pytest.raises(NotFoundError):
        url_client.stream(video, model="no-such-model")
    with pytest.raises(DeployedModelNotFoundError):
        url_client.stream(video, deployed_model_id="dm-other")


def test_async_client_concurrent_calls(server, scene):
    png = encode(scene[0])

    async def main() -> list[InferenceResponse]:
        async with AsyncClient.from_url(server.url) as client:
            results = await asyncio.gather(*(client.detect(png) for _ in range(16)))
            stream = await client.stream([png, png])
            kinds = [type(e) async for e in stream]
            assert kinds == [StreamStart, StreamFrame, StreamFrame, StreamEnd]
            with pytest.raises(NotFoundError):
                await client.detect(png, model="no-such-model")
            return results

    results = asyncio.run(main())
    assert len({msgspec.json.encode(r) for r in results}) == 1


def test_mock_transport_serves_both_clients():
    """The public test double for code built on the client (no server involved by design)."""
    body = json.dumps(MODELS).encode()
    seen = []

    def handler(request: Request) -> Response:
        seen.append((request.path, request.deployed_model_id))
        return Response(200, {"x-deployed-model-id": "dm-r"}, body)

    assert Client(MockTransport(handler)).models(deployed_model_id="dm-r").deployed_model_id
    assert asyncio.run(AsyncClient(MockTransport(handler)).models()).deployed_model_id == "dm-r"
    assert seen == [("/models", "dm-r"), ("/models", None)]
    with pytest.raises(DeployedModelNotFoundError, match="answered a call pinned to 'dm-x'"):
        Client(MockTransport(handler)).models(deployed_model_id="dm-x")


def test_connection_refused_is_typed():
    client = Client.from_url("http://127.0.0.1:1", retries=NO_RETRIES)
    with client, pytest.raises(client_errors.ConnectionError, match="cannot reach") as info:
        client.models()
    assert isinstance(info.value, ConnectionError)  # the builtin too
    assert issubclass(client_errors.TimeoutError, TimeoutError)


# --- retries, against a tiny real HTTP server ---------------------------------------------------

MODELS = {"models": [], "default_model": None, "deployed_model_id": "dm-r"}


class Script:
    """What the tiny server answers, in order, and the requests it saw."""

    def __init__(self, answers: list[tuple[int, dict, bytes]]) -> None:
        self.answers = answers
        self.seen: list[float] = []


@pytest.fixture
def tiny_server() -> Iterator[tuple[str, Script]]:
    script = Script([])

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            script.seen.append(time.monotonic())
            status, headers, body = script.answers.pop(0)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as (url, _):
        yield url, script


@contextlib.contextmanager
def serving(
    handler: type[BaseHTTPRequestHandler], listen: bool = True
) -> Iterator[tuple[str, Callable[[], None]]]:
    """A real HTTP server on a free loopback port, in a thread: ``(url, start)``.
    ``listen=False``: the port is bound but refuses connections until ``start()``."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler, bind_and_activate=False)
    httpd.server_bind()
    threads: list[threading.Thread] = []

    def start() -> None:
        httpd.server_activate()
        threads.append(threading.Thread(target=httpd.serve_forever, daemon=True))
        threads[0].start()

    if listen:
        start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", start
    finally:
        if threads:
            httpd.shutdown()
            threads[0].join()
        httpd.server_close()


PROBLEM_503 = (
    b'{"type":"urn:vertex-yolo:problem:not-ready","title":"Not ready","status":503,'
    b'"detail":"models loading","code":"not-ready"}'
)
JSON = {"Content-Type": "application/json"}
PROBLEM = {"Content-Type": "application/problem+json", "Retry-After": "1"}


def test_retries_503_honouring_retry_after(tiny_server):
    url, script = tiny_server
    script.answers = [(503, PROBLEM, PROBLEM_503)] * 2 + [(200, JSON, json.dumps(MODELS).encode())]
    client = Client.from_url(url, retries=RetryPolicy(attempts=3, backoff=0.01))
    assert client.models().deployed_model_id == "dm-r"
    assert len(script.seen) == 3
    gaps = [b - a for a, b in zip(script.seen, script.seen[1:], strict=False)]
    assert all(gap >= 0.95 for gap in gaps), gaps  # Retry-After: 1, not the 0.01 s backoff


def test_retries_are_bounded(tiny_server):
    url, script = tiny_server
    too_many = (429, {"Retry-After": "0", **JSON}, b'{"error": {"code": 429, "message": "slow"}}')
    script.answers = [too_many] * 3
    client = Client.from_url(url, retries=RetryPolicy(attempts=2, backoff=0.01))
    with pytest.raises(RateLimitError, match="slow") as info:
        client.models()
    assert len(script.seen) == 2 and info.value.retry_after == 0


def test_no_retry_on_400(tiny_server):
    url, script = tiny_server
    script.answers = [(400, JSON, b'{"error": {"code": 400, "message": "nope"}}')] * 2
    with pytest.raises(BadRequestError, match="nope"):
        Client.from_url(url, retries=RetryPolicy(attempts=3, backoff=0.01)).models()
    assert len(script.seen) == 1


DENIED = (
    b'{"error": {"code": 403, "message": "Permission \'aiplatform.endpoints.predict\' denied on '
    b"resource '//aiplatform.googleapis.com/projects/p/locations/l/endpoints/1' (or it may not "
    b'exist).", "status": "PERMISSION_DENIED"}}'
)


@pytest.mark.parametrize("status", [401, 403])
def test_permission_denied_is_an_authentication_error_not_retried(tiny_server, status):
    """Vertex answers a token it refuses (401) or an account without the permission (403) in
    Google's shape: the client raises one error that is both an APIError (status, body) and an
    AuthenticationError (what a caller catches for credentials), and does not retry it."""
    url, script = tiny_server
    script.answers = [(status, JSON, DENIED)] * 3
    client = Client.from_url(url, retries=RetryPolicy(attempts=3, backoff=0.01))
    with pytest.raises(PermissionDeniedError, match="PERMISSION_DENIED") as info:
        client.models()
    assert isinstance(info.value, AuthenticationError) and isinstance(info.value, APIError)
    assert info.value.status == status and "aiplatform.endpoints.predict" in info.value.body
    assert len(script.seen) == 1


def test_vertex_payload_limit_is_payload_too_large(tiny_server):
    """Google's front end refuses a body over Vertex's 10 MB with a 400 INVALID_ARGUMENT (as the
    emulator does); the client names it for what it is. Other 400s stay BadRequestError."""
    url, script = tiny_server
    too_big = (
        b'{"error": {"code": 400, "message": "Request payload size exceeds the limit: 10000000 '
        b'bytes.", "status": "INVALID_ARGUMENT"}}'
    )
    script.answers = [(400, JSON, too_big), (400, JSON, b'{"error": {"code": 400}}')]
    client = Client.from_url(url, retries=NO_RETRIES)
    with pytest.raises(PayloadTooLargeError, match="exceeds the limit") as info:
        client.models()
    assert info.value.status == 400
    with pytest.raises(BadRequestError) as other:
        client.models()
    assert not isinstance(other.value, PayloadTooLargeError)


def test_async_client_retries(tiny_server):
    url, script = tiny_server
    script.answers = [(503, {**PROBLEM, "Retry-After": "0"}, PROBLEM_503)]
    script.answers += [(200, JSON, json.dumps(MODELS).encode())]

    async def main() -> str | None:
        retries = RetryPolicy(attempts=2, backoff=0.01)
        async with AsyncClient.from_url(url, retries=retries) as client:
            return (await client.models()).deployed_model_id

    assert asyncio.run(main()) == "dm-r" and len(script.seen) == 2


def test_retry_after_http_date(tiny_server):
    url, script = tiny_server
    when = email.utils.formatdate(time.time() + 2, usegmt=True)  # whole seconds: 1 to 2 s away
    script.answers = [(503, {**PROBLEM, "Retry-After": when}, PROBLEM_503)]
    script.answers += [(200, JSON, json.dumps(MODELS).encode())]
    client = Client.from_url(url, retries=RetryPolicy(attempts=2, backoff=0.01))
    assert client.models().deployed_model_id == "dm-r"
    # the date is 1 to 2 s away: waited for it (not the 0.01 s backoff), and not taken for a
    # local time hours off (which would be over the 20 s max_backoff: not retried at all)
    assert 0.9 <= script.seen[1] - script.seen[0] < 20


def test_retry_after_dates_without_a_zone_are_utc():
    """The asctime form carries no zone; RFC 9110 says it is UTC, whatever the local zone."""
    asctime = time.asctime(time.gmtime(time.time() + 30))
    old = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    try:
        assert 25 <= parse_retry_after(asctime) <= 31
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


def test_retry_after_beyond_max_backoff_is_not_retried(tiny_server):
    url, script = tiny_server
    script.answers = [(503, {**PROBLEM, "Retry-After": "60"}, PROBLEM_503)] * 2
    client = Client.from_url(url, retries=RetryPolicy(attempts=3, backoff=0.01, max_backoff=1))
    with pytest.raises(UnavailableError) as info:
        client.models()
    assert len(script.seen) == 1 and info.value.retry_after == 60


def test_connection_refused_then_retried():
    """The first attempt meets a bound port that is not listening yet (refused); the server
    starts listening right after it, and the retry gets through."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = json.dumps(MODELS).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler, listen=False) as (url, start):
        failures: list[Exception] = []

        class ListenAfterFirstTry(HttpTransport):
            """The real httpx transport; only starts the server after its first failure."""

            def send(self, request: Request) -> Response:
                try:
                    return super().send(request)
                except client_errors.ConnectionError as exc:
                    failures.append(exc)
                    start()
                    raise

        retries = RetryPolicy(attempts=2, backoff=0.01)
        with Client(ListenAfterFirstTry(url), retries=retries) as client:
            assert client.models().deployed_model_id == "dm-r"
        assert len(failures) == 1 and "cannot reach" in str(failures[0])


def test_from_url_404_on_a_pinned_call_is_not_a_missing_deployed_model(tiny_server):
    """One server cannot route by deployed model: its (or a proxy's) 404 is just a 404."""
    url, script = tiny_server
    body = b'{"error": {"code": 404, "message": "deployed model dm-r not found"}}'
    script.answers = [(404, JSON, body)]
    with pytest.raises(NotFoundError) as info:
        Client.from_url(url, retries=NO_RETRIES).models(deployed_model_id="dm-r")
    assert not isinstance(info.value, DeployedModelNotFoundError)


SSE_HEADERS = {"Content-Type": "text/event-stream", "Connection": "close"}


def test_stream_retried_on_a_clean_end_or_an_error_event_before_start(tiny_server):
    url, script = tiny_server
    full = sse("start", START) + sse("frame", frame(0), 0) + sse("frame", frame(1), 1)
    script.answers = [
        (200, SSE_HEADERS, b": ping\n\n"),  # ended cleanly before any event
        (200, SSE_HEADERS, sse("error", json.loads(PROBLEM_503)).encode()),
        (200, SSE_HEADERS, (full + sse("end", END)).encode()),
    ]
    client = Client.from_url(url, retries=RetryPolicy(attempts=3, backoff=0.01))
    assert len(list(client.stream(b"\x00\x00\x00\x18ftypisom").frames())) == 2
    assert len(script.seen) == 3


def test_sdk_stream_read_timeout_is_a_timeout():
    """``requests``' ``iter_lines`` (the SDK's stream) reports a read timeout as
    ``requests.ConnectionError`` wrapping urllib3's ``ReadTimeoutError``."""
    release = threading.Event()

    class Stall(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(sse("start", START).encode())
            self.wfile.flush()
            release.wait(10)

        def log_message(self, *args: object) -> None:
            pass

    with serving(Stall) as (url, _):
        try:
            response = requests.get(url, stream=True, timeout=0.3)
            lines = _sdk_lines(response.iter_lines(), "the stall server")
            with pytest.raises(client_errors.TimeoutError, match="timed out"):
                list(lines)
            response.close()
        finally:
            release.set()


def test_stream_retried_before_its_first_event_only(tiny_server):
    url, script = tiny_server
    started = sse("start", START) + sse("frame", frame(0), 0)  # then the connection drops
    script.answers = [
        (503, {**PROBLEM, "Retry-After": "0"}, PROBLEM_503),
        (200, SSE_HEADERS, started.encode()),
        (200, SSE_HEADERS, (started + sse("frame", frame(1), 1) + sse("end", END)).encode()),
    ]
    client = Client.from_url(url, retries=RetryPolicy(attempts=3, backoff=0.01))
    stream = client.stream(b"\x00\x00\x00\x18ftypisom")
    assert len(script.seen) == 2  # the 503 was retried
    with pytest.raises(StreamError, match="cut before its end"):
        list(stream)
    assert len(script.seen) == 2  # ...but not the stream that had started


# --- through Vertex: the real SDK's Endpoint.invoke against the emulator ----------------------


def vertex_client(info, cls=Client, **options):
    return cls.from_vertex(endpoint=info.endpoint_id, **info.init_kwargs(), **options)


@pytest.fixture(scope="module")
def vertex(emulator) -> Iterator[Client]:
    with vertex_client(emulator, image_format="png", retries=NO_RETRIES) as c:
        yield c


def test_vertex_every_route(vertex, emulator, scene, video):
    ids = set(emulator.deployed_models.values())
    png = encode(scene[0])
    assert vertex.models().deployed_model_id in ids
    assert vertex.detect([png, scene[0][:, :, ::-1].copy()]).deployed_model_id in ids
    seg = vertex.segment(png, model="shapes-segment", rle=True)
    assert seg.results[0].detections[0].mask.rle is not None
    drawn = vertex.annotate(png)
    assert drawn.deployed_model_id in ids and drawn.detection_count == len(scene[1])
    assert Image.open(io.BytesIO(drawn.image)).format == "JPEG"
    assert len(vertex.annotate([png, png], json=True).results) == 2
    with vertex.stream(video) as stream:
        assert stream.start.deployed_model_id in ids
        assert len(list(stream.frames())) == 12 and stream.end.frames == 12


def test_vertex_traffic_split_reaches_both_deployed_models(vertex, emulator):
    from google.cloud import aiplatform

    # Setting the split restarts the emulator's seeded draws for it (--split-seed): the 40
    # calls below get the same draws in every run, wherever the test runs in the session.
    aiplatform.init(**emulator.init_kwargs())
    split = {emulator.deployed_models["shapes-a"]: 80, emulator.deployed_models["shapes-b"]: 20}
    aiplatform.Endpoint(emulator.endpoint_id).update(traffic_split=split)
    served = {vertex.models().deployed_model_id for _ in range(40)}
    assert served == set(emulator.deployed_models.values())


def test_vertex_pinning_reports_the_pinned_id(vertex, emulator, scene, video):
    png = encode(scene[0])
    a, b = emulator.deployed_models["shapes-a"], emulator.deployed_models["shapes-b"]
    for dm, model in ((a, "shapes-detect"), (b, "shapes-segment")):  # B defaults to segment
        assert vertex.models(deployed_model_id=dm).deployed_model_id == dm
        result = vertex.detect(png, deployed_model_id=dm)
        assert (result.deployed_model_id, result.model) == (dm, model)
        assert vertex.annotate(png, deployed_model_id=dm).deployed_model_id == dm
    stream = vertex.stream(video, deployed_model_id=b, max_frames=3)
    assert stream.start.deployed_model_id == b and stream.start.task == "segment"
    frames = list(stream.frames())
    assert len(frames) == 3 and frames[0].detections[0].mask is not None


def test_vertex_errors(vertex, scene, video):
    png = encode(scene[0])
    with pytest.raises(NotFoundError, match="no model named") as missing:
        vertex.detect(png, model="no-such-model")
    assert missing.value.request_id  # the server's headers come through invoke
    with pytest.raises(DeployedModelNotFoundError, match="'999' is not deployed"):
        vertex.detect(png, deployed_model_id="999")
    # A stream's status is invisible through the SDK: the problem body arrives as lines.
    with pytest.raises(BadRequestError) as bad:
        vertex.stream(b"\x00" * 64)
    assert bad.value.status == 400 and bad.value.code == "invalid-video"
    with pytest.raises(NotFoundError, match="no model named"):
        vertex.stream(video, model="no-such-model")
    with pytest.raises(DeployedModelNotFoundError):
        vertex.stream(video, deployed_model_id="999")


def test_vertex_long_timeout(emulator):
    """Above 120 s the SDK mounts requests-toolbelt's keep-alive adapter (a declared
    dependency): proof that the timeout reached ``invoke``."""
    from requests_toolbelt.adapters.socket_options import TCPKeepAliveAdapter

    with vertex_client(emulator, timeout=900) as client:
        assert client.models().deployed_model_id in set(emulator.deployed_models.values())
        session = client.transport.endpoint.authorized_session
        assert isinstance(session.get_adapter("https://"), TCPKeepAliveAdapter)


def _pools(endpoint) -> int:
    return len(endpoint.authorized_session.get_adapter("https://").poolmanager.pools)


def test_vertex_close_leaves_a_callers_endpoint_open(emulator):
    with vertex_client(emulator) as made:
        made.models()
        endpoint = made.transport.endpoint
        with Client(endpoint) as borrowed:  # the caller's endpoint: its session stays open
            borrowed.models()
        assert _pools(endpoint) == 1
    assert _pools(endpoint) == 0  # from_vertex made it, so closing the client closes it


# --- credentials: real google-auth credentials against a tiny token endpoint ------------------


class TokenEndpoint:
    """A tiny OAuth token endpoint: counts refreshes; answers a token, or ``invalid_grant``.

    Each refresh waits until ``release`` is set (``arrived`` is set when one has come), so a
    test can hold one in flight while other calls pile up behind it.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.refreshes = 0
        self.refuse = False
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def credentials(self):
        import google.oauth2.credentials

        return google.oauth2.credentials.Credentials(
            token=None,
            refresh_token="refresh-me",
            token_uri=self.url + "/token",
            client_id="client",
            client_secret="secret",
        )


@pytest.fixture
def token_endpoint() -> Iterator[TokenEndpoint]:
    holder: list[TokenEndpoint] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            endpoint = holder[0]
            endpoint.refreshes += 1
            endpoint.arrived.set()
            endpoint.release.wait(PATIENCE_S)
            if endpoint.refuse:
                status, answer = 400, {"error": "invalid_grant", "error_description": "revoked"}
            else:
                status, answer = 200, {"access_token": "token-1", "expires_in": 3600}
            body = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as (url, _):
        holder.append(TokenEndpoint(url))
        yield holder[0]


def test_async_vertex_refreshes_the_token_once_for_concurrent_calls(emulator, token_endpoint):
    transport = AsyncVertexTransport(
        emulator.dedicated_endpoint_dns,
        emulator.endpoint,
        credentials=token_endpoint.credentials(),
    )

    async def main() -> None:
        async with AsyncClient(transport) as client:
            token_endpoint.release.clear()  # the first refresh is held until every call waits
            calls = [asyncio.ensure_future(client.models()) for _ in range(16)]
            await asyncio.to_thread(token_endpoint.arrived.wait, PATIENCE_S)
            for _ in range(20):  # the other calls reach the refresh lock (no I/O before it)
                await asyncio.sleep(0)
            assert not any(call.done() for call in calls)
            token_endpoint.release.set()
            results = await asyncio.gather(*calls)
            assert len(results) == 16 and transport.credentials.token == "token-1"

    asyncio.run(main())
    assert token_endpoint.refreshes == 1


def test_refused_credentials_are_not_retried(emulator, token_endpoint):
    token_endpoint.refuse = True
    retries = RetryPolicy(attempts=3, backoff=0.01)
    transport = AsyncVertexTransport(
        emulator.dedicated_endpoint_dns,
        emulator.endpoint,
        credentials=token_endpoint.credentials(),
    )

    async def main() -> None:
        async with AsyncClient(transport, retries=retries) as client:
            with pytest.raises(AuthenticationError, match="invalid_grant"):
                await client.models()

    asyncio.run(main())
    assert token_endpoint.refreshes == 1
    # The SDK path: Endpoint.invoke through an AuthorizedSession with the same credentials.
    from google.auth.transport.requests import AuthorizedSession

    with vertex_client(emulator) as made:
        endpoint = made.transport.endpoint
        endpoint.authorized_session = AuthorizedSession(token_endpoint.credentials())
        with pytest.raises(AuthenticationError, match="invalid_grant"):
            Client(endpoint, retries=retries).models()
    assert token_endpoint.refreshes == 2


def test_async_vertex_scopes_credentials_like_the_sdk():
    """Service-account credentials need scopes to get a token; the SDK gives cloud-platform."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from google.oauth2 import service_account

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    creds = service_account.Credentials.from_service_account_info(
        {
            "private_key": pem,
            "client_email": "sa@p.iam.gserviceaccount.com",
            "token_uri": "http://127.0.0.1:1/token",
        }
    )
    assert creds.requires_scopes
    transport = AsyncVertexTransport(
        "127.0.0.1:1", "projects/p/locations/l/endpoints/e", credentials=creds
    )
    assert (
        list(transport.credentials.scopes) == ["https://www.googleapis.com/auth/cloud-platform"]
        and not transport.credentials.requires_scopes
    )
    asyncio.run(transport.aclose())


def test_async_vertex_concurrent_calls(emulator, scene, video):
    png = encode(scene[0])
    ids = set(emulator.deployed_models.values())
    b = emulator.deployed_models["shapes-b"]

    async def main() -> None:
        async with vertex_client(emulator, cls=AsyncClient) as client:
            results = await asyncio.gather(*(client.detect(png) for _ in range(16)))
            assert {r.deployed_model_id for r in results} <= ids
            assert all(len(r.results[0].detections) == len(scene[1]) for r in results)
            pinned = await client.detect(png, deployed_model_id=b)
            assert pinned.deployed_model_id == b
            stream = await client.stream(video, deployed_model_id=b)
            kinds = [type(e) async for e in stream]
            assert kinds[0] is StreamStart and kinds[-1] is StreamEnd and len(kinds) == 14
            with pytest.raises(DeployedModelNotFoundError):
                await client.detect(png, deployed_model_id="999")
            with pytest.raises(BadRequestError, match="video"):
                await client.stream(b"\x00" * 64)
        # Without the endpoint's list of deployed models, the data plane itself refuses.
        from google.auth.credentials import AnonymousCredentials

        transport = AsyncVertexTransport(
            emulator.dedicated_endpoint_dns, emulator.endpoint, credentials=AnonymousCredentials()
        )
        async with AsyncClient(transport) as raw:
            assert (await raw.models(deployed_model_id=b)).deployed_model_id == b
            with pytest.raises(DeployedModelNotFoundError, match="999"):
                await raw.detect(png, deployed_model_id="999")

    asyncio.run(main())
