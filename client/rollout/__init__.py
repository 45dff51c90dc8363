"""Progressive rollout between two deployed models, guarded by live A/B figures
(``python -m client rollout``).

:func:`rollout` moves the traffic share that A and B hold together (the pool) from A to B in
steps; the other deployed models keep theirs. Each step sets the split through the SDK (the very
calls :func:`client.deploy.split_calls` makes, which ``--dry-run`` prints), holds while probe
calls pinned to A and B and untargeted ones measure from the client's side, and checks the
guards: B's error rate, the p95 latency ratio B/A and the F1 of B's boxes against A's
(:func:`client.ab.agreement`). A failed guard rolls back to the split found at the start; a
``stop`` event (the CLI's SIGINT/SIGTERM) restores it too. A re-run starts from the endpoint's
current split, skipping the steps already done.

The package's rooms: ``reports`` (the Structs), ``plan`` (steps, splits, the SDK calls),
``probes`` (demo scenes, a step's calls), ``run`` (the steps and guards), ``render`` (lines and
table), ``figure`` (PNG). numpy, scipy, Pillow and matplotlib (the ``tools`` extra) are imported
only when needed.

Example:
    >>> from client import Client
    >>> from client.rollout import Guards, rollout, render_table
    >>> client = Client.from_vertex(project="p", location="us-central1", endpoint="123")
    >>> report = rollout(client, "111", "222", [10, 50, 100], hold_s=300,
    ...                  guards=Guards(max_latency_ratio=1.5, min_agreement=0.9))
    >>> print(render_table(report))
"""

from client.rollout.figure import plot
from client.rollout.plan import RolloutPlan, parse_steps, plan, step_split
from client.rollout.probes import demo_scenes
from client.rollout.render import plan_lines, render_table, step_line, verdict_line
from client.rollout.reports import (
    GuardFailure,
    Guards,
    RolloutReport,
    SideStats,
    SplitChange,
    StepRecord,
    decode_report,
    encode_report,
)
from client.rollout.run import RolloutInterrupted, rollout

__all__ = [
    "GuardFailure",
    "Guards",
    "RolloutInterrupted",
    "RolloutPlan",
    "RolloutReport",
    "SideStats",
    "SplitChange",
    "StepRecord",
    "decode_report",
    "demo_scenes",
    "encode_report",
    "parse_steps",
    "plan",
    "plan_lines",
    "plot",
    "render_table",
    "rollout",
    "step_line",
    "step_split",
    "verdict_line",
]
