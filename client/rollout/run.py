"""The rollout itself: set a step's split, hold while the probes measure, check the guards, go on
or roll back; restore the starting split when interrupted or when anything escapes mid-step."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Unpack

from client import errors, vertex
from client._client import Client, ImageParams
from client.ab import ROUTES, Route, agreement, answer_of, latency_stats
from client.ab.calls import Outcome
from client.deploy import execute
from client.media import ImageInput
from client.rollout.plan import RolloutPlan, plan, pool_share
from client.rollout.probes import PINNED_A, PINNED_B, Held, demo_scenes, hold
from client.rollout.render import holding_line, split_text, step_line
from client.rollout.reports import (
    GuardFailure,
    Guards,
    RolloutReport,
    SideStats,
    SplitChange,
    StepRecord,
    Verdict,
)

STRAGGLERS_S = 30.0  # after an interruption, how long calls still in flight are waited for


class RolloutInterrupted(Exception):  # not an error: the user stopped it
    """The run was stopped through its ``stop`` event (the CLI sets it on SIGINT/SIGTERM);
    ``report`` says where (verdict "interrupted") and whether the start split was restored."""

    def __init__(self, report: RolloutReport) -> None:
        super().__init__("rollout interrupted")
        self.report = report


class _Stopped(Exception):
    pass


@contextlib.contextmanager
def _sdk_quiet() -> Iterator[None]:
    """The SDK logs each update ("Updating Endpoint ...") to stdout: the live lines say it."""
    logger = logging.getLogger("google.cloud.aiplatform.models")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_guards(guards: Guards) -> None:
    for name, value, low, high in (
        ("max_error_rate", guards.max_error_rate, 0.0, 1.0),
        ("min_agreement", guards.min_agreement, 0.0, 1.0),
    ):
        if value is not None and not low <= value <= high:
            raise errors.ParameterError(f"{name} must be in [{low:g}, {high:g}], not {value}")
    if guards.max_latency_ratio is not None and not guards.max_latency_ratio > 0:
        raise errors.ParameterError(
            f"max_latency_ratio must be above 0, not {guards.max_latency_ratio}"
        )


def evaluate(
    guards: Guards,
    a: SideStats,
    b: SideStats,
    error_rate: float | None,
    latency_ratio: float | None,
    f1: float | None,
    pairs: int,
) -> list[GuardFailure]:
    """The guards a step fails. A figure that cannot be measured (no call succeeded on a side,
    no image answered by both) fails its guard: the rollout only goes on when it is shown safe."""
    failed: list[GuardFailure] = []
    if guards.max_error_rate is not None and (
        error_rate is None or error_rate > guards.max_error_rate
    ):
        failed.append(
            GuardFailure(
                guard="error rate",
                option="--max-error-rate",
                figure=error_rate,
                threshold=guards.max_error_rate,
                detail=f"{b.errors} of {b.calls} calls to B failed",
            )
        )
    if guards.max_latency_ratio is not None and (
        latency_ratio is None or latency_ratio > guards.max_latency_ratio
    ):
        pa, pb = a.latency.p95_ms, b.latency.p95_ms
        detail = (
            f"p95 B {pb:.1f} ms / A {pa:.1f} ms"
            if pa is not None and pb is not None
            else f"no successful call to {'A' if pa is None else 'B'}"
        )
        failed.append(
            GuardFailure(
                guard="latency ratio",
                option="--max-latency-ratio",
                figure=latency_ratio,
                threshold=guards.max_latency_ratio,
                detail=detail,
            )
        )
    if guards.min_agreement is not None and (f1 is None or f1 < guards.min_agreement):
        failed.append(
            GuardFailure(
                guard="agreement",
                option="--min-agreement",
                figure=f1,
                threshold=guards.min_agreement,
                detail=f"F1 of B against A over {pairs} images"
                if pairs
                else "no image answered by both",
            )
        )
    return failed


def _side(deployed_model_id: str, outcomes: Sequence[Outcome]) -> SideStats:
    return SideStats(
        deployed_model_id=deployed_model_id,
        calls=len(outcomes),
        errors=sum(o.error is not None for o in outcomes),
        error_kinds=dict(Counter(o.error for o in outcomes if o.error is not None)),
        latency=latency_stats([o.latency_ms for o in outcomes if o.result is not None]),
    )


def measure(
    held: Held,
    *,
    step: int,
    percent: int,
    split: Mapping[str, int],
    a: str,
    b: str,
    guards: Guards,
    iou_threshold: float,
    times: tuple[str, str, float, float],
    task: str = "detect",
) -> StepRecord:
    """A step's record from what its hold measured, the guards evaluated (none when it was
    interrupted)."""
    side_a, side_b = _side(a, held.side(PINNED_A)), _side(b, held.side(PINNED_B))
    pairs = [(x, y) for x, y in held.pairs() if x.result is not None and y.result is not None]
    agree = (
        agreement(
            [answer_of(x) for x, _ in pairs],
            [answer_of(y) for _, y in pairs],
            iou_threshold=iou_threshold,
            task=task,
        )
        if pairs
        else None
    )
    error_rate = side_b.errors / side_b.calls if side_b.calls else None
    pa, pb = side_a.latency.p95_ms, side_b.latency.p95_ms
    ratio = pb / pa if pa and pb is not None else None
    answered = Counter(o.result.deployed_model_id for o in held.untargeted if o.result is not None)
    total = sum(answered.values())
    failed = (
        []
        if held.interrupted
        else evaluate(
            guards,
            side_a,
            side_b,
            error_rate,
            ratio,
            agree.f1 if agree else None,
            len(pairs),
        )
    )
    started, ended, start_s, end_s = times
    return StepRecord(
        step=step,
        percent=percent,
        split=dict(split),
        started=started,
        ended=ended,
        start_s=start_s,
        end_s=end_s,
        a=side_a,
        b=side_b,
        pairs=len(pairs),
        untargeted_calls=len(held.untargeted),
        untargeted_errors=sum(o.error is not None for o in held.untargeted),
        answered_by=dict(sorted(answered.items())),
        b_answered_share=answered[b] / total if total else None,
        error_rate=error_rate,
        latency_ratio=ratio,
        agreement=agree,
        verdict="interrupted" if held.interrupted else "fail" if failed else "pass",
        failed=failed,
    )


@dataclass(frozen=True)
class _Settings:
    """How each step measures (the arguments of :func:`rollout`)."""

    hold_s: float
    guards: Guards
    probes: list[ImageInput]
    concurrency: int
    route: Route
    iou_threshold: float
    params: dict[str, Any]


def rollout(
    client: Client,
    from_id: str,
    to_id: str,
    steps: Sequence[int],
    *,
    hold_s: float = 60.0,
    guards: Guards | None = None,
    probes: Sequence[ImageInput] | None = None,
    concurrency: int = 4,
    route: Route = "detect",
    iou_threshold: float = 0.5,
    no_restore: bool = False,
    stop: threading.Event | None = None,
    live: Callable[[str], None] | None = None,
    progress: Callable[[RolloutReport], None] | None = None,
    **params: Unpack[ImageParams],
) -> RolloutReport:
    """Move the traffic A and B share from A to B step by step, guarded by live A/B figures.

    Each step of ``steps`` (percents of the pool, increasing) sets the split (through the SDK:
    :func:`client.deploy.split_calls`), then holds ``hold_s`` seconds while probe calls pinned
    to A and to B, and untargeted ones, measure from the client's side
    (:func:`client.rollout.probes.hold`); then ``guards`` decide. A failed guard rolls back to
    the split found at the start (verdict "rolled back"); all steps passed: "done".

    Args:
        client: a client through Vertex (or the emulator): the split is the endpoint's.
        from_id, to_id: A and B, deployed model ids or display names.
        probes: the probe images (default: :func:`~client.rollout.probes.demo_scenes`).
        no_restore: on an interruption or an error, leave the split as it is.
        stop: set it (from a signal handler) to stop: the start split is restored (unless
            ``no_restore``) and :class:`RolloutInterrupted` raised, carrying the report.
        live: called with a line as each step starts and ends.
        progress: called with the report so far (verdict "running") each time the split is set
            and each time a step is measured (``client rollout --report`` writes it: the web
            console shows it live).
        params: inference parameters of the probe calls.

    The SDK must be set up for the endpoint's control plane (``Client.from_vertex`` does it for
    an ``api_endpoint``; else ``aiplatform.init`` or the default project).
    """
    if not hold_s >= 0:
        raise errors.ParameterError(f"hold must be at least 0 seconds, not {hold_s}")
    if concurrency < 1:
        raise errors.ParameterError(f"concurrency must be at least 1, not {concurrency}")
    if route not in ROUTES:
        raise errors.ParameterError(f"route must be one of {', '.join(ROUTES)}, not {route!r}")
    if not 0 < iou_threshold <= 1:
        raise errors.ParameterError(f"iou_threshold must be in (0, 1], not {iou_threshold}")
    guards = guards or Guards()
    check_guards(guards)
    probe_images: list[ImageInput] = list(probes if probes is not None else demo_scenes())
    if not probe_images:
        raise errors.ParameterError("no probe images")
    the_plan = plan(client, from_id, to_id, steps)
    for dm in (the_plan.a, the_plan.b):  # opens the connections before the threads share them
        client.models(deployed_model_id=dm)
    settings = _Settings(
        hold_s=hold_s,
        guards=guards,
        probes=probe_images,
        concurrency=concurrency,
        route=route,
        iou_threshold=iou_threshold,
        params={k: v for k, v in params.items() if v is not None},
    )
    run = _Run(client, the_plan, stop or threading.Event(), live or (lambda _: None), settings)
    run.progress = progress or (lambda _: None)
    return run.run(no_restore)


class _Run:
    """One run's state: the splits set so far, the steps measured."""

    def __init__(
        self,
        client: Client,
        the_plan: RolloutPlan,
        stop: threading.Event,
        live: Callable[[str], None],
        settings: _Settings,
    ) -> None:
        self.client, self.plan, self.stop, self.live = client, the_plan, stop, live
        self.settings = settings
        self.t0 = time.monotonic()
        self.started = _now()
        self.splits = [SplitChange(t_s=0.0, split=dict(the_plan.start), why="start")]
        self.timeline: list[StepRecord] = []
        self.changed = self.restored = False
        self.progress: Callable[[RolloutReport], None] = lambda _: None

    def at(self) -> float:
        return round(time.monotonic() - self.t0, 3)

    def set_split(self, split: Mapping[str, int], why: str) -> None:
        self.changed = True  # before the call: one that fails may still have been applied
        with vertex.sdk_errors("the Vertex AI control plane"), _sdk_quiet():
            execute(self.plan.calls(split))
        self.splits.append(SplitChange(t_s=self.at(), split=dict(split), why=why))
        self.progress(self.report("running"))

    def report(self, verdict: Verdict, failed: list[GuardFailure] | None = None) -> RolloutReport:
        p, s = self.plan, self.settings
        return RolloutReport(
            endpoint=p.endpoint,
            from_id=p.a,
            from_name=p.names.get(p.a) or None,
            to_id=p.b,
            to_name=p.names.get(p.b) or None,
            names={k: v for k, v in p.names.items() if v},
            steps=p.steps,
            skipped=p.skipped,
            hold_s=s.hold_s,
            concurrency=s.concurrency,
            route=s.route,
            params=s.params,
            probes=len(s.probes),
            guards=s.guards,
            iou_threshold=s.iou_threshold,
            start_split=p.start,
            final_split=self.splits[-1].split,
            verdict=verdict,
            failed=failed or [],
            restored=self.restored,
            started=self.started,
            elapsed_s=self.at(),
            timeline=list(self.timeline),  # a snapshot: a progress report is kept as it was
            splits=list(self.splits),
        )

    def step(self, number: int, percent: int, split: dict[str, int]) -> StepRecord:
        s, p = self.settings, self.plan
        if self.stop.is_set():
            raise _Stopped
        self.set_split(split, f"step {number}")
        start_s, started = self.at(), _now()
        self.live(holding_line(number, len(p.todo), percent, split, p.names, s.hold_s))
        method = getattr(self.client, s.route)
        held = hold(
            method,
            s.probes,
            p.a,
            p.b,
            hold_s=s.hold_s,
            concurrency=s.concurrency,
            stop=self.stop,
            params=s.params,
        )
        record = measure(
            held,
            step=number,
            percent=percent,
            split=split,
            a=p.a,
            b=p.b,
            guards=s.guards,
            iou_threshold=s.iou_threshold,
            times=(started, _now(), start_s, self.at()),
            task=s.route,
        )
        self.timeline.append(record)
        self.live(step_line(record, len(p.todo), p.names))
        self.progress(self.report("running"))
        if held.interrupted:
            held.finish(timeout=STRAGGLERS_S)
            raise _Stopped
        return record

    def run(self, no_restore: bool) -> RolloutReport:
        p = self.plan
        if p.skipped:
            self.live(
                f"steps {', '.join(map(str, p.skipped))} already done: B holds "
                f"{p.start.get(p.b, 0)}% of the traffic, {pool_share(p.start, p.a, p.b):.0f}% of "
                f"the pool of {p.pool}% (the current split: a re-run continues from it)"
            )
        try:
            for number, (percent, split) in enumerate(zip(p.todo, p.splits, strict=True), 1):
                record = self.step(number, percent, split)
                if record.failed:
                    self.set_split(p.start, "rollback")
                    self.restored = True
                    return self.report("rolled back", record.failed)
                if self.stop.is_set():  # a signal after the hold: stopped all the same
                    raise _Stopped
            return self.report("done")
        except _Stopped:
            if self.changed and not no_restore:
                self._restore(None)
            raise RolloutInterrupted(self.report("interrupted")) from None
        except BaseException as exc:
            if self.changed and not no_restore:
                self._restore(exc)
            with contextlib.suppress(Exception):  # a report file left "running" would mislead
                self.progress(self.report("interrupted"))
            raise

    def _restore(self, exc: BaseException | None) -> None:
        """Put the starting split back after an interruption or an error (``exc``); a failure
        to do so is said (live line, and a note on ``exc``), never raised over the first."""
        p = self.plan
        try:
            self.set_split(p.start, "restore")
        except Exception as again:  # noqa: BLE001 - said, then the run's own outcome stands
            left = split_text(self.splits[-1].split, p.names)
            said = f"restoring the starting split failed ({again}); the split may be left at {left}"
            self.live(said)
            if exc is not None:
                exc.add_note(said)
            return
        self.restored = True
        if exc is not None:
            restored = f"the starting split was restored: {split_text(p.start, p.names)}"
            exc.add_note(restored)
            self.live(f"{type(exc).__name__} during the rollout: {restored}")
