"""Joining track ids across windows.

Each window (and each resumed part of one) is its own ``/stream`` call with its own tracker, so
its track ids are local to it. Windows overlap: a part's first frames are the frames sent just
before it, whose detections already carry the video's (global) ids. On those shared frames the
same object is the same box, so a local id takes the global id of the box it matches: same
class, boxes overlapping by ``min_iou`` or more, one-to-one per frame (an optimal assignment on
IoU, not greedy: two objects crossing do not swap), and one-to-one over all shared frames (the
local id takes the global id it matched most often). A local id that matches nothing is a new
object and gets a new id.

scipy's ``linear_sum_assignment`` does the assignments (the ``video`` extra).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from client.schema import Detection

MIN_IOU = 0.5


def iou(a: Detection, b: Detection) -> float:
    ax1, ay1, ax2, ay2 = a.box.x1, a.box.y1, a.box.x2, a.box.y2
    bx1, by1, bx2, by2 = b.box.x1, b.box.y1, b.box.x2, b.box.y2
    w = min(ax2, bx2) - max(ax1, bx1)
    h = min(ay2, by2) - max(ay1, by1)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def _score(a: Detection, b: Detection, min_iou: float) -> float:
    """The IoU of two detections of one class when it reaches ``min_iou``, else 0."""
    if a.class_id != b.class_id:
        return 0.0
    overlap = iou(a, b)
    return overlap if overlap >= min_iou else 0.0


def _assign(scores: list[list[float]]) -> list[tuple[int, int]]:
    """Row-column pairs maximising the total score (rectangular allowed)."""
    if not scores or not scores[0]:
        return []
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(np.asarray(scores), maximize=True)
    return list(zip(rows.tolist(), cols.tolist(), strict=True))


def match(
    known: Sequence[Sequence[Detection]],
    local: Sequence[Sequence[Detection]],
    min_iou: float = MIN_IOU,
) -> dict[int, int]:
    """Local track id -> known track id, from the shared frames (``known[i]`` and ``local[i]``
    are the detections of the same frame)."""
    votes: Counter[tuple[int, int]] = Counter()
    for old, new in zip(known, local, strict=True):
        old = [d for d in old if d.track_id is not None]
        new = [d for d in new if d.track_id is not None]
        # pairs below the threshold score nothing: they cannot outweigh one good pair
        scores = [[_score(n, o, min_iou) for o in old] for n in new]
        for r, c in _assign(scores):
            if scores[r][c] > 0:
                votes[(new[r].track_id, old[c].track_id)] += 1  # type: ignore[index]
    local_ids = sorted({n for n, _ in votes})
    known_ids = sorted({k for _, k in votes})
    table = [[float(votes[(n, k)]) for k in known_ids] for n in local_ids]
    return {local_ids[r]: known_ids[c] for r, c in _assign(table) if table[r][c] > 0}


class TrackIds:
    """The video's track ids: each part's local ids mapped to global ones, new ones numbered
    from 1 in order of appearance."""

    def __init__(self) -> None:
        self._next = 1
        self.seen: set[int] = set()

    def mapping(
        self,
        known: Sequence[Sequence[Detection]],
        local: Sequence[Sequence[Detection]],
    ) -> dict[int, int]:
        """The start of a part's mapping: its ids on the shared frames joined to the known ones
        (extended by :meth:`relabel` as new local ids appear)."""
        return match(known, local) if known else {}

    def relabel(self, detections: Sequence[Detection], mapping: dict[int, int]) -> list[Detection]:
        """``detections`` with global track ids (``mapping`` grows with each new local id)."""
        out = []
        for d in detections:
            if d.track_id is None:
                out.append(d)
                continue
            if d.track_id not in mapping:
                mapping[d.track_id] = self._next
                self._next += 1
            global_id = mapping[d.track_id]
            self.seen.add(global_id)
            out.append(_with_track(d, global_id))
        return out


def _with_track(d: Detection, track_id: int) -> Detection:
    import msgspec

    return msgspec.structs.replace(d, track_id=track_id)
