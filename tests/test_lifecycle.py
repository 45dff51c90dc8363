"""Start-up, readiness, configuration errors and the big-image path, each in its own process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import httpx
import pytest

from conftest import BUS_JPG, ROOT, serving, start_server
from helpers import decode


@pytest.fixture(scope="module")
def random_server(tmp_path_factory):
    """A randomly initialised yolo11n (from Ultralytics' bundled yolo11n.yaml): no weights at all.

    The test records /health and /detect from the first moment the port answers.
    """
    srv = start_server(tmp_path_factory.mktemp("random"), {"SERVE_MODELS": "random=yolo11n.yaml"})
    seen: list[tuple[int, int]] = []  # (health status, detect status) while loading
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            try:
                health = httpx.get(srv.url + "/health", timeout=5)
            except httpx.TransportError:
                time.sleep(0.02)
                continue
            detect = None
            if health.status_code == 503:
                detect = httpx.post(
                    srv.url + "/detect",
                    content=b"x",
                    headers={"Content-Type": "image/png"},
                    timeout=5,
                )
            seen.append((health.status_code, detect))
            if health.status_code == 200:
                break
            time.sleep(0.02)
        srv.seen = seen
        yield srv
    finally:
        srv.stop()


def test_health_goes_from_503_to_200(random_server):
    statuses = [h for h, _ in random_server.seen]
    assert statuses[0] == 503 and statuses[-1] == 200, statuses
    assert statuses == sorted(statuses, reverse=True), "never back to 503 once healthy"
    healthy = httpx.get(random_server.url + "/health").json()
    assert healthy == {"status": "ok", "deployed_model_id": "local", "models": {"random": True}}


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
    """While a long batch runs in a worker thread, /health still answers at once."""
    files = [("image", (f"{i}.jpg", BUS_JPG.read_bytes(), "image/jpeg")) for i in range(8)]
    done = threading.Event()
    result = {}

    def long_request():
        result["r"] = httpx.post(
            random_server.url + "/detect", files=files, params={"imgsz": 1280}, timeout=300
        )
        done.set()

    worker = threading.Thread(target=long_request)
    worker.start()
    time.sleep(1.0)  # the batch is decoded and in the model by now
    assert not done.is_set(), "the batch finished too fast to tell anything"
    health = httpx.get(random_server.url + "/health", timeout=10)
    assert health.status_code == 200
    assert not done.is_set(), "/health waited for the batch"
    worker.join()
    assert result["r"].status_code == 200 and len(result["r"].json()["results"]) == 8


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
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    srv = start_server(tmp_path, {"SERVE_MODELS": f"broken={bad}"})
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
