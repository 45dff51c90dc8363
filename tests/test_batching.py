"""The per-model scheduler: dynamic batching, backpressure (429) and failures of one request.

Two instrumented servers (``tests/instrumented_app.py``: real inference behind a gate the test
holds and releases, and a poison image that makes ``predict`` raise): ``batching`` (batching on,
up to 16 images a call) and ``default`` (``SERVE_BATCHING=auto``, on for these PyTorch weights,
with room for one request per model). "A batch forms", "the queue is full" and "a batch of 9
fails" are states set up with the gate, whatever the machine's speed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from httpx_sse import connect_sse
from instrumented_app import POISON_RGB

from app.config import Settings, SettingsError
from conftest import INSTRUMENTED, Server, metric, serving, wait_until
from helpers import b64, box_iou, det_box, encode, scenes

PNG = {"Content-Type": "image/png"}
MODEL = "shapes-detect"
IMAGES = [encode(rgb) for rgb, _ in scenes(16)]  # three sizes: 160x160, 240x200, 320x320
HOLDER = encode(scenes(1, seed=99, sizes=((288, 224),))[0][0])  # a size no other image has


def serve(factory: pytest.TempPathFactory, env: dict[str, str]) -> Iterator[Server]:
    with serving(factory.mktemp("batching"), {"SERVE_METRICS": "true", **env}, INSTRUMENTED) as srv:
        yield srv


@pytest.fixture(scope="module")
def batching(tmp_path_factory) -> Iterator[Server]:
    yield from serve(tmp_path_factory, {"SERVE_BATCHING": "on", "SERVE_BATCH_MAX_SIZE": "16"})


@pytest.fixture(scope="module")
def default(tmp_path_factory) -> Iterator[Server]:
    """Batching auto (on for the demo's PyTorch weights) and room for one request per model."""
    yield from serve(tmp_path_factory, {"SERVE_QUEUE_SIZE": "1"})


def post(
    url: str, route: str, blob: bytes, headers: dict | None = None, **params
) -> httpx.Response:
    return httpx.post(
        url + route, content=blob, params=params, headers={**PNG, **(headers or {})}, timeout=120
    )


def detect(url: str, blob: bytes, headers: dict | None = None, **params) -> httpx.Response:
    return post(url, "/detect", blob, headers, **params)


def held_burst(
    server: Server, calls: list[Callable[[], httpx.Response]], route: str = "/detect", queued=None
) -> list[httpx.Response]:
    """Send ``calls`` while the model's only instance is held by a first request at the gate,
    wait until ``queued`` of them (default: all) wait for inference behind it, then let them all
    through: they form batches of equal predict arguments. Answers in order."""
    model = "shapes-segment" if route == "/segment" else MODEL
    gate = server.gate
    gate.close()
    passed = gate.state()["passed"]
    with ThreadPoolExecutor(len(calls) + 1) as pool:
        holder = pool.submit(post, server.url, route, HOLDER)
        gate.wait(waiting=1)
        futures = [pool.submit(call) for call in calls]
        expected = len(calls) if queued is None else queued
        wait_until(
            lambda: metric(server.url, "yolo_inference_waiting", model=model) == expected,
            f"{expected} calls queued for {model}",
        )
        gate.open()
        assert holder.result().status_code == 200
        answers = [f.result() for f in futures]
    assert gate.state()["passed"] > passed
    return answers


def same_detections(got: list[dict], want: list[dict]) -> bool:
    """The same detections: one-to-one, same class, boxes IoU >= 0.98, confidence within 0.002.

    Batched and single convolutions may differ in the last float bits, so not byte equality.
    """
    if len(got) != len(want):
        return False
    left = list(got)
    for w in want:
        match = next(
            (
                g
                for g in left
                if g["class_name"] == w["class_name"]
                and box_iou(det_box(g), det_box(w)) >= 0.98
                and abs(g["confidence"] - w["confidence"]) <= 0.002
            ),
            None,
        )
        if match is None:
            return False
        left.remove(match)
    return True


def batches(server: Server, model: str = MODEL) -> tuple[float, float, float]:
    """Predict calls, of which with more than one image, and images, so far."""
    calls = metric(server.url, "yolo_batch_size_count", model=model)
    single = metric(server.url, "yolo_batch_size_bucket", model=model, le="1.0")
    return calls, calls - single, metric(server.url, "yolo_batch_size_sum", model=model)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code and body["status"] == status and body["detail"]
    return body


# --- batching ---------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/detect", "/segment"])
def test_batched_answers_equal_unbatched_ones(batching, default, route):
    model = "shapes-segment" if route == "/segment" else MODEL
    want = [post(default.url, route, blob).json()["results"][0] for blob in IMAGES]
    _, multi, _ = batches(batching, model)
    answers = held_burst(
        batching, [lambda b=blob: post(batching.url, route, b) for blob in IMAGES], route
    )
    assert batches(batching, model)[1] == multi + 3  # one batch per image size
    for got, expected in zip(answers, want, strict=True):
        assert got.status_code == 200, got.text
        (result,) = got.json()["results"]
        assert (result["width"], result["height"]) == (expected["width"], expected["height"])
        assert same_detections(result["detections"], expected["detections"])
        if route == "/segment":
            assert all(d["mask"]["polygons"] for d in result["detections"])
    assert sum(len(r["detections"]) for r in want) >= len(IMAGES)  # the scenes have shapes


def test_one_batch_serves_sixteen_requests_and_counts_every_image_once(batching):
    calls, multi, images = batches(batching)
    same_size = [encode(rgb) for rgb, _ in scenes(16, seed=5, sizes=((240, 200),))]
    answers = held_burst(batching, [lambda b=blob: detect(batching.url, b) for blob in same_size])
    assert [a.status_code for a in answers] == [200] * 16
    # the held request alone, then the sixteen queued behind it as one predict call
    assert batches(batching) == (calls + 2, multi + 1, images + 17)
    assert metric(batching.url, "yolo_queue_depth", model=MODEL) == 0


def test_mixed_parameters_each_get_their_own(batching, default):
    variants = [{}, {"conf": 0.6}, {"classes": "circle"}, {"max_det": 1}, {"imgsz": 224}]
    jobs = [(blob, variants[i % len(variants)]) for i, blob in enumerate(IMAGES)]
    want = [detect(default.url, blob, **p).json()["results"][0]["detections"] for blob, p in jobs]
    answers = held_burst(
        batching, [lambda b=blob, p=p: detect(batching.url, b, **p) for blob, p in jobs]
    )
    for (_, params), got, expected in zip(jobs, answers, want, strict=True):
        assert got.status_code == 200, got.text
        found = got.json()["results"][0]["detections"]
        assert same_detections(found, expected), params
        if "classes" in params:
            assert {d["class_name"] for d in found} <= {"circle"}
        if "max_det" in params:
            assert len(found) <= 1
        if "conf" in params:
            assert all(d["confidence"] >= 0.6 for d in found)
    # the variants do change answers, so a request given another's parameters would show
    unfiltered = [d for (_, p), w in zip(jobs, want, strict=True) if not p for d in w]
    assert {d["class_name"] for d in unfiltered} - {"circle"}
    assert max(len(w) for (_, p), w in zip(jobs, want, strict=True) if not p) > 1


def test_batching_is_on_by_default_for_pytorch_weights(default):
    assert "model shapes-detect: batching on (up to 8 images, 5 ms), queue 1" in default.logs()
    calls, multi, images = batches(default)
    assert detect(default.url, IMAGES[0]).status_code == 200
    assert batches(default) == (calls + 1, multi, images + 1)


def test_scheduler_settings_are_validated():
    with pytest.raises(SettingsError) as info:
        Settings.from_env(
            {
                "SERVE_BATCHING": "sometimes",
                "SERVE_BATCH_MAX_SIZE": "0",
                "SERVE_BATCH_MAX_DELAY_MS": "-1",
                "SERVE_QUEUE_SIZE": "many",
            }
        )
    message = str(info.value)
    for name in ("SERVE_BATCHING", "SERVE_BATCH_MAX_SIZE", "SERVE_BATCH_MAX_DELAY_MS"):
        assert name in message
    assert "SERVE_QUEUE_SIZE='many' is not an integer" in message
    settings = Settings.from_env({"SERVE_BATCHING": "ON", "SERVE_QUEUE_SIZE": "5"})
    assert (settings.batching, settings.queue_size, settings.batch_max_size) == ("on", 5, 8)


# --- backpressure -----------------------------------------------------------------------------


def hold_one(server: Server, pool: ThreadPoolExecutor, route: str = "/detect") -> Future:
    """A request that holds its model's only place in the queue (and its instance): returns
    once its predict is held at the (closed) gate."""
    gate = server.gate
    gate.close()
    waiting = gate.state()["waiting"] or 0
    held = pool.submit(post, server.url, route, HOLDER)
    gate.wait(waiting=waiting + 1)
    return held


def test_full_queue_answers_429_before_any_work(default):
    gate = default.gate
    with ThreadPoolExecutor(4) as pool:
        held = hold_one(default, pool)
        calls = batches(default)[0]
        refused = [detect(default.url, blob) for blob in IMAGES[:8]]
        for answer in refused:
            body = assert_problem(answer, 429, "overloaded")
            assert answer.headers["retry-after"] == "1"
            assert "shapes-detect" in body["detail"] and body["request_id"]
        # each model has its own queue: /segment is admitted (it then waits for the one
        # inference slot, SERVE_WORKERS=1 across models, which the held request has)
        other = pool.submit(post, default.url, "/segment", IMAGES[0])
        wait_until(
            lambda: metric(default.url, "yolo_queue_depth", model="shapes-segment") == 1,
            "/segment admitted",
        )
        gate.open()
        assert held.result().status_code == 200 and other.result().status_code == 200
    assert batches(default)[0] == calls  # the refused requests never reached the model
    assert detect(default.url, IMAGES[0]).status_code == 200
    assert metric(default.url, "yolo_queue_depth", model=MODEL) == 0
    assert metric(default.url, "yolo_errors_total", code="overloaded") >= 8


def test_a_burst_beyond_the_queue_gets_answers_or_429s_never_5xx(default):
    """32 requests at once at a model with room for one, its first call held: all but that one
    are refused at once; then it is answered; nothing fails."""
    gate = default.gate
    gate.close()
    barrier = threading.Barrier(32)

    def call(blob: bytes) -> httpx.Response:
        barrier.wait()
        return detect(default.url, blob)

    with ThreadPoolExecutor(32) as pool:
        futures = [pool.submit(call, blob) for blob in IMAGES * 2]
        wait_until(lambda: sum(f.done() for f in futures) == 31, "31 answers before the held one")
        gate.wait(waiting=1)
        gate.open()
        answers = [f.result() for f in futures]
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [429] * 31, statuses
    for answer in answers:
        if answer.status_code == 429:
            assert_problem(answer, 429, "overloaded")
            assert answer.headers["retry-after"] == "1"
    assert detect(default.url, IMAGES[1]).status_code == 200
    assert httpx.get(default.url + "/health").status_code == 200


def frames_body(n: int) -> dict:
    return {"frames": [b64(blob) for blob in (IMAGES[::3] * n)[:n]], "parameters": {"model": MODEL}}


def test_stream_is_refused_at_its_start_only(default):
    gate = default.gate
    with ThreadPoolExecutor(2) as pool:
        held = hold_one(default, pool)
        refused = httpx.post(default.url + "/stream", json=frames_body(3), timeout=60)
        assert_problem(refused, 429, "overloaded")
        assert refused.headers["retry-after"] == "1"
        gate.open()
        assert held.result().status_code == 200

    # Once started, its frames go through however full the queue is: the gate lets its first
    # frame through and holds the second (which fills the queue); requests are refused
    # meanwhile; then the rest follows.
    frames, statuses = 24, []
    gate.set(1)
    with (
        httpx.Client(timeout=120) as http,
        connect_sse(http, "POST", default.url + "/stream", json=frames_body(frames)) as source,
    ):
        assert source.response.status_code == 200
        events = []
        for sse in source.iter_sse():
            if not sse.data:
                continue
            events.append((sse.event, json.loads(sse.data)))
            if len(events) == 2:  # the first frame is out; the second is held
                gate.wait(waiting=1)
                statuses = [detect(default.url, blob).status_code for blob in IMAGES[:8]]
                gate.open()
    names = [name for name, _ in events]
    assert names == ["start"] + ["frame"] * frames + ["end"], events[-1]
    assert events[-1][1]["frames"] == frames
    assert statuses == [429] * 8


# --- failures inside inference ----------------------------------------------------------------


def poison_png(size: tuple[int, int] = (160, 160)) -> bytes:
    return encode(np.full((*size, 3), POISON_RGB, np.uint8))


def test_inference_error_is_a_logged_500_and_the_server_stays_healthy(batching):
    answer = detect(batching.url, poison_png(), headers={"X-Request-Id": "poison-alone-1"})
    body = assert_problem(answer, 500, "internal")
    assert body["request_id"] == "poison-alone-1"
    assert "injected fault" not in answer.text  # internals stay in the logs
    logs = batching.logs()
    assert "unhandled error in request poison-alone-1" in logs
    assert "RuntimeError: injected fault" in logs
    assert httpx.get(batching.url + "/health").status_code == 200
    assert detect(batching.url, IMAGES[0]).status_code == 200
    assert metric(batching.url, "yolo_queue_depth", model=MODEL) == 0


def test_a_bad_input_in_a_batch_fails_alone(batching):
    good = [encode(rgb) for rgb, _ in scenes(8, seed=11, sizes=((160, 160),))]
    want = [detect(batching.url, blob).json()["results"][0]["detections"] for blob in good]
    jobs = [*good, poison_png(), b"not an image"]
    ids = [f"batch-{i}" for i in range(len(jobs))]
    calls = [
        lambda b=blob, i=rid: detect(batching.url, b, {"X-Request-Id": i})
        for blob, rid in zip(jobs, ids, strict=True)
    ]
    # the last one fails to decode (400) and never queues: the other nine form one batch
    answers = held_burst(batching, calls, queued=9)
    for got, expected in zip(answers, want, strict=False):
        assert got.status_code == 200, got.text
        assert same_detections(got.json()["results"][0]["detections"], expected)
    assert_problem(answers[-2], 500, "internal")
    assert_problem(answers[-1], 400, "invalid-image")
    logs = batching.logs()
    assert "model shapes-detect: a batch of 9 requests failed" in logs
    assert f"unhandled error in request {ids[-2]}" in logs
    assert not any(f"request {rid}" in logs for rid in ids[:-2])
    assert detect(batching.url, good[0]).status_code == 200
