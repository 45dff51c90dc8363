"""A/B measures: latency and confidence statistics, agreement of two models' answers (every
task: matched objects through :mod:`client.matching`, or the top class of a classification),
and the traffic split's chi-square test. numpy and scipy (the ``tools`` extra) are imported only
when needed."""

from __future__ import annotations

import importlib
import statistics
from collections.abc import Sequence
from typing import Any

from client.ab.reports import Agreement, ConfidenceStats, LatencyStats, SplitRow
from client.matching import match, oks, similarity_for
from client.schema import Classification, Detection
from client.stats import percentile

#: One image's answer: a model's detections, or a classification's top classes (best first).
Answer = list[Detection] | list[Classification]

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
    reference: Sequence[Detection],
    candidate: Sequence[Detection],
    iou_threshold: float = 0.5,
    task: str = "detect",
) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(reference index, candidate index, IoU)`` between two images'
    detections: same class name, IoU (of rotated boxes for OBB) >= ``iou_threshold``, the
    assignment of largest total IoU (:func:`client.matching.match`)."""
    return match(reference, candidate, similarity=similarity_for(task), threshold=iou_threshold)


def _ratio(num: int, den: int, empty: float) -> float:
    return num / den if den else empty


def agreement(
    reference: Sequence[Answer | None],
    candidate: Sequence[Answer | None],
    *,
    labels: tuple[str, str] = ("A", "B"),
    iou_threshold: float = 0.5,
    task: str = "detect",
) -> Agreement:
    """Candidate against reference, image by image (``None``: the model did not answer that
    image; such images are left out).

    Detect and segment: objects matched by box IoU; OBB: by rotated-box IoU; pose: by box IoU,
    and the object keypoint similarity of the matched pairs (``mean_oks``). Classify: an image's
    top class is its one object, so precision, recall and F1 are all the share of images whose
    top class is the same (top-1 agreement).
    """
    if task == "classify":
        return _top1_agreement(reference, candidate, labels)
    ref_boxes = cand_boxes = images = 0
    ious: list[float] = []
    similarities: list[float] = []
    for ref, cand in zip(reference, candidate, strict=True):
        if ref is None or cand is None:
            continue
        images += 1
        ref_boxes += len(ref)
        cand_boxes += len(cand)
        refs, cands = _detections(ref), _detections(cand)
        for r, c, iou in match_boxes(refs, cands, iou_threshold, task):
            ious.append(iou)
            if task == "pose" and (value := oks(refs[r], cands[c])) is not None:
                similarities.append(value)
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
        task=task,
        mean_oks=statistics.fmean(similarities) if similarities else None,
    )


def _detections(answer: Answer) -> list[Detection]:
    return [d for d in answer if isinstance(d, Detection)]


def _top1_agreement(
    reference: Sequence[Answer | None], candidate: Sequence[Answer | None], labels: tuple[str, str]
) -> Agreement:
    pairs = [(r, c) for r, c in zip(reference, candidate, strict=True) if r and c]
    same = sum(r[0].class_name == c[0].class_name for r, c in pairs)
    share = same / len(pairs) if pairs else 1.0
    return Agreement(
        reference=labels[0],
        candidate=labels[1],
        images=len(pairs),
        reference_boxes=len(pairs),
        candidate_boxes=len(pairs),
        matched=same,
        precision=share,
        recall=share,
        f1=share,
        mean_iou=None,
        task="classify",
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
