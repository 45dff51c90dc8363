"""The project's own entry points: the Dockerfile's command, the README's commands, the demo."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image

from app.config import DEMO_MODELS
from conftest import ROOT, free_port, serving
from helpers import encode, scenes

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


@dataclass
class Dockerfile:
    """The parts of the Dockerfile a test can run here: ARG defaults, ENV, RUN, HEALTHCHECK, CMD."""

    args: dict[str, str]
    env: dict[str, str]
    runs: list[str]
    healthcheck: list[str]
    cmd: list[str]
    workdir: str

    @classmethod
    def parse(cls) -> Dockerfile:
        text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
        args: dict[str, str] = {}
        env: dict[str, str] = {}
        for kind, rest in re.findall(r"^(ARG|ENV) (.*)$", text, re.M):
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                value = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], value)
                (args if kind == "ARG" else env)[key] = value
        return cls(
            args=args,
            env=env,
            runs=re.findall(r"^RUN (.*)$", text, re.M),
            healthcheck=json.loads(re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", text, re.M)[1]),
            cmd=json.loads(re.search(r"^CMD (\[.*\])$", text, re.M)[1]),
            workdir=re.findall(r"^WORKDIR (\S+)$", text, re.M)[-1],
        )

    def run_env(self, root: Path, **extra: str) -> dict[str, str]:
        """The image's ENV with its paths under ``root`` (its WORKDIR, /srv, is not ours) and this
        venv's ``python`` first on PATH, as the image's is."""
        env = {
            key: str(root / value.lstrip("/")) if value.startswith(self.workdir + "/") else value
            for key, value in self.env.items()
        }
        path = str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]
        return env | {"PATH": path} | extra


def run_image_command(cmd: list[str] | str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A Dockerfile command (exec form list, or shell form string) with the image's environment."""
    argv = ["sh", "-c", cmd] if isinstance(cmd, str) else cmd
    full = {**os.environ, **env}
    return subprocess.run(argv, env=full, capture_output=True, text=True, timeout=180)


def test_dockerfile_command_serves_and_its_healthcheck_follows_the_vertex_variables(tmp_path):
    """Runs the Dockerfile's exact CMD and HEALTHCHECK (with its ENV) here, where `python` is
    this venv's, with the health route Vertex sets for a model uploaded without one."""
    image = Dockerfile.parse()
    assert image.cmd == ["python", "-m", "app"]
    assert image.healthcheck == ["python", "-m", "app", "--healthcheck"]
    assert image.args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert image.env["SERVE_MODELS"] == ""  # ARG default: the demo models or AIP_STORAGE_URI
    route = "/v1/endpoints/1/deployedModels/2:predict"  # Vertex's default, ':' and all
    env = image.run_env(tmp_path, AIP_HEALTH_ROUTE=route)
    with serving(tmp_path, env, image.cmd, health=route) as srv:
        r = httpx.get(srv.url + "/models")
        assert {m["name"] for m in r.json()["models"]} == {name for name, _ in DEMO_MODELS}
        # the image's YOLO_CONFIG_DIR got the offline settings and font (not start_server's)
        assert (tmp_path / "srv/ultralytics/Ultralytics/Arial.ttf").is_file()
        port = srv.url.rsplit(":", 1)[1]
        ok = run_image_command(image.healthcheck, env | {"AIP_HTTP_PORT": port})
        assert ok.returncode == 0, ok.stderr
        wrong = run_image_command(
            image.healthcheck, env | {"AIP_HTTP_PORT": port, "AIP_HEALTH_ROUTE": "/health"}
        )
        assert wrong.returncode == 1 and "/health answered 404" in wrong.stderr
    down = run_image_command(image.healthcheck, env | {"AIP_HTTP_PORT": str(free_port())})
    assert down.returncode == 1 and "Connection refused" in down.stderr


