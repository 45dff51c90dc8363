"""Seeded synthetic scenes of coloured circles, squares and triangles on noisy backgrounds.

The same drawing code makes the training set (``app.demo.train``), the fresh images the tests
send to the server, and the test videos, so ground truth is always exact.

Example:
    >>> rng = np.random.default_rng(123)
    >>> image, shapes = draw_scene(rng, 160, 160)
    >>> [s.name for s in shapes]  # doctest: +SKIP
    ['triangle', 'circle']
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle")
CIRCLE_POINTS = 36
SCALE = (0.14, 0.32)  # a shape's width, as a share of the image's short side
#: The classifier's images hold one bigger shape: the whole image is about it.
CLASSIFY_SCALE = (0.3, 0.6)


@dataclass(frozen=True)
class Shape:
    """One drawn shape: its class and outline in pixel coordinates."""

    class_id: int
    polygon: np.ndarray  # (N, 2) float32, x then y

    @property
    def name(self) -> str:
        return CLASS_NAMES[self.class_id]

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Tight box x1, y1, x2, y2 around the outline."""
        x1, y1 = self.polygon.min(axis=0)
        x2, y2 = self.polygon.max(axis=0)
        return float(x1), float(y1), float(x2), float(y2)

    def mask(self, height: int, width: int) -> np.ndarray:
        """Filled outline as a (height, width) uint8 mask of 0/1."""
        out = np.zeros((height, width), np.uint8)
        cv2.fillPoly(out, [np.round(self.polygon).astype(np.int32)], 1)
        return out


def make_shape(class_id: int, cx: float, cy: float, size: float, angle: float = 0.0) -> Shape:
    """A shape of class ``class_id`` centred at (cx, cy); ``size`` is its width before rotation."""
    if class_id == 0:
        t = np.linspace(0, 2 * math.pi, CIRCLE_POINTS, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], axis=1) * (size / 2)
    elif class_id == 1:
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * (size / 2)
    elif class_id == 2:
        t = np.array([-90, 30, 150]) * math.pi / 180  # equilateral, apex up
        pts = np.stack([np.cos(t), np.sin(t)], axis=1) * (size / math.sqrt(3))
    else:
        raise ValueError(f"class_id must be 0..{len(CLASS_NAMES) - 1}, got {class_id}")
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return Shape(class_id, (pts @ rot.T + [cx, cy]).astype(np.float32))


def noisy_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """An RGB uint8 background: a random colour, a soft gradient and Gaussian noise."""
    base = rng.integers(30, 226, size=3).astype(np.float32)
    gy = np.linspace(-1, 1, height, dtype=np.float32)[:, None, None]
    gx = np.linspace(-1, 1, width, dtype=np.float32)[None, :, None]
    grad = gx * rng.uniform(-25, 25, 3) + gy * rng.uniform(-25, 25, 3)
    noise = rng.normal(0, rng.uniform(6, 18), size=(height, width, 3))
    return np.clip(base + grad + noise, 0, 255).astype(np.uint8)


def shape_colour(rng: np.random.Generator, background: np.ndarray) -> tuple[int, int, int]:
    """A saturated colour far enough from the background's mean to be visible."""
    mean = background.reshape(-1, 3).mean(axis=0)
    for _ in range(100):
        hsv = np.array([[[rng.integers(0, 180), rng.integers(150, 256), rng.integers(120, 256)]]])
        rgb = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(int)
        if np.abs(rgb - mean).sum() > 150:
            return int(rgb[0]), int(rgb[1]), int(rgb[2])
    return (255, 255, 255) if mean.sum() < 384 else (0, 0, 0)


def draw_shape(image: np.ndarray, shape: Shape, colour: tuple[int, int, int]) -> None:
    """Fill ``shape`` into ``image`` in place (anti-aliased edges)."""
    pts = np.round(shape.polygon * 16).astype(np.int32)  # 4 fractional bits
    cv2.fillPoly(image, [pts], colour, lineType=cv2.LINE_AA, shift=4)


def _overlaps(box: tuple[float, ...], others: list[Shape], margin: float) -> bool:
    x1, y1, x2, y2 = box
    for o in others:
        a1, b1, a2, b2 = o.box
        if x1 < a2 + margin and a1 < x2 + margin and y1 < b2 + margin and b1 < y2 + margin:
            return True
    return False


