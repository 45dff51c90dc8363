"""The local Vertex AI dedicated endpoint (client/emulator), driven by the real SDK.

Real processes throughout: the ``emulator`` fixture (conftest) runs the demo YOLO server twice
at 80/20; the ``toy`` emulator runs ``tests/emulator_child.py`` (a second-to-start server with
SSE, echo and status routes) to test the proxy itself. No mocks.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
import requests
from google.api_core import exceptions as gexc
from google.cloud import aiplatform

from client import schema
from client.emulator import (
    MAX_BODY_BYTES,
    ConfigError,
    DeployedModelConfig,
    Emulator,
    EmulatorConfig,
    EmulatorError,
    EmulatorInfo,
    validate,
)
from client.emulator.resources import ApiError, Store
from conftest import PATIENCE_S, ROOT, pid_alive, wait_until
from helpers import encode, scenes

CHILD = str(Path(__file__).with_name("emulator_child.py"))
# What Vertex sets in a custom container (the "Environment variables" of its custom-container
# requirements page), written out here rather than read from the emulator it checks.
VERTEX_CONTAINER_ENV = {
    "AIP_HTTP_PORT",
    "AIP_HEALTH_ROUTE",
    "AIP_DEPLOYED_MODEL_ID",
    "AIP_ENDPOINT_ID",
    "AIP_PROJECT_NUMBER",
    "AIP_STORAGE_URI",
    "AIP_MODE",
    "AIP_FRAMEWORK",
    "AIP_MACHINE_TYPE",
}


def sdk_endpoint(info: EmulatorInfo) -> aiplatform.Endpoint:
    """``aiplatform.init`` at this emulator, then its Endpoint (init is global: call it each time)."""
    aiplatform.init(**info.init_kwargs())
    return aiplatform.Endpoint(info.endpoint_id)


def trusting(info: EmulatorInfo) -> ssl.SSLContext:
    """A TLS context that trusts the emulator's certificate (for httpx)."""
    return ssl.create_default_context(cafile=info.ca_cert)


def served_by(response: requests.Response | httpx.Response) -> str:
    return response.headers["x-deployed-model-id"]


def google_error(response: requests.Response | httpx.Response, code: int) -> str:
    """The message of a Google-shaped error with this code."""
    assert response.status_code == code, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["status"] and error["message"]
    return error["message"]


@pytest.fixture(scope="module")
def image() -> bytes:
    return encode(scenes(1)[0][0])


@pytest.fixture(scope="module")
def endpoint(emulator: EmulatorInfo) -> aiplatform.Endpoint:
    return sdk_endpoint(emulator)


# --- The SDK against the demo deployment (YOLO servers at 80/20) ------------------------------


def test_sdk_reads_the_endpoint(emulator: EmulatorInfo, endpoint: aiplatform.Endpoint) -> None:
    ids = emulator.deployed_models
    assert endpoint.traffic_split == {ids["shapes-a"]: 80, ids["shapes-b"]: 20}
    assert emulator.traffic_split == endpoint.traffic_split
    deployed = {d.id: d for d in endpoint.list_models()}
    assert set(deployed) == set(ids.values())
    assert all(len(i) == 19 and i.isdigit() for i in ids.values())
    resource = endpoint.gca_resource
    assert resource.dedicated_endpoint_enabled
    assert resource.dedicated_endpoint_dns == emulator.dedicated_endpoint_dns
    assert endpoint.resource_name == emulator.endpoint
    for name, dm_id in ids.items():
        assert deployed[dm_id].display_name == name
        model = aiplatform.Model(deployed[dm_id].model)
        assert model.display_name == name
        assert model.gca_resource.container_spec.invoke_route_prefix == "/*"
    assert [e.resource_name for e in aiplatform.Endpoint.list()] == [emulator.endpoint]
    with pytest.raises(gexc.NotFound):
        aiplatform.Endpoint("1234").traffic_split  # noqa: B018 (the property GETs the endpoint)


