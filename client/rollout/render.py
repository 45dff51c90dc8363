"""The rollout as text: the live lines, the plan, the timeline table and the verdict."""

from __future__ import annotations

from collections.abc import Mapping

from client.ab import deployed_label
from client.rollout.plan import RolloutPlan
from client.rollout.reports import GuardFailure, RolloutReport, StepRecord
from client.text import fmt, table


def split_text(split: Mapping[str, int], names: Mapping[str, str]) -> str:
    """``shapes-a 40, shapes-b 40, slow 20``: each deployed model by display name (else id)."""
    return ", ".join(f"{names.get(dm) or dm} {pct}" for dm, pct in split.items())


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"x{value:.2f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def holding_line(
    number: int,
    total: int,
    percent: int,
    split: Mapping[str, int],
    names: Mapping[str, str],
    hold_s: float,
) -> str:
    """Printed when a step's split is set and its hold begins."""
    return (
        f"step {number}/{total}: B {percent}% of the pool, split {split_text(split, names)}; "
        f"holding {hold_s:g} s"
    )


def failure_text(failure: GuardFailure) -> str:
    """``latency ratio 25.31 > 1.5 (--max-latency-ratio; p95 B 1520.3 ms / A 60.1 ms)``."""
    figure = "unmeasured" if failure.figure is None else f"{failure.figure:.3g}"
    sign = "<" if failure.guard == "agreement" else ">"
    if failure.figure is None:
        sign = "vs"
    return (
        f"{failure.guard} {figure} {sign} {failure.threshold:g} ({failure.option}; "
        f"{failure.detail})"
    )


def step_line(record: StepRecord, total: int, names: Mapping[str, str]) -> str:
    """A step's live line: split, calls, errors, p95 A/B, agreement, verdict."""
    f1 = record.agreement.f1 if record.agreement else None
    verdict: str = record.verdict
    if record.failed:
        verdict += ": " + "; ".join(failure_text(f) for f in record.failed)
    return (
        f"step {record.step}/{total} B {record.percent}% | split "
        f"{split_text(record.split, names)} | calls A {record.a.calls} B {record.b.calls} "
        f"untargeted {record.untargeted_calls} | errors A {record.a.errors} B {record.b.errors} "
        f"| p95 A {_ms(record.a.latency.p95_ms)} B {_ms(record.b.latency.p95_ms)} "
        f"({_ratio(record.latency_ratio)}) | F1 {fmt(f1, 3)} | untargeted to B "
        f"{_share(record.b_answered_share)} | {verdict}"
    )


def plan_lines(plan: RolloutPlan) -> list[str]:
    """``--dry-run``: the pool, each step's full split and the SDK calls that set it, and the
    rollback's."""
    a, b = (deployed_label(dm, plan.names.get(dm) or None) for dm in (plan.a, plan.b))
    lines = [
        f"rollout from A {a} to B {b} on {plan.endpoint}",
        f"starting split: {split_text(plan.start, plan.names)} (pool of A and B: {plan.pool}%; "
        "the others keep their shares)",
    ]
    if plan.skipped:
        lines.append(f"already done: steps {', '.join(map(str, plan.skipped))}")
    if not plan.todo:
        lines.append("nothing to do: B already holds its last step's share")
    for number, (percent, split) in enumerate(zip(plan.todo, plan.splits, strict=True), 1):
        lines.append(f"step {number}: B {percent}% of the pool -> {split_text(split, plan.names)}")
        lines.extend(f"  {call}" for call in plan.calls(split))
    if plan.todo:
        lines.append("on a failed guard or an interruption, back to the starting split:")
        lines.extend(f"  {call}" for call in plan.calls(plan.start))
    return lines


def verdict_line(report: RolloutReport) -> str:
    """The final verdict, naming the guard, its figure and threshold when rolled back."""
    names = report.names
    b = deployed_label(report.to_id, report.to_name)
    final = split_text(report.final_split, names)
    if report.verdict == "done":
        if not report.timeline:
            return f"done: nothing to do, {b} already holds its last step's share ({final})"
        return f"done: {b} holds {report.steps[-1]}% of the pool; split {final}"
    where = ""
    if report.timeline:
        last = report.timeline[-1]
        when = "at" if last.verdict != "pass" else "after"  # stopped between two steps
        where = f" {when} step {last.step} (B {last.percent}% of the pool)"
    if report.verdict == "running":
        return f"running{where}: split {final}"
    if report.verdict == "rolled back":
        failed = "; ".join(failure_text(f) for f in report.failed)
        return f"rolled back{where}: {failed}; split restored to {final}"
    kept = "split restored to" if report.restored else "split left at"
    return f"interrupted{where}: {kept} {final}"


def render_table(report: RolloutReport) -> str:
    """The timeline as a table, then the verdict."""
    a = deployed_label(report.from_id, report.from_name)
    b = deployed_label(report.to_id, report.to_name)
    guards = [
        f"{name} {value:g}"
        for name, value in (
            ("max error rate", report.guards.max_error_rate),
            ("max latency ratio", report.guards.max_latency_ratio),
            ("min agreement", report.guards.min_agreement),
        )
        if value is not None
    ]
    head = [
        f"rollout from A {a} to B {b}: steps {','.join(map(str, report.steps))} % of the pool, "
        f"hold {report.hold_s:g} s, {report.probes} probe images, concurrency "
        f"{report.concurrency}, {report.elapsed_s:.1f} s",
        f"guards: {', '.join(guards) or 'none'}; starting split "
        f"{split_text(report.start_split, report.names)}",
    ]
    if report.skipped:
        head.append(f"already done: steps {', '.join(map(str, report.skipped))}")
    rows = table(
        [
            "step",
            "B %",
            "split",
            "calls A/B/any",
            "errors A/B",
            "p95 A ms",
            "p95 B ms",
            "B/A",
            "B err %",
            "F1",
            "any->B %",
            "verdict",
        ],
        [
            [
                r.step,
                r.percent,
                "/".join(str(v) for v in r.split.values()),
                f"{r.a.calls}/{r.b.calls}/{r.untargeted_calls}",
                f"{r.a.errors}/{r.b.errors}",
                fmt(r.a.latency.p95_ms),
                fmt(r.b.latency.p95_ms),
                fmt(r.latency_ratio, 2),
                fmt(None if r.error_rate is None else 100 * r.error_rate),
                fmt(r.agreement.f1 if r.agreement else None, 3),
                fmt(None if r.b_answered_share is None else 100 * r.b_answered_share, 0),
                r.verdict,
            ]
            for r in report.timeline
        ],
        left=3,
    )
    order = " / ".join(
        report.names.get(dm) or dm
        for dm in (report.timeline[0].split if report.timeline else report.start_split)
    )
    return "\n".join([*head, "", rows, f"(split: {order})", "", verdict_line(report)])
