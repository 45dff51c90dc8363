"""The fleet behind the dedicated endpoint: each deployed model's replicas, probed, restarted and
sized as Vertex's own fleet (Kubernetes underneath) keeps them.

* A deployed model runs on ``min_replica_count`` to ``max_replica_count`` replicas, each a real
  server process on its own port with Vertex's container environment (:class:`ReplicaSet`).
* The data plane sends each request to the ready replica with the fewest requests in flight
  (:meth:`ReplicaSet.pick`): requests differ a lot in cost (a stream holds a replica for
  minutes, a /models call for a millisecond), so least-outstanding keeps a replica that is
  busy with long work from getting more, where round robin would not; ties go round robin.
* Every ``probe_interval`` the supervisor asks each replica's health route. A starting replica
  takes traffic once it answers 200; a ready one that fails ``unready_after`` probes in a row
  takes none until it answers again, and one that then fails ``restart_after`` in a row is
  restarted; a process that exits is restarted after a back-off (none the first time, then
  ``restart_backoff`` doubling up to ``max_restart_backoff``, as Kubernetes' CrashLoopBackOff).
  A replica whose process is gone is never picked, even before the next probe. The back-off
  resets once a replica has stayed up for ``backoff_reset`` (Kubernetes: 10 minutes).
* Autoscaling, between min and max: on requests per minute per replica against the deploy's
  ``autoscaling_target_request_count_per_minute`` (counted over ``autoscale_window``), and on
  CPU utilisation (the replica processes' CPU time, from /proc) against
  ``autoscaling_target_cpu_utilization`` (Vertex's default target, 60 %, when the deploy gives
  no target and max > min). The accelerator duty-cycle target is recorded, not measured. Scaling
  out starts replicas at once (they take traffic once healthy); scaling in waits for the load to
  stay below target for ``scale_down_delay``. Each change is a :class:`ScaleEvent`.
* Stopping a replica (scale-in, undeploy, the emulator's shutdown) sends SIGTERM and waits
  ``grace_period`` before SIGKILL, so a server drains: its open streams end with their
  ``shutting-down`` event, not a cut.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from client.emulator.info import ReplicaState, ReplicaStatus, ScaleEvent
from client.emulator.processes import ServerProcess, StartupError, stop_process
from client.emulator.resources import now

log = logging.getLogger("client.emulator")
DEFAULT_CPU_TARGET = 60  # percent: Vertex's autoscaling target when a deploy names none
MAX_EVENTS = 200


@dataclass(frozen=True)
class FleetPolicy:
    """How the fleet probes, restarts, scales and stops replicas (the emulator's settings)."""

    probe_interval: float = 1.0
    probe_timeout: float = 2.0
    unready_after: int = 3
    restart_after: int = 10
    startup_timeout: float = 300.0
    restart_backoff: float = 10.0
    max_restart_backoff: float = 300.0
    backoff_reset: float = 600.0  # up this long: its next crash restarts at once again
    grace_period: float = 30.0  # the server drains for SERVE_SHUTDOWN_SECONDS (25 s), plus 5
    replica_capacity: int = 64  # requests in flight per replica; beyond it on all: 429
    autoscale_window: float = 60.0
    scale_down_delay: float = 600.0


@dataclass(frozen=True)
class Autoscaling:
    """A deployed model's autoscaling targets (the deploy's ``autoscalingMetricSpecs``)."""

    request_count_per_minute: int | None = None  # per replica
    cpu_utilization: int | None = None  # percent of the machine, per replica
    accelerator_duty_cycle: int | None = None  # recorded; nothing measures it here


@dataclass(eq=False)
class Replica:
    """One replica: its current process and what the fleet knows of it."""

    id: str
    process: ServerProcess
    state: ReplicaState = "starting"
    since: float = field(default_factory=time.monotonic)  # when it (re)started or last changed
    restarts: int = 0
    crashes: int = 0  # in a row, for the back-off; reset once it stayed up backoff_reset
    up_since: float | None = None  # when it last became ready after a (re)start
    failures: int = 0  # failed probes in a row
    outstanding: int = 0  # requests the data plane has in flight on it
    restart_at: float | None = None
    cpu: tuple[float, float] | None = None  # (monotonic time, CPU seconds) at the last probe
    utilization: float = 0.0  # percent of the machine, between the last two probes

    @property
    def alive(self) -> bool:
        return self.process.running

    def status(self) -> ReplicaStatus:
        return ReplicaStatus(
            id=self.id,
            pid=self.process.pid,
            port=self.process.port,
            url=self.process.url,
            state=self.state,
            restarts=self.restarts,
            outstanding=self.outstanding,
            log=str(self.process.log_path),
        )


class ReplicaSet:
    """One deployed model's replicas.

    ``factory(n)`` makes the (not started) process of replica ``n`` with a free port and the
    container environment. Call the methods on the event loop's (main) thread: processes are
    started there (their death signal is tied to it, see :mod:`~client.emulator.processes`).
    """

    def __init__(
        self,
        deployed_model_id: str,
        name: str,
        factory: Callable[[int], ServerProcess],
        *,
        min_replicas: int = 1,
        max_replicas: int | None = None,
        autoscaling: Autoscaling = Autoscaling(),
        policy: FleetPolicy = FleetPolicy(),
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.deployed_model_id, self.name, self.factory = deployed_model_id, name, factory
        self.min_replicas = max(1, min_replicas)
        self.max_replicas = max(self.min_replicas, max_replicas or self.min_replicas)
        self.autoscaling, self.policy, self.on_change = autoscaling, policy, on_change
        self.replicas: list[Replica] = []
        self.events: list[ScaleEvent] = []
        self.deploying = True  # until its first replicas are ready: a crash then fails the deploy
        self._arrivals: deque[float] = deque()
        self._numbers = itertools.count(1)
        self._turn = itertools.count()
        self._low_since: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # replicas stopping or restarting
        self.closed = False  # stopped: nothing starts, probes and scaling end

    # -- replicas ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the minimum number of replicas."""
        for _ in range(self.min_replicas):
            self._add()

    def _add(self) -> Replica:
        assert not self.closed, f"{self.name}: its replicas were stopped"
        n = next(self._numbers)
        replica = Replica(f"{self.name}-{n}", self.factory(n))
        replica.process.start()
        self.replicas.append(replica)
        return replica

    @property
    def serving(self) -> list[Replica]:
        """The replicas not on their way out."""
        return [r for r in self.replicas if r.state != "stopping"]

    @property
    def ready(self) -> list[Replica]:
        return [r for r in self.replicas if r.state == "ready" and r.alive]

    def pick(self, exclude: Iterable[Replica] = ()) -> Replica | None:
        """The ready replica with the fewest requests in flight (below its capacity), ties in
        turn; None when there is none."""
        skip = set(map(id, exclude))
        free = [
            r
            for r in self.ready
            if id(r) not in skip and r.outstanding < self.policy.replica_capacity
        ]
        if not free:
            return None
        least = min(r.outstanding for r in free)
        tied = [r for r in free if r.outstanding == least]
        return tied[next(self._turn) % len(tied)]

    def saturated(self) -> bool:
        """Every ready replica is at its capacity (and there is one)."""
        ready = self.ready
        return bool(ready) and all(r.outstanding >= self.policy.replica_capacity for r in ready)

    def begin(self, replica: Replica) -> None:
        """A request goes to ``replica`` (counted for the request-rate signal)."""
        replica.outstanding += 1
        self._arrivals.append(time.monotonic())

    def end(self, replica: Replica) -> None:
        replica.outstanding -= 1

    def unreachable(self, replica: Replica) -> None:
        """The data plane could not reach ``replica``: no traffic until a probe says otherwise
        (a dead process is restarted by the supervisor)."""
        if replica.state == "ready":
            self._set(replica, "unready")

    def status(self) -> list[ReplicaStatus]:
        return [r.status() for r in self.replicas]

    # -- supervision ---------------------------------------------------------------------------

    async def wait_ready(self, client: httpx.AsyncClient, deadline: float) -> None:
        """Until the minimum number of replicas is ready (the deploy's operation waits on this):
        a replica that exits first, or too few ready by ``deadline``, is a :class:`StartupError`
        (its log's tail)."""
        while len(self.ready) < self.min_replicas:
            for replica in self.replicas:
                if not replica.alive:
                    raise StartupError(replica.process.describe_exit())
            if time.monotonic() > deadline:
                lagging = [r for r in self.replicas if r.state != "ready"]
                replica = lagging[0] if lagging else self.replicas[0]
                raise StartupError(
                    f"{self.name}: {len(self.ready)} of {self.min_replicas} replicas healthy in "
                    f"time; last lines of {replica.process.log_path}:\n"
                    f"{replica.process.log_tail()}"
                )
            await self.probe(client)
            await asyncio.sleep(0.2)
        self.deploying = False

    async def probe(self, client: httpx.AsyncClient) -> None:
        """One round: every replica's health, restarts due, then the autoscaler."""
        if self.closed:
            return
        clock = time.monotonic()
        live = [r for r in self.replicas if r.state != "stopping" and r.alive]
        answers = await asyncio.gather(
            *(r.process.healthy(client, self.policy.probe_timeout) for r in live)
        )
        if self.closed:  # stopped while the probes were out
            return
        for replica, problem in zip(live, answers, strict=True):
            if replica.state != "stopping" and replica in self.replicas:  # retired meanwhile
                self._sample_cpu(replica, clock)
                self._probed(replica, problem, clock)
        for replica in list(self.replicas):
            if replica.state == "stopping":
                continue
            if not replica.alive and replica.state != "failed":
                self._exited(replica, clock)
            elif (
                replica.state == "failed"
                and replica.restart_at is not None
                and clock >= replica.restart_at
                and not self.deploying
            ):
                self._restart(replica)
        if not self.deploying:
            self._autoscale(clock)

    def _probed(self, replica: Replica, problem: str | None, clock: float) -> None:
        if problem is None:
            replica.failures = 0
            if replica.state != "ready":
                if replica.up_since is None:
                    replica.up_since = clock
                self._set(replica, "ready")
            return
        replica.failures += 1
        if replica.state == "starting":
            if clock - replica.since > self.policy.startup_timeout:
                log.error("%s: not healthy %g s after its start (%s): restarting it",
                          replica.id, self.policy.startup_timeout, problem)  # fmt: skip
                self._fail(replica, clock, immediately=True)
        elif replica.state == "ready" and replica.failures >= self.policy.unready_after:
            log.warning("%s: %s; no traffic until it answers again", replica.id, problem)
            self._set(replica, "unready")
        elif replica.state == "unready" and replica.failures >= self.policy.restart_after:
            log.error("%s: %s, %d probes in a row: restarting it", replica.id, problem,
                      replica.failures)  # fmt: skip
            self._fail(replica, clock, immediately=True)

    def _exited(self, replica: Replica, clock: float) -> None:
        log.error("%s", replica.process.describe_exit(then="; it will be restarted"))
        self._fail(replica, clock)

    def _fail(self, replica: Replica, clock: float, immediately: bool = False) -> None:
        """Mark ``replica`` failed and schedule its restart (the back-off grows with the crashes
        in a row: none for the first, then ``restart_backoff`` doubling)."""
        if replica.up_since is not None and clock - replica.up_since >= self.policy.backoff_reset:
            replica.crashes = 0  # it ran long enough: not a crash loop
        replica.up_since = None
        delay = 0.0
        if replica.crashes and not immediately:
            delay = min(
                self.policy.restart_backoff * 2 ** (replica.crashes - 1),
                self.policy.max_restart_backoff,
            )
        replica.crashes += 1
        replica.restart_at = clock + delay
        self._set(replica, "failed")

    def _restart(self, replica: Replica) -> None:
        """Stop what is left of ``replica``'s process (unhealthy, not dead: stopped as
        Kubernetes stops a failed container, with the grace period) and start a new one, in a
        task: a replica draining does not hold up the probes of the others."""
        replica.restart_at = None  # this restart is under way
        old = replica.process

        async def restart() -> None:
            if old.running:
                await stop_process(old, self.policy.grace_period)
            if self.closed or replica.state != "failed" or replica not in self.replicas:
                return  # retired or stopped meanwhile: nothing to start
            process = self.factory(int(replica.id.rsplit("-", 1)[1]))
            try:
                process.start()
            except StartupError as exc:
                log.error("%s cannot restart: %s", replica.id, exc)
                self._fail(replica, time.monotonic())
                return
            replica.process = process
            replica.restarts += 1
            replica.failures, replica.cpu = 0, None
            log.info("%s restarted (restart %d)", replica.id, replica.restarts)
            self._set(replica, "starting")

        self._spawn(restart())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _set(self, replica: Replica, state: ReplicaState) -> None:
        if replica.state != state:
            log.info("%s: %s -> %s", replica.id, replica.state, state)
            replica.state, replica.since = state, time.monotonic()
            self.on_change()

    # -- autoscaling ---------------------------------------------------------------------------

    def _sample_cpu(self, replica: Replica, clock: float) -> None:
        seconds = replica.process.cpu_seconds()
        if seconds is None:
            return
        if replica.cpu is not None and clock > replica.cpu[0]:
            used = (seconds - replica.cpu[1]) / (clock - replica.cpu[0])
            replica.utilization = 100.0 * used / (os.cpu_count() or 1)
        replica.cpu = (clock, seconds)

    def desired(self, clock: float) -> tuple[int, str]:
        """How many replicas the load asks for (within min..max), and why."""
        current = len(self.serving)
        window = self.policy.autoscale_window
        while self._arrivals and self._arrivals[0] < clock - window:
            self._arrivals.popleft()
        wanted: list[tuple[int, str]] = []
        target = self.autoscaling
        if target.request_count_per_minute:
            rate = len(self._arrivals) * 60.0 / window
            need = math.ceil(rate / target.request_count_per_minute)
            wanted.append((need, f"{rate:.0f} requests/min for a target of "
                                 f"{target.request_count_per_minute} per replica"))  # fmt: skip
        cpu = target.cpu_utilization
        if cpu is None and target.request_count_per_minute is None:
            cpu = DEFAULT_CPU_TARGET if self.max_replicas > self.min_replicas else None
        if cpu:
            used = sum(r.utilization for r in self.ready)
            wanted.append((math.ceil(used / cpu), f"CPU {used:.0f} % for a target of {cpu} %"))
        if not wanted:
            return current, "no autoscaling signal"
        need, why = max(wanted)
        return max(self.min_replicas, min(self.max_replicas, need)), why

    def _autoscale(self, clock: float) -> None:
        current = len(self.serving)
        target, why = self.desired(clock)
        if target > current:
            self._low_since = None
            self._event(current, target, why)
            for _ in range(target - current):
                self._add()
            self.on_change()
        elif target < current:
            if self._low_since is None:
                self._low_since = clock
            elif clock - self._low_since >= self.policy.scale_down_delay:
                self._low_since = None
                self._event(current, target, f"{why}, for {self.policy.scale_down_delay:g} s")
                going = sorted(self.serving, key=lambda r: (r.state == "ready", r.outstanding))
                for replica in going[: current - target]:
                    self.retire(replica)
        else:
            self._low_since = None

    def _event(self, before: int, after: int, why: str) -> None:
        event = ScaleEvent(
            time=now(),
            deployed_model_id=self.deployed_model_id,
            name=self.name,
            replicas_from=before,
            replicas_to=after,
            reason=why,
        )
        log.info("%s: %d -> %d replicas (%s)", self.name, before, after, why)
        self.events = [*self.events, event][-MAX_EVENTS:]
        self.on_change()

    # -- stopping ------------------------------------------------------------------------------

    def retire(self, replica: Replica) -> asyncio.Task[None]:
        """Take ``replica`` out of service: no new traffic, SIGTERM, SIGKILL after the grace
        period, then gone from the set."""
        self._set(replica, "stopping")

        async def stop() -> None:
            try:
                await stop_process(replica.process, self.policy.grace_period)
            finally:
                if replica in self.replicas:
                    self.replicas.remove(replica)
                self.on_change()

        return self._spawn(stop())

    async def stop(self) -> None:
        """Stop every replica (each drains for up to the grace period), at once; nothing of
        this set starts again."""
        self.closed = True
        for replica in self.serving:
            self.retire(replica)
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class Fleet:
    """Every deployed model's :class:`ReplicaSet`, by deployed model id, and their supervisor."""

    def __init__(self, policy: FleetPolicy = FleetPolicy()) -> None:
        self.policy = policy
        self.sets: dict[str, ReplicaSet] = {}
        self.on_change: list[Callable[[], None]] = []

    def changed(self) -> None:
        for callback in self.on_change:
            callback()

    def add(self, replicas: ReplicaSet) -> None:
        self.sets[replicas.deployed_model_id] = replicas
        self.changed()

    def remove(self, deployed_model_id: str) -> ReplicaSet | None:
        """Take a deployed model's replicas out of the fleet (stop them with
        :meth:`ReplicaSet.stop`)."""
        replicas = self.sets.pop(deployed_model_id, None)
        self.changed()
        return replicas

    def get(self, deployed_model_id: str) -> ReplicaSet | None:
        return self.sets.get(deployed_model_id)

    def events(self) -> list[ScaleEvent]:
        return sorted((e for s in self.sets.values() for e in s.events), key=lambda e: e.time)

    async def supervise(self) -> None:
        """Probe, restart and scale every deployed model's replicas, forever (until cancelled)."""
        async with httpx.AsyncClient(trust_env=False) as client:
            while True:
                for replicas in list(self.sets.values()):
                    # not one undeployed while another was probed
                    if (
                        self.sets.get(replicas.deployed_model_id) is replicas
                        and not replicas.deploying
                    ):
                        try:
                            await replicas.probe(client)
                        except Exception:  # a bug here must not stop the supervision
                            log.exception("supervising %s failed; going on", replicas.name)
                await asyncio.sleep(self.policy.probe_interval)

    async def stop(self) -> None:
        """Stop every replica of every deployed model (each drains for the grace period)."""
        sets = list(self.sets.values())
        self.sets.clear()
        await asyncio.gather(*(s.stop() for s in sets))
        self.changed()