def test_every_route_through_invoke(
    emulator: EmulatorInfo, endpoint: aiplatform.Endpoint, image: bytes
) -> None:
    ours = set(emulator.deployed_models.values())
    png = {"Content-Type": "image/png"}

    r = endpoint.invoke("/detect", image, png)
    assert r.status_code == 200, r.text
    detected = msgspec.json.decode(r.content, type=schema.InferenceResponse)
    assert detected.deployed_model_id in ours
    assert detected.deployed_model_id == served_by(r)
    assert detected.results[0].detections

    r = endpoint.invoke("/models", b"", {})
    assert r.status_code == 200, r.text
    assert msgspec.json.decode(r.content, type=schema.ModelList).deployed_model_id in ours

    r = endpoint.invoke("/segment", image, png)
    assert r.status_code == 200, r.text
    segmented = msgspec.json.decode(r.content, type=schema.InferenceResponse)
    assert segmented.task == "segment"

    r = endpoint.invoke("/annotate", image, png)  # a drawn image by default
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg" and r.content[:3] == b"\xff\xd8\xff"
    r = endpoint.invoke("/annotate", image, {**png, "Accept": "application/json"})
    assert r.status_code == 200, r.text
    assert msgspec.json.decode(r.content, type=schema.AnnotateResponse).deployed_model_id in ours

    # The query string reaches the server unchanged.
    r = endpoint.invoke("/detect?model=shapes-segment&conf=0.5", image, png)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "shapes-segment"


def test_pinned_deployed_model_always_serves(
    emulator: EmulatorInfo, endpoint: aiplatform.Endpoint, image: bytes
) -> None:
    for name in ("shapes-a", "shapes-b"):
        dm_id = emulator.deployed_models[name]
        seen = Counter(
            served_by(endpoint.invoke("/models", b"", {}, deployed_model_id=dm_id))
            for _ in range(50)
        )
        assert seen == {dm_id: 50}
    # The two deployed models differ: B's /detect runs the segmentation weights.
    tasks = {
        name: endpoint.invoke(
            "/detect", image, {"Content-Type": "image/png"}, deployed_model_id=dm_id
        ).json()["task"]
        for name, dm_id in emulator.deployed_models.items()
    }
    assert tasks == {"shapes-a": "detect", "shapes-b": "segment"}


def test_traffic_split_is_followed(emulator: EmulatorInfo, endpoint: aiplatform.Endpoint) -> None:
    # Setting the split restarts the emulator's seeded draws for it (--split-seed): the same
    # 1000 draws in every run; the bound says they are a fair 80/20.
    a, b = emulator.deployed_models["shapes-a"], emulator.deployed_models["shapes-b"]
    endpoint.update(traffic_split={a: 80, b: 20})
    seen = Counter(served_by(endpoint.invoke("/models", b"", {})) for _ in range(1000))
    share_a = seen[emulator.deployed_models["shapes-a"]] / 1000
    assert set(seen) == set(emulator.deployed_models.values())
    assert abs(share_a - 0.80) <= 0.05, seen


def test_update_traffic_split(emulator: EmulatorInfo, endpoint: aiplatform.Endpoint) -> None:
    a, b = emulator.deployed_models["shapes-a"], emulator.deployed_models["shapes-b"]
    try:
        endpoint.update(traffic_split={a: 0, b: 100})
        assert endpoint.traffic_split == {a: 0, b: 100}
        assert {served_by(endpoint.invoke("/models", b"", {})) for _ in range(100)} == {b}
        # A 0 % deployed model still answers when pinned.
        assert served_by(endpoint.invoke("/models", b"", {}, deployed_model_id=a)) == a
        with pytest.raises(gexc.BadRequest, match="sum to 100"):
            endpoint.update(traffic_split={a: 10, b: 100})
        with pytest.raises(gexc.BadRequest, match="not deployed"):
            endpoint.update(traffic_split={a: 50, "42": 50})
        assert endpoint.traffic_split == {a: 0, b: 100}
    finally:
        endpoint.update(traffic_split={a: 80, b: 20})
    assert endpoint.traffic_split == {a: 80, b: 20}


def test_unknown_deployed_model(emulator: EmulatorInfo, endpoint: aiplatform.Endpoint) -> None:
    with pytest.raises(ValueError, match="not found"):
        endpoint.invoke("/models", b"", {}, deployed_model_id="1234567890")
    r = requests.post(emulator.invoke_url("/models", "1234567890"), data=b"")
    assert "1234567890" in google_error(r, 404)


