"""Drawing results on source frames and writing them as a video (``--save``), client-side.

The look is the server's ``/annotate`` (Ultralytics' ``Results.plot``): its 20-colour palette by
class, a box line of about 0.3 % of the image, a filled label ``id:N name 0.87`` above the box;
an oriented box drawn as its rotated outline, keypoints as dots in the palette by keypoint
index, joined by the model's skeleton (from the stream's ``start`` event) when it has one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from client.errors import ParameterError
from client.schema import Detection, KeypointLayout
from client.video.source import cv2_module

# Ultralytics' palette (ultralytics.utils.plotting.Colors), RGB hex
PALETTE = (
    "042AFF", "0BDBEB", "F3F3F3", "00DFB7", "111F68", "FF6FDD", "FF444F", "CCED00", "00F344",
    "BD00FF", "00B4FF", "DD00BA", "00FFFF", "26C000", "01FFB3", "7D24FF", "7B0068", "FF1B6C",
    "FC6D2F", "A2FF0B",
)  # fmt: skip
FOURCC = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "XVID", ".mov": "mp4v"}


def colour(class_id: int) -> tuple[int, int, int]:
    """The class's colour, BGR."""
    h = PALETTE[class_id % len(PALETTE)]
    return int(h[4:6], 16), int(h[2:4], 16), int(h[0:2], 16)


def draw(
    image: np.ndarray, detections: Sequence[Detection], layout: KeypointLayout | None = None
) -> np.ndarray:
    """``image`` (BGR, drawn on in place and returned) with each box (or rotated box), its
    label, and its keypoints with the skeleton of ``layout``."""
    cv2 = cv2_module()
    lw = max(round(sum(image.shape[:2]) / 2 * 0.003), 2)
    tf, scale = max(lw - 1, 1), lw / 3
    for d in detections:
        c = colour(d.class_id)
        p1 = (int(d.box.x1), int(d.box.y1))
        p2 = (int(d.box.x2), int(d.box.y2))
        if d.rotated_box is not None:
            corners = np.round(np.array(d.rotated_box.corners)).astype(np.int32)
            cv2.polylines(image, [corners], True, c, thickness=lw, lineType=cv2.LINE_AA)
            top_left = corners[np.argmin(corners.sum(axis=1))]
            p1 = (int(top_left[0]), int(top_left[1]))  # the label sits on the topmost corner
        else:
            cv2.rectangle(image, p1, p2, c, thickness=lw, lineType=cv2.LINE_AA)
        if d.keypoints:
            _keypoints(cv2, image, d, layout, lw)
        label = f"{d.class_name} {d.confidence:.2f}"
        if d.track_id is not None:
            label = f"id:{d.track_id} {label}"
        w, h = cv2.getTextSize(label, 0, fontScale=scale, thickness=tf)[0]
        outside = p1[1] >= h + 3
        top = (p1[0], p1[1] - h - 3) if outside else (p1[0], p1[1])
        bottom = (p1[0] + w, p1[1]) if outside else (p1[0] + w, p1[1] + h + 3)
        cv2.rectangle(image, top, bottom, c, -1, cv2.LINE_AA)
        text = (0, 0, 0) if 0.299 * c[2] + 0.587 * c[1] + 0.114 * c[0] > 160 else (255, 255, 255)
        baseline = p1[1] - 2 if outside else p1[1] + h + 2
        cv2.putText(image, label, (p1[0], baseline), 0, scale, text, tf, cv2.LINE_AA)
    return image


def _keypoints(
    cv2: Any, image: np.ndarray, d: Detection, layout: KeypointLayout | None, lw: int
) -> None:
    """The skeleton's lines, then a dot per keypoint (Ultralytics skips those under 0.5)."""
    points = d.keypoints or []
    seen = [k.confidence is None or k.confidence >= 0.5 for k in points]
    xy = [(round(k.x), round(k.y)) for k in points]
    for a, b in layout.skeleton if layout is not None and layout.skeleton else []:
        if a < len(xy) and b < len(xy) and seen[a] and seen[b]:
            cv2.line(image, xy[a], xy[b], (255, 255, 255), max(lw // 2, 1), cv2.LINE_AA)
    for i, point in enumerate(xy):
        if seen[i]:
            cv2.circle(image, point, max(lw + 1, 3), colour(i), -1, cv2.LINE_AA)


class AnnotatedVideo:
    """A video file of drawn frames at source resolution (codec by suffix: .mp4 mp4v, .avi
    MJPG, .mkv XVID); opened on the first frame."""

    def __init__(
        self, path: str | Path, fps: float | None, layout: KeypointLayout | None = None
    ) -> None:
        self.path = Path(path)
        self.layout = layout  # a pose model's keypoints, for the skeleton
        if self.path.suffix.lower() not in FOURCC:
            raise ParameterError(
                f"--save {path}: write a {', '.join(FOURCC)} file (the suffix picks the codec)"
            )
        self.fps = fps or 25.0
        self._writer: Any = None

    def write(self, jpeg: bytes, detections: Sequence[Detection]) -> None:
        cv2 = cv2_module()
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if self._writer is None:
            height, width = image.shape[:2]
            fourcc = cv2.VideoWriter.fourcc(*FOURCC[self.path.suffix.lower()])
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (width, height))
            if not self._writer.isOpened():
                raise ParameterError(f"cannot write {self.path} (OpenCV's VideoWriter refused)")
        self._writer.write(draw(image, detections, self.layout))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
