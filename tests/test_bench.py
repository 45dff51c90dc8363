"""``python -m client bench`` against the real server, and ``tests/bench/perf.py --short``.

Figures are checked for presence and sanity only (finite, ordered percentiles, no errors):
speed targets are printed by the benchmark, never asserted here.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from client.cli import main
from client.schema import parse_server_timing
from client.stats import percentile
from conftest import ROOT, Server, free_port
from helpers import encode, scenes


def bench(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "client", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("bench-images")
    paths = []
    for i, (rgb, _) in enumerate(scenes(2)):
        path = folder / f"scene{i}.jpg"
        path.write_bytes(encode(rgb, "JPEG", quality=90))
        paths.append(str(path))
    return paths


def test_percentile_matches_numpy() -> None:
    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 100, 1001):
        values = sorted(rng.exponential(20.0, n).tolist())
        for pct in (50, 90, 99):
            assert percentile(values, pct) == pytest.approx(np.percentile(values, pct))


def test_server_timing_header() -> None:
    header = 'decode;dur=2.9, inference;desc="model";dur=14.5,encode;dur="0.4", total, bad;dur=x'
    assert parse_server_timing(header) == {"decode": 2.9, "inference": 14.5, "encode": 0.4}
    assert parse_server_timing(None) == {}


def test_sweep_against_the_server(server: Server, images: list[str], tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = bench(
        *("--url", server.url, *images),
        *("--concurrency", "1,2,4", "--requests", "8", "--warmup", "2"),
        *("--param", "conf=0.3", "--json", str(out)),
    )
    assert run.returncode == 0, run.stderr
    assert "p50 ms" in run.stdout and "inference ms" in run.stdout  # the table
    report = json.loads(out.read_text())
    assert report["route"] == "detect" and report["params"] == {"conf": "0.3"}
    assert [lv["concurrency"] for lv in report["levels"]] == [1, 2, 4]
    for level in report["levels"]:
        assert level["requests"] == 8 and level["errors"] == 0, level
        assert level["error_kinds"] == {}
        assert math.isfinite(level["throughput"]) and level["throughput"] > 0
        lat = level["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert level["throughput"] <= level["concurrency"] * 1000 / lat["min"] * 1.01
        timing = level["server_timing_ms"]
        assert {"decode", "inference", "encode"} <= set(timing), timing
        assert all(t["mean"] >= 0 and math.isfinite(t["mean"]) for t in timing.values())
        # the server's own work fits inside the latency the client saw
        assert timing["inference"]["p50"] < lat["max"]
        assert level["served_by"] == {"dm-test-1": 8}


def test_json_to_stdout_and_other_routes(server: Server, images: list[str]) -> None:
    run = bench(
        "--url", server.url, "--route", "models", "--concurrency", "2", "--requests", "4", "--json"
    )
    assert run.returncode == 0, run.stderr
    (level,) = json.loads(run.stdout)["levels"]
    assert level["errors"] == 0 and level["server_timing_ms"] == {}  # /models runs no model
    run = bench(
        *("--url", server.url, "--route", "predict", "--body", "json", images[0]),
        *("--concurrency", "1", "--requests", "3", "--warmup", "0", "--json"),
    )
    assert run.returncode == 0, run.stderr
    (level,) = json.loads(run.stdout)["levels"]
    assert level["errors"] == 0 and "inference" in level["server_timing_ms"]


def test_errors_are_counted_and_named(server: Server, images: list[str]) -> None:
    run = bench(
        *("--url", server.url, images[0], "--param", "conf=7"),
        *("--concurrency", "1,2", "--requests", "3", "--warmup", "0", "--json"),
    )
    assert run.returncode == 3, run.stderr  # nothing succeeded: an API error exit
    assert "no request succeeded" in run.stderr
    levels = json.loads(run.stdout)["levels"]
    for level in levels:
        assert level["errors"] == 3 and level["error_kinds"] == {"HTTP 400": 3}
        assert level["latency_ms"] is None and level["throughput"] == 0
        assert "conf" in level["first_errors"]["HTTP 400"]
    closed = f"http://127.0.0.1:{free_port()}"
    run = bench(
        "--url", closed, images[0], "--concurrency", "1", "--requests", "2", "--warmup", "0"
    )
    assert run.returncode == 4, run.stderr
    assert "ConnectionError" in run.stdout


def test_bad_arguments(server: Server) -> None:
    run = bench("--url", server.url, "--concurrency", "1")
    assert run.returncode == 2 and "needs at least one image" in run.stderr
    run = bench("--url", server.url, "--concurrency", "0,2", "x.jpg")
    assert run.returncode == 2 and "--concurrency" in run.stderr
    run = bench("--url", server.url, "--duration", "1", "--requests", "3", "x.jpg")
    assert run.returncode == 2 and "not allowed with" in run.stderr
    run = bench("--url", server.url, "missing.jpg", "--requests", "1")
    assert run.returncode == 2 and "cannot read missing.jpg" in run.stderr


def test_through_the_emulator(
    emulator, emulator_info_file: Path, images: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The Vertex paths: httpx to the URLs invoke builds, and the SDK's invoke in threads (in
    this process: the command's ``main``, without paying the SDK's import for each run)."""
    info = emulator_info_file
    a = emulator.deployed_models["shapes-a"]
    for extra in ((), ("--sdk",)):
        code = main(
            [
                *("bench", "--emulator-info", str(info), images[0], *extra),
                *("--concurrency", "1,2", "--requests", "4", "--warmup", "1", "--json"),
            ]
        )
        out, err = capsys.readouterr()
        assert code == 0, err
        levels = json.loads(out)["levels"]
        assert [lv["errors"] for lv in levels] == [0, 0], levels
        assert all(set(lv["served_by"]) <= set(emulator.deployed_models.values()) for lv in levels)
        assert all("inference" in lv["server_timing_ms"] for lv in levels)  # forwarded by Vertex
    code = main(
        [
            *("bench", "--emulator-info", str(info), images[0], "--deployed-model-id", a),
            *("--concurrency", "2", "--requests", "4", "--warmup", "0", "--json"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["levels"][0]["served_by"] == {a: 4}


def test_perf_short(tmp_path: Path) -> None:
    """The benchmark's CI mode: it runs end to end and prints every figure (speed not judged)."""
    out = tmp_path / "perf.json"
    run = subprocess.run(
        [sys.executable, "tests/bench/perf.py", "--short", "--requests", "6", "--frames", "12"]
        + ["--warmup", "1", "--json", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    print(run.stdout)  # the figures, for the CI log (pytest -s / -rA)
    lines = run.stdout.splitlines()
    report = json.loads(out.read_text())
    assert list(report["figures"]) == ["P1", "P2", "P3", "P4", "P5"]
    for key, fig in report["figures"].items():
        assert any(line.startswith(key + " ") for line in lines), (key, run.stdout)
        for field in ("measured", "baseline", "figure"):
            assert math.isfinite(fig[field]) and fig[field] != 0, (key, fig)
        assert (fig["passed"] is None) == (key in ("P4", "P5")), fig
    p4 = report["figures"]["P4"]  # base64 costs a third more bytes, plus the JSON around it
    assert 4 / 3 < p4["figure"] < 1.4 and p4["baseline"] > 1000
    assert report["imgsz"] == 160 and report["model"] == "shapes-detect.pt"
