"""User inputs to request bodies: images (path, bytes, PIL image, numpy array) and videos.

Conventions:

* **numpy arrays are BGR** by default (what OpenCV's ``imread``/``VideoCapture`` and
  Ultralytics hand you), ``HxW`` grey, ``HxWx3`` BGR or ``HxWx4`` BGRA, ``uint8``; pass
  ``channels="rgb"`` for arrays from PIL/imageio/matplotlib.
* Arrays and PIL images are encoded as JPEG (quality 95) by default: small bodies (Vertex
  caps a request at 10 MB) and fast to encode. ``image_format="png"`` is lossless.
* Paths and bytes are sent as they are; their content type is sniffed from the first bytes.
* A ``gs://bucket/object`` string is not read here: it is sent as ``{"gcsUri": ...}`` in a JSON
  body and the server reads the object (from the buckets it allows, ``SERVE_ALLOWED_BUCKETS``);
  a request holding one sends its other images in the same JSON body, base64-encoded.
* One image goes as the raw body; several go as ``multipart/form-data`` (the server accepts
  both, with parameters in the query string).

numpy, Pillow and OpenCV are optional: imported only when such an input is given.
"""

from __future__ import annotations

import contextlib
import io
import mimetypes
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast

from urllib3 import encode_multipart_formdata

from client.errors import ParameterError
from client.schema import OCTET_STREAM, sniff

if TYPE_CHECKING:
    import numpy
    import PIL.Image

ImageFormat = Literal["jpeg", "png"]
Channels = Literal["bgr", "rgb"]

#: One image: a path, encoded bytes, a PIL image, or a numpy array (BGR unless ``channels="rgb"``).
ImageInput: TypeAlias = (
    "str | os.PathLike[str] | bytes | bytearray | memoryview | PIL.Image.Image | numpy.ndarray"
)
#: One image, or several (sent as one multipart request, one result each, in order).
Images: TypeAlias = "ImageInput | Sequence[ImageInput]"
#: A video: a path or its encoded bytes (MP4, WebM, Matroska, AVI, animated GIF).
VideoInput: TypeAlias = "str | os.PathLike[str] | bytes | bytearray | memoryview"
#: What ``/stream`` runs: a video, or a run of frames (images, in order).
StreamSource: TypeAlias = "VideoInput | Sequence[ImageInput]"


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 pointed at /dev/null for the duration: FFmpeg's and OpenCV's own
    warnings (``moov atom not found``, ``[ WARN:0] global cap.cpp``), written by C code past
    ``sys.stderr``, stay off the terminal while a video is opened; our error says it in one line.
    (Anything another thread writes to stderr in that moment is lost too: keep it short.)"""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2: nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def read_path(value: str | os.PathLike) -> tuple[bytes, str]:
    """A file's bytes and media type (sniffed, then guessed from the name)."""
    path = Path(value)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ParameterError(f"cannot read {path}: {exc.strerror or exc}") from None
    media_type = sniff(data)
    if media_type == OCTET_STREAM:
        media_type = mimetypes.guess_type(path.name)[0] or OCTET_STREAM
    return data, media_type


def _encode_array(array: Any, image_format: ImageFormat, channels: Channels) -> bytes:
    import numpy as np

    if array.dtype != np.uint8:
        raise ParameterError(f"numpy images must be uint8, not {array.dtype}")
    if array.size == 0:
        raise ParameterError(f"the numpy image is empty (shape {array.shape})")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ParameterError(f"numpy images must be HxW, HxWx3 or HxWx4, not {array.shape}")
    try:
        import cv2
    except ImportError:  # Pillow below
        cv2 = None  # type: ignore[assignment]
    if cv2 is not None:  # OpenCV encodes BGR natively and fast
        if channels == "rgb" and array.ndim == 3:
            array = array[:, :, [2, 1, 0, 3][: array.shape[2]]]
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if image_format == "jpeg" else []
        if image_format == "jpeg" and array.ndim == 3 and array.shape[2] == 4:
            array = array[:, :, :3]  # JPEG has no alpha
        ok, buf = cv2.imencode(".jpg" if image_format == "jpeg" else ".png", array, params)
        if not ok:
            raise ParameterError(f"OpenCV could not encode an image of shape {array.shape}")
        return buf.tobytes()
    from PIL import Image

    if channels == "bgr" and array.ndim == 3:
        array = array[:, :, [2, 1, 0, 3][: array.shape[2]]]
    return _encode_pil(Image.fromarray(np.ascontiguousarray(array)), image_format)


def _encode_pil(image: Any, image_format: ImageFormat) -> bytes:
    buf = io.BytesIO()
    if image_format == "jpeg":
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        image.save(buf, format="JPEG", quality=95)
    else:
        image.save(buf, format="PNG")
    return buf.getvalue()


