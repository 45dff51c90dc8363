"""The A/B reports as text tables for a terminal."""

from __future__ import annotations

from client.ab.reports import Report, SplitReport
from client.text import fmt, table


def deployed_label(deployed_model_id: str, display_name: str | None) -> str:
    """``shapes-a (1234567890123456789)``: ids alone are 19-digit numbers."""
    return f"{display_name} ({deployed_model_id})" if display_name else deployed_model_id


def render_table(report: Report) -> str:
    """The report as text tables, for a terminal."""
    if isinstance(report, SplitReport):
        return _render_split(report)
    m = report.models
    head = (
        f"targeted A/B on /{report.route}: {report.inputs} inputs x {len(m)} deployed models, "
        f"concurrency {report.concurrency}, {report.elapsed_s:.1f} s"
    )
    models = table(
        [
            "model",
            "deployed model",
            "served by",
            "calls",
            "errors",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "det/img",
            "conf p10/p50/p90",
        ],
        [
            [
                s.label,
                deployed_label(s.deployed_model_id, s.display_name),
                f"{s.model or '-'} {s.version or ''}".strip(),
                s.calls,
                s.errors,
                fmt(s.latency.p50_ms),
                fmt(s.latency.p95_ms),
                fmt(s.latency.p99_ms),
                fmt(s.detections_per_image, 2),
                "/".join(fmt(q, 2) for q in (s.confidence.p10, s.confidence.p50, s.confidence.p90)),
            ]
            for s in m
        ],
        left=3,
    )
    parts = [head, "", models]
    kinds = [
        f"{s.label}: " + ", ".join(f"{k} x{v}" for k, v in s.error_kinds.items())
        for s in m
        if s.error_kinds
    ]
    if kinds:
        parts += ["", "errors: " + "; ".join(kinds)]
    classes = sorted({c for s in m for c in s.class_counts})
    if classes:
        parts += [
            "",
            table(
                ["class", *(s.label for s in m)],
                [[c, *(s.class_counts.get(c, 0) for s in m)] for c in classes],
            ),
        ]
    if report.agreement and report.agreement[0].task == "classify":
        parts += [
            "",
            f"agreement with {m[0].label} (the same top class)",
            table(
                ["model", "images", "same top class", "top-1 agreement"],
                [[a.candidate, a.images, a.matched, fmt(a.f1, 3)] for a in report.agreement],
            ),
        ]
    elif report.agreement:
        task = report.agreement[0].task
        iou = "rotated IoU" if task == "obb" else "IoU"
        extra = ["mean OKS"] if task == "pose" else []
        parts += [
            "",
            f"agreement with {m[0].label} (same class, {iou} >= {report.iou_threshold:g}, "
            "one to one)",
            table(
                [
                    "model",
                    "images",
                    "ref boxes",
                    "boxes",
                    "matched",
                    "precision",
                    "recall",
                    "F1",
                    f"mean {iou}",
                    *extra,
                ],
                [
                    [
                        a.candidate,
                        a.images,
                        a.reference_boxes,
                        a.candidate_boxes,
                        a.matched,
                        fmt(a.precision, 3),
                        fmt(a.recall, 3),
                        fmt(a.f1, 3),
                        fmt(a.mean_iou, 3),
                        *([fmt(a.mean_oks, 3)] if extra else []),
                    ]
                    for a in report.agreement
                ],
            ),
        ]
    return "\n".join(parts)


def _render_split(report: SplitReport) -> str:
    head = (
        f"split check: {report.calls} untargeted /{report.route} calls, {report.answered} "
        f"answered, {report.errors} errors, concurrency {report.concurrency}, "
        f"{report.elapsed_s:.1f} s"
    )
    rows = table(
        [
            "deployed model",
            "configured %",
            "expected",
            "observed",
            "observed %",
            "p50 ms",
            "p95 ms",
        ],
        [
            [
                deployed_label(r.deployed_model_id, r.display_name),
                fmt(r.configured_percent),
                fmt(r.expected),
                r.observed,
                fmt(100 * r.observed_share),
                fmt(r.latency.p50_ms),
                fmt(r.latency.p95_ms),
            ]
            for r in report.rows
        ],
    )
    errors_line = ", ".join(f"{k} x{v}" for k, v in report.error_kinds.items())
    fit = f"chi-square {report.chi_square:.2f} (dof {report.dof}), p = {report.p_value:.3g}"
    return "\n".join(
        [head, "", rows, "", fit] + ([f"errors: {errors_line}"] if errors_line else [])
    )
