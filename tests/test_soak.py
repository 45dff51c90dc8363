"""CI's version of the soak (``tests/bench/soak.py``): 20 s of mixed load at concurrency 16
against a real server, then 100 dropped streams; the script exits non-zero when a check fails
(a failed request, memory growth of 5 % or more, streams still active or still inferring,
threads above the warm-up level, files left in the temp dir)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import ROOT


def test_soak_20_seconds(tmp_path):
    run = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "bench" / "soak.py")]
        + ["--duration", "20", "--concurrency", "16", "--warmup", "10", "--disconnects", "100"],
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
    assert "(100 reached them)" in out and "streams active: 0" in out, out
    assert "temp dir: 0 entries" in out and out.rstrip().endswith("PASS"), out
