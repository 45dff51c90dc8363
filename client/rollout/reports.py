"""The rollout's report: msgspec Structs, JSON both ways."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import msgspec

from client.ab.reports import Agreement, LatencyStats

#: "running": the report as written while the rollout runs (``--report``, after each change)
Verdict = Literal["running", "done", "rolled back", "interrupted"]
StepVerdict = Literal["pass", "fail", "interrupted"]


class Guards(msgspec.Struct, frozen=True, kw_only=True):
    """The thresholds a step must meet (``None``: that guard is off).

    ``max_error_rate``: B's failed pinned calls over its pinned calls, 0..1;
    ``max_latency_ratio``: p95 of B's pinned calls over A's, in the same step;
    ``min_agreement``: F1 of B's boxes against A's on the probe images both answered.
    """

    max_error_rate: float | None = None
    max_latency_ratio: float | None = None
    min_agreement: float | None = None


class GuardFailure(msgspec.Struct, frozen=True, kw_only=True):
    """A guard a step failed: its figure (``None``: it could not be measured, which fails it
    too) against the threshold."""

    guard: Literal["error rate", "latency ratio", "agreement"]
    option: str  # the CLI option that set the threshold
    figure: float | None
    threshold: float
    detail: str  # "p95 B 812.0 ms / A 40.1 ms", "3 of 12 calls failed"...


class SideStats(msgspec.Struct, frozen=True, kw_only=True):
    """One deployed model's pinned probe calls in a step."""

    deployed_model_id: str
    calls: int
    errors: int
    error_kinds: dict[str, int]
    latency: LatencyStats  # of the calls that succeeded


class SplitChange(msgspec.Struct, frozen=True, kw_only=True):
    """The split set at ``t_s`` seconds into the run (``why``: "start", "step N", "rollback",
    "restore"); the first is the split found at the start, not a change."""

    t_s: float
    split: dict[str, int]
    why: str


class StepRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One step: the split it set, what the probes measured while it held, the guards."""

    step: int  # 1-based, over the steps this run made
    percent: int  # B's share of the pool
    split: dict[str, int]
    started: str  # ISO 8601 UTC
    ended: str
    start_s: float  # seconds into the run
    end_s: float
    a: SideStats
    b: SideStats
    pairs: int  # images answered by both A and B (what agreement is computed over)
    untargeted_calls: int
    untargeted_errors: int
    answered_by: dict[str, int]  # untargeted calls: deployed model id -> calls it answered
    b_answered_share: float | None  # of the untargeted calls answered, B's share
    error_rate: float | None  # B's errors over B's calls
    latency_ratio: float | None  # p95 B / p95 A
    agreement: Agreement | None  # B against A (None: no image answered by both)
    verdict: StepVerdict
    failed: list[GuardFailure] = []


class RolloutReport(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="rollout"):
    """A rollout from A to B: where it started, each step, and how it ended.

    ``start_split`` is the split found when this run started (a re-run starts from the split
    an earlier run left): what a rollback or an interruption restores. ``skipped`` are the
    steps already done then (B's share of the pool above them).
    """

    endpoint: str
    from_id: str
    from_name: str | None
    to_id: str
    to_name: str | None
    names: dict[str, str]  # every deployed model id -> its display name
    steps: list[int]
    skipped: list[int]
    hold_s: float
    concurrency: int
    route: str
    params: dict[str, Any]
    probes: int  # probe images
    guards: Guards
    iou_threshold: float
    start_split: dict[str, int]
    final_split: dict[str, int]
    verdict: Verdict
    failed: list[GuardFailure]  # the guards that stopped the run (rolled back)
    restored: bool  # the start split was put back (rollback or interruption)
    started: str
    elapsed_s: float
    timeline: list[StepRecord]
    splits: list[SplitChange]


decode_report: Callable[[bytes], RolloutReport] = msgspec.json.Decoder(RolloutReport).decode


def encode_report(report: RolloutReport) -> bytes:
    """The report as indented JSON."""
    return msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n"