def test_predict_verbs_are_refused(emulator: EmulatorInfo, image: bytes) -> None:
    for verb in ("predict", "rawPredict", "streamRawPredict", "directPredict"):
        url = f"{emulator.data_plane_url}/v1/{emulator.endpoint}:{verb}"
        r = requests.post(url, data=image, headers={"Content-Type": "image/png"})
        message = google_error(r, 400)
        assert "invokeRoutePrefix" in message and "/invoke/" in message


def test_paths_outside_invoke(emulator: EmulatorInfo) -> None:
    base = f"{emulator.data_plane_url}/v1/{emulator.endpoint}"
    assert "root" in google_error(requests.post(base + "/invoke/", data=b""), 404)
    assert "root" in google_error(requests.post(base + "/invoke", data=b""), 404)
    google_error(requests.post(base + "/elsewhere", data=b""), 404)
    google_error(requests.get(base + "/invoke/models"), 404)
    other = emulator.invoke_url("/models").replace(emulator.project, "other-project")
    google_error(requests.post(other, data=b""), 404)
    # The project number works in paths, as on Vertex.
    by_number = emulator.invoke_url("/models").replace(
        f"projects/{emulator.project}/", f"projects/{emulator.project_number}/"
    )
    assert requests.post(by_number, data=b"").status_code == 200
    # The control plane answers unknown resources in Google's shape too.
    control = f"{emulator.control_plane_url}/v1/projects/{emulator.project}/locations/"
    google_error(requests.get(control + f"{emulator.location}/endpoints/99"), 404)
    google_error(requests.get(control + f"{emulator.location}/models/99"), 404)
    google_error(requests.get(control + "europe-west4/endpoints"), 404)
    google_error(requests.get(f"{emulator.control_plane_url}/v1/nothing"), 404)


def test_body_limit(emulator: EmulatorInfo) -> None:
    assert MAX_BODY_BYTES == 10_000_000  # Vertex documents 10 MB; the server takes 10 MiB
    url = emulator.invoke_url("/detect")
    headers = {"Content-Type": "image/png"}
    r = requests.post(url, data=b"x" * (MAX_BODY_BYTES + 1), headers=headers)
    # Google's front end answers 400 INVALID_ARGUMENT (the client raises PayloadTooLargeError).
    message = google_error(r, 400)
    assert "Request payload size exceeds the limit: 10000000 bytes" in message
    assert "x-deployed-model-id" not in r.headers  # refused before forwarding

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        for _ in range(11):
            yield b"x" * (1024 * 1024)

    with httpx.Client(verify=trusting(emulator), timeout=60) as client:
        google_error(client.post(url, content=chunks(), headers=headers), 400)
        # At the limit it is forwarded: the server answers (not an image).
        r = client.post(url, content=b"x" * MAX_BODY_BYTES, headers=headers)
    assert r.status_code == 400 and served_by(r) in emulator.deployed_models.values()


# --- The proxy, with a small test server (SSE, echo) -------------------------------------------


def toy_config(tmp: Path, **overrides: object) -> EmulatorConfig:
    storage = tmp / "artifacts"
    storage.mkdir(exist_ok=True)
    common = {"command": (sys.executable, CHILD), "health_route": "/ping"}
    return EmulatorConfig(
        deployed_models=(
            DeployedModelConfig("toy-a", 50, env={"CHILD_EVENTS": str(tmp / "a-events")}, **common),
            DeployedModelConfig(
                "toy-b",
                50,
                env={"CHILD_EVENTS": str(tmp / "b-events"), "CHILD_EXTRA": "yes"},
                storage_uri=str(storage),
                **common,
            ),
        ),
        log_dir=str(tmp / "logs"),
        **overrides,
    )


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorInfo]:
    tmp = tmp_path_factory.mktemp("toy")
    config = toy_config(tmp, endpoint_id="toy-endpoint")
    # An environment left over in a shell: AIP_* must not reach a container, nor SERVE_HOST.
    leftovers = {"AIP_PREDICT_ROUTE": "/leaked", "SERVE_HOST": "0.0.0.0"}
    with Emulator(config, env=leftovers, workdir=tmp / "run", startup_timeout=60) as info:
        yield info


