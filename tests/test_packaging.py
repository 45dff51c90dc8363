"""The project's own entry points: the Dockerfile's command, the README's commands, the demo."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
from PIL import Image

from conftest import ROOT, start_server

README = (ROOT / "README.md").read_text()


def readme_commands() -> list[str]:
    """The two set-up commands: the first two shell code blocks of the README."""
    blocks = re.findall(r"```(?:sh|bash|shell)\n(.*?)\n```", README, re.S)
    return [b.strip() for b in blocks[:2]]


def test_ci_runs_the_readme_test_command():
    _, test_command = readme_commands()
    assert "pytest" in test_command
    ci = (ROOT / ".ci/run").read_text().splitlines()
    assert test_command in ci


def test_readme_first_command_installs_and_runs_the_demo():
    install_and_run, _ = readme_commands()
    assert install_and_run.startswith("python3 -m venv .venv && .venv/bin/pip install")
    assert install_and_run.endswith(".venv/bin/python -m app.demo")


def test_demo_job_runs_the_whole_loop_through_the_sdk_and_the_emulator(tmp_path):
    env = {**os.environ, "YOLO_CONFIG_DIR": str(tmp_path / "yolo")}
    proc = subprocess.run(
        [sys.executable, "-m", "app.demo", "--out", str(tmp_path / "out"), "--frames", "20"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    drawn = re.findall(r"(\w+) \(", re.search(r"drawn: (.*)", out).group(1))
    found = re.findall(r"(\w+) \(", re.search(r"found: (.*)", out).group(1))
    assert drawn and sorted(drawn) == sorted(found)
    image = Image.open(tmp_path / "out" / "annotated.png")
    assert image.format == "PNG" and image.size == (320, 240)
    assert re.search(r"segment via shapes-[ab] \(model shapes-segment\): [1-9] masks", out)
    assert re.search(
        r"via shapes-[ab]: 20 frames at [0-9.]+ fps, classes \{'square': \d+\}, 1 track", out
    )
    pinned = re.findall(r"asked (shapes-[ab]) \(\d+\) -> answered by (shapes-[ab])", out)
    assert sorted(pinned) == [("shapes-a", "shapes-a"), ("shapes-b", "shapes-b")]
    assert "emulator and its servers stopped" in out


def dockerfile_command() -> tuple[list[str], dict[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.*)$", text, re.M):
        for item in shlex.split(line):
            key, _, value = item.partition("=")
            env[key] = value
    return cmd, env


def test_dockerfile_command_serves(tmp_path):
    """Runs the Dockerfile's exact CMD (with its ENV) here, where `python` is this venv's."""
    cmd, env = dockerfile_command()
    assert cmd == ["python", "-m", "app"]
    venv_bin = str(Path(sys.executable).parent)
    srv = start_server(
        tmp_path, env | {"PATH": venv_bin + os.pathsep + os.environ["PATH"]}, cmd=cmd
    )
    try:
        srv.wait_healthy()
        r = httpx.get(srv.url + "/models")
        assert {m["name"] for m in r.json()["models"]} == {"shapes-detect", "shapes-segment"}
    finally:
        srv.stop()


def test_dockerfile_copies_what_the_package_needs():
    text = (ROOT / "Dockerfile").read_text()
    for path in ("pyproject.toml", "README.md", "LICENSE", "client", "app"):
        assert re.search(rf"^COPY .*\b{re.escape(path)}\b", text, re.M), path
    assert '".[server]"' in text


def test_demo_model_training_script_runs_at_toy_size(tmp_path):
    """The training script still works end to end (1 epoch, 16 images); the committed weights are untouched."""
    committed = {p: p.stat().st_mtime for p in (ROOT / "app/demo/weights").glob("*.pt")}
    env = {**os.environ, "YOLO_CONFIG_DIR": str(tmp_path / "cfg")}
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "app.demo.train", "--out", str(out), "--train-images", "16",
         "--val-images", "8", "--detect-epochs", "1", "--segment-epochs", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    card = (out / "MODEL_CARD.md").read_text()
    assert "val box mAP50" in card and "val mask mAP50" in card and "--detect-epochs 1" in card
    from ultralytics import YOLO

    for name, task in (("shapes-detect", "detect"), ("shapes-segment", "segment")):
        model = YOLO(str(out / f"{name}.pt"))
        assert model.task == task and model.names == {0: "circle", 1: "square", 2: "triangle"}
    assert {p: p.stat().st_mtime for p in (ROOT / "app/demo/weights").glob("*.pt")} == committed
    assert not (tmp_path / "runs").exists()


def test_wheel_ships_the_demo_weights(tmp_path):
    """The Dockerfile installs a built wheel (not this checkout): the weights must be inside."""
    import zipfile

    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "app/demo/weights/shapes-detect.pt",
        "app/demo/weights/shapes-segment.pt",
        "app/demo/weights/MODEL_CARD.md",
        "client/schema.py",
        "app/routes/inference.py",
    ):
        assert needed in names
    assert not any(n.startswith("tests/") for n in names)
