"""The emulator's fleet: each deployed model on replicas that are probed, restarted, scaled and
drained as Vertex's are, driven through the unmodified SDK and the project's client.

- A replica SIGKILLed under load from 4 clients (the session emulator's shapes-a): no call fails (the data plane moves what it can
  to the other replica, the client retries the 503 of a request the dead one held), the replica
  is restarted and serves again, ``deploy status`` lists the restart.
- A burst beyond one replica's request-rate target scales out to the maximum; the quiet after
  it scales back to the minimum; both are recorded as scale events.
- Undeploy while a /stream is open: the replica gets SIGTERM and its grace period, the stream
  ends with the server's ``shutting-down`` event, not a cut (its frame held at an instrumented
  server's gate, so "in flight" is a state the test sets, not a race).
"""

from __future__ import annotations

import os
import signal
import ssl
import sys
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.cloud import aiplatform

from app.demo.shapes import moving_shape_frames, write_video
from client import Client, RetryPolicy, StreamError, cli
from client.emulator import DeployedModelConfig, Emulator, EmulatorConfig, EmulatorInfo
from client.schema import StreamFrame
from conftest import INSTRUMENTED, PATIENCE_S, Gate, free_port, pid_alive, wait_until

CHILD = str(Path(__file__).with_name("emulator_child.py"))
CLIENTS = 4


def yolo_env(workdir: Path) -> dict[str, str]:
    return {"YOLO_CONFIG_DIR": str(workdir / "yolo-config"), "PYTHONUNBUFFERED": "1"}


