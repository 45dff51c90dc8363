"""``POST /stream`` through a real server process: videos and frame runs, events parsed by a real
SSE client (httpx-sse), tracking, limits, disconnects and concurrency."""

from __future__ import annotations

import io
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import requests
from httpx_sse import connect_sse
from PIL import Image

from app.demo.shapes import draw_shape, make_shape, moving_shape_frames, write_video
from conftest import INSTRUMENTED, Server, serving, wait_until
from conftest import metric as server_metric
from helpers import b64, cli_process, det_box, encode, interrupt

FRAMES, CENTRES = moving_shape_frames(24)  # 160x120, a square moving left to right
MAX_FRAMES = 200


@pytest.fixture(scope="module")
def stream_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """A server with small stream limits, metrics on and its own temp dir to watch; instrumented
    (``tests/instrumented_app.py``): its model calls pass a gate the tests can hold."""
    work = tmp_path_factory.mktemp("stream")
    tmp = work / "tmp"
    tmp.mkdir()
    env = {
        "AIP_DEPLOYED_MODEL_ID": "dm-stream",
        "SERVE_TMP_DIR": str(tmp),
        "SERVE_METRICS": "true",
        "SERVE_STREAM_MAX_FRAMES": str(MAX_FRAMES),
        "SERVE_STREAM_MAX_SECONDS": "60",
        "SERVE_STREAM_MAX_PIXELS": str(320 * 240),
        "SERVE_STREAM_QUEUE": "2",
        "SERVE_STREAM_PING_SECONDS": "0.2",
    }
    with serving(work, env, INSTRUMENTED) as srv:
        yield srv, tmp


