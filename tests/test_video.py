"""Whole videos and live sources through the endpoint (``Client.video``, ``python -m client
video``), against the emulator and the unmodified SDK, and real servers.

- A video over 10 MB and 30 s, untargeted under a 50/50 split: one result per frame, in order,
  boxes on the drawn motion, one track id over the whole video, one deployed model throughout.
- Two shapes of one class crossing each other's path keep their ids across window boundaries.
- A replica SIGKILLed while it holds a window (its model call held at an instrumented server's
  gate, so "mid-window" is a state the test sets): the window resumes elsewhere, every frame
  comes out exactly once, one track id still.
- A live HTTP MJPEG stream served at real time while the model is held slower than it (the gate
  lets calls through at a pace the test sets): the oldest frames are dropped and counted, the
  frames waiting never exceed their bound, results trail the source by a bounded number of
  frames.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from google.cloud import aiplatform

from app.demo.shapes import moving_shape, write_video
from client import AsyncClient, Client, cli
from client.emulator import Emulator, EmulatorInfo
from client.schema import Box, Detection
from client.video import VideoFrame, VideoOptions
from client.video.tracks import match
from conftest import (
    PATIENCE_S,
    Gate,
    gate_of,
    pid_alive,
    wait_until,
)
from helpers import cli_process, crossing_frames, interrupt

LONG = 320  # frames: 32 s at 10 fps
FPS = 10


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[float, float]]]:
    """A 640x360 MJPG video of 320 frames (32 s), over 10 MB; and the shape's centres."""
    path = tmp_path_factory.mktemp("video") / "long.avi"
    centres: list[tuple[float, float]] = []

    def frames() -> Iterator[np.ndarray]:
        for frame, centre in moving_shape(LONG, width=640, height=360):
            centres.append(centre)
            yield frame

    write_video(path, frames(), fps=FPS)
    assert path.stat().st_size > 10_000_000, path.stat().st_size  # one request could not carry it
    return path, centres


