"""Joining track ids across windows.

Each window (and each resumed part of one) is its own ``/stream`` call with its own tracker, so
its track ids are local to it. Windows overlap: a part's first frames are the frames sent just
before it, whose detections already carry the video's (global) ids. On those shared frames the
same object is the same box, so a local id takes the global id of the box it matches: same
class, boxes overlapping by ``min_iou`` or more (rotated boxes for an OBB model), one-to-one per
frame (:func:`client.matching.match`, an optimal assignment on IoU, not greedy: two objects
crossing do not swap), and one-to-one over all shared frames (the local id takes the global id
it matched most often). A local id that matches nothing is a new object and gets a new id.

scipy's ``linear_sum_assignment`` does the assignments (the ``video`` extra).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from client.matching import MIN_IOU, Similarity, assign
from client.matching import match as match_objects
from client.schema import Detection


def match(
    known: Sequence[Sequence[Detection]],
    local: Sequence[Sequence[Detection]],
    min_iou: float = MIN_IOU,
    similarity: Similarity = "box",
) -> dict[int, int]:
    """Local track id -> known track id, from the shared frames (``known[i]`` and ``local[i]``
    are the detections of the same frame); ``similarity``: ``"rotated"`` for oriented boxes."""
    votes: Counter[tuple[int, int]] = Counter()
    for old, new in zip(known, local, strict=True):
        old = [d for d in old if d.track_id is not None]
        new = [d for d in new if d.track_id is not None]
        pairs = match_objects(new, old, similarity=similarity, threshold=min_iou, by="class_id")
        for r, c, _ in pairs:
            votes[(new[r].track_id, old[c].track_id)] += 1  # type: ignore[index]
    local_ids = sorted({n for n, _ in votes})
    known_ids = sorted({k for _, k in votes})
    table = [[float(votes[(n, k)]) for k in known_ids] for n in local_ids]
    return {local_ids[r]: known_ids[c] for r, c in assign(table) if table[r][c] > 0}


class TrackIds:
    """The video's track ids: each part's local ids mapped to global ones, new ones numbered
    from 1 in order of appearance."""

    def __init__(self, similarity: Similarity = "box") -> None:
        self._next = 1
        self.seen: set[int] = set()
        self.similarity = similarity  # how boxes are compared: rotated ones for OBB

    def mapping(
        self,
        known: Sequence[Sequence[Detection]],
        local: Sequence[Sequence[Detection]],
    ) -> dict[int, int]:
        """The start of a part's mapping: its ids on the shared frames joined to the known ones
        (extended by :meth:`relabel` as new local ids appear)."""
        return match(known, local, similarity=self.similarity) if known else {}

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
