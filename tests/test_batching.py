"""The per-model scheduler: dynamic batching, backpressure (429) and failures of one request.

Three real servers: batching on (a long gathering delay, so batches form on this slow machine),
the default (``SERVE_BATCHING=auto``: on for these PyTorch weights) with a queue of one, and a batching server
started by ``tests/fault_app.py``, whose models raise on one marked image (see that file: no
request can make a real ``predict`` fail after decoding).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fault_app import POISON_RGB
from httpx_sse import connect_sse
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings, SettingsError
from conftest import ROOT, Server, serving
from helpers import b64, box_iou, det_box, encode, scenes

PNG = {"Content-Type": "image/png"}
MODEL = "shapes-detect"
IMAGES = [encode(rgb) for rgb, _ in scenes(16)]  # three sizes: 160x160, 240x200, 320x320


def serve(factory: pytest.TempPathFactory, env: dict[str, str], cmd=None) -> Iterator[Server]:
    with serving(factory.mktemp("batching"), {"SERVE_METRICS": "true", **env}, cmd) as srv:
        yield srv


@pytest.fixture(scope="module")
def batching(tmp_path_factory) -> Iterator[Server]:
    env = {"SERVE_BATCHING": "on", "SERVE_BATCH_MAX_SIZE": "8", "SERVE_BATCH_MAX_DELAY_MS": "100"}
    yield from serve(tmp_path_factory, env)


@pytest.fixture(scope="module")
def default(tmp_path_factory) -> Iterator[Server]:
    """Batching auto (on for the demo's PyTorch weights) and room for one request per model."""
    yield from serve(tmp_path_factory, {"SERVE_QUEUE_SIZE": "1"})


@pytest.fixture(scope="module")
def faulty(tmp_path_factory) -> Iterator[Server]:
    env = {"SERVE_BATCHING": "on", "SERVE_BATCH_MAX_SIZE": "16"}
    yield from serve(tmp_path_factory, env, [sys.executable, str(ROOT / "tests" / "fault_app.py")])


def detect(url: str, blob: bytes, headers: dict | None = None, **params) -> httpx.Response:
    return httpx.post(
        url + "/detect",
        content=blob,
        params=params,
        headers={**PNG, **(headers or {})},
        timeout=120,
    )


def at_once(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Run every call in its own thread, released together; answers in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], httpx.Response]) -> httpx.Response:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


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


def metric(server: Server, name: str, **labels: str) -> float:
    """One sample of the server's /metrics (0 when absent)."""
    text = httpx.get(server.url + "/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def batches(server: Server) -> tuple[float, float, float]:
    """Predict calls, of which with more than one image, and images, so far (shapes-detect)."""
    calls = metric(server, "yolo_batch_size_count", model=MODEL)
    single = metric(server, "yolo_batch_size_bucket", model=MODEL, le="1.0")
    return calls, calls - single, metric(server, "yolo_batch_size_sum", model=MODEL)


def slow_request(server: Server) -> tuple[threading.Thread, list[httpx.Response]]:
    """A request that holds shapes-detect's only instance for about two seconds; returns once
    its predict has started."""
    big = encode(np.random.default_rng(1).integers(0, 255, (1024, 1024, 3), np.uint8))
    calls = batches(server)[0]
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(detect(server.url, big, imgsz=2048)))
    thread.start()
    deadline = time.monotonic() + 60
    while batches(server)[0] == calls:
        assert time.monotonic() < deadline, "the slow request never reached the model"
        time.sleep(0.02)
    return thread, answers


