"""A user's first hour with ``python -m client`` (issue 23): every command's ``--help`` and a
bad-usage call, each mistake answered in one line with the documented exit code, no traceback
unless ``--debug``; a dead emulator, missing credentials, a closed pipe.

Usage checks call ``client.cli.main`` in this process (the same function ``python -m client``
runs, without an interpreter's start each); what is about the process (a pipe, an environment
without credentials) runs it as a subprocess. Ctrl-C is tested where a gated server is at hand:
``test_stream.py`` (stream, bench, ab) and ``test_batch.py`` (batch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.cli import COMMANDS, main
from client.deploy import ACTIONS
from client.emulator import EmulatorInfo
from conftest import ROOT, free_port
from helpers import encode, scenes

#: each command's (sub)command words, and what it needs to get as far as its options
REQUIRED: dict[tuple[str, ...], list[str]] = {
    ("models",): [],
    **{(name,): ["a.jpg"] for name in ("detect", "segment", "classify", "pose", "obb")},
    ("annotate",): ["a.jpg", "--out", "b.jpg"],
    ("stream",): ["v.mp4"],
    ("video",): ["v.mp4"],
    ("batch",): ["shots/", "--out", "out.jsonl"],
    ("ab", "targeted"): [],
    ("ab", "split"): [],
    ("bench",): [],
    ("rollout",): ["--from", "a", "--to", "b", "--steps", "50,100"],
    ("deploy", "upload"): ["--display-name", "m", "--image-uri", "i"],
    ("deploy", "create-endpoint"): ["--display-name", "e"],
    ("deploy", "deploy"): ["--model", "1"],
    ("deploy", "split"): ["1=100"],
    ("deploy", "undeploy"): ["1"],
    ("deploy", "status"): [],
    ("deploy", "delete-endpoint"): [],
    ("deploy", "delete-model"): ["--model", "1"],
    ("console",): [],
}


@pytest.fixture(autouse=True)
def _own_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI sets the process's REQUESTS_CA_BUNDLE (and NO_PROXY) from an emulator's info
    file: called in this process with a made-up one, it must not outlive the test (the
    subprocesses of later tests inherit the environment)."""
    for name in ("REQUESTS_CA_BUNDLE", "NO_PROXY"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
        if not os.environ[name]:
            monkeypatch.delenv(name)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error:" in line]


def test_the_table_covers_every_command() -> None:
    words = {w[0] for w in REQUIRED} | {f"deploy {w[1]}" for w in REQUIRED if w[0] == "deploy"}
    assert set(COMMANDS) <= words and {f"deploy {a}" for a in ACTIONS} <= words


@pytest.mark.parametrize("words", list(REQUIRED), ids=" ".join)
def test_help_and_a_bad_option(words: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    """``--help`` prints the command's own usage (exit 0); an unknown option prints that usage
    and one error line naming it (exit 2), never the top level's usage or a traceback."""
    prog = f"python -m client {' '.join(words)}"
    code, out, err = run(capsys, *words, "--help")
    assert code == 0 and out.startswith(f"usage: {prog}"), (out, err)
    code, out, err = run(capsys, *words, *REQUIRED[words], "--no-such-option", "1")
    assert code == 2 and out == ""
    assert err.startswith(f"usage: {prog}") and "Traceback" not in err, err
    (line,) = error_lines(err)
    assert line.startswith(f"{prog}: error: unrecognized arguments: --no-such-option")


def test_top_level_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--help")
    assert code == 0 and "--debug" in out and all(name in out for name in COMMANDS)
    for args in ([], ["nosuch"]):
        code, _, err = run(capsys, *args)
        assert code == 2 and len(error_lines(err)) == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["detect", "a.jpg", "--conf", "5"], "argument --conf: must be between 0 and 1, got 5"),
        (["detect", "a.jpg", "--iou", "x"], "argument --iou: must be a number, got 'x'"),
        (["detect", "a.jpg", "--max-det", "0"], "argument --max-det: must be at least 1, got 0"),
        (["stream", "v.mp4", "--vid-stride", "0"], "--vid-stride: must be at least 1, got 0"),
        (["models", "--timeout", "0"], "argument --timeout: must be above 0, got 0"),
        (["models", "--retries", "-1"], "argument --retries: must be at least 0, got -1"),
        (["video", "v.mp4", "--window", "0"], "argument --window: must be at least 1, got 0"),
        (["batch", "d/", "--out", "o.jsonl", "--concurrency", "0"], "must be at least 1, got 0"),
        (["ab", "targeted", "--iou-threshold", "0"], "must be above 0 and at most 1, got 0"),
        (
            ["models", "--url", "127.0.0.1:8080"],
            "argument --url: '127.0.0.1:8080' has no scheme: write http://127.0.0.1:8080",
        ),
        (["models", "--url", "ftp://h"], "'ftp://h' is not an http:// or https:// URL"),
        (["detect", "a.jpg", "--confidence", "0.5"], "unrecognized arguments: --confidence 0.5"),
    ],
)
def test_bad_values_in_our_words(
    args: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked by argparse before anything is sent: the command's usage, one line, exit 2."""
    code, _, err = run(capsys, *args)
    prog = f"python -m client {' '.join(args[:2] if args[0] == 'ab' else args[:1])}"
    assert code == 2 and err.startswith(f"usage: {prog} "), err
    (line,) = error_lines(err)
    assert words in line, line


def info_file(path: Path, *, pid: int, endpoint_id: str = "1234") -> Path:
    """An emulator's info file (its control plane on a port nobody listens on)."""
    port = free_port()
    EmulatorInfo(
        project="p",
        location="us-central1",
        endpoint_id=endpoint_id,
        endpoint=f"projects/p/locations/us-central1/endpoints/{endpoint_id}",
        control_plane_url=f"http://127.0.0.1:{port}",
        dedicated_endpoint_dns=f"127.0.0.1:{port}",
        ca_cert=str(path.parent / "ca.pem"),
        deployed_models={},
        traffic_split={},
        pid=pid,
    ).write(path)
    return path


def _reaped_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_dead_emulator_is_named_at_once(tmp_path: Path, capsys) -> None:
    """Its info file left behind: one line naming it and how to start one, before any call
    (the SDK would retry the dead control plane for 120 s)."""
    pid = _reaped_pid()
    info = info_file(tmp_path / "emulator.json", pid=pid)
    for args in (["models"], ["detect", "a.jpg"], ["deploy", "status"]):
        started = time.monotonic()
        code, _, err = run(capsys, *args, "--emulator-info", str(info))
        assert time.monotonic() - started < 2
        assert code == 4, err
        assert err == (
            f"error: the emulator in {info} is not running (pid {pid} exited): start it again "
            f"(python -m client.emulator --info-file {info} ...), or give the info file of one "
            "that runs\n"
        )


def test_the_timeout_bounds_reaching_the_control_plane(tmp_path: Path, capsys) -> None:
    """An emulator that runs (this process stands in for it) but whose control plane does not
    answer: --timeout bounds the wait (the SDK's own policy retries for 120 s)."""
    info = info_file(tmp_path / "emulator.json", pid=os.getpid())
    started = time.monotonic()
    code, _, err = run(capsys, "models", "--emulator-info", str(info), "--timeout", "1")
    assert time.monotonic() - started < 60  # 1 s and the backoff's last sleep; not 120
    assert code == 4 and "cannot reach endpoint 1234" in err and len(err.splitlines()) == 1, err
    code, _, err = run(
        capsys, "models", "--emulator-info", str(info), "--timeout", "30", "--retries", "0"
    )
    assert code == 4 and "cannot reach" in err, err  # refused, not retried: no 30 s wait


def test_an_emulator_without_an_endpoint_says_so(tmp_path: Path, capsys) -> None:
    info = info_file(tmp_path / "empty.json", pid=os.getpid(), endpoint_id="")
    code, _, err = run(capsys, "models", "--emulator-info", str(info))
    assert code == 2 and f"the emulator in {info} has no endpoint yet" in err, err
    assert "deploy create-endpoint" in err and "say where to send" not in err
    code, _, err = run(capsys, "deploy", "status", "--emulator-info", str(info))
    assert code == 2 and f"the emulator in {info} has no endpoint yet" in err, err


def test_debug_shows_the_traceback(tmp_path: Path, capsys) -> None:
    info = info_file(tmp_path / "emulator.json", pid=_reaped_pid())
    code, _, err = run(capsys, "models", "--emulator-info", str(info), "--debug")
    assert code == 4 and "Traceback (most recent call last)" in err
    assert err.rstrip().splitlines()[-1].startswith("error: the emulator in")


def clean_env(tmp_path: Path) -> dict[str, str]:
    """No Google credentials anywhere: no key file, an empty gcloud config, no metadata server,
    no project, no storage emulator."""
    drop = ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("CLOUDSDK_")}
    (tmp_path / "gcloud").mkdir()
    return {**env, "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"), "NO_GCE_CHECK": "true"}