def draw_scene(
    rng: np.random.Generator,
    width: int = 160,
    height: int = 160,
    max_shapes: int = 3,
    scale: tuple[float, float] = SCALE,
) -> tuple[np.ndarray, list[Shape]]:
    """An RGB image with 1..max_shapes non-overlapping shapes, and the shapes themselves; each
    shape's width a share in ``scale`` of the short side."""
    image = noisy_background(rng, height, width)
    short = min(width, height)
    shapes: list[Shape] = []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        for _attempt in range(50):
            size = rng.uniform(*scale) * short
            shape = make_shape(
                int(rng.integers(0, len(CLASS_NAMES))),
                rng.uniform(size * 0.75, width - size * 0.75),
                rng.uniform(size * 0.75, height - size * 0.75),
                size,
                rng.uniform(0, math.pi / 2),
            )
            x1, y1, x2, y2 = shape.box
            inside = x1 >= 1 and y1 >= 1 and x2 <= width - 2 and y2 <= height - 2
            if inside and not _overlaps(shape.box, shapes, margin=0.04 * short):
                draw_shape(image, shape, shape_colour(rng, image))
                shapes.append(shape)
                break
    return image, shapes


def yolo_label(shapes: list[Shape], width: int, height: int) -> str:
    """YOLO segmentation label lines (class, then the normalised polygon)."""
    lines = []
    for s in shapes:
        xy = (s.polygon / [width, height]).clip(0, 1).reshape(-1)
        lines.append(" ".join([str(s.class_id), *(f"{v:.6f}" for v in xy)]))
    return "\n".join(lines) + "\n"


def write_dataset(root: Path, n_train: int, n_val: int, seed: int, size: int = 160) -> Path:
    """Write a YOLO data set (images, polygon labels, data.yaml) under ``root``; return the yaml.

    Polygon labels serve both detect and segment: Ultralytics derives detection boxes from them.
    """
    return write_task_dataset("segment", root, n_train, n_val, seed, size)


# --- the other tasks' views of a scene -----------------------------------------------------

SQUARE = 1
CORNER_NAMES: tuple[str, ...] = ("top-left", "top-right", "bottom-right", "bottom-left")
#: The pose demo model's skeleton: the square's four edges, between keypoints by index.
SQUARE_SKELETON: tuple[tuple[int, int], ...] = ((0, 1), (1, 2), (2, 3), (3, 0))


def square_corners(shape: Shape) -> np.ndarray:
    """A square's four corners (4, 2) in a fixed order: the one nearest the top-left direction
    from the centre first, then clockwise on screen (y down), as :data:`CORNER_NAMES` names
    them. A square looks the same every quarter turn, so the order is defined by position, not
    by how the square was drawn; it jumps only at a 45-degree (diamond) pose."""
    if shape.class_id != SQUARE:
        raise ValueError(f"only squares have corners as keypoints, not a {shape.name}")
    pts = shape.polygon.astype(np.float64)
    centre = pts.mean(axis=0)
    angles = np.arctan2(pts[:, 1] - centre[1], pts[:, 0] - centre[0])  # -3pi/4 is top-left
    first = int(np.argmin(np.abs(np.angle(np.exp(1j * (angles + 3 * math.pi / 4))))))
    order = [(first + k) % 4 for k in range(4)]
    # make_shape lists a square's corners clockwise on screen (y down) whatever the angle
    return pts[order].astype(np.float32)


def rotated_box(shape: Shape) -> np.ndarray:
    """The rotated box (4, 2 corner points) that fits a shape's rotation: a square's own
    outline, the minimum-area rectangle of a triangle (one side on a triangle's side), and the
    axis-aligned box of a circle (whose rotation says nothing)."""
    if shape.class_id == 0:
        x1, y1, x2, y2 = shape.box
        return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float32)
    if shape.class_id == SQUARE:
        return shape.polygon.astype(np.float32)
    return cv2.boxPoints(cv2.minAreaRect(shape.polygon.astype(np.float32))).astype(np.float32)


def _norm(points: np.ndarray, width: int, height: int) -> list[str]:
    return [f"{v:.6f}" for v in (points / [width, height]).clip(0, 1).reshape(-1)]