@pytest.fixture(scope="module")
def http(stream_server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stream_server[0].url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def mp4(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("video") / "moving.mp4"
    write_video(path, FRAMES, fps=10)
    return path.read_bytes()


def stream(http: httpx.Client, **kw) -> list[tuple[str, str | None, dict]]:
    """POST /stream and parse every event: (event name, SSE id, JSON data)."""
    with connect_sse(http, "POST", "/stream", **kw) as source:
        assert source.response.status_code == 200, source.response.read()
        assert source.response.headers["content-type"].startswith("text/event-stream")
        # httpx-sse hands keep-alive comments over as empty "message" events: skip them
        return [(e.event, e.id or None, json.loads(e.data)) for e in source.iter_sse() if e.data]


def frames_of(events) -> list[dict]:
    return [data for name, _, data in events if name == "frame"]


def centre(d: dict) -> tuple[float, float]:
    x1, y1, x2, y2 = det_box(d)
    return (x1 + x2) / 2, (y1 + y2) / 2


def test_video_with_tracking_follows_the_shape(http, mp4, stream_server):
    events = stream(
        http, content=mp4, params={"track": "bytetrack"}, headers={"Content-Type": "video/mp4"}
    )
    names = [name for name, _, _ in events]
    assert names == ["start"] + ["frame"] * len(FRAMES) + ["end"]
    start = events[0][2]
    assert start == {
        "model": "shapes-detect",
        "version": start["version"],
        "deployed_model_id": "dm-stream",
        "replica_id": f"{socket.gethostname()}-{stream_server[0].proc.pid}",
        "task": "detect",
        "source": "video",
        "fps": 10.0,
        "frames": len(FRAMES),
        "width": 160,
        "height": 120,
        "track": "bytetrack",
        "keypoints": None,  # a pose model's layout
    }
    frames = frames_of(events)
    assert [f["index"] for f in frames] == list(range(len(FRAMES)))
    assert [int(i) for name, i, _ in events if name == "frame"] == list(range(len(FRAMES)))
    assert [f["timestamp_ms"] for f in frames] == [100.0 * i for i in range(len(FRAMES))]
    track_ids = set()
    followed = 0
    for f, (cx, cy) in zip(frames, CENTRES, strict=True):
        assert f["inference_ms"] > 0
        squares = [d for d in f["detections"] if d["class_name"] == "square"]
        if len(squares) == 1:
            x, y = centre(squares[0])
            followed += abs(x - cx) <= 6 and abs(y - cy) <= 6
        track_ids |= {d["track_id"] for d in f["detections"]}
    assert followed >= 0.9 * len(FRAMES)
    assert len(track_ids) == 1
    end = events[-1][2]
    assert end["frames"] == len(FRAMES) and end["tracks"] == 1
    assert end["class_counts"]["square"] >= 0.9 * len(FRAMES)
    assert end["fps"] > 0 and end["elapsed_ms"] > 0


def test_without_tracking_no_track_ids(http, mp4):
    events = stream(http, content=mp4, headers={"Content-Type": "application/octet-stream"})
    frames = frames_of(events)
    assert len(frames) == len(FRAMES)
    assert all("track_id" not in d for f in frames for d in f["detections"])
    assert events[0][2]["track"] == "none" and events[-1][2]["tracks"] == 0


def test_gif_input(http):
    images = [Image.fromarray(f) for f in FRAMES[:8]]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=50)
    events = stream(http, content=buf.getvalue(), headers={"Content-Type": "image/gif"})
    start, frames = events[0][2], frames_of(events)
    assert (start["source"], start["fps"], start["frames"]) == ("video", 20.0, 8)
    assert len(frames) == 8 and events[-1][0] == "end"
    # GIF's palette changes colours a little; the shape is still found in most frames
    assert sum(any(d["class_name"] == "square" for d in f["detections"]) for f in frames) >= 6


def test_multipart_frames_in_order(http):
    files = [("frame", (f"{i}.png", encode(f), "image/png")) for i, f in enumerate(FRAMES[:10])]
    events = stream(http, files=files, data={"track": "botsort", "conf": "0.3"})
    start, frames = events[0][2], frames_of(events)
    assert (start["source"], start["fps"], start["frames"]) == ("frames", None, 10)
    assert [f["index"] for f in frames] == list(range(10))
    assert all(f["timestamp_ms"] is None for f in frames)
    for f, (cx, _) in zip(frames, CENTRES, strict=False):
        (square,) = [d for d in f["detections"] if d["class_name"] == "square"]
        assert abs(centre(square)[0] - cx) <= 6 and square["confidence"] >= 0.3
    assert len({d["track_id"] for f in frames for d in f["detections"]}) == 1


def test_json_frames_with_parameters(http):
    body = {"frames": [b64(encode(f)) for f in FRAMES[:6]], "parameters": {"max_frames": 4}}
    events = stream(http, json=body)
    assert events[0][2]["frames"] == 4
    assert [f["index"] for f in frames_of(events)] == [0, 1, 2, 3]
    assert events[-1][2]["frames"] == 4


def test_max_frames_and_vid_stride(http, mp4):
    events = stream(
        http,
        content=mp4,
        params={"max_frames": 5, "vid_stride": 3},
        headers={"Content-Type": "video/mp4"},
    )
    assert events[0][2]["frames"] == 5
    frames = frames_of(events)
    assert [f["index"] for f in frames] == [0, 3, 6, 9, 12]
    assert [f["timestamp_ms"] for f in frames] == [0.0, 300.0, 600.0, 900.0, 1200.0]
    assert events[-1][0] == "end" and events[-1][2]["frames"] == 5


def test_segmentation_model_streams_masks(http, mp4):
    events = stream(
        http,
        content=mp4,
        params={"model": "shapes-segment", "max_frames": 3, "rle": "true"},
        headers={"Content-Type": "video/mp4"},
    )
    assert events[0][2]["task"] == "segment"
    for f in frames_of(events):
        (d,) = f["detections"]
        assert d["mask"]["polygons"] and d["mask"]["rle"]["size"] == [120, 160]


def assert_problem(r: httpx.Response, status: int, code: str, detail: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == code and re.search(detail, body["detail"]), body
    return body


@pytest.mark.parametrize(
    ("content", "ctype", "status", "code", "detail"),
    [
        (b"\x00\x01garbage" * 100, "video/mp4", 400, "invalid-video", "not a video"),
        (b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 500, "video/mp4", 400, "invalid-video", "cannot be decoded"),
        (encode(FRAMES[0]), "video/mp4", 400, "invalid-video", "not a video"),
        (b"#EXTM3U\n#EXTINF:1,\n/etc/passwd\n", "application/octet-stream", 400, "invalid-video", "not a video"),
        (b"", "video/mp4", 400, "invalid-video", "empty"),
        (encode(FRAMES[0]), "image/png", 415, "unsupported-media-type", "multipart"),
        (b"hello", "text/plain", 415, "unsupported-media-type", "not accepted"),
    ],
)  # fmt: skip
def test_bad_video_is_refused_before_any_event(
    stream_server, http, content, ctype, status, code, detail
):
    r = http.post("/stream", content=content, headers={"Content-Type": ctype})
    assert_problem(r, status, code, detail)
    assert list(stream_server[1].iterdir()) == []  # no temp file left


def test_truncated_video_is_refused(http, mp4):
    r = http.post("/stream", content=mp4[: len(mp4) // 3], headers={"Content-Type": "video/mp4"})
    assert_problem(r, 400, "invalid-video", "cannot be decoded|no decodable frame")


def test_zero_frames_refused(http):
    r = http.post("/stream", json={"frames": []})
    assert_problem(r, 400, "invalid-image", "no frame")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"track": "deepsort"}, "track"),
        ({"vid_stride": "0"}, "vid_stride"),
        ({"max_frames": "0"}, "max_frames"),
        ({"conf": "2"}, "conf"),
        ({"format": "png"}, "format"),
    ],
)
def test_bad_parameters(http, mp4, params, field):
    r = http.post("/stream", content=mp4, params=params, headers={"Content-Type": "video/mp4"})
    assert assert_problem(r, 400, "invalid-parameter", field)["field"] == field


