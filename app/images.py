"""Pixel decoding: encoded image bytes to the BGR arrays Ultralytics takes, limits first.

Every header is opened and checked (format, pixel count) before any image is decoded, so a
decompression bomb or an unsupported format costs nothing. Pixels are then decoded exactly as
Ultralytics' ``predict(path)`` reads a file (``ultralytics.utils.patches.imread``):
``cv2.imdecode(bytes, cv2.IMREAD_COLOR)``, which applies the EXIF orientation (JPEG, PNG, WebP),
repeats a grey channel three times, drops an alpha channel without compositing and keeps a
16-bit image's high byte. So the same file gives the same answer as ``predict(path)``.

A colour or grey JPEG with no EXIF rotation is decoded by libjpeg-turbo through simplejpeg
instead (:func:`turbo_decode`): the same library and the same settings as OpenCV's (accurate
IDCT, smooth chroma upsampling), so the same pixels (``tests/test_exact.py`` compares them with
``imread``), 15 % faster at 1080p and a third faster at 4K (README "Benchmarks"). Anything else
(a rotated, CMYK or unusual JPEG, a file simplejpeg refuses) takes OpenCV's path.

Opt-in (``SERVE_JPEG_DRAFT``): a JPEG much larger than the model's input may be decoded reduced
(libjpeg's draft mode, through Pillow); results are scaled back to full size. That changes the
pixels the model sees, and so its answers (the README gives the measured cost).
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, NamedTuple, cast

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType

try:  # libjpeg-turbo for JPEGs (the server's dependencies include it; OpenCV decodes without)
    import simplejpeg
except ImportError:  # pragma: no cover
    simplejpeg = None

IMAGE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "BMP": "image/bmp"}
ORIENTATION_TAG = 0x0112


def _unpatched_pil_open() -> Callable[[IO[bytes]], Image.Image]:
    """Pillow's own ``Image.open``.

    Importing Ultralytics replaces ``PIL.Image.open`` with a wrapper that, on an unidentified
    file, tries to pip-install a HEIF plugin. Request bytes must never trigger that.
    """
    fn = Image.open
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    if module is not None and module.__name__.startswith("ultralytics"):
        return cast(Callable[[IO[bytes]], Image.Image], module._image_open)
    return fn


_pil_open = _unpatched_pil_open()


@dataclass
class DecodedImage:
    """A decoded image as Ultralytics wants it: BGR, HxWx3 uint8.

    ``width`` and ``height`` are the image's own (EXIF-oriented) size. A JPEG decoded in draft
    mode (opt-in) has a smaller ``bgr``; results on it are scaled back to ``width`` x
    ``height``.
    """

    bgr: np.ndarray
    width: int
    height: int

    @property
    def reduced(self) -> bool:
        return self.bgr.shape[:2] != (self.height, self.width)


def image_label(index: int, count: int, noun: str = "image") -> str:
    """How errors name one image of a request: ``the image``, or ``image 3`` of several."""
    return f"{noun} {index}" if count > 1 else f"the {noun}"


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


def exif_orientation(image: Image.Image) -> int | None:
    """The EXIF orientation tag read with the header (``getexif()`` may decode PNG pixels)."""
    raw = image.info.get("exif")
    if not raw:
        return None
    exif = Image.Exif()
    with contextlib.suppress(Exception):  # a broken EXIF block orients nothing
        exif.load(raw)
        value = exif.get(ORIENTATION_TAG)
        return int(value) if value is not None else None
    return None


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """Width and height after the EXIF orientation is applied, without decoding."""
    w, h = image.size
    return (h, w) if exif_orientation(image) in (5, 6, 7, 8) else (w, h)


def draft_size(size: tuple[int, int], imgsz: int) -> tuple[int, int]:
    """The smallest decoded size that loses nothing to the model's letterbox resize to ``imgsz``
    (the longer side scaled to ``imgsz``, the aspect ratio kept)."""
    w, h = size
    scale = imgsz / max(w, h)
    return max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale))


def imdecode(blob: bytes, label: str) -> np.ndarray:
    """Decode like Ultralytics' ``imread`` for JPEG, PNG, WebP and BMP: BGR, HxWx3 uint8."""
    try:
        bgr = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # a decoder's own check failed: the bytes are bad
        detail = getattr(exc, "err", None) or "OpenCV could not decode it"
        raise InvalidImage(f"{label} is corrupt or truncated: {detail}") from None
    if bgr is None:
        raise InvalidImage(f"{label} is corrupt or truncated: OpenCV could not decode it")
    if bgr.dtype == np.uint16:  # not with IMREAD_COLOR today; Ultralytics keeps the high byte
        bgr = (bgr >> 8).astype(np.uint8)
    return bgr