def test_dockerfile_prefetch_step_loads_the_models_and_fails_clearly(tmp_path):
    """The build step that bakes weights: every configured model loads once, or the build fails
    with a message naming what is missing."""
    image = Dockerfile.parse()
    (step,) = [run for run in image.runs if "--prefetch" in run]
    env = image.run_env(tmp_path)

    demo = run_image_command(step, env)
    assert demo.returncode == 0, demo.stderr
    assert re.search(
        r"prefetched shapes-detect: detect, 3 classes, imgsz 160, version \w{12}", demo.stdout
    )
    assert "prefetched shapes-segment: segment" in demo.stdout

    # A baked Ultralytics name: the build leaves yolo11n.pt in SERVE_CACHE_DIR, where a later
    # start finds it with no network. (A real build downloads it; here the demo detector stands in.)
    cache = Path(env["SERVE_CACHE_DIR"])
    cache.mkdir(parents=True)
    shutil.copy(ROOT / "app/demo/weights/shapes-detect.pt", cache / "yolo11n.pt")
    baked = run_image_command(step, env | {"SERVE_MODELS": "det=yolo11n.pt"})
    assert baked.returncode == 0, baked.stderr
    assert re.search(r"prefetched det: detect, .* from yolo11n\.pt$", baked.stdout, re.M)

    empty = tmp_path / "artifacts"
    empty.mkdir()
    (empty / "notes.txt").write_text("no weights here")
    none_there = run_image_command(step, env | {"AIP_STORAGE_URI": str(empty)})
    assert none_there.returncode == 1
    assert re.search(
        rf"^python -m app --prefetch: loading models failed: FileNotFoundError: no .* found under "
        rf"AIP_STORAGE_URI={re.escape(str(empty))}$",
        none_there.stderr,
        re.M,
    )

    missing = run_image_command(step, env | {"SERVE_MODELS": f"x={tmp_path}/missing.pt"})
    assert missing.returncode == 2
    assert f"SERVE_MODELS source '{tmp_path}/missing.pt' is not a file" in missing.stderr


# Modules of the client extra (and tqdm, which only the client declares): the server image has none.
CLIENT_ONLY = ("google.cloud.aiplatform", "tenacity", "httpx", "requests_toolbelt", "tqdm")


def test_server_never_imports_the_client_dependencies(tmp_path):
    """The image installs `.[server]` only: importing the app must not need the client extra,
    and a whole server, with those modules made unimportable, loads, detects and draws (one
    process: it imports the app and checks, then serves with the modules blocked)."""
    # None in sys.modules makes `import name` raise ImportError, as if it were not installed.
    serve = (
        "import runpy, sys, app.main, app.__main__; "
        f"early = [m for m in {CLIENT_ONLY!r} if m in sys.modules]; "
        "early and sys.exit(f'importing the app imported {early}'); "
        f"sys.modules.update(dict.fromkeys({CLIENT_ONLY!r})); "
        "runpy.run_module('app', run_name='__main__', alter_sys=True)"
    )
    with serving(tmp_path, cmd=[sys.executable, "-c", serve]) as srv:
        image, shapes = scenes(1)[0]
        r = httpx.post(
            srv.url + "/detect", content=encode(image), headers={"Content-Type": "image/png"}
        )
        assert r.status_code == 200, r.text
        assert len(r.json()["results"][0]["detections"]) == len(shapes)
        r = httpx.post(
            srv.url + "/annotate?format=png",
            content=encode(image),
            headers={"Content-Type": "image/png"},
        )
        assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
    assert "ModuleNotFoundError" not in srv.logs()


def dockerignored(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""

    def regex(pattern: str) -> re.Pattern[str]:
        out = ""
        for token in re.findall(r"\*\*/|\*\*|\*|\?|[^*?]+", pattern.strip("/")):
            out += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                token, re.escape(token)
            )
        return re.compile(out)

    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if any(regex(pattern.lstrip("!")).fullmatch(p) for p in prefixes):
            ignored = not negated
    return ignored