def use(info: EmulatorInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's emulator has its own certificate: the SDK's environment, for this test."""
    for key, value in info.env().items():
        monkeypatch.setenv(key, value)


def deploy_status(emu: Emulator, capsys: pytest.CaptureFixture[str]) -> str:
    """``python -m client deploy status --emulator-info ...``'s output (in process)."""
    assert emu.workdir is not None
    capsys.readouterr()
    code = cli.main(["deploy", "status", "--emulator-info", str(emu.workdir / "info.json")])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_sigkilled_replica_under_load(
    emulator_process: Emulator,
    shapes_a_gates: Callable[[], list[Gate]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """On the session emulator's shapes-a (two replicas), its split at 100 % for the test so
    that unpinned calls go there too, then back to 80/20; restart counts are compared with
    those before (earlier tests on the session emulator kill replicas too).
    ``shapes_a_gates``: afterwards both replicas are ready again."""
    emu = emulator_process
    info = emu.current()
    a, b = info.deployed_models["shapes-a"], info.deployed_models["shapes-b"]
    victim, survivor = info.replicas[a]
    killed = "was killed by SIGKILL; it will be restarted"
    kills_before = emu.output_path.read_text().count(killed)  # earlier tests kill replicas too
    aiplatform.init(**info.init_kwargs())
    endpoint = aiplatform.Endpoint(info.endpoint_id)
    split = dict(endpoint.traffic_split)
    endpoint.update(traffic_split={a: 100, b: 0})
    try:
        # While the killed replica restarts, a loaded machine may keep the survivor from
        # answering a probe or two: the client's retries ride that out, as they would on Vertex.
        retries = RetryPolicy(attempts=20, backoff=0.25, max_backoff=2)
        seen: Counter[str] = Counter()  # replica id -> calls it answered
        failures: list[BaseException] = []
        calls = threading.Semaphore(0)
        stop = threading.Event()

        def load(client: Client, pinned: bool) -> None:
            kwargs = {"deployed_model_id": a} if pinned else {}
            with client:
                while not stop.is_set():
                    try:
                        answer = client.models(**kwargs)
                    except Exception as exc:  # noqa: BLE001 - every failure is the finding
                        failures.append(exc)
                        continue
                    assert answer.deployed_model_id == a and answer.replica_id
                    seen[answer.replica_id] += 1
                    calls.release()
                    # a breath between calls: traffic all along, not a loop that takes the
                    # cores the restarting replica needs (which only makes the test longer)
                    stop.wait(0.02)

        with ThreadPoolExecutor(CLIENTS) as pool:
            try:  # the load runs until the restarted replica has answered: a state, not a time
                workers = [
                    pool.submit(
                        load,
                        Client.from_vertex(
                            endpoint=info.endpoint_id, **info.init_kwargs(), retries=retries
                        ),
                        pinned=i % 2 == 0,
                    )
                    for i in range(CLIENTS)
                ]
                for _ in range(2 * CLIENTS):  # every client is under way
                    assert calls.acquire(timeout=PATIENCE_S)
                before = set(seen)
                os.kill(victim.pid, signal.SIGKILL)

                def restarted_and_serving() -> bool:
                    (replica,) = [r for r in emu.current().replicas[a] if r.id == victim.id]
                    return (
                        replica.restarts == victim.restarts + 1
                        and replica.state == "ready"
                        and any(rid.endswith(f"-{replica.pid}") for rid in list(seen))
                    )

                wait_until(restarted_and_serving, "the killed replica to serve again")
            finally:
                stop.set()
            for worker in workers:
                worker.result()
    finally:
        endpoint.update(traffic_split=split)
    assert failures == [], failures[:3]
    assert len(before) == 2 and sum(seen.values()) > 2 * CLIENTS
    replicas = {r.id: r for r in emu.current().replicas[a]}
    assert replicas[victim.id].pid != victim.pid and not pid_alive(victim.pid)
    assert replicas[survivor.id].restarts == survivor.restarts
    assert replicas[survivor.id].pid == survivor.pid
    status = deploy_status(emu, capsys)
    restarted = replicas[victim.id]
    assert (
        f"replica {victim.id}  ready     pid {restarted.pid}  port {restarted.port}  "
        f"restarts {restarted.restarts}"
    ) in status, status
    assert emu.output_path.read_text().count(killed) == kills_before + 1


TOY: dict[str, Any] = {"command": (sys.executable, CHILD), "health_route": "/ping"}


def toy_emulator(tmp_path: Path, *models: DeployedModelConfig, **settings: object) -> Emulator:
    """An emulator of the toy server (``tests/emulator_child.py``: starts in a second)."""
    config = EmulatorConfig(
        deployed_models=models, log_dir=str(tmp_path / "logs"), probe_interval=0.2, **settings
    )
    return Emulator(config, workdir=tmp_path / "emulator", startup_timeout=60)


def trusting(info: EmulatorInfo) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cafile=info.ca_cert), timeout=30)


def test_every_replica_at_capacity_is_429_resource_exhausted(tmp_path: Path) -> None:
    """With room for one request per replica, a second while the first is held (an SSE answer
    waiting for the test's go) is Vertex's 429; once the first ends, the next one is served."""
    emu = toy_emulator(tmp_path, DeployedModelConfig("toy", 100, **TOY), replica_capacity=1)
    gate = tmp_path / "gate"
    with emu as info, trusting(info) as http:
        with http.stream("POST", info.invoke_url(f"/sse?n=2&gate={gate}")) as held:
            lines = held.iter_lines()
            assert next(line for line in lines if line.startswith("data: "))  # in flight
            refused = http.post(info.invoke_url("/echo"))
            assert refused.status_code == 429, refused.text
            error = refused.json()["error"]
            assert error["status"] == "RESOURCE_EXHAUSTED"
            assert error["message"].startswith("Rate of traffic exceeds capacity.")
            Path(f"{gate}.1").touch()
            assert sum(1 for line in lines if line.startswith("data: ")) == 1
        assert http.post(info.invoke_url("/echo")).status_code == 200


def test_burst_scales_out_to_max_then_back_to_min(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """24 requests at once against a target of 6 a minute per replica (counted over 4 s: 360 a
    minute) call for 60 replicas: 3, the maximum. Once the window has emptied, and after the
    scale-down delay, back to 1."""
    toy = DeployedModelConfig(
        "toy", 100, replicas=1, max_replicas=3, target_requests_per_minute=6, **TOY
    )
    emu = toy_emulator(tmp_path, toy, autoscale_window=4, scale_down_delay=1)
    with emu as info, trusting(info) as http:
        use(info, monkeypatch)
        toy_id = info.deployed_models["toy"]

        def replicas(state: str | None = None) -> int:
            found = emu.current().replicas[toy_id]
            return len([r for r in found if state is None or r.state == state])

        assert replicas() == 1 and emu.current().scale_events == []
        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(lambda _: http.post(info.invoke_url("/echo")), range(24)))
        assert all(r.status_code == 200 for r in answers)
        wait_until(lambda: len(emu.current().scale_events) >= 1, "a scale-out")
        wait_until(
            lambda: replicas() == 1 and emu.current().scale_events[-1].replicas_to == 1,
            "the quiet to scale back to one replica",
        )
        events = emu.current().scale_events
        assert events[0].replicas_from == 1, events
        assert "requests/min for a target of 6 per replica" in events[0].reason
        ups = [e for e in events if e.replicas_to > e.replicas_from]
        assert max(e.replicas_to for e in ups) == 3 and events[-1].replicas_to == 1, events
        assert all(e.deployed_model_id == toy_id for e in events)
        # Replicas 2 and 3 did start (each process has its own log), then went.
        assert all(Path(tmp_path, "logs", f"toy-{toy_id}-{n}.log").exists() for n in (2, 3))
        assert emu.output(400).count(" -> stopping") >= 2  # two of the three retired
        status = deploy_status(emu, capsys)
        assert "  scale events" in status and f"toy ({toy_id})  1 -> " in status, status
        # What remains serves.
        assert http.post(info.invoke_url("/echo")).status_code == 200


def test_undeploy_during_an_open_stream_ends_it_with_shutting_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames, _ = moving_shape_frames(12)
    video = tmp_path / "clip.mp4"
    write_video(video, frames)
    gate_port = free_port()
    emu = Emulator(
        args=[
            *("--deploy", "shapes-a=100"),
            *("--command", f"shapes-a={' '.join(INSTRUMENTED)}"),
            *("--env", f"shapes-a:TEST_GATE_PORT={gate_port}"),
            *("--probe-interval", "0.5"),
        ],
        env=yolo_env(tmp_path),
        workdir=tmp_path / "emulator",
        startup_timeout=240,
    )
    with emu as info, ThreadPoolExecutor(1) as pool:
        use(info, monkeypatch)
        a = info.deployed_models["shapes-a"]
        (replica,) = info.replicas[a]
        gate = Gate(f"http://127.0.0.1:{gate_port}")
        gate.set(2)  # the stream's first two frames; its third is held
        with Client.from_vertex(endpoint=info.endpoint_id, **info.init_kwargs()) as client:
            stream = client.stream(video, deployed_model_id=a)
            events = stream.frames()
            received = [next(events) for _ in range(2)]
            gate.wait(waiting=1)

            aiplatform.init(**info.init_kwargs())
            undeploy = pool.submit(aiplatform.Endpoint(info.endpoint_id).undeploy, a)

            def refused() -> bool:  # the replica got SIGTERM: its listener is closed
                try:
                    httpx.get(replica.url + "/health", timeout=5)
                except httpx.TransportError:
                    return True
                return False

            wait_until(refused, "the replica to stop taking connections")
            assert not undeploy.done()  # the replica drains: the operation waits for it
            gate.open()
            with pytest.raises(StreamError) as cut:
                for frame in events:
                    received.append(frame)
            undeploy.result(timeout=PATIENCE_S)
        problem = cut.value.problem
        assert problem is not None and problem.code == "shutting-down", cut.value
        assert all(isinstance(f, StreamFrame) for f in received)
        assert [f.index for f in received] == [0, 1, 2]  # the held frame finished, no new one
        assert not pid_alive(replica.pid) and emu.current().replicas == {}
