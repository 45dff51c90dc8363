"""The container image: its pins are the tests' own, its layers keep the torch layer cached, and
(with ``CONTAINER_TESTS=1``) it is built and run for real by tests/container/build_and_smoke.py.

The build takes minutes and ~7 GB of disk while it runs (an image and its build cache), so it
is not part of the default suite: ``CONTAINER_TESTS=1 .venv/bin/python -m pytest -q -n 0
tests/test_container.py``. The script cleans up after itself (README: "Container image").
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version

import pytest

from conftest import ROOT

CONSTRAINTS = ROOT / ".ci" / "constraints.txt"
DOCKERFILE = ROOT / "Dockerfile"
SCRIPT = ROOT / "tests" / "container" / "build_and_smoke.py"


def pins() -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in CONSTRAINTS.read_text().splitlines()]
    return dict(line.split("==") for line in lines if line)


def test_constraints_pin_what_this_venv_runs():
    """Every pin is `==` and is the version installed here: the image installs these, so it
    runs what the tests ran (a local label such as +cpu or +cu130 is the same release)."""
    found = pins()
    for name in ("torch", "torchvision", "ultralytics-opencv-headless", "numpy", "ruff", "mypy"):
        assert name in found, name
    differ = {
        name: (pin, version(name))
        for name, pin in found.items()
        if version(name).split("+")[0] != pin
    }
    assert differ == {}


def test_dockerfile_installs_with_the_pins_and_keeps_torch_below_what_changes_often():
    """Layer order: torch before the dependencies, the dependencies before EXTRAS and the
    sources, SERVE_MODELS last (so changing it or EXTRAS keeps the torch layer); every pip
    install takes the pins; no COPY of the sources into the image (only into the src stage)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    final = text[text.rindex("\nFROM ") :]
    lines = final.splitlines()

    def first(pattern: str) -> int:
        return next(i for i, line in enumerate(lines) if re.search(pattern, line))

    torch = first(r"^RUN .*pip install .* torch torchvision$")
    deps = first(r"^RUN .*pip install .*-r /opt/vertex-yolo/server\.txt")
    extras = first(r"^ARG EXTRAS=")
    project = first(r"^RUN .*pip install .*/src\[\$\{EXTRAS\}\]")
    models = first(r"^ARG SERVE_MODELS=")
    assert torch < deps < extras < project < models
    installs = [line for line in lines if "pip install" in line]
    assert installs and all(" -c /opt/vertex-yolo/" in line for line in installs)
    assert not [line for line in lines if line.startswith("COPY") and "--from=" not in line]
    src_stage = text[text.index("AS src") : text.rindex("\nFROM ")]
    assert "COPY .ci/constraints.txt" in src_stage
    assert "'^(torch|torchvision)=='" in src_stage
    assert "# --- the tests only" in CONSTRAINTS.read_text()


@pytest.mark.skipif(
    os.environ.get("CONTAINER_TESTS") != "1",
    reason="set CONTAINER_TESTS=1 to build the image and run it (minutes, ~7 GB of disk)",
)
def test_image_builds_and_serves_as_vertex_runs_it(tmp_path):
    """The whole script: build, run as Vertex does, every check (its output says which).
    ``CONTAINER_WORK_DIR`` names the work dir (podman's storage: a build cache there is used),
    by default a temporary one; the script empties it at the end."""
    work = os.environ.get("CONTAINER_WORK_DIR") or str(tmp_path / "work")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--work-dir", work],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert re.search(r"^OK: every check passed", proc.stdout, re.M)
