"""Reading requests into images and parameters, with every limit checked before any work.

Three request shapes reach the inference routes:

* a raw body with an image content type (or ``application/octet-stream``), parameters in the
  query string;
* ``multipart/form-data`` with one or more image files, parameters as form fields;
* JSON in the Vertex shape ``{"instances": [{"image": "<base64>"}], "parameters": {...}}``.

Query-string parameters apply to all three; body parameters win over them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import math
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, get_args

import cv2
import msgspec
import numpy as np
from litestar import Request
from litestar.datastructures import UploadFile
from litestar.exceptions import ClientException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import (
    BadRequest,
    InvalidImage,
    InvalidParameter,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from client.schema import B64, Parameters, Tracker, decode_predict_request

P = TypeVar("P", bound=msgspec.Struct)
T = TypeVar("T")

IMAGE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "BMP": "image/bmp"}
RAW_IMAGE_TYPES = frozenset(
    {"image/jpeg", "image/jpg", "image/png", "image/webp", "image/bmp", "image/x-ms-bmp"}
)
OCTET_STREAM = "application/octet-stream"
LIST_PARAMETERS = frozenset({"classes"})
ALLOWED_VALUES = {
    "format": "jpeg, png",
    "rle": "true, false",
    "track": ", ".join(get_args(Tracker)),
}
ORIENTATION_TAG = 0x0112
JSON_SHAPE = '{"instances": [{"image": "<base64>"}], "parameters": {...}}'


def _unpatched_pil_open():
    """Pillow's own ``Image.open``.

    Importing Ultralytics replaces ``PIL.Image.open`` with a wrapper that, on an unidentified
    file, tries to pip-install a HEIF plugin. Request bytes must never trigger that.
    """
    fn = Image.open
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    if module is not None and module.__name__.startswith("ultralytics"):
        return module._image_open
    return fn


_pil_open = _unpatched_pil_open()


@dataclass
class Inputs:
    """What a request carried: encoded images (in order) and raw parameter values."""

    blobs: list[bytes]
    params: dict[str, Any]


@dataclass
class DecodedImage:
    """A decoded image as Ultralytics wants it: BGR, HxWx3 uint8.

    ``width`` and ``height`` are the image's own (EXIF-oriented) size. A JPEG decoded in draft
    mode has a smaller ``bgr``; results on it are scaled back to ``width`` x ``height``.
    """

    bgr: np.ndarray
    width: int
    height: int

    @property
    def reduced(self) -> bool:
        return self.bgr.shape[:2] != (self.height, self.width)


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


def b64decode(value: str | B64, where: str) -> bytes:
    """Base64 (or a data URL, or Vertex's ``{"b64": ...}``) to bytes; ``where`` names it in errors."""
    text = value.b64 if isinstance(value, B64) else value
    if text.startswith("data:") and "," in text:  # tolerate data URLs
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImage(f"{where} is not valid base64: {exc}") from None


async def decode_json_body(request: Request, decode: Callable[[bytes], T], shape: str) -> T:
    """Decode a JSON body with a msgspec decoder; a bad one is a 400 that shows ``shape``."""
    try:
        return decode(await request.body())
    except msgspec.ValidationError as exc:
        raise BadRequest(f"JSON body does not match {shape}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


async def read_multipart(
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


async def read_inputs(request: Request, max_images: int) -> Inputs:
    """Split a request into encoded images and parameters (no decoding yet)."""
    media_type = request.content_type[0].lower()
    params = collect_params(request.query_params.multi_items())
    blobs: list[bytes] = []
    if media_type == "application/json":
        body = await decode_json_body(request, decode_predict_request, JSON_SHAPE)
        if len(body.instances) > max_images:
            raise PayloadTooLarge(
                f"{len(body.instances)} images in one request; at most {max_images}"
            )
        blobs = [
            b64decode(inst.image, f"instances[{i}].image") for i, inst in enumerate(body.instances)
        ]
        for key, value in (body.parameters or {}).items():
            params[key] = value
    elif media_type == "multipart/form-data":
        blobs = await read_multipart(request, params, max_images, "images")
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
    if not blobs or not any(blobs):
        raise InvalidImage("the request holds no image")
    return Inputs(blobs, params)


def parse_parameters(
    raw: dict[str, Any], aliases: dict[str, str] | None = None, kind: type[P] = Parameters
) -> P:
    """Validate parameters; a bad one is a 400 that names the field (as the request spelled
    it) and its allowed range. Unknown parameters are refused, wherever they came from."""
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


def open_image(blob: bytes, label: str, max_pixels: int) -> Image.Image:
    """Open an image's header (no pixel decoding yet) and check its format and pixel count."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit rules
        try:
            image = _pil_open(io.BytesIO(blob))
        except Image.DecompressionBombError as exc:
            raise PayloadTooLarge(f"{label} has too many pixels: {exc}") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            raise InvalidImage(
                f"{label} is not a decodable image (JPEG, PNG, WebP or BMP expected)"
            ) from None
    if image.format not in IMAGE_FORMATS:
        raise UnsupportedMediaType(
            f"{label} is {image.format}; supported formats: {', '.join(IMAGE_FORMATS)}",
            allowed=list(IMAGE_FORMATS.values()),
        )
    w, h = image.size
    if w * h > max_pixels:
        raise PayloadTooLarge(
            f"{label} is {w}x{h} = {w * h} pixels; the limit is {max_pixels} pixels"
        )
    return image


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """Width and height after the EXIF orientation is applied, without decoding."""
    w, h = image.size
    raw = image.info.get("exif")  # read with the header; ``getexif()`` may decode PNG pixels
    orientation = None
    if raw:
        exif = Image.Exif()
        with contextlib.suppress(Exception):  # a broken EXIF block orients nothing
            exif.load(raw)
            orientation = exif.get(ORIENTATION_TAG)
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def draft_size(size: tuple[int, int], imgsz: int) -> tuple[int, int]:
    """The smallest decoded size that loses nothing to the model's letterbox resize to ``imgsz``
    (the longer side scaled to ``imgsz``, the aspect ratio kept)."""
    w, h = size
    scale = imgsz / max(w, h)
    return max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale))


def to_bgr(image: Image.Image, label: str, draft_to: int | None = None) -> DecodedImage:
    """Decode an opened image, apply its EXIF orientation, and convert it to BGR.

    ``draft_to``: the model's input size. A JPEG at least twice that size per side is decoded
    by libjpeg at 1/2, 1/4 or 1/8 scale (Pillow's draft mode), never below what the letterbox
    resize to ``draft_to`` keeps; the result still reports the full size. Pixels are copied
    once out of Pillow and once by the colour conversion, nothing more.
    """
    full_size = oriented_size(image)  # a JPEG's EXIF block is in its header
    stored_size = image.size
    if draft_to is not None and image.format == "JPEG":
        image.draft("RGB", draft_size(stored_size, draft_to))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image.load()
            drafted = image.size != stored_size
            if image.getexif().get(ORIENTATION_TAG, 1) != 1:
                image = ImageOps.exif_transpose(image)
            if image.mode != "RGB":
                image = image.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise InvalidImage(f"{label} is corrupt or truncated: {exc}") from None
    bgr = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)
    width, height = full_size if drafted else image.size
    return DecodedImage(bgr, width, height)


def image_label(index: int, count: int, noun: str = "image") -> str:
    return f"{noun} {index}" if count > 1 else f"the {noun}"


def decode_images(
    blobs: list[bytes], max_pixels: int, draft_to: int | None = None
) -> list[DecodedImage]:
    """Decode every image, after checking every header against the limits first.

    ``draft_to``: see :func:`to_bgr`; None decodes every image at full size.
    """
    labels = [image_label(i, len(blobs)) for i in range(len(blobs))]
    opened = [
        open_image(blob, label, max_pixels) for blob, label in zip(blobs, labels, strict=True)
    ]
    return [to_bgr(image, label, draft_to) for image, label in zip(opened, labels, strict=True)]