def test_dockerignore_sends_only_what_the_dockerfile_copies(tmp_path):
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    text = (ROOT / "Dockerfile").read_text()
    # from the build context (COPY --from copies between the Dockerfile's own stages)
    copied = [
        src for srcs in re.findall(r"^COPY (?!--from)(.*) \S+$", text, re.M) for src in srcs.split()
    ]
    assert sorted(copied) == [
        ".ci/constraints.txt",
        "LICENSE",
        "README.md",
        "app",
        "client",
        "pyproject.toml",
    ]
    needed = [
        p.relative_to(ROOT).as_posix()
        for src in copied
        for p in ([ROOT / src] if (ROOT / src).is_file() else (ROOT / src).rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    ]
    assert "app/demo/weights/shapes-detect.pt" in needed and "client/schema.py" in needed
    for path in needed:
        assert not dockerignored(patterns, path), path
    for path in (
        ".venv/bin/python", ".git/HEAD", "tests/test_packaging.py", "demo-output/annotated.png",
        "build/lib/app/main.py", "vertex_yolo.egg-info/PKG-INFO", ".pytest_cache/README.md",
        ".ruff_cache/CACHEDIR.TAG", ".ci/run", "runs/detect/train/weights/best.pt",
        "app/__pycache__/main.cpython-311.pyc", "client/emulator/__pycache__/tls.cpython-311.pyc",
        "Dockerfile", ".dockerignore", ".gitignore",
    ):  # fmt: skip
        assert dockerignored(patterns, path), path


def test_demo_model_training_script_runs_at_toy_size(tmp_path):
    """The training script still works end to end (1 epoch, 8 images) for a classifier (class
    folders) and a pose model (keypoint labels, its own architecture with a skeleton), with the
    held-out evaluation; the committed weights are untouched. (The other tasks' labels are
    checked in test_tasks.py, without training.)"""
    committed = {p: p.stat().st_mtime for p in (ROOT / "app/demo/weights").glob("*.pt")}
    env = {**os.environ, "YOLO_CONFIG_DIR": str(tmp_path / "cfg")}
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "app.demo.train", "--out", str(out), "--tasks", "classify,pose",
         "--train-images", "8", "--val-images", "4", "--epochs", "1", "--eval-images", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    card = (out / "MODEL_CARD.md").read_text()
    for needle in ("## shapes-classify", "val top-1", "val keypoint mAP50", "--epochs 1",
                   "mean keypoint error"):  # fmt: skip
        assert needle in card, needle
    from ultralytics import YOLO

    classify, pose = YOLO(str(out / "shapes-classify.pt")), YOLO(str(out / "shapes-pose.pt"))
    assert classify.task == "classify"
    assert classify.names == {0: "circle", 1: "square", 2: "triangle"}
    assert pose.task == "pose" and pose.names == {0: "square"}
    assert pose.model.yaml["skeleton"] == [[0, 1], [1, 2], [2, 3], [3, 0]]
    assert {p: p.stat().st_mtime for p in (ROOT / "app/demo/weights").glob("*.pt")} == committed
    assert not (tmp_path / "runs").exists()


def test_wheel_holds_what_the_image_needs_and_keeps_the_sdk_out_of_the_server(tmp_path):
    """The Dockerfile installs `.[server]` from a bind mount of the sources: the built package must
    hold every module and the demo weights, and its metadata must give the server no SDK while
    the README's install line still installs every extra (all satisfied in this venv)."""
    import zipfile
    from email.parser import Parser
    from importlib.metadata import version

    from packaging.requirements import Requirement

    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    pins = r"-c /opt/vertex-yolo/(?:torch-)?constraints\.txt"
    assert re.search(
        rf'^RUN .* pip install {pins} --index-url "\$\{{TORCH_INDEX_URL\}}" torch torchvision$',
        dockerfile,
        re.M,
    )
    assert re.search(r"^ARG EXTRAS=server$", dockerfile, re.M)
    assert re.search(rf'^RUN .* pip install {pins} "/src\[\$\{{EXTRAS\}}\]" ', dockerfile, re.M)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("*.whl")
    archive = zipfile.ZipFile(wheel)
    names = set(archive.namelist())
    sources = [
        p.relative_to(ROOT).as_posix()
        for package in ("app", "client")
        for p in (ROOT / package).rglob("*.py")
        if "__pycache__" not in p.parts
    ]
    weights = [
        "app/demo/weights/" + n for n in ("shapes-detect.pt", "shapes-segment.pt", "MODEL_CARD.md")
    ]
    assert "app/routes/images.py" in sources and "client/schema.py" in sources
    assert [n for n in sources + weights if n not in names] == []
    assert not any(n.startswith("tests/") for n in names)

    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    meta = Parser().parsestr(archive.read(metadata).decode())
    requires = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    extras = set(meta.get_all("Provides-Extra"))
    assert {"client", "server", "emulator", "tools", "export", "test"} <= extras

    def closure(wanted: set[str]) -> dict[str, Requirement]:
        found: dict[str, Requirement] = {}
        for req in requires:
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in wanted):
                if req.name == "vertex-yolo":
                    found |= closure(set(req.extras) - wanted)
                else:
                    found[req.name] = req
        return found

    client_only = {"google-cloud-aiplatform", "tenacity", "httpx", "requests-toolbelt", "tqdm"}
    assert set(closure(set())) == {"msgspec"}
    assert client_only <= set(closure({"client"}))
    assert not client_only & set(closure({"server"}))
    assert "ultralytics-opencv-headless" in closure({"server"})
    readme_extras = re.search(
        r'pip install -q -c \.ci/constraints\.txt -e "\.\[([\w,]+)\]"', readme_commands()[0]
    )[1]
    everything = closure(set(readme_extras.split(",")))
    assert everything.keys() == closure(extras).keys()
    unmet = [f"{r} (have {version(name)})" for name, r in everything.items()
             if not r.specifier.contains(version(name), prereleases=True)]  # fmt: skip
    assert unmet == []