@pytest.fixture
def toy_http(toy: EmulatorInfo) -> Iterator[httpx.Client]:
    with httpx.Client(verify=trusting(toy), timeout=30) as client:
        yield client


@pytest.fixture
def toy_endpoint(toy: EmulatorInfo, monkeypatch: pytest.MonkeyPatch) -> aiplatform.Endpoint:
    for key, value in toy.env().items():  # this emulator has its own certificate
        monkeypatch.setenv(key, value)
    return sdk_endpoint(toy)


def test_request_is_forwarded_faithfully(toy: EmulatorInfo, toy_http: httpx.Client) -> None:
    b = toy.deployed_models["toy-b"]
    r = toy_http.post(
        toy.invoke_url("/echo?x=1&y=a%20b&x=2", b),
        content=b"12345",
        headers={
            "Content-Type": "application/octet-stream",
            "X-Request-Id": "req-1",
            "X-User-Header": "kept",
            "Authorization": "Bearer secret",
            "X-Goog-Api-Key": "secret-key",
            "Cookie": "session=1",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "for the emulator only",
        },
    )
    assert r.status_code == 200, r.text
    echo = r.json()
    assert (echo["method"], echo["raw_path"], echo["query"]) == ("POST", "/echo", "x=1&y=a%20b&x=2")
    assert echo["body_size"] == 5
    headers = dict(echo["headers"])
    assert headers["x-user-header"] == "kept" and headers["x-request-id"] == "req-1"
    assert headers["content-type"] == "application/octet-stream"
    for dropped in ("authorization", "x-goog-api-key", "cookie", "x-hop"):
        assert dropped not in headers, dropped
    assert headers.get("connection") == "keep-alive"  # the proxy's own, for its own hop
    assert headers["host"] == toy.servers["toy-b"].removeprefix("http://")
    assert r.headers["x-request-id"] == "req-1" and served_by(r) == b
    # Vertex's container environment, plus the declared env and storage URI.
    env = echo["env"]
    assert set(env) >= VERTEX_CONTAINER_ENV, VERTEX_CONTAINER_ENV - set(env)
    assert "AIP_PREDICT_ROUTE" not in env  # inherited AIP_* are dropped
    assert env["SERVE_HOST"] == "127.0.0.1"  # not the inherited 0.0.0.0
    assert env["AIP_DEPLOYED_MODEL_ID"] == b
    assert env["AIP_ENDPOINT_ID"] == toy.endpoint_id == "toy-endpoint"
    assert env["AIP_HTTP_PORT"] == toy.servers["toy-b"].rsplit(":", 1)[1]
    assert env["AIP_HEALTH_ROUTE"] == "/ping"
    assert env["AIP_MODE"] == "PREDICTION" and env["AIP_FRAMEWORK"] == "CUSTOM_CONTAINER"
    assert env["AIP_PROJECT_NUMBER"] == toy.project_number and toy.project_number.isdigit()
    assert Path(env["AIP_STORAGE_URI"]).name == "artifacts"
    assert env["CHILD_EXTRA"] == "yes"


def test_status_and_headers_pass_back(toy: EmulatorInfo, toy_http: httpx.Client) -> None:
    r = toy_http.post(toy.invoke_url("/status/429"))
    assert r.status_code == 429
    assert r.headers["retry-after"] == "7"
    assert r.headers["server-timing"] == "inference;dur=1.5"
    assert served_by(r) in toy.deployed_models.values()
    assert toy_http.post(toy.invoke_url("/status/500")).status_code == 500
    # Headers the server's Connection header names are hop-by-hop: dropped, with it.
    r = toy_http.post(toy.invoke_url("/hop"))
    assert r.status_code == 200 and r.json() == {"hop": True}
    assert "x-hop-back" not in r.headers and "x-hop-back" not in r.headers.get("connection", "")