def encode_image(
    image: ImageInput, *, image_format: ImageFormat = "jpeg", channels: Channels = "bgr"
) -> tuple[bytes, str]:
    """One image input to ``(bytes, media type)``.

    Accepts a path (``str``/``PathLike``), ``bytes``/``bytearray``/``memoryview`` (an encoded
    image), a ``PIL.Image.Image`` or a numpy array (see the module docstring).
    """
    if isinstance(image, bytes | bytearray | memoryview):
        data = bytes(image)
        if not data:
            raise ParameterError("the image is empty (0 bytes)")
        return data, sniff(data)
    if isinstance(image, str | os.PathLike):
        data, media_type = read_path(image)
        if not data:
            raise ParameterError(f"the image file {image} is empty (0 bytes)")
        return data, media_type
    media_type = "image/jpeg" if image_format == "jpeg" else "image/png"
    kind = type(image)
    if kind.__module__.startswith("PIL.") and hasattr(image, "save"):
        return _encode_pil(image, image_format), media_type
    if hasattr(image, "__array_interface__") and hasattr(image, "dtype"):
        return _encode_array(image, image_format, channels), media_type
    raise ParameterError(
        f"cannot send a {kind.__qualname__} as an image: pass a path, bytes, a PIL image or "
        "a numpy array"
    )


def is_uri(value: object) -> bool:
    """Whether ``value`` is a Cloud Storage URI the server is to read."""
    return isinstance(value, str) and value.startswith("gs://")


def _json_values(
    items: Sequence[ImageInput], image_format: ImageFormat, channels: Channels
) -> list[Any]:
    """Images as JSON binary values: ``{"gcsUri": ...}`` for URIs, ``{"b64": ...}`` else."""
    import base64

    out: list[Any] = []
    for item in items:
        if is_uri(item):
            out.append({"gcsUri": item})
        else:
            data, _ = encode_image(item, image_format=image_format, channels=channels)
            out.append({"b64": base64.b64encode(data).decode()})
    return out


def _json(value: Any) -> tuple[bytes, str]:
    import json

    return json.dumps(value).encode(), "application/json"


def is_many(images: object) -> bool:
    """Whether ``images`` is a list/tuple of images rather than one image."""
    return isinstance(images, Sequence) and not isinstance(
        images, str | bytes | bytearray | memoryview
    )


def images_body(
    images: Images, *, image_format: ImageFormat = "jpeg", channels: Channels = "bgr"
) -> tuple[bytes, str]:
    """``(body, content type)``: the raw image for one, multipart for several; JSON instances
    when one is a ``gs://`` URI."""
    items = list(cast("Sequence[ImageInput]", images)) if is_many(images) else [images]
    if any(is_uri(item) for item in items):
        instances = _json_values(cast("list[ImageInput]", items), image_format, channels)
        return _json({"instances": [{"image": value} for value in instances]})
    if not is_many(images):
        return encode_image(
            cast("ImageInput", images), image_format=image_format, channels=channels
        )
    return multipart(
        cast("Sequence[ImageInput]", images), image_format=image_format, channels=channels
    )


def multipart(
    images: Sequence[ImageInput], *, image_format: ImageFormat = "jpeg", channels: Channels = "bgr"
) -> tuple[bytes, str]:
    """Several images as ``multipart/form-data`` (field ``image``, in order)."""
    if not images:
        raise ParameterError("no images given (an empty list)")
    fields = []
    for i, image in enumerate(images):
        data, media_type = encode_image(image, image_format=image_format, channels=channels)
        name = (
            Path(image).name
            if isinstance(image, str | os.PathLike)
            else f"image-{i}{_suffix(media_type)}"
        )
        fields.append(("image", (name, data, media_type)))
    body, content_type = encode_multipart_formdata(fields)
    return body, content_type


def _suffix(media_type: str) -> str:
    return {"image/jpeg": ".jpg", "image/png": ".png"}.get(media_type, "")


def frames_body(
    frames: Sequence[ImageInput], *, image_format: ImageFormat = "jpeg", channels: Channels = "bgr"
) -> tuple[bytes, str]:
    """A run of frames for ``/stream``: multipart, or JSON ``{"frames": [...]}`` when one is a
    ``gs://`` URI."""
    if any(is_uri(frame) for frame in frames):
        return _json({"frames": _json_values(frames, image_format, channels)})
    return multipart(frames, image_format=image_format, channels=channels)


def video_body(source: VideoInput) -> tuple[bytes, str]:
    """A video (path or bytes) to ``(body, content type)``; a ``gs://`` URI to JSON
    ``{"video": {"gcsUri": ...}}`` (the server reads it: not bound by the 10 MB per request)."""
    if is_uri(source):
        return _json({"video": {"gcsUri": source}})
    if isinstance(source, str | os.PathLike):
        data, media_type = read_path(source)
    elif isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        media_type = sniff(data)
    else:
        raise ParameterError(
            f"cannot send a {type(source).__qualname__} as a video: pass a path or bytes, or a "
            "list of frames"
        )
    if not data:
        raise ParameterError("the video is empty (0 bytes)")
    return data, media_type
