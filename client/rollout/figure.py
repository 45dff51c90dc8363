"""The rollout as a PNG: the split over time above the guard figures (matplotlib's Agg canvas,
no pyplot state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from client import errors
from client.ab import deployed_label
from client.ab.measures import needs
from client.rollout.reports import RolloutReport


def _steps(ax: Any, report: RolloutReport, dm: str, label: str) -> None:
    times = [c.t_s for c in report.splits] + [report.elapsed_s]
    shares = [c.split.get(dm, 0) for c in report.splits]
    ax.step(times, [*shares, shares[-1]], where="post", label=label, linewidth=2)


def _guard(
    ax: Any,
    report: RolloutReport,
    values: list[float | None],
    threshold: float | None,
    title: str,
    ylabel: str,
    floor: float,
) -> None:
    xs = [r.end_s for r in report.timeline]
    points = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None]
    if points:
        ax.plot(*zip(*points, strict=True), marker="o", label="measured")
    for r in report.timeline:  # a failed step in red
        if r.verdict == "fail":
            ax.axvline(r.end_s, color="tab:red", alpha=0.3)
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold:g}")
    ax.set_xlim(0, max(report.elapsed_s, 1e-3))
    top = max([v for _, v in points] + [threshold or 0.0, floor])
    ax.set_ylim(0, top * 1.15)  # from 0: a ratio or a rate reads against nothing otherwise
    ax.set_title(title)
    ax.set_xlabel("seconds")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if points or threshold is not None:
        ax.legend(fontsize=8)


def plot(report: RolloutReport, path: str | Path) -> None:
    """A PNG: A's and B's traffic shares over the run (steps, rollback) on top; below, per step
    (at its end), B's error rate, p95 latency ratio and agreement F1 with their thresholds
    dashed."""
    needs("matplotlib")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 7), layout="constrained")
    axes: dict[str, Any] = fig.subplot_mosaic(
        [["split", "split", "split"], ["errors", "latency", "agreement"]]
    )
    top = axes["split"]
    _steps(top, report, report.from_id, f"A {deployed_label(report.from_id, report.from_name)}")
    _steps(top, report, report.to_id, f"B {deployed_label(report.to_id, report.to_name)}")
    for change in report.splits[1:]:
        top.annotate(
            change.why, (change.t_s, 100), fontsize=8, ha="left", va="top", rotation=90, alpha=0.7
        )
    top.set_xlim(0, max(report.elapsed_s, 1e-3))
    top.set_ylim(0, 105)
    top.set_ylabel("% of traffic")
    top.set_title("traffic split")
    top.grid(alpha=0.3)
    top.legend(fontsize=8, loc="center right")
    g = report.guards
    timeline = report.timeline
    _guard(
        axes["errors"],
        report,
        [None if r.error_rate is None else 100 * r.error_rate for r in timeline],
        None if g.max_error_rate is None else 100 * g.max_error_rate,
        "B's error rate",
        "% of B's calls",
        1.0,
    )
    _guard(
        axes["latency"],
        report,
        [r.latency_ratio for r in timeline],
        g.max_latency_ratio,
        "p95 latency B / A",
        "ratio",
        1.0,
    )
    _guard(
        axes["agreement"],
        report,
        [r.agreement.f1 if r.agreement else None for r in timeline],
        g.min_agreement,
        "agreement (F1 of B against A)",
        "F1",
        1.0,
    )
    fig.suptitle(f"rollout: {report.verdict}")
    try:
        fig.savefig(path, format="png", dpi=100)
    except OSError as exc:
        raise errors.ParameterError(f"cannot write {path}: {exc.strerror or exc}") from None
