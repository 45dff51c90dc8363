"""Inputs by Cloud Storage URI, for real: the session's GCS API server (``gcp-storage-emulator``)
holds the objects, the unmodified ``google-cloud-storage`` client in the servers reads them, and
the calls go through the Vertex emulator with the unmodified SDK (the servers it runs allow the
bucket ``inputs``). Refusals (other buckets, other schemes, missing or oversized objects) are in
the bad-input corpus (``tests/test_bad_input.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.demo.shapes import moving_shape, write_video
from client import Client
from client.emulator import EmulatorInfo
from client.schema import StreamFrame
from helpers import encode, scenes, upload

FRAMES = 320  # 32 s at 10 fps


@pytest.fixture(scope="module")
def client(emulator: EmulatorInfo) -> Iterator[Client]:
    with Client.from_vertex(endpoint=emulator.endpoint_id, **emulator.init_kwargs()) as c:
        yield c


def test_images_by_uri_answer_as_their_bytes(emulator: EmulatorInfo, gcs: Any, client: Client):
    (first, _), (second, _) = scenes(2)
    one, two = encode(first), encode(second)
    gcs.bucket("inputs").blob("uri/first.png").upload_from_string(one)
    a = emulator.deployed_models["shapes-a"]
    by_uri = client.detect(["gs://inputs/uri/first.png", two], deployed_model_id=a)
    by_bytes = client.detect([one, two], deployed_model_id=a)
    assert by_uri.results == by_bytes.results and len(by_uri.results) == 2
    assert by_uri.results[0].detections  # the object was read, not an empty image
    drawn = client.annotate("gs://inputs/uri/first.png", deployed_model_id=a)
    assert drawn.image.startswith(b"\xff\xd8") and drawn.detection_count == len(
        by_bytes.results[0].detections
    )


def test_a_video_over_10_mb_streams_from_cloud_storage(
    emulator: EmulatorInfo, gcs: Any, client: Client, tmp_path: Path
) -> None:
    """No request could carry it (the endpoint takes 10 MB): the server reads it itself."""
    path, centres = tmp_path / "long.avi", []

    def frames() -> Iterator[np.ndarray]:
        for frame, centre in moving_shape(FRAMES, width=640, height=360):
            centres.append(centre)
            yield frame

    write_video(path, frames(), fps=10)
    assert path.stat().st_size > 10_000_000
    upload(gcs, "gs://inputs/videos/long.avi", path)
    a = emulator.deployed_models["shapes-a"]
    video = "gs://inputs/videos/long.avi"
    # squares only: the demo detector sees a faint circle in a square now and then
    with client.stream(video, deployed_model_id=a, track="bytetrack", classes=["square"]) as s:
        assert (s.start.frames, s.start.width, s.start.height) == (FRAMES, 640, 360)
        got = list(s.frames())
    assert [f.index for f in got] == list(range(FRAMES)) and s.end is not None
    assert s.end.frames == FRAMES and s.end.tracks == 1
    near = 0
    for frame in got:
        assert isinstance(frame, StreamFrame)
        if frame.detections:
            box = frame.detections[0].box
            x, y = (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2
            near += math.hypot(x - centres[frame.index][0], y - centres[frame.index][1]) < 20
    assert near >= 0.95 * FRAMES