def test_dot_segments_and_root_never_reach_the_container(toy: EmulatorInfo) -> None:
    """An HTTP client resolves ``.``/``..`` (httpx and requests do), so ``/invoke/x/..`` would
    post to the container's root. http.client sends the path as it is, as any raw caller can."""
    assert httpx.post(toy.servers["toy-a"] + "/").json() == {"root": True}  # what a leak shows
    a = toy.deployed_models["toy-a"]
    host, port = toy.dedicated_endpoint_dns.rsplit(":", 1)
    conn = http.client.HTTPSConnection(host, int(port), context=trusting(toy), timeout=10)

    def post(path: str) -> tuple[int, dict, dict]:
        conn.request("POST", path, body=b"", headers={"Content-Length": "0"})
        r = conn.getresponse()
        return r.status, json.loads(r.read()), {k.lower(): v for k, v in r.getheaders()}

    try:
        for base in (f"/v1/{toy.endpoint}/invoke", f"/v1/{toy.endpoint}/deployedModels/{a}/invoke"):
            status, body, headers = post(base + "/echo")
            assert status == 200 and body["raw_path"] == "/echo"  # the way works
            for rest in (
                "",
                "/",
                "//",
                "/.",
                "/..",
                "/x/..",
                "/echo/../",
                "/./echo/..",
                "/%2e",
                "/%2E%2e",
                "/x/%2e%2E/",
                "/x%2F..",
                "/..?q=1",
            ):
                status, body, headers = post(base + rest)
                assert status == 404, (rest, body)
                assert body["error"]["status"] == "NOT_FOUND", (rest, body)
                assert "x-deployed-model-id" not in headers, (rest, body)
    finally:
        conn.close()


def test_sse_arrives_incrementally(
    toy: EmulatorInfo, toy_http: httpx.Client, tmp_path: Path
) -> None:
    """Each event arrives while the server waits for the client to let the next one go (a file
    the toy server polls): a proxy that buffered would never deliver the first."""
    gate, events = tmp_path / "gate", []
    with toy_http.stream("POST", toy.invoke_url(f"/sse?n=4&gate={gate}")) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:])["i"])
                Path(f"{gate}.{events[-1] + 1}").touch()
    assert events == [0, 1, 2, 3]


def test_sse_through_sdk_stream(toy_endpoint: aiplatform.Endpoint, tmp_path: Path) -> None:
    """The same through the SDK's ``invoke(stream=True)`` line iterator."""
    gate, lines = tmp_path / "gate", []
    for line in toy_endpoint.invoke(f"/sse?n=3&gate={gate}", b"", {}, stream=True):
        lines.append(line)
        if line.startswith(b"data: "):
            Path(f"{gate}.{json.loads(line[6:])['i'] + 1}").touch()
    assert lines[:3] == [b"event: tick", lines[1], b""] and lines[1].startswith(b"data: ")
    assert len(lines) == 9 and sum(line.startswith(b"data: ") for line in lines) == 3


def test_client_disconnect_closes_upstream(
    toy: EmulatorInfo, toy_http: httpx.Client, tmp_path_factory: pytest.TempPathFactory
) -> None:
    a = toy.deployed_models["toy-a"]
    events_file = Path(toy.logs["toy-a"]).parent.parent / "a-events"
    before = closed(events_file)
    with toy_http.stream("POST", toy.invoke_url("/forever?delay=0.05", a)) as r:
        received = 0
        for line in r.iter_lines():
            received += line.startswith("data: ")
            if received == 3:
                break
    wait_until(
        lambda: closed(events_file) > before,
        "the server's stream to see the disconnect (upstream closed)",
    )


def closed(events_file: Path, line: str = "closed") -> int:
    """How many times the toy server noted a client that left (``line``) in its events file."""
    return events_file.read_text().splitlines().count(line) if events_file.exists() else 0


