"""Visibility: the route set against README's table, JSON request logs, Prometheus metrics."""

from __future__ import annotations

import itertools
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from app.config import Settings
from app.demo.shapes import moving_shape_frames, write_video
from app.logs import REQUEST_ID, JsonFormatter
from app.main import create_app
from conftest import ROOT, Server, serving
from helpers import encode, scenes

# --- route set -------------------------------------------------------------------------------


def documented_routes() -> list[tuple[set[str], set[str], str | None]]:
    """README's "Routes served" table: (paths, methods, the setting that must be true or None)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Routes served", 1)[1].split("\n### ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`/"):
            continue
        paths = set(re.findall(r"`(/[^`]*)`", cells[0]))
        methods = {m.strip() for m in cells[1].split(",")}
        condition = re.search(r"`(SERVE_\w+)=true`", cells[2])
        assert condition or cells[2] == "always", f"unreadable condition: {cells[2]!r}"
        rows.append((paths, methods, condition.group(1) if condition else None))
    assert len(rows) >= 5, "README's route table was not found"
    return rows


@pytest.mark.parametrize(("openapi", "metrics"), list(itertools.product([True, False], repeat=2)))
def test_routes_served_are_the_documented_ones(openapi, metrics):
    env = {"SERVE_OPENAPI": str(openapi).lower(), "SERVE_METRICS": str(metrics).lower()}
    app = create_app(Settings.from_env(env))
    served = set()
    for route in app.routes:
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)  # /models/{name:str} -> {name}
        assert "OPTIONS" in route.methods, path
        served |= {(path, m) for m in route.methods - {"OPTIONS", "HEAD"}}
    expected = {
        (path, method)
        for paths, methods, setting in documented_routes()
        if setting is None or env[setting] == "true"
        for path in paths
        for method in methods
    }
    assert served == expected
    assert ("/metrics", "GET") in served if metrics else ("/metrics", "GET") not in served
    assert any(p.startswith("/openapi") for p, _ in served) == openapi


def test_unknown_openapi_name_is_a_problem_not_html(client):
    response = client.get("/openapi/nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "not-found"
    assert client.get("/openapi").json()["info"]["title"] == "vertex-yolo"


# --- logs --------------------------------------------------------------------------------------


def log_lines(server: Server) -> list[str]:
    """The log's complete lines: read while the server writes, the last may be half written
    (the server's processes write to one file)."""
    text = server.logs()
    return [line for line in text[: text.rfind("\n") + 1].split("\n") if line.strip()]


def log_records(server: Server) -> list[dict]:
    return [json.loads(line) for line in log_lines(server) if line.startswith("{")]


def request_line(server: Server, rid: str) -> dict:
    """The request's access line (written once the response is sent: it may lag the answer)."""
    deadline = time.monotonic() + 10
    while True:
        lines = [r for r in log_records(server) if r.get("request_id") == rid]
        access = [r for r in lines if r["logger"] == "app.access"]
        if access or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(access) == 1, lines
    return access[0]


def test_every_log_line_is_json_with_a_severity(server, client):
    client.get("/models")
    lines = log_lines(server)  # one read: another may hold lines written since
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(records) == len(lines), [line for line in lines if not line.startswith("{")]
    severities = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
    assert all(r["severity"] in severities and r["message"] and r["time"] for r in records)
    assert any(r["logger"] == "uvicorn.error" for r in records)  # uvicorn's own, as JSON


def test_one_line_per_request_with_http_fields_model_and_timings(server, client):
    rid = f"obs-{uuid.uuid4().hex[:12]}"
    png = encode(scenes(1)[0][0])
    response = client.post(
        "/detect",
        content=png,
        headers={"Content-Type": "image/png", "X-Request-Id": rid, "User-Agent": "obs-test/1"},
    )
    assert response.status_code == 200
    line = request_line(server, rid)
    http = line["httpRequest"]
    assert line["severity"] == "INFO" and line["message"].startswith("POST /detect 200 ")
    assert http["requestMethod"] == "POST" and http["requestUrl"] == "/detect"
    assert http["status"] == 200 and http["userAgent"] == "obs-test/1"
    assert http["responseSize"] == str(len(response.content))
    assert http["requestSize"] == str(len(png))
    assert re.fullmatch(r"\d+\.\d{6}s", http["latency"])
    assert line["model"] == "shapes-detect" and line["deployed_model_id"] == "dm-test-1"
    assert line["model_version"] == response.headers["X-Model-Version"]
    assert set(line["timings_ms"]) == {"decode", "inference", "encode"}


def test_client_errors_are_warnings_with_their_request_id(server, client):
    rid = f"obs-{uuid.uuid4().hex[:12]}"
    response = client.post("/detect?conf=7", content=b"x", headers={"X-Request-Id": rid})
    assert 400 <= response.status_code < 500
    line = request_line(server, rid)
    assert line["severity"] == "WARNING"
    assert line["httpRequest"]["status"] == response.status_code
    unknown = f"obs-{uuid.uuid4().hex[:12]}"
    assert client.get("/nowhere", headers={"X-Request-Id": unknown}).status_code == 404
    assert request_line(server, unknown)["httpRequest"]["requestUrl"] == "/nowhere"


def test_an_exception_is_one_record_with_request_id_and_traceback(capsys):
    """The formatter itself (in process): the record the server writes for an unhandled error."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("obs-test")
    logger.addHandler(handler)
    logger.propagate = False
    token = REQUEST_ID.set("rid-123")
    try:
        try:
            {}["missing"]
        except KeyError:
            logger.exception("request %s failed", "rid-123")
    finally:
        REQUEST_ID.reset(token)
        logger.removeHandler(handler)
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    record = json.loads(out)
    assert record["severity"] == "ERROR" and record["request_id"] == "rid-123"
    assert record["message"].startswith("request rid-123 failed\nTraceback (most recent call")
    assert "KeyError: 'missing'" in record["message"]
    assert record["logging.googleapis.com/sourceLocation"]["function"].startswith("test_")


# --- metrics (and text logs) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory) -> Iterator[Server]:
    env = {"SERVE_METRICS": "true", "SERVE_LOG_FORMAT": "text"}
    with serving(tmp_path_factory.mktemp("metrics"), env) as srv:
        yield srv


def samples(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` for one metric name."""
    pattern = rf'^{name}(\{{(?:[^"}}]|"[^"]*")*\}})? (\S+)$'  # label values may hold braces
    return {m[0]: float(m[1]) for m in re.findall(pattern, text, re.M)}


def test_metrics_http_by_route_template_and_own_per_model(metrics_server, tmp_path):
    url = metrics_server.url
    png = encode(scenes(1)[0][0])
    frames, _ = moving_shape_frames(5)
    video = tmp_path / "clip.mp4"
    write_video(video, frames)
    with httpx.Client(base_url=url, timeout=60) as http:
        for route in ("/detect", "/segment"):
            assert http.post(route, content=png, headers={"Content-Type": "image/png"}).is_success
        assert http.get("/models/shapes-detect").status_code == 200
        assert http.get("/models/nope").status_code == 404
        assert http.get("/health").status_code == 200
        body = video.read_bytes()
        response = http.post("/stream", content=body, headers={"Content-Type": "video/mp4"})
        assert response.status_code == 200 and "event: end" in response.text
        text = http.get("/metrics").text

    requests = samples(text, "yolo_http_requests_total")
    detect = [v for k, v in requests.items() if 'path="/detect"' in k and 'status_code="200"' in k]
    assert detect == [1.0]
    by_name = [k for k in requests if 'path="/models/{name}"' in k]
    assert len(by_name) == 2  # one series per status, not per model name
    assert not [k for k in requests if "/health" in k or "/metrics" in k]
    assert samples(text, "yolo_http_request_duration_seconds_count")
    inference = samples(text, "yolo_inference_seconds_count")
    assert inference['{model="shapes-detect",route="/detect"}'] == 1.0
    assert inference['{model="shapes-segment",route="/segment"}'] == 1.0
    assert samples(text, "yolo_images_total")['{model="shapes-detect",route="/detect"}'] == 1.0
    assert samples(text, "yolo_stream_frames_total")['{model="shapes-detect"}'] == 5.0
    assert samples(text, "yolo_streams_active")['{model="shapes-detect"}'] == 0.0
    assert samples(text, "yolo_errors_total")['{code="unknown-model"}'] == 1.0
    assert samples(text, "yolo_batch_size_count") and samples(text, "yolo_queue_depth")
    assert samples(text, "yolo_inference_waiting")['{model="shapes-detect"}'] == 0.0
    threads = samples(text, "yolo_threads")  # every Python thread in a pool, none unaccounted
    # one inference thread (SERVE_WORKERS=1), shared by the two models
    assert threads['{pool="main"}'] == 1.0 and threads['{pool="inference"}'] == 1.0
    assert threads['{pool="other"}'] == 0.0 and threads['{pool="worker"}'] >= 1.0

    # SERVE_LOG_FORMAT=text: plain lines, the request line with its id
    logs = metrics_server.logs()
    assert not any(line.startswith("{") for line in logs.splitlines())
    assert re.search(r" INFO app\.access \[\w+\]: POST /detect 200 \d+\.\d ms$", logs, re.M)
