"""The bad-input corpus: every kind of bad request gets its own 4xx problem+json, naming what was
wrong, from a real server that stays healthy afterwards.

One table, one case per kind: the request, the expected status, problem ``code``, fragments of
its ``detail`` and, where the problem names one, its ``field``. Most cases run against the
session server (``SERVE_MAX_IMAGES=8``, default limits); those that need other limits run
against this module's ``tight`` server. Bodies over the size limit are sent over raw sockets, to
show they are refused before they are read.
"""

from __future__ import annotations

import base64
import http.client
import io
import select
import socket
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cv2
import httpx
import pytest
from PIL import Image

from app.demo.shapes import moving_shape_frames, write_video
from conftest import PATIENCE_S, ROOT, Server, serving
from helpers import encode, scenes

RGB, SHAPES = scenes(1)[0]  # 160x160
PNG = encode(RGB)
JPEG = encode(RGB, "JPEG")
MB = 1024 * 1024
TIGHT = {
    "AIP_DEPLOYED_MODEL_ID": "dm-bad-input",
    "SERVE_MAX_BODY_BYTES": str(MB),
    "SERVE_MAX_PIXELS": "20000",  # a 160x160 image is over, a 160x120 frame is not
    "SERVE_MAX_IMAGES": "2",
    "SERVE_STREAM_MAX_FRAMES": "5",
    "SERVE_STREAM_MAX_SECONDS": "2",
    "SERVE_STREAM_MAX_PIXELS": str(160 * 120),
}
Request = dict[str, Any]  # httpx.Client.request keyword arguments
README = ROOT / "README.md"


# --- bad bodies ------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) is rewritten to declare ``width`` x ``height``."""
    data = bytearray(JPEG)
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def image_as(fmt: str, rgb=RGB) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


@cache
def video(name: str) -> bytes:
    """Small videos, written once: ``frames10`` (10 frames at 10 fps, 160x120), ``seconds4``
    (8 frames at 2 fps), ``big`` (2 frames of 320x240), ``empty`` (an AVI with no frame)."""
    frames, _ = moving_shape_frames(10)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.{'avi' if name == 'empty' else 'mp4'}"
        if name == "frames10":
            write_video(path, frames, fps=10)
        elif name == "seconds4":
            write_video(path, frames[:8], fps=2)
        elif name == "big":
            write_video(path, [cv2.resize(f, (320, 240)) for f in frames[:2]], fps=10)
        else:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
            writer.release()
        return path.read_bytes()


def multipart(*parts: tuple[str, str | None, bytes], boundary: str = "b0undary") -> bytes:
    """A hand-built multipart body: (field name, file name or None, content) per part."""
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        out += content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


# --- request builders ------------------------------------------------------------------------


def raw(path: str, body: bytes, ctype: str | None = "image/png", **params: Any) -> Request:
    headers = {"Content-Type": ctype} if ctype is not None else {}
    return {"method": "POST", "url": path, "content": body, "headers": headers, "params": params}


def as_json(path: str, body: Any, **params: Any) -> Request:
    return {"method": "POST", "url": path, "json": body, "params": params}


def instances(*images: bytes, **parameters: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"instances": [{"image": b64(i)} for i in images]}
    return body | ({"parameters": parameters} if parameters else {})


def gcs_instances(*uris: str) -> dict[str, Any]:
    return {"instances": [{"image": {"gcsUri": uri}} for uri in uris]}


def files(path: str, *blobs: bytes, data: dict[str, str] | None = None, **params: Any) -> Request:
    parts = [("image", (f"{i}.png", blob, "image/png")) for i, blob in enumerate(blobs)]
    return {"method": "POST", "url": path, "files": parts, "data": data, "params": params}


def form_body(path: str, body: bytes, boundary: str | None = "b0undary") -> Request:
    ctype = "multipart/form-data" + (f"; boundary={boundary}" if boundary else "")
    return raw(path, body, ctype)