def wait_for_closed(events_file: Path, line: str, before: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while closed(events_file, line) <= before:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_client_leaving_before_the_answer_closes_upstream(
    toy: EmulatorInfo, toy_http: httpx.Client
) -> None:
    """The caller hangs up while the server still works on its answer (no headers yet, and none
    for an hour): the server sees the disconnect."""
    b = toy.deployed_models["toy-b"]
    events_file = Path(toy.logs["toy-b"]).parent.parent / "b-events"
    before = closed(events_file, "slow-closed")
    with pytest.raises(httpx.ReadTimeout):
        toy_http.post(toy.invoke_url("/slow?delay=3600", b), timeout=0.5)
    assert wait_for_closed(events_file, "slow-closed", before, timeout=PATIENCE_S), (
        "the server never saw the caller leave: the upstream request stayed open"
    )


def test_split_update_rewrites_the_info_file(
    toy: EmulatorInfo, toy_endpoint: aiplatform.Endpoint
) -> None:
    info_file = Path(toy.logs["toy-a"]).parent.parent / "run" / "info.json"
    a, b = toy.deployed_models["toy-a"], toy.deployed_models["toy-b"]
    try:
        toy_endpoint.update(traffic_split={a: 100, b: 0})
        assert EmulatorInfo.load(info_file).traffic_split == {a: 100, b: 0}
    finally:
        toy_endpoint.update(traffic_split={a: 50, b: 50})
    assert EmulatorInfo.load(info_file).traffic_split == {a: 50, b: 50}


def test_sdk_errors_for_the_toy_endpoint(toy_endpoint: aiplatform.Endpoint) -> None:
    with pytest.raises(ValueError, match="starts with a forward slash"):
        toy_endpoint.invoke("sse", b"", {})
    assert toy_endpoint.invoke("/status/404", b"", {}).status_code == 404


# --- Lifecycle: failures, signals, orphans ------------------------------------------------------


def test_dead_replica_is_restarted_and_sigterm_leaves_no_orphans(tmp_path: Path) -> None:
    """A replica killed from outside: requests get a 503 (retryable) or an answer, never a hang
    nor another error; the fleet restarts it (a new process) and it serves again."""
    emu = Emulator(toy_config(tmp_path, probe_interval=0.2), startup_timeout=60)
    info = emu.start()
    try:
        first = info.server_pids["toy-a"]
        assert all(pid_alive(p) for p in info.pids())
        a = info.deployed_models["toy-a"]
        os.kill(first, signal.SIGKILL)

        def restarted() -> bool:
            (replica,) = emu.current().replicas[a]
            return replica.restarts == 1 and replica.state == "ready" and replica.pid != first

        with httpx.Client(verify=trusting(info), timeout=10) as client:
            statuses: Counter[int] = Counter()
            deadline = time.monotonic() + PATIENCE_S
            while not statuses or not restarted():  # at least one call, just after the kill
                assert time.monotonic() < deadline, emu.output()
                r = client.post(info.invoke_url("/echo", a))
                statuses[r.status_code] += 1
                if r.status_code == 503:
                    assert "toy-a" in google_error(r, 503)
                time.sleep(0.05)
            assert set(statuses) <= {200, 503}, statuses
            r = client.post(info.invoke_url("/echo", a))
            assert r.status_code == 200 and served_by(r) == a
            assert client.post(info.invoke_url("/echo", info.deployed_models["toy-b"])).is_success
        assert "was killed by SIGKILL" in emu.output()
        info_file = emu.workdir / "info.json"
        pids = emu.current().pids()
        assert first not in pids and len(pids) == 2
        assert emu.stop(timeout=60) == 0
        assert not any(pid_alive(p) for p in [first, *pids])
        assert not info_file.exists()  # removed on exit: no stale endpoint for a poller
        assert not Path(info.ca_cert).exists()  # the temp dir is gone
    finally:
        emu.stop()
        emu.cleanup()


def test_sigkilled_emulator_leaves_no_orphans_nor_files(tmp_path: Path) -> None:
    emu = Emulator(toy_config(tmp_path), startup_timeout=60)
    with emu as info:
        key = Path(info.ca_cert).with_name("key.pem")
        assert key.exists()
        # In the launcher's work dir, not the system's temp dir: removed even after a SIGKILL.
        assert key.is_relative_to(emu.workdir)
        os.kill(info.pid, signal.SIGKILL)
        wait_until(
            lambda: not any(pid_alive(p) for p in info.server_pids.values()),
            "the servers of a SIGKILLed emulator to die with it",
        )
        assert key.exists()  # the SIGKILLed emulator could not remove it ...
    assert not key.parent.exists()  # ... its launcher did
    assert not emu.workdir.exists()


def test_inference_timeout_then_sigint(tmp_path: Path) -> None:
    """The endpoint's inference timeout bounds the whole request: no answer by then is a 504
    (and the server sees the request closed), a stream still running then is cut. SIGINT then
    stops everything cleanly."""
    emu = Emulator(toy_config(tmp_path, inference_timeout=1.5), startup_timeout=60)
    info = emu.start()
    try:
        a = info.deployed_models["toy-a"]
        with httpx.Client(verify=trusting(info), timeout=20) as client:
            t0 = time.monotonic()
            r = client.post(info.invoke_url("/slow?delay=3600", a))  # it would answer in an hour
            assert "inference timeout (1.5 s)" in google_error(r, 504)
            assert time.monotonic() - t0 >= 1.4
            assert wait_for_closed(tmp_path / "a-events", "slow-closed", 0, timeout=PATIENCE_S)
            received, t0 = 0, time.monotonic()
            forever = info.invoke_url("/forever?delay=0.1", a)
            with pytest.raises(httpx.RemoteProtocolError), client.stream("POST", forever) as s:
                assert s.status_code == 200  # a stream cut, not ended
                for line in s.iter_lines():
                    received += line.startswith("data: ")
            assert received >= 1 and time.monotonic() - t0 >= 1.4  # a stream that never ends
        os.kill(info.pid, signal.SIGINT)
        assert emu.proc is not None and emu.proc.wait(20) == 0, emu.output()
        assert not any(pid_alive(p) for p in info.server_pids.values())
        assert not Path(info.ca_cert).exists()
    finally:
        emu.stop()
        emu.cleanup()


def test_sighup_stops_cleanly(tmp_path: Path) -> None:
    emu = Emulator(toy_config(tmp_path), startup_timeout=60)
    info = emu.start()
    try:
        os.kill(info.pid, signal.SIGHUP)
        assert emu.proc is not None and emu.proc.wait(20) == 0, emu.output()
        assert not any(pid_alive(p) for p in info.server_pids.values())
        assert not (emu.workdir / "info.json").exists() and not Path(info.ca_cert).exists()
    finally:
        emu.stop()
        emu.cleanup()


def test_server_that_cannot_start(tmp_path: Path) -> None:
    config = toy_config(tmp_path)
    broken = DeployedModelConfig(
        "broken", 50, command=(sys.executable, CHILD), env={"CHILD_FAIL": "1"}
    )
    config = EmulatorConfig(
        deployed_models=(config.deployed_models[0], broken), log_dir=str(tmp_path / "logs")
    )
    emu = Emulator(config, startup_timeout=60)
    with pytest.raises(EmulatorError, match="exited with code 3") as failure:
        emu.start()
    emu.cleanup()
    assert "'broken'" in str(failure.value) and "boom: CHILD_FAIL=1" in str(failure.value)
    # A command that does not exist: exit 1 (not 2: the configuration itself is valid).
    result = run_cli("--deploy", "x", "--command", "x=/nonexistent/server --flag")
    assert result.returncode == 1
    assert "cannot start the server of deployed model 'x'" in result.stderr
    assert "replica 1: /nonexistent/server" in result.stderr


# --- Configuration ------------------------------------------------------------------------------


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "client.emulator", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--deploy", "a=50", "--deploy", "b=60"], "sums to 110, not 100"),
        (["--replicas", "shapes-a=0"], "replicas 0 must be at least 1"),
        (["--replicas", "shapes-a=2:1"], "max_replicas 1 is below replicas 2"),
        (["--replicas", "shapes-a=two"], "must look like NAME=MIN or NAME=MIN:MAX"),
        (["--target-rpm", "shapes-a=0"], "target_requests_per_minute must be at least 1"),
        (["--grace-period", "-1"], "grace_period"),
        (["--replica-capacity", "0"], "replica_capacity must be at least 1"),
        (["--deploy", "a=50", "--deploy", "a=50"], "names 'a' twice"),
        (["--deploy", "a=50", "--deploy", "b"], "give a percent to every deployed model"),
        (["--deploy", "a=x"], "the percent must be an integer"),
        (["--env", "nope:X=1"], "no deployed model named 'nope'"),
        (["--env", "shapes-a:AIP_HTTP_PORT=1"], "AIP_HTTP_PORT is set by the emulator"),
        (["--env", "shapes-a:AIP_STORAGE_URI=/w"], "use storage_uri (--storage-uri NAME=URI)"),
        (["--env", "shapes-b:AIP_MODE=x"], "AIP_MODE is set by the emulator"),
        (
            ["--models", "shapes-a:m=/w/m.pt", "--env", "shapes-a:SERVE_MODELS=m=/w/n.pt"],
            "SERVE_MODELS is given both in env and as models (--models)",
        ),
        (["--inference-timeout", "3601"], "inference_timeout 3601 is not in (0, 3600]"),
        (["--inference-timeout", "0"], "inference_timeout 0 is not in (0, 3600]"),
        (["--info-file", "/nonexistent/info.json"], "--info-file '/nonexistent'"),
        (["--log-dir", f"{ROOT}/pyproject.toml/logs"], "pyproject.toml' is not a directory"),
        (["--work-dir", f"{ROOT}/pyproject.toml/w"], "pyproject.toml' is not a directory"),
        (["--deploy", "bad name"], "the name must match"),
        (["--control-port", "70000"], "control_port 70000"),
        (["--config", "/nonexistent.toml"], "cannot read config file"),
    ],
)
def test_bad_config_exits_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command's own ``main``, in this process (an interpreter per case cost more than the
    checks; test_bad_config_file_exits_2 runs ``python -m client.emulator`` itself)."""
    from client.emulator.__main__ import main

    try:
        code = main(args)
    except SystemExit as exit_:  # argparse's own refusals
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("python -m client.emulator: ")
    assert message in err


def test_bad_config_file_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "emulator.toml"
    config.write_text(
        'projekt = "x"\n[[deployed_models]]\nname = "a"\npercent = "50"\n'
        '[[deployed_models]]\nname = "b"\nenv = { K = 1 }\n'
    )
    result = run_cli("--config", str(config))
    assert result.returncode == 2
    for problem in (
        "unknown key 'projekt'",
        "percent must be an integer",
        "env values must be strings",
    ):
        assert problem in result.stderr
    config.write_text("[[deployed_models]\n")
    assert "is not valid" in run_cli("--config", str(config)).stderr


def test_config_file_and_defaults(tmp_path: Path) -> None:
    config = tmp_path / "emulator.toml"
    config.write_text(
        'project = "my-project"\nendpoint_id = "123"\n'
        '[[deployed_models]]\nname = "one"\nmodels = { m = "/w/m.pt" }\n'
        '[[deployed_models]]\nname = "two"\n[[deployed_models]]\nname = "three"\n'
    )
    from client.emulator import load

    loaded = load(config)
    assert loaded.project == "my-project" and loaded.endpoint_id == "123"
    assert [m.percent for m in loaded.deployed_models] == [34, 33, 33]
    assert loaded.deployed_models[0].server_env() == {"SERVE_MODELS": "m=/w/m.pt"}
    demo = validate(EmulatorConfig.demo())
    assert [(m.name, m.percent, dict(m.env)) for m in demo.deployed_models] == [
        ("shapes-a", 50, {}),
        ("shapes-b", 50, {"SERVE_DEFAULT_MODEL": "shapes-segment"}),
    ]
    assert demo.deployed_models[0].command[1:] == ("-m", "app")
    with pytest.raises(ConfigError, match="at least one deployed model"):
        validate(EmulatorConfig())


def test_no_traffic_split_is_a_clear_error() -> None:
    """The store alone (no deployed model can be at 0 % everywhere through the config)."""
    store = Store("p-project", "1", "us-central1")
    store.add_endpoint("e", "e", "127.0.0.1:1", 600)
    with pytest.raises(ApiError, match="no traffic split") as failure:
        store.pick("e")
    assert failure.value.code == 400 and failure.value.status == "FAILED_PRECONDITION"
