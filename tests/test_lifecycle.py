"""Start-up, readiness, configuration errors and the big-image path, each in its own process."""

from __future__ import annotations

import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import BUS_JPG, INSTRUMENTED, ROOT, serving, start_server, wait_until
from helpers import decode


@pytest.fixture(scope="module")
def random_server(tmp_path_factory):
    """A randomly initialised yolo11n (from Ultralytics' bundled yolo11n.yaml): no weights at all.

    Instrumented: its loading is held at the gate (the warm-up predict) until the test has
    recorded /health and /detect while loading; then the gate opens.
    """
    srv = start_server(
        tmp_path_factory.mktemp("random"),
        {"SERVE_MODELS": "random=yolo11n.yaml", "TEST_GATE_PERMITS": "0"},
        INSTRUMENTED,
    )
    try:
        srv.gate.wait(waiting=1)  # the warm-up predict is held: the model is still loading
        wait_until(lambda: answers(srv.url + "/health"), "the port to answer")
        health = httpx.get(srv.url + "/health", timeout=10)
        detect = httpx.post(
            srv.url + "/detect", content=b"x", headers={"Content-Type": "image/png"}, timeout=10
        )
        srv.seen = [(health, detect)]
        srv.gate.open()
        srv.wait_healthy()
        srv.seen.append((httpx.get(srv.url + "/health", timeout=10), None))
        yield srv
    finally:
        srv.stop()


def answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=5)
    except httpx.TransportError:
        return False
    return True


def test_health_goes_from_503_loading_to_200(random_server):
    (loading, _), (ready, _) = random_server.seen
    assert loading.status_code == 503 and loading.json()["status"] == "loading"
    assert loading.json()["models"] == {"random": False}
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ok",
        "deployed_model_id": "local",
        "replica_id": f"{socket.gethostname()}-{random_server.proc.pid}",
        "models": {"random": True},
    }


def test_requests_while_loading_get_503_problem(random_server):
    detect = random_server.seen[0][1]
    assert detect.status_code == 503
    assert detect.headers["content-type"].startswith("application/problem+json")
    assert detect.json()["code"] == "not-ready" and "loading" in detect.json()["detail"]
    assert detect.headers["retry-after"]


def test_big_real_photo_through_random_model(random_server):
    data = BUS_JPG.read_bytes()
    r = httpx.post(
        random_server.url + "/detect",
        content=data,
        headers={"Content-Type": "image/jpeg"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    (result,) = r.json()["results"]
    assert (result["width"], result["height"]) == (810, 1080)
    info = httpx.get(random_server.url + "/models/random").json()
    assert info["task"] == "detect" and info["imgsz"] == 640 and len(info["classes"]) == 80
    r = httpx.post(
        random_server.url + "/annotate",
        content=data,
        headers={"Content-Type": "image/jpeg"},
        timeout=60,
    )
    assert r.status_code == 200 and decode(r.content).shape == (1080, 810, 3)


def test_inference_does_not_block_the_event_loop(random_server):
    """While a batch is in inference (held at the gate, in its worker thread), /health answers."""
    files = [("image", (f"{i}.jpg", BUS_JPG.read_bytes(), "image/jpeg")) for i in range(8)]
    gate = random_server.gate
    gate.close()
    waiting = gate.state()["waiting"]
    with ThreadPoolExecutor(1) as pool:
        batch = pool.submit(httpx.post, random_server.url + "/detect", files=files, timeout=300)
        gate.wait(waiting=waiting + 1)
        health = httpx.get(random_server.url + "/health", timeout=10)
        assert health.status_code == 200
        assert not batch.done(), "/health was answered while the batch was still in inference"
        gate.open()
        result = batch.result()
    assert result.status_code == 200 and len(result.json()["results"]) == 8


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"AIP_HTTP_PORT": "http"}, "AIP_HTTP_PORT='http' is not an integer"),
        ({"SERVE_MAX_PIXELS": "-5"}, "SERVE_MAX_PIXELS=-5 is out of range"),
        ({"SERVE_MODELS": "a=/no/such/file.pt"}, "is not a file"),
        ({"SERVE_MODELS": "just-a-name"}, "must look like name=source"),
        ({"SERVE_DEFAULT_MODEL": "ghost"}, "SERVE_DEFAULT_MODEL='ghost' is not one of"),
        ({"AIP_HEALTH_ROUTE": "health"}, "AIP_HEALTH_ROUTE='health' must be a path"),
        ({"AIP_STORAGE_URI": "/no/such/dir"}, "neither a gs:// URI nor a directory"),
        ({"SERVE_METRICS": "maybe"}, "not a boolean"),
    ],
)
def test_bad_setting_stops_with_clear_message(env, needle, tmp_path):
    base = {"PATH": "/usr/bin:/bin", "YOLO_CONFIG_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=ROOT,
        env=base | env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert needle in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_model_that_fails_to_load_exits_nonzero(tmp_path):
    """In two processes (app/processes.py): each fails, the server exits 1."""
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    srv = start_server(tmp_path, {"SERVE_MODELS": f"broken={bad}", "SERVE_PROCESSES": "2"})
    try:
        assert srv.proc.wait(120) == 1
    finally:
        srv.stop()
    assert "loading models failed" in srv.logs()


def test_storage_uri_directory_and_custom_health_route(tmp_path):
    """AIP_STORAGE_URI as a local directory: every *.pt in it is served, named by file stem."""
    store = tmp_path / "artifacts"
    store.mkdir()
    (store / "shapes.pt").write_bytes((ROOT / "app/demo/weights/shapes-detect.pt").read_bytes())
    env = {
        "AIP_STORAGE_URI": str(store),
        "AIP_HEALTH_ROUTE": "/ping",
        "AIP_DEPLOYED_MODEL_ID": "123456",
        "SERVE_METRICS": "true",
    }
    with serving(tmp_path, env, health="/ping") as srv:
        models = httpx.get(srv.url + "/models").json()
        assert [m["name"] for m in models["models"]] == ["shapes"]
        assert models["models"][0]["source"] == "shapes.pt"
        assert httpx.get(srv.url + "/health").status_code == 404
        r = httpx.post(
            srv.url + "/detect",
            content=BUS_JPG.read_bytes(),
            headers={"Content-Type": "image/jpeg"},
        )
        assert r.headers["x-deployed-model-id"] == "123456"
        metrics = httpx.get(srv.url + "/metrics").text
        assert 'yolo_images_total{model="shapes",route="/detect"} 1.0' in metrics
        httpx.get(srv.url + "/models/nope")
        metrics = httpx.get(srv.url + "/metrics").text
        assert 'yolo_errors_total{code="unknown-model"} 1.0' in metrics
