"""Ultralytics ``Results`` to the wire contract: detections, masks, drawn images.

Everything here is synchronous and runs in worker threads.
"""

from __future__ import annotations

import base64
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from client.schema import Box, Detection, ImageResult, Mask, Rle

MIN_CONTOUR_POINTS = 3
RESCALABLE_TASKS = frozenset({"detect", "segment"})  # see restore_size
JPEG_QUALITY = 90


def restore_size(result: Any, width: int, height: int) -> Any:
    """Put a result on a draft-decoded (reduced) image back in full-size coordinates.

    Boxes are scaled; masks stay at inference resolution and are mapped to ``orig_shape`` when
    encoded, so changing ``orig_shape`` is all they need. Detect and segment results only.
    """
    h, w = result.orig_shape
    if (h, w) == (height, width):
        return result
    result.orig_shape = (height, width)
    if result.boxes is not None:
        data = result.boxes.data.clone()
        data[:, [0, 2]] *= width / w
        data[:, [1, 3]] *= height / h
        result.update(boxes=data)
    if result.masks is not None:
        result.update(masks=result.masks.data)
    return result


def _mask_polygons(mask: np.ndarray, orig_shape: tuple[int, int]) -> list[list[list[float]]]:
    """Outer contours of a mask at inference resolution, scaled to original pixels."""
    from ultralytics.utils.ops import scale_coords

    binary = (mask > 0.5).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        if len(contour) < MIN_CONTOUR_POINTS:
            continue
        pts = contour.reshape(-1, 2).astype(np.float32) + 0.5  # pixel centres
        pts = scale_coords(binary.shape, pts, orig_shape)
        polygons.append([[round(float(x), 1), round(float(y), 1)] for x, y in pts])
    return polygons


def _mask_rle(mask: Any, orig_shape: tuple[int, int]) -> Rle:
    """COCO RLE of one mask (a torch tensor), upscaled to the original image size."""
    from ultralytics.utils.ops import scale_masks

    full = (scale_masks(mask[None, None].float(), orig_shape)[0, 0] > 0.5).cpu().numpy()
    encoded = coco_mask.encode(np.asfortranarray(full.astype(np.uint8)))
    return Rle(size=[int(v) for v in encoded["size"]], counts=encoded["counts"].decode("ascii"))


def detections(result: Any, with_masks: bool = False, rle: bool = False) -> list[Detection]:
    """The detections of one Ultralytics result (tracking ids and masks when present)."""
    boxes = result.boxes
    if boxes is None or len(boxes) == 0:
        return []
    xyxy = boxes.xyxy.cpu().numpy().astype(np.float64).round(1).tolist()
    conf = boxes.conf.cpu().numpy().tolist()
    cls = boxes.cls.cpu().numpy().astype(int).tolist()
    ids = boxes.id.cpu().numpy().astype(int).tolist() if boxes.is_track else [None] * len(cls)
    masks = None
    if with_masks and result.masks is not None:
        masks = result.masks.data
    orig_shape = tuple(result.orig_shape)
    out = []
    for i, (box, c, k, tid) in enumerate(zip(xyxy, conf, cls, ids, strict=True)):
        mask = None
        if masks is not None:
            mask = Mask(
                polygons=_mask_polygons(masks[i].cpu().numpy(), orig_shape),
                rle=_mask_rle(masks[i], orig_shape) if rle else None,
            )
        out.append(
            Detection(
                class_id=k,
                class_name=result.names[k],
                confidence=round(c, 4),
                box=Box(x1=box[0], y1=box[1], x2=box[2], y2=box[3]),
                track_id=tid,
                mask=mask,
            )
        )
    return out


def image_result(result: Any, with_masks: bool = False, rle: bool = False) -> ImageResult:
    height, width = result.orig_shape
    return ImageResult(
        width=int(width), height=int(height), detections=detections(result, with_masks, rle)
    )


def render(result: Any) -> np.ndarray:
    """The image with boxes, labels (and masks) drawn, BGR (OpenCV drawing, no font download)."""
    return result.plot(pil=False)


def encode_image(bgr: np.ndarray, fmt: str) -> bytes:
    if fmt == "png":
        ok, buf = cv2.imencode(".png", bgr)
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode a {fmt} image")
    return buf.tobytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