def test_limits(tmp_path, http):
    too_long = tmp_path / "long.avi"
    write_video(too_long, FRAMES[:1] * (MAX_FRAMES + 1), fps=30)
    r = http.post(
        "/stream", content=too_long.read_bytes(), headers={"Content-Type": "video/x-msvideo"}
    )
    assert_problem(r, 413, "payload-too-large", f"limit is {MAX_FRAMES}")
    # the same video is fine once max_frames (or vid_stride) brings it under the limit
    events = stream(
        http,
        content=too_long.read_bytes(),
        params={"vid_stride": 2},
        headers={"Content-Type": "video/x-msvideo"},
    )
    assert events[-1][2]["frames"] == (MAX_FRAMES + 2) // 2
    r = http.post(
        "/stream",
        content=b"x",
        params={"max_frames": MAX_FRAMES + 1},
        headers={"Content-Type": "video/mp4"},
    )
    assert r.status_code == 400  # refused before the body is even looked at as a video
    slow = tmp_path / "slow.mp4"
    write_video(slow, FRAMES[:1] * 70, fps=1)  # 70 s > 60 s
    r = http.post("/stream", content=slow.read_bytes(), headers={"Content-Type": "video/mp4"})
    assert_problem(r, 413, "payload-too-large", "lasts 70.0 s; the limit is 60 s")
    big = tmp_path / "big.mp4"
    write_video(big, [np.zeros((256, 320, 3), np.uint8)] * 2, fps=10)
    r = http.post("/stream", content=big.read_bytes(), headers={"Content-Type": "video/mp4"})
    assert_problem(r, 413, "payload-too-large", "320x256")
    files = [
        ("f", ("a.png", encode(FRAMES[0]), "image/png")),
        ("f", ("b.png", encode(FRAMES[0][:60]), "image/png")),
    ]
    r = http.post("/stream", files=files)
    assert_problem(r, 400, "invalid-image", "differ in size")  # fmt: skip


def test_corrupt_frame_mid_stream_ends_with_error_event(http):
    truncated = encode(FRAMES[2])[:200]  # a valid PNG header, then nothing
    files = [
        ("f", (f"{i}.png", b, "image/png"))
        for i, b in enumerate([encode(FRAMES[0]), encode(FRAMES[1]), truncated])
    ]
    events = stream(http, files=files)
    assert [name for name, _, _ in events] == ["start", "frame", "frame", "error"]
    problem = events[-1][2]
    assert problem["status"] == 400 and problem["code"] == "invalid-image"
    assert "frame 2" in problem["detail"]  # fmt: skip


