"""Graceful shutdown of a real ``python -m app`` on SIGTERM (what Vertex sends on scale-down).

Instrumented servers (``tests/instrumented_app.py``): the gate holds the model calls, so "a
request is in flight when the signal arrives" is a state the test sets up. In flight then: a
multi-image ``/detect`` (finishes with 200) and an open ``/stream`` (gets the frames already
computed, then an ``error`` event ``shutting-down``, which the client raises as a
``StreamError`` carrying the problem). New connections are refused at once, the process exits 0
within ``SERVE_SHUTDOWN_SECONDS`` and the temp dir is left empty. A request held past that
deadline is cut, and the process still exits.
"""

from __future__ import annotations

import json
import signal
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest

from app.demo.shapes import moving_shape_frames, write_video
from client import Client
from client.errors import StreamError
from client.schema import StreamFrame
from conftest import INSTRUMENTED, PATIENCE_S, Gate, Server, serving, wait_until
from helpers import encode, scenes


def held_detect(pool: ThreadPoolExecutor, srv: Server, gate: Gate, images: int) -> Future:
    """Post ``images`` scenes from ``pool``; return once their predict is held at the gate."""
    files = [
        ("image", (f"{i}.png", encode(img), "image/png"))
        for i, (img, _) in enumerate(scenes(images))
    ]
    waiting = gate.state()["waiting"] or 0
    detect = pool.submit(httpx.post, srv.url + "/detect", files=files, timeout=PATIENCE_S)
    gate.wait(waiting=waiting + 1)
    return detect


def refused(url: str) -> bool:
    """Whether a new connection is refused (or reset: one the closing listener had accepted)."""
    try:
        httpx.get(url + "/health", timeout=5)
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        return True
    return False


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_sigterm_finishes_requests_ends_streams_and_exits_0(tmp_path):
    tmp_dir = tmp_path / "tmp"
    tmp_dir.mkdir()
    frames, _ = moving_shape_frames(40)
    video = tmp_path / "clip.mp4"
    write_video(video, frames)
    env = {
        "SERVE_TMP_DIR": str(tmp_dir),
        "SERVE_SHUTDOWN_SECONDS": "60",
        "SERVE_WORKERS": "2",  # the stream and the detect each hold an instance
        "TEST_GATE_PERMITS": "open",
    }
    with (
        serving(tmp_path, env, INSTRUMENTED) as srv,
        Client.from_url(srv.url) as client,
        ThreadPoolExecutor(1) as pool,
    ):
        gate = srv.gate
        gate.set(3)  # the stream's first three frames, then its fourth is held
        stream = client.stream(video)
        events = stream.frames()
        received = [next(events) for _ in range(3)]
        detect = held_detect(pool, srv, gate, images=8)
        gate.wait(waiting=2)

        srv.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: refused(srv.url), "new connections to be refused")
        assert not detect.done(), "the held request is still in flight"
        gate.open()

        with pytest.raises(StreamError) as cut:
            for frame in events:
                received.append(frame)
        answer = detect.result()
        code = srv.proc.wait(PATIENCE_S)

    assert answer.status_code == 200 and len(answer.json()["results"]) == 8
    problem = cut.value.problem
    assert problem is not None and problem.code == "shutting-down" and problem.status == 503
    assert all(isinstance(f, StreamFrame) for f in received)
    # the frame in flight at the signal was finished and sent; no new one started
    assert [f.index for f in received] == [0, 1, 2, 3]
    assert cut.value.last_event_id == "3"
    assert code == 0, srv.logs()
    logs = srv.logs()
    assert "timeout graceful shutdown exceeded" not in logs and "still busy" not in logs
    assert list(tmp_dir.iterdir()) == []

    lines = json_lines(logs)
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
    """A request that cannot finish in ``SERVE_SHUTDOWN_SECONDS`` (its model call held at the
    gate for good) does not hold the process: it is cut and the process exits 0."""
    env = {"SERVE_SHUTDOWN_SECONDS": "1"}
    with serving(tmp_path, env, INSTRUMENTED) as srv, ThreadPoolExecutor(1) as pool:
        gate = srv.gate
        gate.close()
        detect = held_detect(pool, srv, gate, images=2)
        srv.proc.send_signal(signal.SIGTERM)
        code = srv.proc.wait(PATIENCE_S)  # never, if the held call could hold the process
        with pytest.raises(httpx.HTTPError):  # cut: no answer
            detect.result().raise_for_status()
    assert code == 0, srv.logs()
    assert "timeout graceful shutdown exceeded" in srv.logs()
    assert "exiting with 1 thread(s) still busy past the shutdown deadline" in srv.logs()


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
