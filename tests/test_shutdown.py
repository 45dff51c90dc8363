"""Graceful shutdown of a real ``python -m app`` on SIGTERM (what Vertex sends on scale-down).

In flight when the signal arrives: a slow multi-image ``/detect`` (finishes with 200) and an open
``/stream`` (gets the frames already computed, then an ``error`` event ``shutting-down``, which
the client raises as a ``StreamError`` carrying the problem). New connections are refused at
once, the process exits 0 within ``SERVE_SHUTDOWN_SECONDS`` and the temp dir is left empty.
"""

from __future__ import annotations

import json
import re
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest

from app.demo.shapes import moving_shape_frames, write_video
from client import Client
from client.errors import StreamError
from client.schema import StreamFrame
from conftest import serving
from helpers import encode, scenes

SHUTDOWN_SECONDS = 20


def in_progress(url: str, path: str) -> float:
    """Litestar's ``yolo_http_requests_in_progress`` for one route, from ``/metrics``."""
    text = httpx.get(url + "/metrics", timeout=5).text
    pattern = rf'^yolo_http_requests_in_progress\{{[^}}]*path="{re.escape(path)}"[^}}]*\}} (\S+)$'
    return sum(float(m) for m in re.findall(pattern, text, re.MULTILINE))


def slow_detect(pool: ThreadPoolExecutor, url: str, images: int, imgsz: int) -> Future:
    """Post ``images`` scenes at ``imgsz`` (seconds of work on a CPU) from ``pool``; return once
    the server counts the request in progress."""
    files = [
        ("image", (f"{i}.png", encode(img), "image/png"))
        for i, (img, _) in enumerate(scenes(images))
    ]
    detect = pool.submit(
        httpx.post, url + "/detect", files=files, data={"imgsz": str(imgsz)}, timeout=60
    )
    deadline = time.monotonic() + 30
    while in_progress(url, "/detect") < 1:
        assert time.monotonic() < deadline and not detect.done()
        time.sleep(0.05)
    return detect


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_sigterm_finishes_requests_ends_streams_and_exits_0(tmp_path):
    tmp_dir = tmp_path / "tmp"
    tmp_dir.mkdir()
    frames, _ = moving_shape_frames(1500)
    video = tmp_path / "long.mp4"
    write_video(video, frames)
    env = {
        "SERVE_TMP_DIR": str(tmp_dir),
        "SERVE_SHUTDOWN_SECONDS": str(SHUTDOWN_SECONDS),
        "SERVE_METRICS": "true",
        "SERVE_WORKERS": "2",
    }
    with (
        serving(tmp_path, env) as srv,
        Client.from_url(srv.url) as client,
        ThreadPoolExecutor(1) as pool,
    ):
        stream = client.stream(video)
        events = stream.frames()
        received = [next(events) for _ in range(3)]
        detect = slow_detect(pool, srv.url, images=8, imgsz=960)

        signalled = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        # refused within a second (a connection the closing listener had already accepted is
        # reset instead: not served either)
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            for _ in range(20):
                httpx.get(srv.url + "/health", timeout=1)
                time.sleep(0.05)
        assert not detect.done(), "the slow request should still be in flight"

        with pytest.raises(StreamError) as cut:
            for frame in events:
                received.append(frame)
        answer = detect.result()
        code = srv.proc.wait(SHUTDOWN_SECONDS + 5)
        took = time.monotonic() - signalled

    assert answer.status_code == 200 and len(answer.json()["results"]) == 8
    problem = cut.value.problem
    assert problem is not None and problem.code == "shutting-down" and problem.status == 503
    assert all(isinstance(f, StreamFrame) for f in received)
    assert [f.index for f in received] == list(range(len(received))) and len(received) < 1500
    assert cut.value.last_event_id == str(received[-1].index)
    assert code == 0, srv.logs()
    assert took < SHUTDOWN_SECONDS, f"exit took {took:.1f} s"
    assert list(tmp_dir.iterdir()) == []

    lines = json_lines(srv.logs())
    assert any(r["message"].startswith("shutting down (SIGTERM)") for r in lines)
    detect_line = next(
        r
        for r in lines
        if r["logger"] == "app.access" and r["httpRequest"]["requestUrl"] == "/detect"
    )
    assert detect_line["httpRequest"]["status"] == 200 and detect_line["model"] == "shapes-detect"
    stream_line = next(
        r
        for r in lines
        if r["logger"] == "app.access" and r["httpRequest"]["requestUrl"] == "/stream"
    )
    assert stream_line["httpRequest"]["status"] == 200 and "completed" not in stream_line


def test_requests_past_the_deadline_are_cut_and_the_process_still_exits(tmp_path):
    """A request that cannot finish in ``SERVE_SHUTDOWN_SECONDS`` does not hold the process."""
    env = {"SERVE_SHUTDOWN_SECONDS": "1", "SERVE_METRICS": "true"}
    with serving(tmp_path, env) as srv, ThreadPoolExecutor(1) as pool:
        detect = slow_detect(pool, srv.url, images=16, imgsz=1280)
        signalled = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        code = srv.proc.wait(15)
        took = time.monotonic() - signalled
        with pytest.raises(httpx.HTTPError):  # cut: no answer
            detect.result().raise_for_status()
    assert code == 0, srv.logs()
    assert took < 1 + 2 + 1, f"exit took {took:.1f} s"  # deadline + EXIT_MARGIN_SECONDS + slack
    assert "timeout graceful shutdown exceeded" in srv.logs()


def test_health_answers_503_shutting_down_once_shutdown_started():
    """In the moment between the signal and the listener closing, health says so (in process:
    a real app, with the state ``python -m app`` marks on the signal)."""
    from litestar.testing import TestClient

    from app.config import Settings
    from app.main import create_app

    app = create_app(Settings.from_env({}))
    http = TestClient(app)  # no lifespan: the models are not loaded, health says "loading"
    before = http.get("/health")
    app.state.shutdown.begin("test")
    response = http.get("/health")
    assert before.status_code == 503 and before.json()["status"] == "loading"
    assert response.status_code == 503 and response.json()["status"] == "shutting-down"