def metric(http: httpx.Client, name: str) -> float:
    """A shapes-detect sample of the stream server's metrics."""
    return server_metric(str(http.base_url).rstrip("/"), name, model="shapes-detect")


def test_disconnect_stops_the_work_and_leaves_no_temp_file(stream_server, http, tmp_path):
    srv, tmp = stream_server
    long = tmp_path / "long.mp4"
    write_video(long, (FRAMES + FRAMES[::-1]) * 4, fps=30)  # 192 frames
    before = metric(http, "yolo_stream_frames_total")
    srv.gate.set(6)  # six frames may be inferred; the seventh waits
    try:
        with connect_sse(
            http,
            "POST",
            "/stream",
            content=long.read_bytes(),
            headers={"Content-Type": "video/mp4"},
        ) as source:
            received = 0
            for e in source.iter_sse():
                received += e.event == "frame"
                if received == 3:
                    break
        # the response is closed: the server sees the disconnect, cancels the producer
        wait_until(lambda: metric(http, "yolo_streams_active") == 0, "the stream to end")
    finally:
        srv.gate.open()
    wait_until(lambda: metric(http, "yolo_queue_depth") == 0, "no frame in flight")
    wait_until(lambda: srv.gate.state()["waiting"] == 0, "no call held at the gate")
    done = metric(http, "yolo_stream_frames_total") - before
    # A fence, not a window of time: one /detect through the same model queue; had the dropped
    # stream any frame still to start, the gate would count it beside the fence's one call.
    passed = srv.gate.state()["passed"]
    fence = http.post("/detect", content=encode(FRAMES[0]), headers={"Content-Type": "image/png"})
    assert fence.status_code == 200, fence.text
    assert srv.gate.state()["passed"] == passed + 1
    assert metric(http, "yolo_stream_frames_total") - before == done
    assert 3 <= done <= 6, done  # at most what the gate let through, far from 192
    assert list(tmp.iterdir()) == []
    assert re.search(r"stream \S+: \d+ frames, cut short: the client went away", srv.logs())


def test_two_streams_at_once_and_detect_in_between(stream_server, http, mp4):
    """Two streams are open, mid-way, when a /detect comes: it is answered before either
    stream ends (the model interleaves them frame by frame). The gate lets model calls through
    one at a time, each moving a stream on by at most one frame, so "mid-way" is certain."""
    gate = stream_server[0].gate
    events: dict[int, list[str]] = {0: [], 1: []}
    ends: dict[int, dict] = {}

    def run(i: int) -> None:
        params = {"track": "bytetrack"} if i else {}
        kw = {"content": mp4, "params": params, "headers": {"Content-Type": "video/mp4"}}
        with connect_sse(http, "POST", "/stream", **kw) as source:
            for e in source.iter_sse():
                if e.data:
                    events[i].append(e.event)
                    if e.event == "end":
                        ends[i] = json.loads(e.data)

    def step(until: Callable[[], bool], what: str) -> int:
        """Let model calls through one by one until ``until()``; how many it took."""
        grants = 0
        while not until():
            assert grants < 12, f"{what} after {grants} model calls"
            passed = gate.state()["passed"]
            gate.add(1)
            grants += 1
            wait_until(lambda p=passed: gate.state()["passed"] > p or until(), what)
        return grants

    gate.close()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        step(lambda: all("frame" in events[i] for i in (0, 1)), "both streams started")
        with ThreadPoolExecutor(1) as pool:
            detect = pool.submit(
                http.post,
                "/detect",
                content=encode(FRAMES[0]),
                headers={"Content-Type": "image/png"},
            )
            step(detect.done, "the detect answered")
            assert detect.result().status_code == 200
            assert not ends, "a stream ended before the detect in between was answered"
            assert all(events[i].count("frame") < len(FRAMES) for i in (0, 1))
    finally:
        gate.open()
        for t in threads:
            t.join(60)
    for i in range(2):
        assert events[i] == ["start"] + ["frame"] * len(FRAMES) + ["end"]
    assert ends[1]["tracks"] == 1 and ends[0]["tracks"] == 0