def centre(box: Box) -> tuple[float, float]:
    return (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2


def check_follows(frames: list[VideoFrame], centres: list[tuple[float, float]]) -> None:
    """Every frame once, in order, with its timestamp; the shape found on it, where it was
    drawn (in source pixels), with the one track id of the video."""
    assert [f.index for f in frames] == list(range(len(centres)))
    assert all(f.timestamp_ms == pytest.approx(f.index * 1000 / FPS) for f in frames)
    found = [f for f in frames if f.detections]
    assert len(found) >= 0.95 * len(frames)
    for f in found:
        (x, y), (cx, cy) = centre(f.detections[0].box), centres[f.index]
        assert math.hypot(x - cx, y - cy) < 20, (f.index, (x, y), (cx, cy))
    assert {d.track_id for f in frames for d in f.detections} == {1}


def test_long_video_untargeted_under_a_split_stays_on_one_model(
    emulator: EmulatorInfo, long_video: tuple[Path, list[tuple[float, float]]]
) -> None:
    path, centres = long_video
    a, b = emulator.deployed_models["shapes-a"], emulator.deployed_models["shapes-b"]
    aiplatform.init(**emulator.init_kwargs())
    endpoint = aiplatform.Endpoint(emulator.endpoint_id)
    endpoint.update(traffic_split={a: 50, b: 50})
    try:
        with (
            Client.from_vertex(endpoint=emulator.endpoint_id, **emulator.init_kwargs()) as client,
            client.video(path, track="bytetrack", options=VideoOptions(window=16)) as run,
        ):
            frames = list(run)
    finally:
        endpoint.update(traffic_split=emulator.traffic_split)
    stats = run.stats
    check_follows(frames, centres)
    # 20+ windows, each of which the split would send anywhere: all went to the first answer's.
    assert stats.windows >= LONG // 16 and stats.retries == 0 and stats.drops == 0
    assert {f.deployed_model_id for f in frames} == {stats.deployed_model_id} <= {a, b}
    assert stats.frames == LONG and stats.tracks == 1 and stats.frames_expected == LONG
    assert sum(stats.replicas.values()) == LONG
    assert {f.replica_id for f in frames} == set(stats.replicas)


def test_crossing_objects_keep_their_ids(emulator: EmulatorInfo, tmp_path: Path) -> None:
    """Two squares on two lanes, passing each other; windows of 12 frames sharing 4, so window
    boundaries fall while they pass: each keeps its id from its first frame to its last (a join
    by position in the list, or by x alone, would swap them). Squares only: the demo detector
    also sees a faint circle in some squares."""
    frames, centres = crossing_frames(60)
    path = tmp_path / "crossing.mp4"
    write_video(path, frames, fps=FPS)
    a = emulator.deployed_models["shapes-a"]
    with (
        Client.from_vertex(endpoint=emulator.endpoint_id, **emulator.init_kwargs()) as client,
        client.video(
            path,
            deployed_model_id=a,
            track="bytetrack",
            classes=["square"],
            options=VideoOptions(window=12, overlap=4),
        ) as run,
    ):
        results = list(run)
    assert [f.index for f in results] == list(range(60)) and run.stats.windows >= 7
    tracks: dict[int, list[tuple[int, float, float]]] = {}
    for f in results:
        for d in f.detections:
            x, y = centre(d.box)
            tracks.setdefault(d.track_id, []).append((f.index, x, y))
    assert len(tracks) == 2, {k: len(v) for k, v in tracks.items()}
    for path_ in tracks.values():
        rows = {round(y / 240 * 2) for _, _, y in path_}  # each id stays on its own row ...
        assert len(rows) == 1, path_
        xs = [x for _, x, _ in path_]  # ... moving one way only: no swap at the crossing
        steps = np.sign(np.diff(xs))
        assert (steps >= 0).all() or (steps <= 0).all(), xs
        assert len(path_) >= 57


def test_async_client_video(emulator: EmulatorInfo, tmp_path: Path) -> None:
    """The same engine on the caller's loop: AsyncClient over httpx, windows as concurrent
    streams."""
    path = tmp_path / "clip.mp4"
    write_video(path, (f for f, _ in moving_shape(40, width=320, height=240)), fps=FPS)

    async def main() -> tuple[list[VideoFrame], Any]:
        async with AsyncClient.from_vertex(
            endpoint=emulator.endpoint_id, **emulator.init_kwargs()
        ) as client:
            run = client.video(path, track="bytetrack", options=VideoOptions(window=8))
            return [frame async for frame in run], run.stats

    frames, stats = asyncio.run(main())
    assert [f.index for f in frames] == list(range(40)) and stats.windows >= 5
    assert {d.track_id for f in frames for d in f.detections} == {1}
    assert {f.deployed_model_id for f in frames} == {stats.deployed_model_id}


def test_track_join_is_one_to_one_on_iou_within_class() -> None:
    def det(track: int, x: float, cls: int = 1) -> Detection:
        box = Box(x1=x, y1=0, x2=x + 10, y2=10)
        return Detection(class_id=cls, class_name="s", confidence=0.9, box=box, track_id=track)

    known = [[det(7, 0), det(8, 12)], [det(7, 2), det(8, 10)]]
    # the same two boxes under local ids 1 and 2, listed the other way round
    local = [[det(2, 12), det(1, 0)], [det(2, 10), det(1, 2)]]
    assert match(known, local) == {1: 7, 2: 8}
    # another class at the same place is another object; a far box matches nothing
    assert match([[det(7, 0)]], [[det(1, 0, cls=2)]]) == {}
    assert match([[det(7, 0)]], [[det(1, 50)]]) == {}


def test_replica_killed_mid_window_leaves_every_frame_once(
    emulator_process: Emulator,
    shapes_a_gates: Callable[[], list[Gate]],
    long_video: tuple[Path, list[tuple[float, float]]],
) -> None:
    """On the session emulator's shapes-a, whose two replicas' gates hold one of them mid-window
    (``shapes_a_gates``: afterwards its replacement is ready and every gate open)."""
    info = emulator_process.current()
    path, centres = long_video
    a = info.deployed_models["shapes-a"]
    victim, other = info.replicas[a]
    held = gate_of(victim.log)
    held.set(10)  # ten frames through, then it holds whatever window it has
    gate_of(other.log).open()
    results: list[VideoFrame] = []
    options = VideoOptions(window=16, concurrency=4)
    with (
        Client.from_vertex(endpoint=info.endpoint_id, **info.init_kwargs()) as client,
        ThreadPoolExecutor(1) as pool,
    ):
        run = client.video(path, deployed_model_id=a, track="bytetrack", options=options)
        done = pool.submit(lambda: results.extend(run))
        held.wait(waiting=1)  # a window is in the victim's hands, mid-way
        os.kill(victim.pid, signal.SIGKILL)
        done.result(timeout=PATIENCE_S * 2)
    check_follows(results, centres)
    assert run.stats.retries >= 1 and run.stats.frames == LONG
    assert f"{victim.pid}" in " ".join(run.stats.replicas)  # it served before it died
    wait_until(lambda: not pid_alive(victim.pid), "the victim to be reaped")


# --- live --------------------------------------------------------------------------------------


class MjpegSource:
    """A live HTTP MJPEG stream (``multipart/x-mixed-replace``), served at ``fps`` in real time
    to each client from its connection on, ``seconds`` long: a camera as OpenCV sees one."""

    def __init__(self, fps: float, seconds: float) -> None:
        frames = [f for f, _ in moving_shape(int(fps * seconds), width=320, height=240)]
        self.jpegs = [cv2.imencode(".jpg", f[:, :, ::-1])[1].tobytes() for f in frames]
        self.fps = fps
        source = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                start = time.monotonic()
                try:
                    for i, jpeg in enumerate(source.jpegs):
                        time.sleep(max(0.0, start + i / source.fps - time.monotonic()))
                        head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                        self.wfile.write(head % len(jpeg) + jpeg + b"\r\n")
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_live_mjpeg_drops_the_oldest_frames_and_stays_bounded(
    emulator_process: Emulator, shapes_a_gates: Callable[[], list[Gate]]
) -> None:
    """Behind by state, not by speed: the gate holds every model call until the reader has
    dropped frames (its buffer full, the windows in flight held), then opens; the source's 60
    frames (more than the buffer and the windows in flight hold) are all read, whatever the
    machine's pace. Straight to one of the session emulator's shapes-a replicas (its URL)."""
    source = MjpegSource(fps=30, seconds=2)
    a = emulator_process.info.deployed_models["shapes-a"]
    replica = emulator_process.current().replicas[a][0]
    options = VideoOptions(window=4, concurrency=2, buffer=8)
    try:
        with Client.from_url(replica.url) as client:
            gate = shapes_a_gates()[0]  # the replicas' gates, in the replicas' order
            gate.close()
            with client.video(source.url, options=options) as run:
                assert run.stats.live

                def open_once_behind() -> None:
                    wait_until(lambda: run.stats.drops > 0, "the live reader to drop a frame")
                    gate.open()

                opener = threading.Thread(target=open_once_behind, daemon=True)
                opener.start()
                frames = list(run)
            opener.join(PATIENCE_S)
            gate.open()
    finally:
        source.close()
    stats = run.stats
    assert stats.read == 60 and stats.frames + stats.drops <= stats.read
    assert stats.drops > 0 and stats.frames < stats.read  # behind the source: it dropped
    assert stats.max_waiting <= options.buffer  # nothing grows without bound
    # Behind each result (read, not dropped, not out yet): at most what waits plus what is in
    # flight, whatever the source's length.
    assert stats.max_pending <= options.buffer + options.concurrency * options.window
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices))  # in order, once each, with gaps where it dropped
    assert all(f.latency_ms is not None and f.latency_ms > 0 for f in frames)
    assert stats.latency_p50_ms is not None and stats.latency_p95_ms >= stats.latency_p50_ms


