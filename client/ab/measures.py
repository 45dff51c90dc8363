"""A/B measures: latency and confidence statistics, one-to-one box matching and agreement,
and the traffic split's chi-square test. numpy and scipy (the ``tools`` extra) are imported only
when needed."""

from __future__ import annotations

import importlib
import statistics
from collections.abc import Sequence
from typing import Any

from client.ab.reports import Agreement, ConfidenceStats, LatencyStats, SplitRow
from client.schema import Detection
from client.stats import percentile

CONFIDENCE_BINS = 10  # histogram bins over [0, 1]


def needs(module: str) -> Any:
    """Import ``module`` or say which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"client.ab needs {module.split('.')[0]} (the 'tools' extra): "
            "pip install 'vertex-yolo[tools]'"
        ) from None


def latency_stats(latencies_ms: Sequence[float]) -> LatencyStats:
    """Count, mean, p50/p95/p99 and max of the latencies (None throughout for none)."""
    if not latencies_ms:
        return LatencyStats(
            count=0, mean_ms=None, p50_ms=None, p95_ms=None, p99_ms=None, max_ms=None
        )
    values = sorted(latencies_ms)
    return LatencyStats(
        count=len(values),
        mean_ms=statistics.fmean(values),
        p50_ms=percentile(values, 50),
        p95_ms=percentile(values, 95),
        p99_ms=percentile(values, 99),
        max_ms=values[-1],
    )


def confidence_stats(confidences: Sequence[float]) -> ConfidenceStats:
    np = needs("numpy")
    histogram = np.histogram(confidences, bins=CONFIDENCE_BINS, range=(0.0, 1.0))[0]
    if not confidences:
        return ConfidenceStats(p10=None, p50=None, p90=None, histogram=histogram.tolist())
    values = sorted(confidences)
    p10, p50, p90 = (percentile(values, q) for q in (10, 50, 90))
    return ConfidenceStats(p10=p10, p50=p50, p90=p90, histogram=histogram.tolist())


def match_boxes(
    reference: Sequence[Detection], candidate: Sequence[Detection], iou_threshold: float = 0.5
) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(reference index, candidate index, IoU)`` between two images'
    detections: same class name, IoU >= ``iou_threshold``, the assignment of largest total
    IoU (``scipy.optimize.linear_sum_assignment``)."""
    if not reference or not candidate:
        return []
    np = needs("numpy")
    linear_sum_assignment = needs("scipy.optimize").linear_sum_assignment

    def boxes(detections: Sequence[Detection]) -> Any:
        return np.array([[d.box.x1, d.box.y1, d.box.x2, d.box.y2] for d in detections], float)

    a, b = boxes(reference)[:, None, :], boxes(candidate)[None, :, :]
    width = (np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])).clip(0)
    height = (np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])).clip(0)
    inter = width * height
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    same = (
        np.array([d.class_name for d in reference])[:, None]
        == np.array([d.class_name for d in candidate])[None, :]
    )
    allowed = same & (iou >= iou_threshold)
    rows, cols = linear_sum_assignment(np.where(allowed, iou, 0.0), maximize=True)
    return [
        (int(r), int(c), float(iou[r, c])) for r, c in zip(rows, cols, strict=True) if allowed[r, c]
    ]


def _ratio(num: int, den: int, empty: float) -> float:
    return num / den if den else empty


def agreement(
    reference: Sequence[list[Detection] | None],
    candidate: Sequence[list[Detection] | None],
    *,
    labels: tuple[str, str] = ("A", "B"),
    iou_threshold: float = 0.5,
) -> Agreement:
    """Candidate against reference, image by image (``None``: the model did not answer that
    image; such images are left out)."""
    ref_boxes = cand_boxes = images = 0
    ious: list[float] = []
    for ref, cand in zip(reference, candidate, strict=True):
        if ref is None or cand is None:
            continue
        images += 1
        ref_boxes += len(ref)
        cand_boxes += len(cand)
        ious.extend(iou for _, _, iou in match_boxes(ref, cand, iou_threshold))
    matched = len(ious)
    nothing = 1.0 if ref_boxes == 0 and cand_boxes == 0 else 0.0
    precision = _ratio(matched, cand_boxes, nothing)
    recall = _ratio(matched, ref_boxes, nothing)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Agreement(
        reference=labels[0],
        candidate=labels[1],
        images=images,
        reference_boxes=ref_boxes,
        candidate_boxes=cand_boxes,
        matched=matched,
        precision=precision,
        recall=recall,
        f1=f1,
        mean_iou=sum(ious) / matched if matched else None,
    )


def chi_square(rows: list[SplitRow], answered: int) -> tuple[float, int, float]:
    """(statistic, degrees of freedom, p) over the models with a configured share."""
    if answered == 0:
        return 0.0, 0, 1.0
    shared = [r for r in rows if r.expected_share > 0]
    if any(r.observed for r in rows if r.expected_share == 0):
        return float("inf"), max(len(shared) - 1, 0), 0.0  # answered by a model with 0 %
    if len(shared) < 2:
        return 0.0, 0, 1.0  # all answers came from the only model with a share
    chisquare = needs("scipy.stats").chisquare
    observed = [r.observed for r in shared]
    expected = [r.expected_share * answered for r in shared]
    result = chisquare(observed, expected)
    return float(result.statistic), len(shared) - 1, float(result.pvalue)
