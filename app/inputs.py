"""Reading request bodies into encoded inputs and raw parameters (nothing is decoded here).

Image routes take three request shapes:

* a raw body with an image content type (or ``application/octet-stream``), parameters in the
  query string;
* ``multipart/form-data`` with one or more image files, parameters as form fields;
* JSON in the Vertex shape ``{"instances": [{"image": "<base64>"}], "parameters": {...}}``; an
  image may also be ``{"b64": "..."}`` or a Cloud Storage object ``{"gcsUri": "gs://..."}``.

``/stream`` takes a video as the raw body, multipart image frames, or JSON
``{"frames": ["<base64>", ...], "parameters": {...}}`` (frames in the same forms as images) or
``{"video": {"gcsUri": "gs://..."}}``. URIs are checked here (:func:`app.storage.check_uri`:
the scheme and the bucket) and read by :func:`fetch` once the request is admitted.
Query-string parameters apply to every shape; body parameters win over them. :func:`parse_parameters` then validates them against the
route's own Struct: a parameter the route does not take is refused, wherever it came from.
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_args

import anyio
import msgspec
from litestar import Request
from litestar.datastructures import UploadFile
from litestar.exceptions import ClientException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge

from app import storage
from app.config import Settings
from app.errors import (
    BadRequest,
    InvalidImage,
    InvalidParameter,
    InvalidVideo,
    PayloadTooLarge,
    ServingError,
    UnsupportedMediaType,
)
from client.schema import (
    OCTET_STREAM,
    Binary,
    ModelParameters,
    Tracker,
    decode_frames_request,
    decode_predict_request,
)

P = TypeVar("P", bound=ModelParameters)
T = TypeVar("T")

RAW_IMAGE_TYPES = frozenset(
    {"image/jpeg", "image/jpg", "image/png", "image/webp", "image/bmp", "image/x-ms-bmp"}
)
VIDEO_TYPES = frozenset(
    {
        "video/mp4",
        "video/quicktime",
        "video/webm",
        "video/x-matroska",
        "video/x-msvideo",
        "video/avi",
        "video/msvideo",
        "image/gif",
        OCTET_STREAM,
    }
)
IMAGES_SHAPE = (
    '{"instances": [{"image": "<base64>" | {"b64": "<base64>"} | {"gcsUri": "gs://..."}}], '
    '"parameters": {...}}'
)
FRAMES_SHAPE = (
    '{"frames": ["<base64>" | {"b64": ...} | {"gcsUri": ...}, ...]} or '
    '{"video": {"gcsUri": "gs://..."}}, and "parameters": {...}'
)
LIST_PARAMETERS = frozenset({"classes"})
ALLOWED_VALUES = {
    "format": "jpeg, png",
    "rle": "true, false",
    "track": ", ".join(get_args(Tracker)),
}


@dataclass
class Inputs:
    """What a request carried: encoded images (or a stream's frames) in order, or one video,
    and the raw parameter values from every source.

    ``refs``: position in ``blobs`` -> the ``gs://`` object to read there (its blob is empty
    until :func:`fetch`); ``video_uri``: a video to read; :func:`fetch` writes it to
    ``video_path``, a temporary file whoever opens it owns.
    """

    blobs: list[bytes]
    params: dict[str, Any]
    video: bytes | None = None
    refs: dict[int, str] = field(default_factory=dict)
    video_uri: str | None = None
    video_path: Path | None = None


def collect_params(items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Multi-valued query/form items to a dict; ``classes`` may repeat or be comma-separated."""
    params: dict[str, Any] = {}
    for key, value in items:
        if key in LIST_PARAMETERS:
            parts = [p.strip() for p in str(value).split(",") if p.strip()]
            params.setdefault(key, []).extend(parts)
        else:
            params[key] = value
    return params


def content(value: str | Binary, where: str, allowed: frozenset[str]) -> bytes | str:
    """A JSON binary value: its bytes, or the ``gs://`` URI to read (checked against the
    allowed buckets here, read later)."""
    if isinstance(value, Binary):
        if (value.b64 is None) == (value.gcs_uri is None):
            raise BadRequest(f'{where} must hold one of "b64" and "gcsUri"', field=where)
        if value.gcs_uri is not None:
            storage.check_uri(value.gcs_uri, allowed, where)
            return value.gcs_uri
    return b64decode(value, where)


def b64decode(value: str | Binary, where: str) -> bytes:
    """Base64 (or a data URL, or Vertex's ``{"b64": ...}``) to bytes; ``where`` names it in errors."""
    text = value.b64 if isinstance(value, Binary) else value
    assert text is not None
    if text.startswith("data:") and "," in text:  # tolerate data URLs
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImage(f"{where} is not valid base64: {exc}") from None


