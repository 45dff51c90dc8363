"""``python -m client``, run as a real subprocess against the real server (and the emulator)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from app.demo.shapes import moving_shape_frames, write_video
from client.cli import main
from conftest import ROOT
from helpers import encode, scenes


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "client", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    ((rgb, _),) = scenes(1)
    path = tmp_path_factory.mktemp("cli") / "scene.png"
    path.write_bytes(encode(rgb))
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    frames, _ = moving_shape_frames(8)
    path = tmp_path_factory.mktemp("cli") / "clip.mp4"
    write_video(path, frames)
    return path


def test_models(server):
    out = cli("models", "--url", server.url)
    assert out.returncode == 0, out.stderr
    assert "deployed model dm-test-1" in out.stdout and "shapes-segment" in out.stdout
    listing = json.loads(cli("models", "--url", server.url, "--json").stdout)
    assert listing["default_model"] == "shapes-detect"


def test_detect_and_segment(server, image):
    out = cli("detect", "--url", server.url, str(image), str(image), "--conf", "0.3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("detections") == 2 and "on deployed model dm-test-1" in out.stdout
    result = json.loads(
        cli(
            "segment",
            "--url",
            server.url,
            str(image),
            "--model",
            "shapes-segment",
            "--rle",
            "--json",
        ).stdout
    )
    assert result["task"] == "segment" and result["results"][0]["detections"][0]["mask"]["rle"]


def test_annotate_writes_the_image(server, image, tmp_path):
    out_path = tmp_path / "drawn.png"
    out = cli("annotate", "--url", server.url, str(image), "--out", str(out_path))
    assert out.returncode == 0, out.stderr
    assert Image.open(out_path).format == "PNG" and "detections" in out.stdout


def test_stream_progress_and_summary(server, video):
    out = cli("stream", "--url", server.url, str(video), "--track", "bytetrack")
    assert out.returncode == 0, out.stderr
    assert "frame 7: 1 square tracks [1]" in out.stdout  # a line per frame by default
    assert "8 frames in" in out.stdout and "1 tracks" in out.stdout
    assert "8/8" in out.stderr  # the progress bar
    quiet = cli("stream", "--url", server.url, str(video), "-q")
    assert quiet.returncode == 0, quiet.stderr
    assert "frame 7:" not in quiet.stdout and "8 frames in" in quiet.stdout
    assert "8/8" not in quiet.stderr
    lines = cli("stream", "--url", server.url, str(video), "--json").stdout.splitlines()
    events = [json.loads(line)["event"] for line in lines]
    assert events == ["start"] + ["frame"] * 8 + ["end"]


def test_errors_exit_nonzero_without_traceback(server, image, tmp_path):
    out = cli("detect", "--url", server.url, str(image), "--model", "nope")
    assert out.returncode == 3
    assert "404" in out.stderr and "no model named 'nope'" in out.stderr
    assert "Traceback" not in out.stderr and "request id" in out.stderr
    bad = cli("detect", "--url", server.url, str(image), "--conf", "7")
    assert bad.returncode == 2 and "conf" in bad.stderr and "Traceback" not in bad.stderr
    missing = cli("detect", "--url", server.url, str(tmp_path / "missing.png"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    refused = cli("models", "--url", "http://127.0.0.1:1", "--retries", "0")
    assert refused.returncode == 4 and "cannot reach" in refused.stderr
    nowhere = cli("models")
    assert nowhere.returncode == 2 and "--url" in nowhere.stderr
    both = cli("models", "--url", server.url, "--endpoint", "123")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    both = cli("models", "--url", server.url, "--emulator-info", str(tmp_path / "info.json"))
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    unwritable = cli("annotate", "--url", server.url, str(image), "-o", str(tmp_path / "no/x.png"))
    assert unwritable.returncode == 2 and "cannot write" in unwritable.stderr
    assert "Traceback" not in unwritable.stderr


def test_stream_error_event_exits_5(server, tmp_path):
    """The server streams start and two frames, then an ``error`` event for the third frame
    (a PNG whose header is valid but whose data is cut)."""
    ((rgb, _),) = scenes(1)
    png = encode(rgb)
    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for path, data in zip(paths, [png, png, png[: len(png) // 2]], strict=True):
        path.write_bytes(data)
    out = cli("stream", "--url", server.url, *map(str, paths))
    assert out.returncode == 5, out.stderr
    assert "invalid-image" in out.stderr and "Traceback" not in out.stderr
    assert "frame 1:" in out.stdout and "frame 2:" not in out.stdout


# --- through the real SDK against the emulator ---------------------------------------------------


def test_emulator_info_every_subcommand(
    emulator, emulator_info_file, image, video, tmp_path, capsys
):
    """Each command through the SDK (in this process: the same ``main`` the subprocesses above
    run, without paying the SDK's import five times)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main([*args, "--emulator-info", str(emulator_info_file)])
        out, err = capsys.readouterr()
        return code, out, err

    b = emulator.deployed_models["shapes-b"]
    code, out, err = run("models", "--deployed-model-id", b, "--json")
    assert code == 0 and json.loads(out)["deployed_model_id"] == b, err
    code, out, err = run("detect", str(image), "--deployed-model-id", "shapes-b")  # its name
    assert code == 0, err
    assert "[shapes-segment" in out and f"on deployed model shapes-b ({b})]" in out
    code, out, err = run("segment", str(image), "--model", "shapes-segment", "--json")
    assert code == 0 and json.loads(out)["task"] == "segment", err
    drawn = tmp_path / "drawn.jpg"
    code, out, err = run("annotate", str(image), "-o", str(drawn), "--deployed-model-id", b)
    assert code == 0 and Image.open(drawn).format == "JPEG", err
    code, out, err = run("stream", str(video), "--deployed-model-id", b, "--max-frames", "4")
    assert code == 0, err
    assert f"on deployed model shapes-b ({b})]" in out and "4 frames in" in out


def test_emulator_explicit_options_and_errors(emulator, image):
    at = (
        *("--project", emulator.project, "--location", emulator.location),
        *("--endpoint", emulator.endpoint_id, "--api-endpoint", emulator.control_plane_url),
        *("--ca-cert", emulator.ca_cert),
    )
    env = {"REQUESTS_CA_BUNDLE": ""}  # --ca-cert alone must be enough
    assert cli("models", *at, env=env).returncode == 0
    out = cli("detect", *at, str(image), "--deployed-model-id", "999", env=env)
    assert out.returncode == 3 and "'999' is not deployed" in out.stderr
    assert "Traceback" not in out.stderr
