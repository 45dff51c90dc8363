"""The A/B reports: msgspec Structs, JSON both ways (tagged by ``"kind"``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec


class LatencyStats(msgspec.Struct, frozen=True, kw_only=True):
    """Latency of the calls that succeeded, in milliseconds (``None`` when there were none)."""

    count: int
    mean_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None


class ConfidenceStats(msgspec.Struct, frozen=True, kw_only=True):
    """Detection confidences: quantiles and a histogram of ``CONFIDENCE_BINS`` bins on [0, 1]."""

    p10: float | None
    p50: float | None
    p90: float | None
    histogram: list[int]


class ModelStats(msgspec.Struct, frozen=True, kw_only=True):
    """One deployed model's side of a targeted run (``label``: A, B, ... in argument order)."""

    label: str
    deployed_model_id: str
    display_name: str | None = None  # the deployed model's, when the endpoint says (Vertex)
    model: str | None  # the model name that answered (first successful answer)
    version: str | None
    calls: int
    errors: int
    error_kinds: dict[str, int]  # "404 unknown-model", "503", "TimeoutError"... -> count
    latency: LatencyStats
    latencies_ms: list[float]  # every successful call's, in input order
    images: int  # images answered
    detections: int
    detections_per_image: float | None
    class_counts: dict[str, int]
    confidence: ConfidenceStats


class Agreement(msgspec.Struct, frozen=True, kw_only=True):
    """A candidate model's answers against the reference's, over the images both answered.

    ``precision`` = matched / candidate boxes, ``recall`` = matched / reference boxes; with no
    boxes on either side all three are 1.0, else a zero denominator gives 0.0. ``mean_iou`` is
    the mean IoU of the matches (of rotated boxes for ``task`` obb; ``None`` without matches);
    ``mean_oks`` the mean object keypoint similarity of matched pose detections. For a
    classification each image's top class is its one object: ``f1`` is the top-1 agreement.
    """

    reference: str  # label of the reference model (A)
    candidate: str
    images: int
    reference_boxes: int
    candidate_boxes: int
    matched: int
    precision: float
    recall: float
    f1: float
    mean_iou: float | None
    task: str = "detect"
    mean_oks: float | None = None


class TargetedReport(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="targeted"):
    route: str
    params: dict[str, Any]
    inputs: int
    concurrency: int
    iou_threshold: float
    elapsed_s: float
    models: list[ModelStats]
    agreement: list[Agreement]  # models[1:] against models[0]


class SplitRow(msgspec.Struct, frozen=True, kw_only=True):
    deployed_model_id: str
    display_name: str | None = None
    configured_percent: float  # 0 for a model that answered but has no share in the split
    expected_share: float
    expected: float  # calls: expected_share x answered
    observed: int
    observed_share: float
    latency: LatencyStats
    latencies_ms: list[float]


class SplitReport(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="split"):
    """``p_value``: chi-square goodness of fit of the observed counts against the configured
    split, over the calls that were answered. A model answering without a configured share
    gives p = 0; with one configured model the test has no freedom: p = 1 (all answers from
    it) or 0."""

    route: str  # "models" when no inputs were given
    calls: int
    answered: int
    errors: int
    error_kinds: dict[str, int]
    concurrency: int
    elapsed_s: float
    rows: list[SplitRow]
    chi_square: float
    dof: int
    p_value: float


Report = TargetedReport | SplitReport
decode_report: Callable[[bytes], Report] = msgspec.json.Decoder(Report).decode


def encode_report(report: Report) -> bytes:
    """The report as indented JSON."""
    return msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n"