async def _json_body(request: Request, decode: Callable[[bytes], T], shape: str) -> T:
    """Decode a JSON body with a msgspec decoder; a bad one is a 400 that shows ``shape``."""
    try:
        return decode(await request.body())
    except msgspec.ValidationError as exc:
        raise BadRequest(f"JSON body does not match {shape}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


async def _multipart(
    request: Request, params: dict[str, Any], limit: int, noun: str
) -> list[bytes]:
    """The files of a multipart body, in order (at most ``limit``); its fields go to ``params``,
    where they win over the query string."""
    try:
        form = await request.form()
    except RequestEntityTooLarge:
        raise
    except ClientException as exc:
        if exc.detail == "Request Entity Too Large":  # Litestar's words for its part limit
            raise PayloadTooLarge(
                f"the multipart body has more than {request.app.multipart_form_part_limit} parts"
            ) from None
        raise BadRequest(
            f"the multipart/form-data body cannot be read ({exc.detail}): check its boundary "
            "and that it is complete"
        ) from None
    blobs: list[bytes] = []
    fields: list[tuple[str, Any]] = []
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if len(blobs) >= limit:
                raise PayloadTooLarge(f"more than {limit} {noun} in one request")
            blobs.append(await value.read())
        else:
            fields.append((key, value))
    for key in {k for k, _ in fields}:
        params.pop(key, None)
    params.update(collect_params(fields))
    return blobs


def _media_type(request: Request) -> str:
    return request.content_type[0].lower()


def _contents(values: list[Any], where: str, allowed: frozenset[str]) -> Inputs:
    """JSON binary values as blobs, with the URIs to read in ``refs``."""
    inputs = Inputs([], {})
    for i, value in enumerate(values):
        got = content(value, where.format(i), allowed)
        if isinstance(got, str):
            inputs.refs[i] = got
            got = b""
        inputs.blobs.append(got)
    return inputs


async def read_images(request: Request, settings: Settings) -> Inputs:
    """An image route's request: encoded images (at most ``SERVE_MAX_IMAGES``) and parameters."""
    max_images = settings.max_images
    media_type = _media_type(request)
    params = collect_params(request.query_params.multi_items())
    refs: dict[int, str] = {}
    if media_type == "application/json":
        body = await _json_body(request, decode_predict_request, IMAGES_SHAPE)
        if len(body.instances) > max_images:
            raise PayloadTooLarge(
                f"{len(body.instances)} images in one request; at most {max_images}"
            )
        parsed = _contents(
            [inst.image for inst in body.instances], "instances[{}].image", settings.allowed_buckets
        )
        blobs, refs = parsed.blobs, parsed.refs
        params.update(body.parameters or {})
    elif media_type == "multipart/form-data":
        blobs = await _multipart(request, params, max_images, "images")
    elif media_type in RAW_IMAGE_TYPES or media_type == OCTET_STREAM:
        blobs = [await request.body()]
    else:
        raise UnsupportedMediaType(
            f"Content-Type {media_type or '(none)'!r} is not accepted: send an image "
            f"({', '.join(sorted(RAW_IMAGE_TYPES))}, {OCTET_STREAM}), multipart/form-data "
            "or application/json",
            allowed=sorted(
                RAW_IMAGE_TYPES | {OCTET_STREAM, "multipart/form-data", "application/json"}
            ),
        )
    if not blobs or not (refs or any(blobs)):
        raise InvalidImage("the request holds no image")
    return Inputs(blobs, params, refs=refs)


async def read_stream(request: Request, settings: Settings) -> Inputs:
    """A ``/stream`` request: one video, or image frames in order (at most
    ``SERVE_STREAM_MAX_FRAMES``), and parameters."""
    max_frames = settings.stream_max_frames
    media_type = _media_type(request)
    params = collect_params(request.query_params.multi_items())
    refs: dict[int, str] = {}
    if media_type == "application/json":
        body = await _json_body(request, decode_frames_request, FRAMES_SHAPE)
        params.update(body.parameters or {})
        if body.video is not None:
            if body.frames:
                raise BadRequest('give "video" or "frames", not both')
            video = content(body.video, "video", settings.allowed_buckets)
            if not isinstance(video, str):
                raise BadRequest('"video" takes {"gcsUri": "gs://..."}: send video bytes raw')
            return Inputs([], params, video_uri=video)
        if len(body.frames) > max_frames:
            raise PayloadTooLarge(f"{len(body.frames)} frames in one request; at most {max_frames}")
        parsed = _contents(body.frames, "frames[{}]", settings.allowed_buckets)
        frames, refs = parsed.blobs, parsed.refs
    elif media_type == "multipart/form-data":
        frames = await _multipart(request, params, max_frames, "frames")
    elif media_type in VIDEO_TYPES:
        video = await request.body()
        if not video:
            raise InvalidVideo("the request body is empty: send a video")
        return Inputs([], params, video)
    else:
        hint = (
            " (send several images as multipart/form-data frames)"
            if media_type in RAW_IMAGE_TYPES
            else ""
        )
        raise UnsupportedMediaType(
            f"Content-Type {media_type or '(none)'!r} is not accepted by /stream{hint}: send a "
            f"video ({', '.join(sorted(VIDEO_TYPES))}), multipart/form-data image frames, or "
            f"JSON {FRAMES_SHAPE}",
            allowed=sorted(VIDEO_TYPES | {"multipart/form-data", "application/json"}),
        )
    if not frames or not (refs or any(frames)):
        raise InvalidImage("the request holds no frame")
    return Inputs(frames, params, refs=refs)


_readers: anyio.CapacityLimiter | None = None


async def fetch(inputs: Inputs, settings: Settings) -> None:
    """Read the request's ``gs://`` objects, in worker threads of their own
    (:data:`app.storage.READERS` at a time): a video into a temporary file (at most
    ``SERVE_MAX_OBJECT_BYTES``), images into memory (together at most ``SERVE_MAX_BODY_BYTES``,
    their sizes checked from metadata before any byte is read). A failure stops the others."""
    global _readers
    if _readers is None:
        _readers = anyio.CapacityLimiter(storage.READERS)
    readers, allowed = _readers, settings.allowed_buckets
    if inputs.video_uri is not None:
        fd, name = tempfile.mkstemp(prefix="vertex-yolo-gcs-", dir=settings.tmp_dir)
        os.close(fd)
        inputs.video_path = Path(name)  # the handler removes it, whatever happens next
        await anyio.to_thread.run_sync(
            storage.read_file,
            inputs.video_uri,
            allowed,
            settings.max_object_bytes,
            inputs.video_path,
            limiter=readers,
        )
    if not inputs.refs:
        return
    limit = settings.max_body_bytes
    blobs: dict[int, Any] = {}

    async def stat(position: int, uri: str) -> None:
        where = f"image {position}"
        blobs[position] = await anyio.to_thread.run_sync(
            storage.stat, uri, allowed, where, limit, "an image", limiter=readers
        )

    async def read(position: int, uri: str) -> None:
        inputs.blobs[position] = await anyio.to_thread.run_sync(
            storage.read_bytes, uri, blobs[position], limit, limiter=readers
        )

    for step in (stat, read):
        try:
            async with anyio.create_task_group() as group:
                for position, uri in inputs.refs.items():
                    group.start_soon(step, position, uri)
        except* ServingError as failed:  # the first one, as the request's answer
            raise failed.exceptions[0] from None
        if step is stat and (total := sum(b.size or 0 for b in blobs.values())) > limit:
            raise PayloadTooLarge(
                f"the request's {len(blobs)} gs:// images are {total} bytes together; at most "
                f"{limit} (SERVE_MAX_BODY_BYTES, as for bytes sent in the body)"
            )


def parse_parameters(
    raw: dict[str, Any], kind: type[P], aliases: Mapping[str, str] | None = None
) -> P:
    """Validate a route's parameters; a bad one is a 400 that names the field (as the request
    spelled it) and its allowed range. Unknown parameters are refused, wherever they came from."""
    aliases = aliases or {}
    spelled = {aliases[k]: k for k in raw if k in aliases}
    raw = {aliases.get(k, k): v for k, v in raw.items()}
    if isinstance(raw.get("classes"), str | int):  # JSON may give "circle,square" or 2
        raw = {**raw, "classes": [c.strip() for c in str(raw["classes"]).split(",") if c.strip()]}
    try:
        params = msgspec.convert(raw, kind, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        field = (
            message.rsplit("`$.", 1)[1].split("`")[0].split("[")[0] if "`$." in message else None
        )
        if field in spelled:
            message = message.replace(f"`$.{field}", f"`$.{spelled[field]}")
            field = spelled[field]
        if field in ALLOWED_VALUES:
            message += f"; allowed: {ALLOWED_VALUES[field]}"
        if "unknown field" in message:
            field = message.split("`")[1]
            known = [*kind.__struct_fields__, *aliases]
            message += f"; known parameters: {', '.join(known)}"
        raise InvalidParameter(f"invalid parameter: {message}", field=field) from None
    if getattr(params, "classes", None) == []:
        raise InvalidParameter(
            "invalid parameter: classes is empty; name at least one class (names or ids), or "
            "leave it out for every class",
            field="classes",
        )
    return params