# --- the command line -------------------------------------------------------------------------


def test_video_command_writes_results_and_an_annotated_copy(
    emulator_info_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = [f for f, _ in moving_shape(30, width=320, height=240)]
    clip = tmp_path / "clip.mp4"
    write_video(clip, frames, fps=FPS)
    out, saved = tmp_path / "r.jsonl", tmp_path / "annotated.mp4"
    code = cli.main(
        [
            *("video", str(clip), "--emulator-info", str(emulator_info_file)),
            *("--track", "bytetrack", "--window", "8", "--out", str(out), "--save", str(saved)),
            "-q",
        ]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(30))
    assert set(rows[0]) == {
        "index",
        "timestamp_ms",
        "detections",
        "deployed_model_id",
        "replica_id",
    }
    assert {d["track_id"] for r in rows for d in r["detections"]} == {1}
    assert re.search(r"^30 frames in .* 1 tracks; square=\d+$", printed.out.strip()), printed.out
    drawn = cv2.VideoCapture(str(saved))
    assert drawn.get(cv2.CAP_PROP_FRAME_COUNT) == 30
    assert (drawn.get(cv2.CAP_PROP_FRAME_WIDTH), drawn.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (320, 240)
    ok, first = drawn.read()
    assert ok and not np.array_equal(first, frames[0][:, :, ::-1])  # something was drawn
    drawn.release()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.mp4"], "missing.mp4: no such video file"),
        (["ftp://host/clip.mp4"], "ftp:// is not a video source here"),
        (["clip.mp4", "--window", "0"], "argument --window: must be at least 1, got 0"),
        (["clip.mp4", "--save", "out.gif"], "--save out.gif: write a .mp4, .avi"),
    ],
)
def test_video_command_refuses_bad_input_before_any_call(
    args: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_video(tmp_path / "clip.mp4", [f for f, _ in moving_shape(3)], fps=FPS)
    monkeypatch.chdir(tmp_path)  # relative paths name the files here
    nowhere = ["--url", "http://127.0.0.1:9"]  # nothing listens: a call would fail otherwise
    assert cli.main(["video", *args, *nowhere]) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_without_opencv_the_error_names_the_extra(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['cv2'] = None\n"
        "from client import cli\n"
        "sys.exit(cli.main(['video', 'x.mp4', '--url', 'http://127.0.0.1:9']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 2
    assert 'pip install "vertex-yolo[video]"' in result.stderr


def test_ctrl_c_says_what_was_written(
    emulator_info_file: Path, shapes_a_gates: Callable[[], list[Gate]], tmp_path: Path
) -> None:
    """SIGINT once the gates hold the run (on shapes-a): one line saying what the files hold,
    and they hold it (the lines; the annotated video closed, playable, with as many frames)."""
    gates = shapes_a_gates()
    before = sum(g.state()["passed"] or 0 for g in gates)
    clip, out, saved = tmp_path / "clip.mp4", tmp_path / "r.jsonl", tmp_path / "drawn.mp4"
    write_video(clip, [f for f, _ in moving_shape(40)], fps=FPS)
    for gate in gates:
        gate.set(4)
    args = ["video", str(clip), "--emulator-info", str(emulator_info_file), "-q"]
    args += ["--deployed-model-id", "shapes-a", "--window", "4", "--concurrency", "1"]
    args += ["--out", str(out), "--save", str(saved)]
    job = cli_process(*args)
    try:
        wait_until(
            lambda: sum(g.state()["passed"] or 0 for g in gates) >= before + 4, "a window done"
        )
        wait_until(lambda: sum(g.state()["waiting"] or 0 for g in gates) >= 1, "the run held")
    except BaseException:  # a state never came: end the job, free the gates
        job.kill()
        for gate in gates:
            gate.open()
        raise
    _, err = interrupt(job, gates)  # the held calls may end: the job waits for them
    lines = len(out.read_bytes().splitlines())
    assert job.returncode == 130, err
    assert err == (
        f"interrupted: {lines} frames processed; {lines} lines in {out}; {saved} holds them "
        "(closed, playable); a new run starts from the first frame and rewrites them\n"
    )
    drawn = cv2.VideoCapture(str(saved))
    assert drawn.get(cv2.CAP_PROP_FRAME_COUNT) == lines
    drawn.release()