def test_lines_survive_the_vertex_sdk_line_iterator(stream_server, tmp_path):
    """The SDK's ``invoke(stream=True)`` yields ``requests``' ``iter_lines()`` of 512-byte
    chunks; a CRLF split across chunks would add blank lines. LF-only events come through
    exactly: every event is ``[id:] event: data:`` then one blank line, and keep-alive comments
    (``SERVE_STREAM_PING_SECONDS``, 0.2 s here) are blocks of their own. The gate holds the first
    frame until a ping has come."""
    long_frames = FRAMES * 4
    write_video(tmp_path / "v.mp4", long_frames, fps=10)
    gate = stream_server[0].gate
    gate.close()
    try:
        r = requests.post(
            stream_server[0].url + "/stream",
            data=(tmp_path / "v.mp4").read_bytes(),
            headers={"Content-Type": "video/mp4"},
            stream=True,
            timeout=60,
        )
        blocks, block = [], []
        for line in r.iter_lines(chunk_size=512):
            if line != b"":
                block.append(line)
                continue
            blocks.append(block)
            if block[0].startswith(b": ping"):
                gate.open()
            block = []
    finally:
        gate.open()
    assert block == []

    def events(all_blocks: list[list[bytes]]) -> list[list[bytes]]:
        return [b for b in all_blocks if not (len(b) == 1 and b[0].startswith(b": ping"))]

    assert len(events(blocks)) == len(long_frames) + 2 < len(blocks)  # pings came too
    for b in events(blocks):
        kinds = [line.split(b":", 1)[0] for line in b]
        assert kinds in ([b"event", b"data"], [b"id", b"event", b"data"]), b
    raw = requests.post(
        stream_server[0].url + "/stream?max_frames=3",
        data=(tmp_path / "v.mp4").read_bytes(),
        headers={"Content-Type": "video/mp4"},
        timeout=60,
    ).content
    assert b"\r" not in raw and raw.endswith(b"\n\n")
    short = events([part.split(b"\n") for part in raw[:-2].split(b"\n\n")])
    assert [b[-2] for b in short] == [b"event: start"] + [b"event: frame"] * 3 + [b"event: end"]


def test_route_and_events_are_in_the_openapi_schema(http):
    schema = http.get("/openapi/openapi.json").json()
    ok = schema["paths"]["/stream"]["post"]["responses"]["200"]
    event = ok["content"]["text/event-stream"]["schema"]  # one event: its name and JSON data
    refs = {
        e["properties"]["event"]["const"]: e["properties"]["data"]["contentSchema"]["$ref"]
        for e in event["oneOf"]
    }
    assert {name: ref.rsplit("/", 1)[1] for name, ref in refs.items()} == {
        "start": "StreamStart",
        "frame": "StreamFrame",
        "end": "StreamEnd",
        "error": "Problem",
    }
    assert {"StreamStart", "StreamFrame", "StreamEnd"} <= set(schema["components"]["schemas"])