def assert_problem(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code and body["status"] == status and body["detail"]
    return body


# --- batching ---------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/detect", "/segment"])
def test_concurrent_batched_answers_equal_unbatched_ones(batching, default, route):
    def post(url: str, blob: bytes) -> httpx.Response:
        return httpx.post(url + route, content=blob, headers=PNG, timeout=120)

    want = [post(default.url, blob).json()["results"][0] for blob in IMAGES]
    answers = at_once([lambda b=blob: post(batching.url, b) for blob in IMAGES])
    for got, expected in zip(answers, want, strict=True):
        assert got.status_code == 200, got.text
        (result,) = got.json()["results"]
        assert (result["width"], result["height"]) == (expected["width"], expected["height"])
        assert same_detections(result["detections"], expected["detections"])
        if route == "/segment":
            assert all(d["mask"]["polygons"] for d in result["detections"])
    assert sum(len(r["detections"]) for r in want) >= len(IMAGES)  # the scenes have shapes


def test_batches_form_and_count_every_image_once(batching):
    calls, multi, images = batches(batching)
    same_size = [encode(rgb) for rgb, _ in scenes(16, seed=5, sizes=((240, 200),))]
    answers = at_once([lambda b=blob: detect(batching.url, b) for blob in same_size])
    assert [a.status_code for a in answers] == [200] * 16
    calls2, multi2, images2 = batches(batching)
    assert images2 - images == 16  # each request's image ran exactly once
    assert multi2 > multi  # some predict calls served several requests
    assert calls2 - calls < 16
    assert metric(batching, "yolo_queue_depth", model=MODEL) == 0


def test_mixed_parameters_each_get_their_own(batching, default):
    variants = [{}, {"conf": 0.6}, {"classes": "circle"}, {"max_det": 1}, {"imgsz": 224}]
    jobs = [(blob, variants[i % len(variants)]) for i, blob in enumerate(IMAGES)]
    want = [detect(default.url, blob, **p).json()["results"][0]["detections"] for blob, p in jobs]
    answers = at_once([lambda b=blob, p=p: detect(batching.url, b, **p) for blob, p in jobs])
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


def test_full_queue_answers_429_before_any_work(default):
    thread, slow = slow_request(default)
    calls, _, _ = batches(default)

    def segment() -> httpx.Response:
        return httpx.post(default.url + "/segment", content=IMAGES[0], headers=PNG, timeout=120)

    *refused, other = at_once(
        [*(lambda b=blob: detect(default.url, b) for blob in IMAGES[:8]), segment]
    )
    for answer in refused:
        body = assert_problem(answer, 429, "overloaded")
        assert answer.headers["retry-after"] == "1"
        assert "shapes-detect" in body["detail"] and body["request_id"]
    assert other.status_code == 200, other.text  # each model has its own queue
    thread.join()
    assert slow[0].status_code == 200, slow[0].text
    assert batches(default)[0] == calls  # the refused requests never reached the model
    assert detect(default.url, IMAGES[0]).status_code == 200
    assert metric(default, "yolo_queue_depth", model=MODEL) == 0
    assert metric(default, "yolo_errors_total", code="overloaded") >= 8


def test_offered_load_gets_answers_or_429s_never_5xx(default):
    blobs = IMAGES * 2
    answers = at_once([lambda b=blob: detect(default.url, b, imgsz=640) for blob in blobs])
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 429} and 200 in statuses and 429 in statuses, statuses
    for answer in answers:
        if answer.status_code == 429:
            assert_problem(answer, 429, "overloaded")
            assert answer.headers["retry-after"] == "1"
    assert detect(default.url, IMAGES[1]).status_code == 200
    assert httpx.get(default.url + "/health").status_code == 200


def frames_body(n: int) -> dict:
    return {"frames": [b64(blob) for blob in (IMAGES[::3] * n)[:n]], "parameters": {"model": MODEL}}


def test_stream_is_refused_at_its_start_only(default):
    thread, slow = slow_request(default)
    refused = httpx.post(default.url + "/stream", json=frames_body(3), timeout=60)
    assert_problem(refused, 429, "overloaded")
    assert refused.headers["retry-after"] == "1"
    thread.join()
    assert slow[0].status_code == 200

    # Once started, its frames go through however full the queue is.
    frames = 24
    statuses: list[int] = []
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
            if len(events) == 2:  # the first frame is out: crowd the queue while the rest run
                crowd = threading.Thread(
                    target=lambda: statuses.extend(
                        a.status_code
                        for a in at_once(
                            [lambda b=blob: detect(default.url, b) for blob in IMAGES[:8]]
                        )
                    )
                )
                crowd.start()
    crowd.join()
    names = [name for name, _ in events]
    assert names == ["start"] + ["frame"] * frames + ["end"], events[-1]
    assert events[-1][1]["frames"] == frames
    assert set(statuses) <= {200, 429} and len(statuses) == 8


# --- failures inside inference ----------------------------------------------------------------


def poison_png(size: tuple[int, int] = (160, 160)) -> bytes:
    return encode(np.full((*size, 3), POISON_RGB, np.uint8))


def test_inference_error_is_a_logged_500_and_the_server_stays_healthy(faulty):
    answer = detect(faulty.url, poison_png(), headers={"X-Request-Id": "poison-alone-1"})
    body = assert_problem(answer, 500, "internal")
    assert body["request_id"] == "poison-alone-1"
    assert "injected fault" not in answer.text  # internals stay in the logs
    logs = faulty.logs()
    assert "unhandled error in request poison-alone-1" in logs
    assert "RuntimeError: injected fault" in logs
    assert httpx.get(faulty.url + "/health").status_code == 200
    assert detect(faulty.url, IMAGES[0]).status_code == 200
    assert metric(faulty, "yolo_queue_depth", model=MODEL) == 0


def test_a_bad_input_in_a_batch_fails_alone(faulty):
    good = [encode(rgb) for rgb, _ in scenes(8, seed=11, sizes=((160, 160),))]
    want = [detect(faulty.url, blob).json()["results"][0]["detections"] for blob in good]
    # Hold the model's only instance so that every request below waits for the same batch.
    thread, slow = slow_request(faulty)
    jobs = [*good, poison_png(), b"not an image"]
    ids = [f"batch-{i}" for i in range(len(jobs))]
    answers = at_once(
        [
            lambda b=blob, i=rid: detect(faulty.url, b, {"X-Request-Id": i})
            for blob, rid in zip(jobs, ids, strict=True)
        ]
    )
    thread.join()
    assert slow[0].status_code == 200
    for got, expected in zip(answers, want, strict=False):
        assert got.status_code == 200, got.text
        assert same_detections(got.json()["results"][0]["detections"], expected)
    assert_problem(answers[-2], 500, "internal")
    assert_problem(answers[-1], 400, "invalid-image")
    logs = faulty.logs()
    assert "model shapes-detect: a batch of 9 requests failed" in logs
    assert f"unhandled error in request {ids[-2]}" in logs
    assert not any(f"request {rid}" in logs for rid in ids[:-2])
    assert detect(faulty.url, good[0]).status_code == 200
