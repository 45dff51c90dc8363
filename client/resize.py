"""Photos larger than the endpoint takes: scaled down before upload, answers in original pixels.

An image is scaled down when it is over one of:

* the request body limit: 10 MB (a Vertex dedicated endpoint's, and the server's default
  ``SERVE_MAX_BODY_BYTES``; the server's own figure once known, from ``/models``),
* the server's pixel limit (``max_pixels`` of ``/models``, asked once per client and only when
  an image has more than :data:`PROBE_PIXELS`),
* the caller's ``max_side`` (the longer side, in pixels); ``max_side=0`` turns all of this off.

The scaling applies the EXIF orientation first, resamples with Lanczos and encodes JPEG q95
(each pass shrinking further while the bytes are still over). The answer's geometry (boxes,
mask polygons, keypoints, rotated boxes, the image size) is scaled back to the original
image's pixels; a mask's COCO RLE stays at the size it was made (``rle.size`` says which), and
an annotated image is the scaled one. One line per scaled image goes to stderr through the
``client.resize`` logger: ``photo.jpg: 6000x4500 sent as 4000x3000``.

Pillow is needed only to scale: without it images are sent as they are.
"""

from __future__ import annotations

import io
import logging
import math
import sys
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from client.errors import ParameterError


class _Stderr(logging.Handler):
    """Writes the bare message to whatever ``sys.stderr`` is at the time."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


#: Says which images were scaled, one line each, on stderr (``LOG.setLevel(logging.ERROR)``
#: silences it; it does not propagate, so a logging setup does not print it twice).
LOG = logging.getLogger("client.resize")
LOG.addHandler(_Stderr())
LOG.propagate = False
#: A Vertex dedicated endpoint's request limit, and the server's default body limit (bytes).
BODY_LIMIT = 10_000_000
#: Room left in the body for multipart framing and headers (bytes).
BODY_MARGIN = 64 * 1024
#: Images above this many pixels make the client ask the server its pixel limit (once).
PROBE_PIXELS = 3840 * 2160
JPEG_QUALITY = 95
T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """What an image must fit: ``max_side`` (0: never scale), pixels and bytes (None: none)."""

    max_side: int | None = None
    max_pixels: int | None = None
    max_bytes: int | None = BODY_LIMIT


@dataclass(frozen=True)
class Scaled:
    """One image sent scaled: its original (EXIF-oriented) size and the size sent."""

    name: str
    original: tuple[int, int]
    sent: tuple[int, int]

    def message(self) -> str:
        (w, h), (sw, sh) = self.original, self.sent
        return f"{self.name}: {w}x{h} sent as {sw}x{sh}"


def check_max_side(max_side: int | None) -> int | None:
    if max_side is not None and (not isinstance(max_side, int) or max_side < 0):
        raise ParameterError(f"max_side must be a whole number of pixels >= 0, not {max_side!r}")
    return max_side


def image_size(data: bytes) -> tuple[int, int] | None:
    """An encoded image's (EXIF-oriented) width and height from its header; None when Pillow is
    missing or cannot read it (the server then judges the bytes)."""
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            w, h = image.size
            raw = image.info.get("exif")
            orientation = None
            if raw:
                exif = Image.Exif()
                exif.load(raw)
                orientation = exif.get(0x0112)
    except Exception:  # not an image Pillow knows: send it and let the server answer
        return None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def target_scale(size: tuple[int, int], limits: Limits) -> float:
    """The scale (<= 1) that fits ``size`` within the side and pixel limits."""
    w, h = size
    scale = 1.0
    if limits.max_side:
        scale = min(scale, limits.max_side / max(w, h))
    if limits.max_pixels:
        scale = min(scale, math.sqrt(limits.max_pixels / (w * h)))
    return scale


def _scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    w, h = size
    return max(1, math.floor(w * scale)), max(1, math.floor(h * scale))


def fit(
    data: bytes, name: str, limits: Limits, max_bytes: int | None = None
) -> tuple[bytes, Scaled | None]:
    """``data`` as it is, or scaled down to fit ``limits`` (and ``max_bytes``, this image's
    share of the body): the bytes to send and, when scaled, what was done."""
    if limits.max_side == 0:
        return data, None
    budget = max_bytes if max_bytes is not None else limits.max_bytes
    size = image_size(data)
    if size is None:
        return data, None
    scale = target_scale(size, limits)
    if scale >= 1 and (budget is None or len(data) <= budget):
        return data, None
    if scale >= 1:  # over in bytes only: start from the byte ratio
        scale = min(1.0, math.sqrt(budget / len(data))) if budget else 1.0
    out, sent = _resample(data, size, scale)
    while budget is not None and len(out) > budget and min(sent) > 16:
        scale *= 0.95 * math.sqrt(budget / len(out))
        out, sent = _resample(data, size, scale)
    return out, Scaled(name, size, sent)


def _resample(data: bytes, size: tuple[int, int], scale: float) -> tuple[bytes, tuple[int, int]]:
    from PIL import Image, ImageOps

    target = _scaled_size(size, scale)
    with Image.open(io.BytesIO(data)) as image:
        if image.format == "JPEG":  # libjpeg's own reduction, never below twice the target
            tw, th = target
            if (image.size[0] > image.size[1]) != (size[0] > size[1]):  # stored turned
                tw, th = th, tw
            image.draft("RGB", (tw * 2, th * 2))
        upright = ImageOps.exif_transpose(image)
        if upright.mode not in ("RGB", "L"):
            upright = upright.convert("RGB")
        if upright.size != target:
            upright = upright.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        buf = io.BytesIO()
        upright.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue(), target


def report(scaled: list[Scaled | None]) -> None:
    for s in scaled:
        if s is not None:
            LOG.warning(s.message())


# -- answers back to original pixels ----------------------------------------------------------


def _xy(points: list[list[float]], sx: float, sy: float) -> list[list[float]]:
    return [[p[0] * sx, p[1] * sy] for p in points]


def _detection(d: Any, sx: float, sy: float) -> Any:
    from client.schema import Box, Keypoint

    b = d.box
    changes: dict[str, Any] = {"box": Box(x1=b.x1 * sx, y1=b.y1 * sy, x2=b.x2 * sx, y2=b.y2 * sy)}
    if d.mask is not None:
        polygons = [_xy(p, sx, sy) for p in d.mask.polygons]
        changes["mask"] = msgspec.structs.replace(d.mask, polygons=polygons)
    if d.keypoints is not None:
        changes["keypoints"] = [
            Keypoint(x=k.x * sx, y=k.y * sy, confidence=k.confidence) for k in d.keypoints
        ]
    if d.rotated_box is not None:
        r = d.rotated_box
        # sx and sy differ only by rounding: the angle is kept, each side scaled as its
        # direction is (exact for equal scales)
        c, s = math.cos(r.angle), math.sin(r.angle)
        changes["rotated_box"] = msgspec.structs.replace(
            r,
            cx=r.cx * sx,
            cy=r.cy * sy,
            width=r.width * math.hypot(c * sx, s * sy),
            height=r.height * math.hypot(s * sx, c * sy),
            corners=_xy(r.corners, sx, sy),
        )
    return msgspec.structs.replace(d, **changes)


def _result(result: Any, scaled: Scaled) -> Any:
    (w, h), (sw, sh) = scaled.original, scaled.sent
    sx, sy = w / sw, h / sh
    changes: dict[str, Any] = {"width": w, "height": h}
    if hasattr(result, "detections"):
        changes["detections"] = [_detection(d, sx, sy) for d in result.detections]
    return msgspec.structs.replace(result, **changes)


def restore(response: T, scaled: list[Scaled | None]) -> T:
    """``response`` (any answer with ``results``, one per image) in original pixels."""
    results = getattr(response, "results", None)
    if results is None or not any(scaled) or len(results) != len(scaled):
        return response
    fixed = [r if s is None else _result(r, s) for r, s in zip(results, scaled, strict=True)]
    return msgspec.structs.replace(response, results=fixed)  # type: ignore[type-var]