def pose_label(shapes: list[Shape], width: int, height: int) -> str:
    """YOLO pose label lines: each square's box and its four corners (visible), in
    :func:`square_corners` order; other shapes are background."""
    lines = []
    for s in shapes:
        if s.class_id != SQUARE:
            continue
        x1, y1, x2, y2 = s.box
        box = [(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height]
        kpts = [v for xy in square_corners(s) for v in (*_norm(xy, width, height), "2")]
        lines.append(" ".join(["0", *(f"{v:.6f}" for v in box), *kpts]))
    return "\n".join(lines) + "\n"


def obb_label(shapes: list[Shape], width: int, height: int) -> str:
    """YOLO OBB label lines: class and the four corners of :func:`rotated_box`."""
    return "".join(
        " ".join([str(s.class_id), *_norm(rotated_box(s), width, height)]) + "\n" for s in shapes
    )


TASK_LABELS = {"detect": yolo_label, "segment": yolo_label, "pose": pose_label, "obb": obb_label}


def write_task_dataset(
    task: str, root: Path, n_train: int, n_val: int, seed: int, size: int = 160
) -> Path:
    """A data set for ``task`` under ``root``; returns what Ultralytics' ``train(data=...)``
    takes: a data.yaml (detect, segment, pose, obb) or the folder (classify: one folder per
    class, each image holding exactly one shape).

    The scenes are those of :func:`draw_scene` from the same seeded stream, so every task sees
    the same kind of image; the pose task's data set names one class, ``square``, with four
    keypoints (:data:`CORNER_NAMES`), its edges as the skeleton.
    """
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("val", n_val)):
        for i in range(count):
            stem = f"{split}_{i:05d}"
            if task == "classify":
                image, shapes = draw_scene(rng, size, size, max_shapes=1, scale=CLASSIFY_SCALE)
                folder = root / split / shapes[0].name
                folder.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(folder / f"{stem}.png"), image[:, :, ::-1])
                continue
            image, shapes = draw_scene(rng, size, size)
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "images" / split / f"{stem}.png"), image[:, :, ::-1])
            label = TASK_LABELS[task](shapes, size, size)
            (root / "labels" / split / f"{stem}.txt").write_text(label)
    if task == "classify":
        return root
    names = ("square",) if task == "pose" else CLASS_NAMES
    lines = [f"path: {root.resolve()}", "train: images/train", "val: images/val", "names:"]
    lines += [f"  {i}: {n}" for i, n in enumerate(names)]
    if task == "pose":
        lines += ["kpt_shape: [4, 3]", "flip_idx: [1, 0, 3, 2]", "kpt_names:", "  0:"]
        lines += [f"    - {n}" for n in CORNER_NAMES]
    data = root / "data.yaml"
    data.write_text("\n".join(lines) + "\n")
    return data


def moving_shape(
    n: int, width: int = 160, height: int = 120, class_id: int = 1, seed: int = 7
) -> Iterator[tuple[np.ndarray, tuple[float, float]]]:
    """``n`` RGB frames of one shape crossing a fixed background left to right, one at a time,
    each with the shape's centre.

    The shape moves at constant speed along a straight line, so a tracker should keep one id and
    box centres should follow the centres.
    """
    rng = np.random.default_rng(seed)
    background = noisy_background(rng, height, width)
    colour = shape_colour(rng, background)
    size = min(width, height) * 0.35
    x0, x1 = size * 0.75, width - size * 0.75
    cy = height / 2
    for i in range(n):
        cx = x0 + (x1 - x0) * i / max(n - 1, 1)
        frame = background.copy()
        draw_shape(frame, make_shape(class_id, cx, cy, size), colour)
        yield frame, (cx, cy)


def moving_shape_frames(
    n: int, width: int = 160, height: int = 120, class_id: int = 1, seed: int = 7
) -> tuple[list[np.ndarray], list[tuple[float, float]]]:
    """:func:`moving_shape` as two lists: the frames and the centres."""
    frames, centres = [], []
    for frame, centre in moving_shape(n, width, height, class_id, seed):
        frames.append(frame)
        centres.append(centre)
    return frames, centres


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 10.0) -> None:
    """Write RGB frames (a list, or any iterable: one frame in memory at a time) as a video
    OpenCV reads back (codec by suffix: .mp4 mp4v, .avi MJPG)."""
    fourcc = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "XVID", ".webm": "VP80"}[Path(path).suffix]
    writer = None
    try:
        for frame in frames:
            if writer is None:
                height, width = frame.shape[:2]
                code = cv2.VideoWriter.fourcc(*fourcc)
                writer = cv2.VideoWriter(str(path), code, fps, (width, height))
                if not writer.isOpened():
                    raise RuntimeError(f"OpenCV cannot write {path} with {fourcc}")
            writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    finally:
        if writer is not None:
            writer.release()
