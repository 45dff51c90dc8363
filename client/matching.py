"""One matcher for every task's detections: which object of one answer is which of another.

A/B agreement (``client.ab``), the rollout's guard, and joining track ids across video windows
(``client.video.tracks``) all ask the same question: given two lists of detections of one
image, which pairs are the same object? The answer here: pairs of the same class whose
similarity reaches a threshold, one-to-one, the assignment of largest total similarity
(``scipy.optimize.linear_sum_assignment``, not greedy: two objects close together do not swap).

Similarity is the IoU of the axis-aligned boxes, or of the rotated boxes for oriented (OBB)
detections (their convex polygons intersected exactly). Matched pose detections are compared
by object keypoint similarity (:func:`oks`, COCO's measure as Ultralytics computes it).

numpy and scipy are imported when first needed (the ``tools`` and ``video`` extras).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

from client.schema import Detection

Similarity = Literal["box", "rotated"]
MIN_IOU = 0.5
#: COCO's per-keypoint OKS sigmas for the 17 person keypoints (Ultralytics' ``OKS_SIGMA``);
#: other layouts weigh every keypoint alike, 1/K, as Ultralytics does.
COCO_SIGMAS: tuple[float, ...] = tuple(s / 10 for s in (
    0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87,
    0.89, 0.89,
))  # fmt: skip


def similarity_for(task: str) -> Similarity:
    """How a task's detections are compared: rotated boxes for OBB, boxes otherwise."""
    return "rotated" if task == "obb" else "box"


def box_iou(a: Detection, b: Detection) -> float:
    """IoU of two detections' axis-aligned boxes."""
    w = min(a.box.x2, b.box.x2) - max(a.box.x1, b.box.x1)
    h = min(a.box.y2, b.box.y2) - max(a.box.y1, b.box.y1)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (
        (a.box.x2 - a.box.x1) * (a.box.y2 - a.box.y1)
        + (b.box.x2 - b.box.x1) * (b.box.y2 - b.box.y1)
        - inter
    )
    return inter / union if union > 0 else 0.0


def _area(poly: Sequence[Sequence[float]]) -> float:
    """Signed area (shoelace): positive when the vertices turn left (counter-clockwise with
    ``y`` up), the orientation :func:`_clip` expects."""
    return 0.5 * sum(
        poly[i - 1][0] * poly[i][1] - poly[i][0] * poly[i - 1][1] for i in range(len(poly))
    )


def _clip(subject: list[list[float]], clip: list[list[float]]) -> list[list[float]]:
    """Sutherland-Hodgman: ``subject`` cut by each edge of the convex polygon ``clip`` (both
    in the same orientation)."""
    out = subject
    for i in range(len(clip)):
        (ax, ay), (bx, by) = clip[i - 1], clip[i]
        inside = [((bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax)) >= 0 for p in out]
        points, out = out, []
        for j in range(len(points)):
            p, q = points[j - 1], points[j]
            pin, qin = inside[j - 1], inside[j]
            if qin != pin:  # the edge p-q crosses the clip line: add the crossing
                dx, dy = q[0] - p[0], q[1] - p[1]
                den = (bx - ax) * dy - (by - ay) * dx
                t = ((p[0] - ax) * dy - (p[1] - ay) * dx) / den if den else 0.0
                out.append([ax + t * (bx - ax), ay + t * (by - ay)])
            if qin:
                out.append(q)
        if not out:
            break
    return out


def polygon_iou(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> float:
    """IoU of two convex polygons (a rotated box's four corners, in any orientation)."""
    pa, pb = [list(p) for p in a], [list(p) for p in b]
    area_a, area_b = _area(pa), _area(pb)
    if area_a == 0 or area_b == 0:
        return 0.0
    if area_a < 0:
        pa, area_a = pa[::-1], -area_a
    if area_b < 0:
        pb, area_b = pb[::-1], -area_b
    inter = abs(_area(_clip(pa, pb))) if pa and pb else 0.0
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def rotated_iou(a: Detection, b: Detection) -> float:
    """IoU of two detections' rotated boxes (their boxes' IoU when either has none)."""
    if a.rotated_box is None or b.rotated_box is None:
        return box_iou(a, b)
    return polygon_iou(a.rotated_box.corners, b.rotated_box.corners)


SIMILARITIES: dict[Similarity, Callable[[Detection, Detection], float]] = {
    "box": box_iou,
    "rotated": rotated_iou,
}


def oks(reference: Detection, candidate: Detection) -> float | None:
    """Object keypoint similarity of ``candidate``'s keypoints to ``reference``'s (0..1):
    COCO's measure as Ultralytics' validation computes it (``kpt_iou``), the object's area the
    reference box's times 0.53 (COCO's box-to-segment ratio, as Ultralytics uses), over the reference's visible keypoints (confidence >= 0.5, or every
    keypoint of a model without confidences). None when either has no keypoints or none is
    visible."""
    ref, cand = reference.keypoints, candidate.keypoints
    if not ref or not cand or len(ref) != len(cand):
        return None
    sigmas = COCO_SIGMAS if len(ref) == len(COCO_SIGMAS) else (1 / len(ref),) * len(ref)
    area = (reference.box.x2 - reference.box.x1) * (reference.box.y2 - reference.box.y1) * 0.53
    total = seen = 0.0
    for r, c, sigma in zip(ref, cand, sigmas, strict=True):
        if r.confidence is not None and r.confidence < 0.5:
            continue
        d2 = (r.x - c.x) ** 2 + (r.y - c.y) ** 2
        total += math.exp(-d2 / ((2 * sigma) ** 2 * (area + 1e-7) * 2))
        seen += 1
    return total / seen if seen else None


def assign(scores: Any) -> list[tuple[int, int]]:
    """Row-column pairs of a score matrix (a list of rows or an array) that maximise the total
    score, one-to-one (rectangular allowed)."""
    import numpy as np

    matrix = np.asarray(scores, dtype=float)
    if matrix.size == 0:
        return []
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        raise ImportError(
            "matching detections needs scipy (the 'tools' or 'video' extra): "
            "pip install 'vertex-yolo[tools]'"
        ) from None
    rows, cols = linear_sum_assignment(matrix, maximize=True)
    return list(zip(rows.tolist(), cols.tolist(), strict=True))


def match(
    reference: Sequence[Detection],
    candidate: Sequence[Detection],
    *,
    similarity: Similarity = "box",
    threshold: float = MIN_IOU,
    by: Literal["class_name", "class_id"] = "class_name",
) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(reference index, candidate index, similarity)``: the same class
    (by name, or by id), similarity >= ``threshold``, the assignment of largest total
    similarity. Pairs below the threshold score nothing, so they never outweigh a good pair."""
    if not reference or not candidate:
        return []
    measure = SIMILARITIES[similarity]
    scores = [
        [
            s if getattr(r, by) == getattr(c, by) and (s := measure(r, c)) >= threshold else 0.0
            for c in candidate
        ]
        for r in reference
    ]
    return [(r, c, scores[r][c]) for r, c in assign(scores) if scores[r][c] > 0]
