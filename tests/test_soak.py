"""CI's version of the soak (``tests/bench/soak.py``): 2 s of mixed load at concurrency 16
against a real server, then 40 dropped streams; the script exits non-zero when a check fails
(a failed request, streams still active or still inferring, a thread pool over its size or a
thread of no pool, files left in the temp dir). Memory is printed, not judged: 2 s is too short
to tell a leak from the allocator's noise; the long soak (README, Benchmarks) judges it."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

from conftest import ROOT


def test_soak(tmp_path):
    run = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "bench" / "soak.py")]
        + ["--duration", "2", "--concurrency", "16", "--warmup", "1", "--disconnects", "40"]
        + ["--no-memory-verdict"],
        cwd=ROOT,
        env={**os.environ, "YOLO_CONFIG_DIR": str(tmp_path / "yolo-config")},
        capture_output=True,
        text=True,
        timeout=400,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert re.search(r"^soak: .* requests, 0 failures, \d+ x 429$", out, re.M), out
    for route in ("/detect", "/segment", "/annotate", "/stream"):
        assert re.search(rf"^  {route} +200: [1-9]", out, re.M), out
    assert "(40 reached them)" in out and "streams active: 0" in out, out
    assert "temp dir: 0 entries" in out and out.rstrip().endswith("PASS"), out
    pools = re.search(r"python threads by pool: (\{.*?\})", out)
    assert pools and "'other': 0" in pools[1] and "'inference': 1" in pools[1], out


def test_the_thread_check_names_what_must_hold():
    """It fails on threads of no pool, a pool over its size or inference threads other than SERVE_WORKERS,
    and only then (a worker pool that grew within its bound is fine)."""
    spec = importlib.util.spec_from_file_location("soak", ROOT / "tests" / "bench" / "soak.py")
    soak = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = soak  # its dataclasses look their module up
    try:
        spec.loader.exec_module(soak)
    finally:
        del sys.modules["soak"]
    fine = {"main": 1, "inference": 2, "worker": soak.WORKER_THREADS, "other": 0}
    assert soak.thread_problems(fine, workers=2) == []
    assert soak.thread_problems(fine | {"other": 1}, 2) == ["1 Python thread(s) of no known pool"]
    assert soak.thread_problems(fine | {"worker": soak.WORKER_THREADS + 1}, 2)
    assert soak.thread_problems(fine | {"inference": 3}, 2)
