"""A user's first hour (issue 23, part B), against the session emulator (shapes-a 80 % on two
replicas, shapes-b 20 %): a batch resume pinned to the first run's deployed model and refusing
other options; display names wherever a deployed model is named; the deploy tools a Vertex user
expects (delete an endpoint or a model, gcloud's environment defaults)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from client import cli
from client.emulator import EmulatorInfo
from conftest import ROOT
from helpers import encode, scenes


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m client ARGS`` as a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "client", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``python -m client ARGS`` in this process (``client.cli.main``): exit code, out, err."""
    capsys.readouterr()
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("shots")
    paths = []
    for i, (rgb, _) in enumerate(scenes(4, seed=23)):
        paths.append(folder / f"shot-{i}.png")
        paths[-1].write_bytes(encode(rgb))
    return paths


def listed(tmp_path: Path, paths: list[Path]) -> str:
    """A .txt list of ``paths``: a batch source."""
    source = tmp_path / f"list-{len(paths)}.txt"
    source.write_text("".join(f"{p}\n" for p in paths))
    return str(source)


def test_batch_resume_is_pinned_and_refuses_other_options(
    emulator: EmulatorInfo, emulator_info_file: Path, shots: list[Path], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out.jsonl"
    at = ("--emulator-info", str(emulator_info_file), "-q", "--out", str(out))
    first = run_cli("batch", listed(tmp_path, shots[:1]), *at, "--conf", "0.3")
    assert first.returncode == 0, first.stderr
    record = json.loads(Path(f"{out}.run.json").read_text())
    answered = record["deployed_model_id"]
    name = {v: k for k, v in emulator.deployed_models.items()}[answered]
    other = next(n for n in emulator.deployed_models if n != name)
    assert record["display_name"] == name and record["route"] == "detect"
    assert record["options"] == {"conf": 0.3} and record["endpoint"] == emulator.endpoint
    assert f"on deployed model {name} ({answered})" in first.stdout

    # Untargeted resumes go to the deployed model that answered the first run, whatever the
    # split picks (shapes-b answers 20 % of untargeted calls: a free resume would mix).
    code, text, err = main(capsys, "batch", listed(tmp_path, shots[:3]), *at, "--conf", "0.3")
    assert code == 0 and f"resuming {out} on deployed model {name} ({answered})" in err, err
    code, text, err = main(
        capsys, "batch", listed(tmp_path, shots), *at, "--conf", "0.3", "--deployed-model-id", name
    )
    assert code == 0, err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 4 and {line["deployed_model_id"] for line in lines} == {answered}
    assert all(line["params"] == {"conf": 0.3} and line["replica_id"] for line in lines)

    refused = {
        ("--conf", "0.5"): "a run with --conf 0.3; this run has --conf 0.5: give the first",
        ("--conf", "0.3", "--route", "segment"): "--route detect; this run has --route segment",
        ("--conf", "0.3", "--imgsz", "320"): "no --imgsz; this run has --imgsz 320",
        ("--conf", "0.3", "--deployed-model-id", other): (
            f"deployed model {name} ({answered}); this run's --deployed-model-id names "
            f"{other} ({emulator.deployed_models[other]}): leave it out"
        ),
    }
    for options, why in refused.items():
        code, _, err = main(capsys, "batch", listed(tmp_path, shots), *at, *options)
        assert code == cli.EXIT_USAGE and why in err and "another --out" in err, (options, err)
        assert len(err.strip().splitlines()) == 1, err
    assert len(out.read_text().splitlines()) == 4  # nothing written by a refused run


def test_display_names_wherever_a_deployed_model_is_named(
    emulator: EmulatorInfo, emulator_info_file: Path, shots: list[Path], tmp_path: Path, capsys
) -> None:
    a, b = emulator.deployed_models["shapes-a"], emulator.deployed_models["shapes-b"]
    at = ("--emulator-info", str(emulator_info_file))
    # Untargeted, `models` says who answered and that the split may pick another next time.
    code, out, err = main(capsys, "models", *at)
    assert code == 0 and out.startswith("deployed model shapes-"), err
    assert f"shapes-a ({a}) 80%" in out and f"shapes-b ({b}) 20%" in out
    assert "another may answer the next call" in out
    code, out, err = main(capsys, "models", *at, "--deployed-model-id", "shapes-b")
    assert code == 0 and out.startswith(f"deployed model shapes-b ({b}) answered"), err
    assert "another may answer" not in out

    # An unknown name: exit 3 (as an unknown id), the deployed models listed as name (id).
    code, _, err = main(capsys, "models", *at, "--deployed-model-id", "shapes-c")
    assert code == cli.EXIT_API, err
    assert f"(deployed: shapes-a ({a}), shapes-b ({b}))" in err and len(err.splitlines()) == 1

    # deploy split / undeploy take names (the split set here is the session's own: unchanged).
    code, out, err = main(capsys, "deploy", "split", "shapes-a=80", "shapes-b=20", *at)
    assert code == 0 and f"{a}   80%  shapes-a" in out and f"{b}   20%  shapes-b" in out, err
    code, _, err = main(capsys, "deploy", "split", "shapes-a=80", "shapes-c=20", *at)
    assert code == cli.EXIT_API and "'shapes-c' is not deployed" in err and f"shapes-b ({b})" in err
    code, _, err = main(capsys, "deploy", "undeploy", "shapes-c", *at)
    assert code == cli.EXIT_API and "'shapes-c' is not deployed" in err, err
    # An endpoint with deployed models is not deleted without --force (nothing is called).
    code, _, err = main(capsys, "deploy", "delete-endpoint", "--yes", *at)
    assert code == cli.EXIT_USAGE, err
    assert f"still has deployed models (shapes-a ({a}), shapes-b ({b})): --force" in err, err

    # ab targeted, bench: names too (the ab table labels each deployed model name (id)).
    one = tmp_path / "one"
    one.mkdir()
    (one / shots[0].name).write_bytes(shots[0].read_bytes())
    code, out, err = main(
        capsys, "ab", "targeted", "--images", str(one),
        "--deployed-models", "shapes-b,shapes-a", "-q", *at,
    )  # fmt: skip
    assert code == 0 and f"shapes-b ({b})" in out and f"shapes-a ({a})" in out, err
    code, out, err = main(
        capsys, "bench", "--route", "models", "--requests", "3", "--concurrency", "1",
        "--warmup", "0", "--deployed-model-id", "shapes-b", "--json", *at,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["levels"][0]["served_by"] == {b: 3}


def test_resolver_and_bench_table_per_deployed_model() -> None:
    from client.bench import Reply, summarize, table
    from client.errors import ParameterError
    from client.names import resolve

    known = {"1": "yolo", "2": "yolo", "3": "other"}
    assert resolve("other", known, "--x") == "3" and resolve("2", known, "--x") == "2"
    assert resolve("anything", None, "--x") == "anything"  # one URL: no names to check
    with pytest.raises(ParameterError, match=r"'yolo' names 2 deployed models \(yolo \(1\), yolo"):
        resolve("yolo", known, "--x")

    # Under a split the text table gives each deployed model's latency apart.
    replies = [(0.010, Reply(200, {"x-deployed-model-id": "1"}))] * 8
    replies += [(0.200, Reply(200, {"x-deployed-model-id": "3"}))] * 2
    text = table([summarize(4, replies, 1.0)], {"1": "yolo (1)", "3": "other (3)"})
    assert "several deployed models answered" in text
    rows = {line.split()[1]: line.split() for line in text.splitlines() if line.startswith("4 ")}
    assert rows["yolo"][3:5] == ["8", "10.0"] and rows["other"][3:5] == ["2", "200.0"], text
    alone = table([summarize(4, replies[:8], 1.0)])
    assert "several deployed models" not in alone


def test_environment_defaults_and_local_artifacts(
    emulator_info_file: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    for name, value in {
        "CLOUDSDK_CORE_PROJECT": "gcloud-project",
        "GOOGLE_CLOUD_PROJECT": "library-project",
        "CLOUDSDK_COMPUTE_REGION": "europe-west4",
        "VERTEX_YOLO_ENDPOINT": "4242",
    }.items():
        monkeypatch.setenv(name, value)
    code, out, err = main(capsys, "deploy", "status", "--dry-run")
    assert code == 0, err
    assert "aiplatform.init(project='gcloud-project', location='europe-west4')" in out
    assert "aiplatform.Endpoint('4242')" in out
    monkeypatch.delenv("CLOUDSDK_CORE_PROJECT")
    code, out, err = main(capsys, "deploy", "status", "--dry-run", "--location", "us-east1")
    assert "aiplatform.init(project='library-project', location='us-east1')" in out, err

    # A local artifact directory: Vertex (an https control plane) needs a staging bucket, to
    # which the SDK copies it; the emulator sends it as it is (the real run: test_deploy).
    weights = tmp_path / "weights"
    weights.mkdir()
    upload = ("deploy", "upload", "--display-name", "m", "--image-uri", "img", "--dry-run")
    code, _, err = main(capsys, *upload, "--artifact-uri", str(weights))
    assert code == cli.EXIT_USAGE and "give --staging-bucket gs://BUCKET" in err, err
    code, out, err = main(
        capsys, *upload, "--artifact-uri", weights.as_uri(), "--staging-bucket", "gs://stage"
    )
    assert code == 0 and f"artifact_uri='{weights}', staging_bucket='gs://stage'" in out, err
    code, out, err = main(
        capsys, *upload, "--artifact-uri", str(weights), "--emulator-info", str(emulator_info_file)
    )
    assert code == 0 and "models.upload_model(" in out and f"artifact_uri='{weights}'" in out


def test_rollout_dry_run_without_credentials(tmp_path: Path, capsys, monkeypatch) -> None:
    """Vertex, no credentials (a missing key file: google-auth fails at once, no network)."""
    at = ("--project", "p", "--location", "us-central1", "--endpoint", "7")
    move = ("rollout", "--from", "shapes-a", "--to", "shapes-b", "--steps", "50,100", *at)
    # A fresh SDK configuration (earlier tests pointed this process's at the emulator, with
    # anonymous credentials), as a new `python -m client` has.
    from google.cloud.aiplatform import initializer

    for attribute in ("_project", "_location", "_credentials", "_api_endpoint", "_api_transport"):
        monkeypatch.setattr(initializer.global_config, attribute, None)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-key.json"))
    code, _, err = main(capsys, *move, "--dry-run")
    assert code == cli.EXIT_API and "--dry-run reads the endpoint's split" in err, err
    assert "or give the split: --split A=80,B=20" in err and len(err.splitlines()) == 1, err
    code, out, err = main(capsys, *move, "--dry-run", "--split", "shapes-a=80,shapes-b=20")
    assert code == 0, err
    assert "step 1: B 50% of the pool -> shapes-a 50, shapes-b 50" in out
    assert "endpoint.update(traffic_split={'shapes-a': 0, 'shapes-b': 100})" in out
    code, _, err = main(capsys, *move, "--split", "shapes-a=80,shapes-b=20")
    assert code == cli.EXIT_USAGE and "--split is for --dry-run" in err, err
    # Off the emulator the synthetic probe shapes say nothing: --probe-images is required.
    code, _, err = main(capsys, *move)
    assert code == cli.EXIT_USAGE and "off the emulator give --probe-images DIR" in err, err