# --- the corpus ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """One kind of bad input and the problem it must get."""

    id: str
    request: Callable[[], Request]
    status: int
    code: str
    needles: tuple[str, ...]
    field: str | None = None
    tight: bool = False  # needs this module's tight-limits server
    allow: str | None = None  # the methods a 405's Allow header lists


def bad(id: str, request: Callable[[], Request], status: int, code: str, *needles: str, **kw):
    return pytest.param(Bad(id, request, status, code, needles, **kw), id=id)


PARAM = "invalid-parameter"
CORPUS = [
    # The image itself
    bad("empty-body", lambda: raw("/detect", b""), 400, "invalid-image", "no image"),
    bad(
        "truncated-jpeg",
        lambda: raw("/detect", JPEG[: len(JPEG) // 2], "image/jpeg"),
        400,
        "invalid-image",
        "corrupt or truncated",
    ),
    bad(
        "text-as-jpeg",
        lambda: raw("/detect", b"this is plain text, not a JPEG", "image/jpeg"),
        400,
        "invalid-image",
        "not a decodable image",
    ),
    bad(
        "png-signature-then-garbage",
        lambda: raw("/detect", PNG[:8] + b"\0garbage" * 20),
        400,
        "invalid-image",
        "not a decodable image",
    ),
    bad(
        "png-declaring-30000x30000",
        lambda: raw("/detect", png_declaring(30000, 30000)),
        413,
        "payload-too-large",
        "too many pixels",
    ),
    bad(
        "jpeg-declaring-60000x60000",
        lambda: raw("/detect", jpeg_declaring(60000, 60000), "image/jpeg"),
        413,
        "payload-too-large",
        "too many pixels",
    ),
    bad(
        "image-over-pixel-limit",
        lambda: raw("/detect", PNG),
        413,
        "payload-too-large",
        "160x160 = 25600 pixels",
        "limit is 20000",
        tight=True,
    ),
    bad(
        "gif-image",
        lambda: raw("/detect", image_as("GIF"), "application/octet-stream"),
        415,
        "unsupported-media-type",
        "GIF",
        "JPEG, PNG",
    ),
    bad(
        "tiff-image",
        lambda: raw("/detect", image_as("TIFF"), "application/octet-stream"),
        415,
        "unsupported-media-type",
        "TIFF",
    ),
    # Content types
    bad(
        "text-content-type",
        lambda: raw("/detect", PNG, "text/plain"),
        415,
        "unsupported-media-type",
        "'text/plain'",
        "multipart/form-data",
    ),
    bad(
        "no-content-type",
        lambda: raw("/detect", PNG, None),
        415,
        "unsupported-media-type",
        "(none)",
    ),
    bad(
        "urlencoded-form",
        lambda: {"method": "POST", "url": "/detect", "data": {"conf": "0.5"}},
        415,
        "unsupported-media-type",
        "application/x-www-form-urlencoded",
    ),
    bad(
        "gif-content-type",
        lambda: raw("/detect", PNG, "image/gif"),
        415,
        "unsupported-media-type",
        "'image/gif'",
    ),
    # JSON bodies
    bad(
        "malformed-json",
        lambda: raw("/detect", b'{"instances": [', "application/json"),
        400,
        "bad-request",
        "not valid JSON",
    ),
    bad(
        "json-array-body",
        lambda: as_json("/detect", [1, 2]),
        400,
        "bad-request",
        "does not match",
        "Expected `object`",
    ),
    bad(
        "missing-instances",
        lambda: as_json("/detect", {"images": [b64(PNG)]}),
        400,
        "bad-request",
        "instances",
    ),
    bad(
        "instances-not-a-list",
        lambda: as_json("/detect", {"instances": b64(PNG)}),
        400,
        "bad-request",
        "$.instances",
    ),
    bad(
        "instances-empty",
        lambda: as_json("/detect", {"instances": []}),
        400,
        "invalid-image",
        "no image",
    ),
    bad(
        "image-wrong-type",
        lambda: as_json("/detect", {"instances": [{"image": 5}]}),
        400,
        "bad-request",
        "$.instances[0].image",
    ),
    bad(
        "instance-unknown-key",
        lambda: as_json("/detect", {"instances": [{"image": b64(PNG), "url": "x"}]}),
        400,
        "bad-request",
        "unknown field `url`",
    ),
    bad(
        "invalid-base64",
        lambda: as_json("/detect", {"instances": [{"image": "%%%not-base64"}]}),
        400,
        "invalid-image",
        "instances[0].image",
        "base64",
    ),
    bad(
        "base64-of-text",
        lambda: as_json("/detect", instances(b"hello, world")),
        400,
        "invalid-image",
        "not a decodable image",
    ),
    bad(
        "parameters-not-an-object",
        lambda: as_json("/detect", {"instances": [{"image": b64(PNG)}], "parameters": [1]}),
        400,
        "bad-request",
        "$.parameters",
    ),
    # Parameter values
    bad("conf-negative", lambda: raw("/detect", PNG, conf=-1), 400, PARAM, ">= 0.0", field="conf"),
    bad("conf-2", lambda: raw("/detect", PNG, conf=2), 400, PARAM, "<= 1.0", field="conf"),
    bad("conf-nan", lambda: raw("/detect", PNG, conf="nan"), 400, PARAM, "$.conf", field="conf"),
    bad("conf-inf", lambda: raw("/detect", PNG, conf="inf"), 400, PARAM, "<= 1.0", field="conf"),
    bad(
        "conf-string",
        lambda: as_json("/detect", instances(PNG, conf="high")),
        400,
        PARAM,
        "Expected `float`, got `str`",
        field="conf",
    ),
    bad(
        "confidence-alias-out-of-range",
        lambda: as_json("/predict", instances(PNG, confidence=5)),
        400,
        PARAM,
        "$.confidence",
        "<= 1.0",
        field="confidence",
    ),
    bad("iou-negative", lambda: raw("/detect", PNG, iou=-0.1), 400, PARAM, ">= 0.0", field="iou"),
    bad("max-det-0", lambda: raw("/detect", PNG, max_det=0), 400, PARAM, ">= 1", field="max_det"),
    bad(
        "max-det-fraction",
        lambda: raw("/detect", PNG, max_det=1.5),
        400,
        PARAM,
        "Expected `int`",
        field="max_det",
    ),
    bad("imgsz-8", lambda: raw("/detect", PNG, imgsz=8), 400, PARAM, ">= 32", field="imgsz"),
    bad(
        "imgsz-huge", lambda: raw("/detect", PNG, imgsz=5000), 400, PARAM, "<= 4096", field="imgsz"
    ),
    bad(
        "format-gif",
        lambda: raw("/annotate", PNG, format="gif"),
        400,
        PARAM,
        "allowed: jpeg, png",
        field="format",
    ),
    bad(
        "rle-maybe",
        lambda: raw("/segment", PNG, rle="maybe"),
        400,
        PARAM,
        "allowed: true, false",
        field="rle",
    ),
    # Unknown parameters: refused alike from the query string, form fields and JSON
    bad(
        "unknown-query-parameter",
        lambda: raw("/detect", PNG, confidence=0.5),
        400,
        PARAM,
        "unknown field `confidence`",
        "known parameters: model, imgsz, conf",
        field="confidence",
    ),
    bad(
        "segment-parameter-on-detect",
        lambda: raw("/detect", PNG, rle="true"),
        400,
        PARAM,
        "unknown field `rle`",
        "known parameters: model, imgsz, conf, iou, max_det, classes",
        field="rle",
    ),
    bad(
        "annotate-parameter-on-detect",
        lambda: raw("/detect", PNG, format="png"),
        400,
        PARAM,
        "unknown field `format`",
        field="format",
    ),
    bad(
        "stream-parameter-on-segment",
        lambda: as_json("/segment", instances(PNG, track="bytetrack")),
        400,
        PARAM,
        "unknown field `track`",
        field="track",
    ),
    bad(
        "unknown-form-field",
        lambda: files("/detect", PNG, data={"threshold": "0.5"}),
        400,
        PARAM,
        "unknown field `threshold`",
        "known parameters",
        field="threshold",
    ),
    bad(
        "unknown-json-parameter",
        lambda: as_json("/detect", instances(PNG, threshold=0.5)),
        400,
        PARAM,
        "unknown field `threshold`",
        "known parameters",
        field="threshold",
    ),
    # Models and classes
    bad(
        "unknown-model",
        lambda: raw("/detect", PNG, model="yolo11n"),
        404,
        "unknown-model",
        "'yolo11n'",
        "shapes-detect",
        field="model",
    ),
    bad(
        "model-dot-dot-path",
        lambda: raw("/detect", PNG, model="../../etc/passwd"),
        404,
        "unknown-model",
        "'../../etc/passwd'",
        "available: shapes-detect",
        field="model",
    ),
    bad(
        "model-absolute-path",
        lambda: raw("/detect", PNG, model="/app/demo/weights/shapes-detect.pt"),
        404,
        "unknown-model",
        "'/app/demo/weights/shapes-detect.pt'",
        field="model",
    ),
    bad(
        "model-not-a-string",
        lambda: as_json("/detect", instances(PNG, model=5)),
        400,
        PARAM,
        "Expected `str | null`",
        field="model",
    ),
    bad(
        "models-route-unknown-name",
        lambda: {"method": "GET", "url": "/models/nope"},
        404,
        "unknown-model",
        "'nope'",
    ),
    bad(
        "unknown-class-name",
        lambda: raw("/detect", PNG, classes="circle,hexagon"),
        400,
        PARAM,
        "'hexagon'",
        "triangle",
        field="classes",
    ),
    bad(
        "unknown-class-id",
        lambda: raw("/detect", PNG, classes="99"),
        400,
        PARAM,
        "'99'",
        "0:circle",
        field="classes",
    ),
    bad(
        "empty-classes",
        lambda: raw("/detect", PNG, classes=""),
        400,
        PARAM,
        "classes is empty",
        field="classes",
    ),
    bad(
        "segment-with-detect-model",
        lambda: raw("/segment", PNG, model="shapes-detect"),
        400,
        "wrong-task",
        "detect model",
        field="model",
    ),
    # Multipart
    bad(
        "empty-multipart",
        lambda: form_body("/detect", b"--b0undary--\r\n"),
        400,
        "invalid-image",
        "no image",
    ),
    bad(
        "multipart-fields-only",
        lambda: form_body("/detect", multipart(("conf", None, b"0.5"))),
        400,
        "invalid-image",
        "no image",
    ),
    bad(
        "multipart-without-boundary",
        lambda: form_body("/detect", multipart(("image", "a.png", PNG)), boundary=None),
        400,
        "bad-request",
        "boundary",
    ),
    bad(
        "multipart-truncated",
        lambda: form_body("/detect", multipart(("image", "a.png", PNG))[:200]),
        400,
        "bad-request",
        "cannot be read",
        "complete",
    ),
    bad(
        "multipart-part-not-an-image",
        lambda: form_body("/detect", multipart(("image", "notes.txt", b"some notes"))),
        400,
        "invalid-image",
        "not a decodable image",
    ),
    bad(
        "multipart-second-image-corrupt",
        lambda: files("/detect", PNG, JPEG[:300]),
        400,
        "invalid-image",
        "image 1",
    ),
    bad(
        "too-many-images-multipart",
        lambda: files("/detect", *[PNG] * 9),
        413,
        "payload-too-large",
        "more than 8 images",
    ),
    bad(
        "too-many-images-json",
        lambda: as_json("/detect", instances(*[PNG] * 9)),
        413,
        "payload-too-large",
        "at most 8",
    ),
    bad(
        "too-many-images-tight-limit",
        lambda: files("/detect", *[PNG] * 3),
        413,
        "payload-too-large",
        "more than 2 images",
        tight=True,
    ),
    bad(
        "too-many-multipart-parts",
        lambda: form_body("/detect", multipart(*[(f"f{i}", None, b"x") for i in range(1001)])),
        413,
        "payload-too-large",
        "more than 1000 parts",
    ),
    bad(
        "annotate-several-images",
        lambda: files("/annotate", PNG, PNG),
        400,
        "bad-request",
        "one image",
        "application/json",
    ),
    bad(
        "body-over-tight-limit",
        lambda: raw("/detect", b"\0" * (MB + 1)),
        413,
        "payload-too-large",
        f"limit of {MB} bytes",
        tight=True,
    ),
    # /stream
    bad(
        "garbage-video",
        lambda: raw("/stream", b"\x00garbage" * 200, "video/mp4"),
        400,
        "invalid-video",
        "not a video",
    ),
    bad(
        "truncated-video",
        lambda: raw("/stream", video("frames10")[:2000], "video/mp4"),
        400,
        "invalid-video",
        "cannot be decoded",
    ),
    bad(
        "zero-frame-video",
        lambda: raw("/stream", video("empty"), "video/x-msvideo"),
        400,
        "invalid-video",
        "no decodable frame",
    ),
    bad(
        "empty-video-body",
        lambda: raw("/stream", b"", "video/mp4"),
        400,
        "invalid-video",
        "empty",
    ),
    bad(
        "playlist-as-video",
        lambda: raw("/stream", b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n", "video/mp4"),
        400,
        "invalid-video",
        "not a video",
    ),
    bad(
        "image-content-type-to-stream",
        lambda: raw("/stream", PNG, "image/png"),
        415,
        "unsupported-media-type",
        "multipart/form-data frames",
    ),
    bad(
        "video-over-frame-limit",
        lambda: raw("/stream", video("frames10"), "video/mp4"),
        413,
        "payload-too-large",
        "10 frames",
        "limit is 5",
        tight=True,
    ),
    bad(
        "video-over-duration-limit",
        lambda: raw("/stream", video("seconds4"), "video/mp4"),
        413,
        "payload-too-large",
        "lasts 4.0 s",
        tight=True,
    ),
    bad(
        "video-over-resolution-limit",
        lambda: raw("/stream", video("big"), "video/mp4"),
        413,
        "payload-too-large",
        "320x240",
        tight=True,
    ),
    bad(
        "too-many-frames",
        lambda: {
            "method": "POST",
            "url": "/stream",
            "files": [("frame", (f"{i}.png", encode(RGB[:120]), "image/png")) for i in range(6)],
        },
        413,
        "payload-too-large",
        "more than 5 frames",
        tight=True,
    ),
    bad(
        "frames-of-different-sizes",
        lambda: files("/stream", PNG, encode(RGB[:100])),
        400,
        "invalid-image",
        "differ in size",
    ),
    bad(
        "frames-invalid-base64",
        lambda: as_json("/stream", {"frames": ["%%%"]}),
        400,
        "invalid-image",
        "frames[0]",
        "base64",
    ),
    bad(
        "unknown-tracker",
        lambda: files("/stream", PNG, track="kalman"),
        400,
        PARAM,
        "bytetrack",
        field="track",
    ),
    bad(
        "vid-stride-0",
        lambda: files("/stream", PNG, vid_stride=0),
        400,
        PARAM,
        ">= 1",
        field="vid_stride",
    ),
    bad(
        "max-frames-over-limit",
        lambda: files("/stream", PNG, max_frames=100000),
        400,
        PARAM,
        "limit of 10000 frames",
        field="max_frames",
    ),
    bad(
        "unknown-stream-parameter",
        lambda: files("/stream", PNG, stride=2),
        400,
        PARAM,
        "unknown field `stride`",
        "vid_stride",
        field="stride",
    ),
    # Cloud Storage URIs in place of bytes (the tight server reads bucket "inputs" only)
    bad(
        "uri-bucket-not-allowed",
        lambda: as_json("/detect", gcs_instances("gs://weights/x.png")),
        400,
        "uri-not-allowed",
        "bucket 'weights' is not allowed",
        "SERVE_ALLOWED_BUCKETS=inputs,weights",
        field="instances[0].image",
        tight=True,
    ),
    bad(
        "uri-no-bucket-allowed",
        lambda: as_json("/detect", gcs_instances("gs://inputs/x.png")),
        400,
        "uri-not-allowed",
        "this server reads no bucket",
        "SERVE_ALLOWED_BUCKETS=inputs",
        field="instances[0].image",
    ),
    bad(
        "uri-http",
        lambda: as_json("/detect", gcs_instances("http://169.254.169.254/computeMetadata/v1/")),
        400,
        "uri-not-allowed",
        "is not a gs://bucket/object URI",
        "http:// is not read",
        tight=True,
    ),
    bad(
        "uri-file",
        lambda: as_json("/segment", gcs_instances("file:///etc/passwd")),
        400,
        "uri-not-allowed",
        "file:// is not read",
        tight=True,
    ),
    bad(
        "uri-bucket-only",
        lambda: as_json("/detect", gcs_instances("gs://inputs/")),
        400,
        "uri-not-allowed",
        "is not a gs://bucket/object URI",
        tight=True,
    ),
    bad(
        "uri-missing-object",
        lambda: as_json("/detect", gcs_instances("gs://inputs/bad/missing.png")),
        404,
        "object-not-found",
        "gs://inputs/bad/missing.png: no such object",
        tight=True,
    ),
    bad(
        "uri-image-over-limit",
        lambda: as_json("/annotate", gcs_instances("gs://inputs/bad/big.png")),
        413,
        "payload-too-large",
        "gs://inputs/bad/big.png is 1572864 bytes; an image may be at most 1048576",
        tight=True,
    ),
    bad(
        "uri-images-together-over-limit",
        lambda: as_json("/stream", {"frames": [{"gcsUri": "gs://inputs/bad/600k.png"}] * 2}),
        413,
        "payload-too-large",
        "the request's 2 gs:// images are 1200000 bytes together; at most 1048576",
        tight=True,
    ),
    bad(
        "uri-corrupt-image",
        lambda: as_json("/detect", gcs_instances("gs://inputs/bad/corrupt.png")),
        400,
        "invalid-image",
        "not a decodable image",
        tight=True,
    ),
    bad(
        "uri-and-b64",
        lambda: as_json(
            "/detect", {"instances": [{"image": {"b64": b64(PNG), "gcsUri": "gs://inputs/a"}}]}
        ),
        400,
        "bad-request",
        'must hold one of "b64" and "gcsUri"',
        field="instances[0].image",
    ),
    bad(
        "stream-uri-not-a-video",
        lambda: as_json("/stream", {"video": {"gcsUri": "gs://inputs/bad/not-a-video.mp4"}}),
        400,
        "invalid-video",
        "object gs://inputs/bad/not-a-video.mp4 is not a video",
        tight=True,
    ),
    bad(
        "stream-uri-video-over-limit",
        lambda: as_json("/stream", {"video": {"gcsUri": "gs://inputs/bad/huge.mp4"}}),
        413,
        "payload-too-large",
        "a video may be at most 2097152",
        tight=True,
    ),
    bad(
        "stream-video-as-b64",
        lambda: as_json("/stream", {"video": {"b64": b64(video("frames10"))}}),
        400,
        "bad-request",
        '"video" takes {"gcsUri": "gs://..."}',
    ),
    bad(
        "stream-video-and-frames",
        lambda: as_json(
            "/stream", {"video": {"gcsUri": "gs://inputs/v.mp4"}, "frames": [b64(PNG)]}
        ),
        400,
        "bad-request",
        'give "video" or "frames", not both',
    ),
    # HTTP
    bad(
        "put-on-detect",
        lambda: raw("/detect", PNG) | {"method": "PUT"},
        405,
        "method-not-allowed",
        "PUT",
        "POST",
        allow="OPTIONS, POST",
    ),
    bad(
        "get-on-detect",
        lambda: {"method": "GET", "url": "/detect"},
        405,
        "method-not-allowed",
        "GET",
        allow="OPTIONS, POST",
    ),
    bad(
        "delete-on-models",
        lambda: {"method": "DELETE", "url": "/models"},
        405,
        "method-not-allowed",
        "DELETE",
        allow="OPTIONS, GET, POST",
    ),
    bad(
        "unknown-route",
        lambda: raw("/predictions", PNG),
        404,
        "not-found",
        "/predictions",
        "/detect",
    ),
]


# --- servers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory, gcs: Any) -> Iterator[Server]:
    """The tight-limits server; it reads Cloud Storage bucket ``inputs``, which holds the bad
    objects its cases name (the session's GCS API server)."""
    bucket = gcs.bucket("inputs")
    bucket.blob("bad/big.png").upload_from_string(b"\x89PNG" + b"\0" * (MB + MB // 2 - 4))
    bucket.blob("bad/corrupt.png").upload_from_string(PNG[:8] + b"\0garbage" * 20)
    bucket.blob("bad/600k.png").upload_from_string(b"\x89PNG" + b"\0" * (600_000 - 4))
    bucket.blob("bad/not-a-video.mp4").upload_from_string(PNG)
    bucket.blob("bad/huge.mp4").upload_from_string(b"\0" * (2 * MB + 1))
    env = TIGHT | {"SERVE_ALLOWED_BUCKETS": "inputs", "SERVE_MAX_OBJECT_BYTES": str(2 * MB)}
    with serving(tmp_path_factory.mktemp("bad-input"), env) as srv:
        yield srv


@pytest.fixture(scope="module")
def clients(server: Server, tight: Server) -> Iterator[dict[bool, httpx.Client]]:
    with (
        httpx.Client(base_url=server.url, timeout=60) as default,
        httpx.Client(base_url=tight.url, timeout=60) as small,
    ):
        yield {False: default, True: small}


@pytest.fixture(scope="module")
def servers(server: Server, tight: Server) -> dict[bool, Server]:
    return {False: server, True: tight}


def check_problem(r: httpx.Response, case: Bad) -> dict:
    assert r.status_code == case.status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["status"] == case.status and body["code"] == case.code, body
    assert body["type"] == f"urn:vertex-yolo:problem:{case.code}"
    assert body["title"] and body["request_id"] == r.headers["x-request-id"]
    for needle in case.needles:
        assert needle in body["detail"], (needle, body["detail"])
    if case.field is not None:
        assert body.get("field") == case.field, body
    if case.allow is not None:
        assert set(r.headers["allow"].split(", ")) == set(case.allow.split(", ")), r.headers
    assert "Traceback" not in r.text and 'File "' not in r.text
    return body


# --- tests -----------------------------------------------------------------------------------


def test_corpus_is_complete():
    kinds = [p.values[0] for p in CORPUS]
    assert len({k.id for k in kinds}) == len(kinds) >= 40
    assert {k.status for k in kinds} == {400, 404, 405, 413, 415}


def test_readme_counts_the_corpus():
    assert f"a corpus of {len(CORPUS)} kinds of bad input" in " ".join(README.read_text().split())


def logged_since(srv: Server, mark: int) -> str:
    with srv.log.open("rb") as fh:
        fh.seek(mark)
        return fh.read().decode(errors="replace")


@pytest.mark.parametrize("case", CORPUS)
def test_bad_input(servers, clients, case: Bad):
    """The case's problem; and its server stays healthy and logged no traceback for it (an
    error handled by accident, say a 500 turned into a 4xx, would show there)."""
    srv = servers[case.tight]
    mark = srv.log.stat().st_size
    check_problem(clients[case.tight].request(**case.request()), case)
    assert clients[case.tight].get("/health").status_code == 200
    logged = logged_since(srv, mark)
    assert "Traceback" not in logged and "unhandled error" not in logged, logged[-3000:]


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    response = http.client.HTTPResponse(sock, method="POST")
    response.begin()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


@pytest.mark.parametrize(
    ("path", "ctype"),
    [
        ("/detect", "image/png"),
        ("/detect", "application/json"),
        ("/detect", "multipart/form-data; boundary=b0undary"),
        ("/stream", "video/mp4"),
    ],
)
def test_body_over_limit_is_refused_before_it_is_read(server, path, ctype):
    """Content-Length says 11 MiB, 16 bytes are sent: 413 at once, the rest never asked for (a
    server that waited for the rest would never answer)."""
    url = urlsplit(server.url)
    with socket.create_connection((url.hostname, url.port), timeout=PATIENCE_S) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {11 * MB}\r\n\r\n".encode()
            + b"0123456789abcdef"
        )
        status, headers, body = read_response(sock)
    assert status == 413
    assert headers["content-type"].startswith("application/problem+json")
    assert b'"code":"payload-too-large"' in body and b"10485760 bytes" in body


def test_chunked_body_over_limit_is_refused_as_it_arrives(server):
    """A chunked body has no length: it is counted as it arrives and refused once past the
    limit, before it ends."""
    url = urlsplit(server.url)
    chunk = b"\0" * MB
    sent = 0
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(
            f"POST /detect HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: image/png\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        while sent < 20 * MB:
            if select.select([sock], [], [], 0.2)[0]:
                break  # the answer came before the body ended
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            sent += len(chunk)
        else:
            pytest.fail("no answer after 20 MiB of a chunked body")
        status, _, body = read_response(sock)
    assert status == 413 and b'"code":"payload-too-large"' in body
    assert 10 * MB < sent <= 14 * MB


def test_the_servers_still_detect_after_every_kind_of_bad_input(servers, clients):
    """All the corpus sent again, back to back, then a real detection on each server."""
    for case in (p.values[0] for p in CORPUS):
        assert clients[case.tight].request(**case.request()).status_code == case.status, case.id
    for small, c in clients.items():
        image = encode(RGB[:120]) if small else PNG  # under the tight server's pixel limit
        r = c.post("/detect", content=image, headers={"Content-Type": "image/png"})
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["detections"]


def test_the_client_scales_a_photo_to_the_servers_pixel_limit(tight, tmp_path, capsys):
    """The server's own pixel limit, end to end: a 4000x2500 photo (10 MP, over the client's
    probe size) to the tight server (20,000 pixels): the library asks ``/models`` for the limit
    once, sends the photo scaled to fit, says so once on stderr and answers in the photo's
    pixels; with ``max_side=0`` it sends the original and the server refuses it (413)."""
    from client import Client
    from client.errors import VertexYoloError

    rgb = cv2.resize(scenes(1, sizes=((400, 250),))[0][0], (4000, 2500), cv2.INTER_NEAREST)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 30])[1])
    assert photo.stat().st_size < MB  # under the body limit: the pixels are what is refused
    with Client.from_url(tight.url, retries=0) as client:
        answer = client.detect(photo)
        assert client.server_limits == (20_000, MB)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"{photo}: 4000x2500 sent as ")
    sent_w, sent_h = map(int, line.rsplit(" ", 1)[1].split("x"))
    assert sent_w * sent_h <= 20_000 and abs(sent_w / sent_h - 1.6) < 0.05
    (result,) = answer.results
    assert (result.width, result.height) == (4000, 2500)
    for d in result.detections:  # in the photo's pixels, not the sent image's
        assert 0 <= d.box.x1 < d.box.x2 <= 4000 and 0 <= d.box.y1 < d.box.y2 <= 2500
    assert result.detections and max(d.box.x2 for d in result.detections) > sent_w
    with (
        Client.from_url(tight.url, retries=0, max_side=0) as client,
        pytest.raises(VertexYoloError, match="limit is 20000 pixels"),
    ):
        client.detect(photo)
    assert "sent as" not in capsys.readouterr().err
