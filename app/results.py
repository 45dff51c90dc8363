"""Ultralytics ``Results`` to the wire contract: detections (boxes, masks, keypoints, rotated
boxes), classifications, drawn images. Every task's result goes through here.

Everything here is synchronous and runs in worker threads.
"""

from __future__ import annotations

import base64
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from client.schema import (
    Box,
    Classification,
    ClassifyResult,
    Detection,
    ImageResult,
    Keypoint,
    KeypointLayout,
    Mask,
    Rle,
    RotatedBox,
)

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


def _keypoints(points: np.ndarray) -> list[Keypoint]:
    """One object's keypoints ``(K, 2 or 3)`` in pixels."""
    return [
        Keypoint(
            x=round(float(p[0]), 1),
            y=round(float(p[1]), 1),
            confidence=round(float(p[2]), 4) if len(p) > 2 else None,
        )
        for p in points
    ]


def _rotated(xywhr: np.ndarray, corners: np.ndarray) -> RotatedBox:
    cx, cy, w, h, angle = (float(v) for v in xywhr)
    return RotatedBox(
        cx=round(cx, 1),
        cy=round(cy, 1),
        width=round(w, 1),
        height=round(h, 1),
        angle=round(angle, 4),
        corners=[[round(float(x), 1), round(float(y), 1)] for x, y in corners],
    )


def detections(result: Any, with_masks: bool = False, rle: bool = False) -> list[Detection]:
    """The detections of one Ultralytics result: boxes (an oriented box's axis-aligned box),
    tracking ids, keypoints and rotated boxes when present, masks when asked for."""
    obb = getattr(result, "obb", None)
    boxes = obb if obb is not None else result.boxes
    if boxes is None or len(boxes) == 0:
        return []
    xyxy = boxes.xyxy.cpu().numpy().astype(np.float64).round(1).tolist()
    conf = boxes.conf.cpu().numpy().tolist()
    cls = boxes.cls.cpu().numpy().astype(int).tolist()
    ids = boxes.id.cpu().numpy().astype(int).tolist() if boxes.is_track else [None] * len(cls)
    masks = None
    if with_masks and result.masks is not None:
        masks = result.masks.data
    points = result.keypoints.data.cpu().numpy() if result.keypoints is not None else None
    if obb is not None:
        xywhr = obb.xywhr.cpu().numpy().astype(np.float64)
        corners = obb.xyxyxyxy.cpu().numpy().astype(np.float64)
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
                keypoints=_keypoints(points[i]) if points is not None else None,
                rotated_box=_rotated(xywhr[i], corners[i]) if obb is not None else None,
            )
        )
    return out


def detection_count(result: Any) -> int:
    """How many objects a result holds (a classification: none)."""
    if result.probs is not None:
        return 0
    found = result.obb if result.obb is not None else result.boxes
    return 0 if found is None else len(found)


def classifications(result: Any, top_k: int = 5) -> list[Classification]:
    """A classification result's ``top_k`` classes, best first (Ultralytics' own order: its
    ``Probs.top5`` is the first five of the same sort)."""
    probs = result.probs.data
    order = (-probs).argsort(0)[:top_k].tolist()
    values = probs.cpu().numpy().astype(np.float64)
    return [
        Classification(
            class_id=int(j), class_name=result.names[int(j)], confidence=round(float(values[j]), 4)
        )
        for j in order
    ]


def classify_result(result: Any, top_k: int = 5) -> ClassifyResult:
    height, width = result.orig_shape
    return ClassifyResult(
        width=int(width), height=int(height), classes=classifications(result, top_k)
    )


def image_result(result: Any, with_masks: bool = False, rle: bool = False) -> ImageResult:
    height, width = result.orig_shape
    return ImageResult(
        width=int(width), height=int(height), detections=detections(result, with_masks, rle)
    )


def render(result: Any, layout: KeypointLayout | None = None) -> np.ndarray:
    """The image with the result drawn, BGR: boxes and labels, masks, rotated boxes, keypoints,
    a classification's top classes (Ultralytics' own drawing; the server bundles its font).

    Ultralytics draws a skeleton only for 17 keypoints (COCO's person); a pose model whose
    layout names another skeleton gets its lines drawn here, under the boxes and dots.
    """
    skeleton = layout.skeleton if layout is not None and layout.shape[0] != 17 else None
    if not skeleton or result.keypoints is None:
        return result.plot(pil=False)
    base = result.orig_img.copy()
    width = max(round(sum(base.shape[:2]) / 2 * 0.003), 2)  # Ultralytics' line width
    for points in result.keypoints.data.cpu().numpy():
        for a, b in skeleton:
            if points.shape[1] > 2 and min(points[a][2], points[b][2]) < 0.5:
                continue  # Ultralytics does not draw a keypoint under 0.5 either
            ends = [(round(float(p[0])), round(float(p[1]))) for p in (points[a], points[b])]
            cv2.line(base, ends[0], ends[1], (255, 255, 255), width, cv2.LINE_AA)
    return result.plot(pil=False, img=base)


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
