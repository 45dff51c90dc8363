"""The A/B reports as a PNG figure (matplotlib's Agg canvas, no pyplot state)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from client import errors
from client.ab.measures import needs
from client.ab.render import deployed_label
from client.ab.reports import Report, TargetedReport


def _cdf(ax: Any, series: Sequence[tuple[str, Sequence[float]]]) -> None:
    for name, latencies in series:
        if latencies:
            xs = sorted(latencies)
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            ax.step(xs, ys, where="post", label=name)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("share of calls")
    ax.set_ylim(0, 1.02)
    ax.set_title("latency CDF")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot(report: Report, path: str | Path) -> None:
    """A PNG: the latency CDF per model beside per-class counts (targeted) or configured
    against observed shares (split). matplotlib's Agg canvas, no pyplot state."""
    needs("matplotlib")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    if isinstance(report, TargetedReport):
        _cdf(
            left,
            [
                (f"{s.label} {deployed_label(s.deployed_model_id, s.display_name)}", s.latencies_ms)
                for s in report.models
            ],
        )
        classes = sorted({c for s in report.models for c in s.class_counts})
        width = 0.8 / max(len(report.models), 1)
        for j, s in enumerate(report.models):
            xs = [i + (j - (len(report.models) - 1) / 2) * width for i in range(len(classes))]
            counts = [s.class_counts.get(c, 0) for c in classes]
            name = f"{s.label} {deployed_label(s.deployed_model_id, s.display_name)}"
            right.bar(xs, counts, width, label=name)
        right.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
        right.set_ylabel("detections")
        right.set_title(f"per-class counts over {report.inputs} inputs")
        right.legend(fontsize=8)
        fig.suptitle(f"A/B on /{report.route}")
    else:
        labels = [deployed_label(r.deployed_model_id, r.display_name) for r in report.rows]
        _cdf(left, list(zip(labels, [r.latencies_ms for r in report.rows], strict=True)))
        slots = range(len(report.rows))
        right.bar(
            [x - 0.2 for x in slots],
            [100 * r.expected_share for r in report.rows],
            0.4,
            label="configured",
        )
        right.bar(
            [x + 0.2 for x in slots],
            [100 * r.observed_share for r in report.rows],
            0.4,
            label="observed",
        )
        right.set_xticks(list(slots), [label.replace(" (", "\n(") for label in labels], rotation=15)
        right.set_ylabel("% of calls")
        right.set_title(f"traffic split, p = {report.p_value:.3g}")
        right.legend(fontsize=8)
        fig.suptitle(f"split check: {report.answered} of {report.calls} calls answered")
    try:
        fig.savefig(path, format="png", dpi=100)
    except OSError as exc:
        raise errors.ParameterError(f"cannot write {path}: {exc.strerror or exc}") from None
