"""The rollout's plan: which steps, each step's full split, and the SDK calls that set them.

The rollout moves the share that A and B hold together at the start (the **pool**): at step
``p`` % B gets ``pool * p / 100`` rounded half up and A the rest; every other deployed model
keeps its share. A re-run starts from the endpoint's current split: B's share of the pool then
says which steps are done (those at or below it are skipped).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from client import errors
from client._client import Client
from client.ab import configured_split
from client.deploy import SdkCall, split_calls
from client.names import endpoint_names, resolve
from client.transports import VertexTransport


def parse_steps(text: str) -> list[int]:
    """``"10,50,100"`` as steps (checked by :func:`check_steps`)."""
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise errors.ParameterError(
            f"--steps {text!r}: give percents of the pool as integers, e.g. 10,50,100"
        ) from None
    check_steps(steps)
    return steps


def check_steps(steps: Sequence[int]) -> None:
    """Steps are increasing integers in 1..100."""
    if not steps:
        raise errors.ParameterError("give at least one step (percent of the pool for B)")
    for step in steps:
        if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= 100:
            raise errors.ParameterError(f"step {step!r} is not an integer percent in 1..100")
    for before, after in zip(steps, steps[1:], strict=False):
        if after <= before:
            raise errors.ParameterError(
                f"steps must increase: {after} comes after {before} in {list(steps)}"
            )


def step_split(start: Mapping[str, int], a: str, b: str, percent: int) -> dict[str, int]:
    """The split at step ``percent``: B gets that share of the pool (A's and B's shares at the
    start together), rounded half up, A the rest; the other deployed models keep theirs."""
    pool = start.get(a, 0) + start.get(b, 0)
    to_b = (pool * percent * 2 + 100) // 200
    return {**start, a: pool - to_b, b: to_b}


def pool_share(split: Mapping[str, int], a: str, b: str) -> float:
    """B's share of the pool, in percent (0 for an empty pool)."""
    pool = split.get(a, 0) + split.get(b, 0)
    return 100 * split.get(b, 0) / pool if pool else 0.0


def vertex_endpoint(client: Client) -> Any:
    """The client's ``aiplatform.Endpoint``; a rollout changes its split, so Vertex only."""
    transport = client.transport
    if not isinstance(transport, VertexTransport):
        raise errors.ParameterError(
            "a rollout changes the endpoint's traffic split: use --endpoint or --emulator-info "
            "(a Vertex endpoint or the emulator), not --url"
        )
    return transport.endpoint


@dataclass(frozen=True)
class RolloutPlan:
    """What a run will do: from ``start`` (the split found now), each step of ``todo`` sets
    ``splits[i]`` with ``calls(splits[i])``; ``skipped`` steps are already done."""

    endpoint: str  # resource name
    a: str
    b: str
    names: dict[str, str]  # deployed model id -> display name ("" when it has none)
    steps: list[int]
    start: dict[str, int]
    skipped: list[int]
    todo: list[int]
    splits: list[dict[str, int]]

    @property
    def pool(self) -> int:
        return self.start.get(self.a, 0) + self.start.get(self.b, 0)

    def calls(self, split: Mapping[str, int]) -> list[SdkCall]:
        """The SDK calls that set ``split``: what ``--dry-run`` prints and a run executes."""
        return split_calls(self.endpoint, split)


def plan(
    client: Client | None,
    from_id: str,
    to_id: str,
    steps: Sequence[int],
    *,
    split: Mapping[str, int] | None = None,
    endpoint: str | None = None,
) -> RolloutPlan:
    """Read the endpoint (its deployed models and current split) and plan the steps; changes
    nothing. ``from_id``/``to_id`` are deployed model ids or display names.

    ``split`` given (name or id -> percent; ``rollout --dry-run --split``), nothing is read: the
    plan of ``endpoint`` (its resource name or id) from that split, made without credentials."""
    check_steps(steps)
    if split is not None:
        names = {k: "" for k in split}
        found = {k: int(v) for k, v in split.items()}
        resource = endpoint or "ENDPOINT"
    else:
        assert client is not None
        sdk_endpoint = vertex_endpoint(client)
        found = configured_split(client)  # reads the endpoint resource, deployed models included
        names = endpoint_names(sdk_endpoint.list_models())
        resource = sdk_endpoint.resource_name
    a = resolve(from_id, names, "--from")
    b = resolve(to_id, names, "--to")
    if a == b:
        raise errors.ParameterError(f"--from and --to are the same deployed model ({a})")
    start = {dm: found[dm] for dm in (a, b) if dm in found} | found  # A, B, then the others
    if start.get(a, 0) + start.get(b, 0) == 0:
        raise errors.ParameterError(
            f"{a} and {b} hold no traffic between them: there is no share to move (set one "
            "first with `deploy split`)"
        )
    # done: a step that would give B less than it holds now; exact in whole percents, where
    # comparing shares would trip on rounding. The step B holds exactly is held again (its
    # split is already set): a run killed during its hold never checked its guards.
    done = {s for s in steps if step_split(start, a, b, s)[b] < start.get(b, 0)}
    skipped = [s for s in steps if s in done]
    todo = [s for s in steps if s not in done]
    return RolloutPlan(
        endpoint=resource,
        a=a,
        b=b,
        names=names,
        steps=list(steps),
        start=start,
        skipped=skipped,
        todo=todo,
        splits=[step_split(start, a, b, s) for s in todo],
    )