def turbo_decode(blob: bytes, image: Image.Image) -> np.ndarray | None:
    """A JPEG's BGR pixels through simplejpeg, or None where OpenCV's path must decode it: not
    a JPEG, not 8-bit YCbCr or grey, an EXIF orientation other than upright (OpenCV turns the
    pixels; its EXIF reader, not Pillow's, decides how), or bytes libjpeg-turbo warns about (a
    truncated file: OpenCV's own error then)."""
    if image.format != "JPEG" or image.mode not in ("RGB", "L") or simplejpeg is None:
        return None
    if image.info.get("exif") and exif_orientation(image) not in (None, 1):
        return None
    try:
        bgr = simplejpeg.decode_jpeg(
            blob, colorspace="BGR", fastdct=False, fastupsample=False, strict=True
        )
    except ValueError:
        return None
    return cast(np.ndarray, bgr)


def to_bgr(
    blob: bytes, image: Image.Image, label: str, draft_to: int | None = None
) -> DecodedImage:
    """Decode an image (``blob``, already opened as ``image`` by :func:`open_image`) to BGR,
    EXIF orientation applied, with exactly the pixels Ultralytics' ``predict(path)`` sees.

    ``draft_to`` (opt-in, ``SERVE_JPEG_DRAFT``): the model's input size. A JPEG at least twice
    that size per side is decoded by libjpeg at 1/2, 1/4 or 1/8 scale (Pillow's draft mode),
    never below what the letterbox resize to ``draft_to`` keeps; the result still reports the
    full size. Any other image is decoded exactly.
    """
    stored_size = image.size
    if draft_to is not None and image.format == "JPEG":
        full_size = oriented_size(image)  # a JPEG's EXIF block is in its header
        image.draft("RGB", draft_size(stored_size, draft_to))
        if image.size != stored_size:
            return _draft_decode(image, label, full_size)
    bgr = turbo_decode(blob, image)
    if bgr is None:
        bgr = imdecode(blob, label)
    height, width = bgr.shape[:2]
    return DecodedImage(bgr, width, height)


def _draft_decode(image: Image.Image, label: str, full_size: tuple[int, int]) -> DecodedImage:
    """Finish a JPEG's reduced (draft) decode through Pillow; the result keeps the full size."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image.load()
            if image.getexif().get(ORIENTATION_TAG, 1) != 1:
                image = ImageOps.exif_transpose(image)
            if image.mode != "RGB":
                image = image.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise InvalidImage(f"{label} is corrupt or truncated: {exc}") from None
    bgr = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)
    return DecodedImage(bgr, *full_size)


class Opened(NamedTuple):
    """An image whose header passed the limits: its bytes, Pillow's lazy image, its label."""

    blob: bytes
    image: Image.Image
    label: str

    @property
    def pixels(self) -> int:
        w, h = self.image.size
        return w * h


def open_images(blobs: list[bytes], max_pixels: int) -> list[Opened]:
    """Every image's header, checked against the limits (no pixel decoded: cheap)."""
    labels = [image_label(i, len(blobs)) for i in range(len(blobs))]
    return [
        Opened(blob, open_image(blob, label, max_pixels), label)
        for blob, label in zip(blobs, labels, strict=True)
    ]


def decode_opened(opened: list[Opened], draft_to: int | None = None) -> list[DecodedImage]:
    """Decode images opened by :func:`open_images` (``draft_to``: see :func:`to_bgr`)."""
    return [to_bgr(o.blob, o.image, o.label, draft_to) for o in opened]


def decode_images(
    blobs: list[bytes], max_pixels: int, draft_to: int | None = None
) -> list[DecodedImage]:
    """Decode every image, after checking every header against the limits first.

    ``draft_to``: see :func:`to_bgr`; None (the default) decodes every image exactly.
    """
    return decode_opened(open_images(blobs, max_pixels), draft_to)