def test_client_that_stops_reading_is_dropped_after_the_send_timeout(tmp_path):
    """A client that sends its video and never reads: once the socket buffers are full, a send
    blocks; after SERVE_STREAM_SEND_TIMEOUT the stream is dropped and its work stops."""
    frames = []
    background = FRAMES[0].copy()
    for i in range(400):  # 20 shapes a frame: big events (masks + RLE) fill the buffers fast
        frame = background.copy()
        for k in range(20):
            shape = make_shape(k % 3, 16 + (k % 5) * 30 + i % 8, 14 + (k // 5) * 28, 18)
            draw_shape(frame, shape, (240, 40, 40))
        frames.append(frame)
    video = tmp_path / "grid.mp4"
    write_video(video, frames, fps=30)
    body = video.read_bytes()
    env = {"SERVE_METRICS": "true", "SERVE_STREAM_SEND_TIMEOUT": "1"}
    with serving(tmp_path, env) as srv:
        host, port = srv.url.removeprefix("http://").split(":")
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            sock.connect((host, int(port)))
            head = (
                "POST /stream?model=shapes-segment&rle=true HTTP/1.1\r\nHost: test\r\n"
                f"Content-Type: video/mp4\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            sock.sendall(head.encode() + body)  # and never read
            deadline = time.monotonic() + 60
            while "client dropped, a send blocked for over 1 s" not in srv.logs():
                assert time.monotonic() < deadline, srv.logs()
                time.sleep(0.2)
            with httpx.Client(base_url=srv.url) as http:
                assert re.search(
                    r'^yolo_streams_active\{model="shapes-segment"\} 0\.0$',
                    http.get("/metrics").text,
                    re.M,
                )
                done = re.search(
                    r'^yolo_stream_frames_total\{model="shapes-segment"\} (\S+)$',
                    http.get("/metrics").text,
                    re.M,
                )
            assert float(done.group(1)) < len(frames)  # dropped before the end


# --- Ctrl-C through the CLI (issue 23): here because this server's gate holds a call where the
# test wants it, so "interrupted after two frames" is a state set up, not a moment hoped for.


def test_ctrl_c_stream_says_how_far_it_got(stream_server, mp4, tmp_path):
    srv, _ = stream_server
    video = tmp_path / "v.mp4"
    video.write_bytes(mp4)
    srv.gate.set(2)  # two frames inferred, the third held
    job = cli_process("stream", str(video), "--url", srv.url)
    assert job.stdout is not None
    lines = []
    for line in job.stdout:
        lines.append(line)
        if line.startswith("frame 1:"):
            break
    srv.gate.wait(waiting=1)
    _, err = interrupt(job, [srv.gate])
    assert job.returncode == 130, err
    assert err.rstrip().splitlines()[-1] == (
        f"interrupted: 2 of {len(FRAMES)} frames streamed; a stream does not resume: run it "
        "again (or `video SOURCE --out FILE.jsonl`, in windows)"
    )
    assert "Traceback" not in err


def test_ctrl_c_bench_reports_the_finished_levels(stream_server, tmp_path):
    """bench --concurrency 1,2 --json FILE stopped in its second level: the table and FILE
    hold the first."""
    srv, _ = stream_server
    image = tmp_path / "a.png"
    image.write_bytes(encode(FRAMES[0]))
    report = tmp_path / "bench.json"
    srv.gate.set(2)  # the first level's two requests
    job = cli_process(
        *("bench", str(image), "--url", srv.url, "--concurrency", "1,2"),
        *("--requests", "2", "--warmup", "0", "--json", str(report)),
    )
    assert job.stderr is not None
    first = job.stderr.readline()
    assert first.startswith("concurrency 1: "), first
    srv.gate.wait(waiting=1)  # the second level has begun
    out, err = interrupt(job, [srv.gate])
    assert job.returncode == 130, err
    assert err.rstrip().splitlines()[-1] == (
        f"interrupted: 1 of 2 concurrency levels done (1); {report} holds them"
    )
    levels = json.loads(report.read_text())["levels"]
    assert [level["concurrency"] for level in levels] == [1] and levels[0]["requests"] == 2
    rows = [line.split()[:2] for line in out.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert out.startswith("detect on http://") and rows == [["1", "2"]], out  # one level


def test_ctrl_c_ab_targeted_reports_the_inputs_compared(stream_server, tmp_path):
    """Two inputs answered by both (pinned) models, the third held: the table and --report hold
    the two. (One server: the same deployed model twice, as a determinism check does.)"""
    srv, _ = stream_server
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.png").write_bytes(encode(FRAMES[i]))
    report = tmp_path / "ab.json"
    srv.gate.set(4)  # inputs 0 and 1, on each model; then held
    job = cli_process(
        *("ab", "targeted", "--url", srv.url, "--images", str(folder), "-q"),
        *("--deployed-models", "dm-stream,dm-stream", "--concurrency", "1"),
        *("--report", str(report)),
    )
    srv.gate.wait(waiting=1, passed=4)
    out, err = interrupt(job, [srv.gate], report.exists)
    assert job.returncode == 130, err
    assert (
        err.rstrip().splitlines()[-1] == f"interrupted: 2 of 4 inputs compared; {report} holds them"
    )
    written = json.loads(report.read_text())
    assert written["inputs"] == 2 and [m["calls"] for m in written["models"]] == [2, 2]
    assert "dm-stream" in out