def test_without_credentials_or_a_project(tmp_path: Path) -> None:
    """A user without ``gcloud auth application-default login``: gs:// inputs and outputs, and
    a Vertex endpoint with and without a project, each one line naming the fix (one interpreter
    runs the three commands, each through ``main``)."""
    image = tmp_path / "a.png"
    image.write_bytes(encode(scenes(1)[0][0]))
    commands = [
        ["batch", "gs://inputs/shots/", "--out", str(tmp_path / "o.jsonl"), "--url", "http://h"],
        ["batch", str(image), "--out", "gs://outputs/o.jsonl", "--url", "http://h"],
        ["models", "--endpoint", "123"],
        ["models", "--endpoint", "123", "--project", "p", "--location", "us-central1"],
    ]
    script = (
        "import contextlib, io, json, os\nfrom client.cli import main\nanswers = []\n"
        f"for args in {commands!r}:\n"
        "    with contextlib.redirect_stderr(io.StringIO()) as err:\n"
        "        code = main(args)\n"
        "    answers.append((code, err.getvalue()))\n"
        "os.environ['GOOGLE_CLOUD_PROJECT'] = 'p'  # a project, but still no credentials\n"
        "with contextlib.redirect_stderr(io.StringIO()) as err:\n"
        "    answers.append((main(['models', '--endpoint', '123']), err.getvalue()))\n"
        "print(json.dumps(answers))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    codes, answers = zip(*json.loads(done.stdout), strict=True)
    assert codes == (3, 3, 2, 3, 3), answers
    hint = "run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS"
    assert answers[0] == (
        f"error: no Google credentials for Cloud Storage (gs://): {hint} to a service account "
        "key file\n"
    )
    assert answers[1] == answers[0]
    assert answers[2] == (
        "error: no Google Cloud project for endpoint 123: give --project, or set "
        "GOOGLE_CLOUD_PROJECT (gcloud: CLOUDSDK_CORE_PROJECT)\n"
    )
    assert answers[3].startswith("error: no Google credentials for endpoint 123: " + hint)
    assert len(answers[3].splitlines()) == 1
    assert answers[4].startswith("error: no Google credentials for endpoint 123: " + hint)


def test_a_reader_that_goes_away_ends_quietly(server, tmp_path: Path) -> None:
    """``detect ... | head -1`` and ``stream ... | head -2``: stdout's reader gone (here before
    the first write, so the pipe is closed whenever the command writes), exit 141, nothing on
    stderr. ``detect`` writes at its end (block-buffered); ``stream`` line by line
    (unbuffered), from inside the stream."""
    image = tmp_path / "a.png"
    image.write_bytes(encode(scenes(1)[0][0]))
    video = tmp_path / "v.mp4"
    from app.demo.shapes import moving_shape_frames, write_video

    write_video(video, moving_shape_frames(4)[0])
    for args, env in (
        (["detect", str(image), str(image)], {}),
        (["stream", str(video), "-q"], {"PYTHONUNBUFFERED": "1"}),
    ):
        read, write = os.pipe()
        os.close(read)  # the reader is gone
        try:
            done = subprocess.run(
                [sys.executable, "-m", "client", *args, "--url", server.url],
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=write,
                stderr=subprocess.PIPE,
                text=True,
                timeout=120,
            )
        finally:
            os.close(write)
        assert done.returncode == 141 and done.stderr == "", (args, done.stderr)


def test_emulator_without_its_extra_names_the_install(tmp_path: Path) -> None:
    """A ``[client]``-only install has no uvicorn: simulated by making its import fail
    (``sys.modules['uvicorn'] = None``) before ``python -m client.emulator`` runs."""
    script = (
        "import runpy, sys\nsys.modules['uvicorn'] = None\n"
        "sys.argv = ['python -m client.emulator']\n"
        "runpy.run_module('client.emulator', run_name='__main__', alter_sys=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "python -m client.emulator: the emulator needs uvicorn, which is not installed: "
        'pip install "vertex-yolo[emulator]"\n'
    )


def test_a_file_that_is_not_a_video_is_one_line(tmp_path: Path) -> None:
    """No FFmpeg or OpenCV warning (``moov atom not found``, ``[ WARN:0] ...``) before ours."""
    fake = tmp_path / "notvideo.mp4"
    fake.write_bytes(b"this is not a video" * 100)
    done = subprocess.run(
        [sys.executable, "-m", "client", "video", str(fake), "--url", "http://127.0.0.1:1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr == f"error: {fake}: OpenCV cannot open it as a video\n"


def test_the_library_names_a_bad_parameter_in_words() -> None:
    """What argparse cannot see (a library caller's values): the field, the bound, the value."""
    from client import Client, errors

    with Client.from_url("http://127.0.0.1:1", retries=0) as client:
        for params, words in (
            ({"conf": 5}, "invalid parameter conf: expected float <= 1.0, got 5"),
            ({"imgsz": "x"}, "invalid parameter imgsz: expected int | null, got str"),
            ({"max_det": -1}, "invalid parameter max_det: expected int >= 1, got -1"),
        ):
            with pytest.raises(errors.ParameterError) as bad:
                client.detect(b"\x89PNG", **params)  # type: ignore[arg-type]
            assert str(bad.value) == words
