"""Batch jobs (``python -m client batch``, ``Client.batch``) from Cloud Storage to Cloud Storage,
through the Vertex emulator and the unmodified SDK, over two replicas.

The jobs go to the session emulator's ``shapes-a``, whose two replicas run the instrumented
server (``tests/instrumented_app.py``), each with a gate of its own: "killed halfway" is a
state the test sets (the gates let 80 images through, then hold the rest) before it SIGKILLs
the job, not a moment it hopes to catch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from client import Client, cli
from client.batch import JsonlOutput, list_inputs
from conftest import PATIENCE_S, ROOT, wait_until
from helpers import cli_process, encode, hit_rate, interrupt, scenes

IMAGES = 150
CORRUPT = 3


@pytest.fixture(scope="module")
def images(gcs: Any) -> list[Any]:
    """150 generated scenes at gs://inputs/batch/scene-NNN.png (and 3 corrupt images there);
    their drawn shapes."""
    bucket = gcs.bucket("inputs")
    drawn = scenes(IMAGES, seed=97)

    def put(i: int) -> None:
        bucket.blob(f"batch/scene-{i:03d}.png").upload_from_string(encode(drawn[i][0]), "image/png")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(IMAGES)))
    truth = [shapes for _, shapes in drawn]
    for i in range(CORRUPT):
        bucket.blob(f"batch/corrupt-{i}.png").upload_from_string(b"\x89PNG\r\n\x1a\n" + b"?" * 99)
    return truth


#: every job here goes to shapes-a, whose replicas have the gates (not by the 80/20 split)
PINNED = ("--deployed-model-id", "shapes-a")


def read(uri: str, gcs: Any) -> list[dict]:
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    text = gcs.bucket(bucket).blob(name).download_as_text()
    return [json.loads(line) for line in text.splitlines()]


def check_output(rows: list[dict], truth: list[Any]) -> None:
    """One line per input, exactly; recall on the drawn shapes; the corrupt ones as errors."""
    counts = Counter(row["input"] for row in rows)
    assert len(counts) == IMAGES + CORRUPT and set(counts.values()) == {1}, counts.most_common(3)
    errors = [row for row in rows if "error" in row]
    assert sorted(row["input"] for row in errors) == [
        f"gs://inputs/batch/corrupt-{i}.png" for i in range(CORRUPT)
    ]
    assert all(row["error"]["code"] == "invalid-image" for row in errors)
    scenes_rows = sorted((row for row in rows if "result" in row), key=lambda r: r["input"])
    assert hit_rate(truth, [row["result"] for row in scenes_rows]) >= 0.9


def test_bucket_to_bucket_over_two_replicas(emulator_info_file, images, gcs, capsys) -> None:
    """The server reads each image itself (--send uri); both replicas take calls."""
    out = "gs://outputs/run-uri.jsonl"
    code = cli.main(
        [
            *("batch", "gs://inputs/batch/", "--out", out, "--send", "uri", "-q", *PINNED),
            *("--emulator-info", str(emulator_info_file)),
        ]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    rows = read(out, gcs)
    check_output(rows, images)
    assert len({row.get("replica_id") for row in rows} - {None}) == 2  # spread over both
    assert "153 inputs: 153 done now (0 already in" in printed.out
    assert "3 errors (invalid-image=3)" in printed.out
    assert list(gcs.list_blobs("outputs", prefix="run-uri.jsonl.parts/")) == []  # merged


def test_killed_halfway_and_run_again_gives_every_input_once(
    emulator_info_file, shapes_a_gates, images, gcs
) -> None:
    gates = shapes_a_gates()
    out = "gs://outputs/run-killed.jsonl"
    for gate in gates:
        gate.set(40)  # 80 images in all, then the calls wait
    command = [sys.executable, "-m", "client", "batch", "gs://inputs/batch/", "--out", out]
    command += ["--emulator-info", str(emulator_info_file), "-q", "--concurrency", "4", *PINNED]
    job = subprocess.Popen(
        command, cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_until(lambda: all((g.state()["waiting"] or 0) >= 1 for g in gates), "the job to stall")
        wait_until(lambda: len(JsonlOutput(out).lines()) >= 50, "parts to reach the bucket")
        job.send_signal(signal.SIGKILL)
        job.wait(PATIENCE_S)
    finally:
        if job.poll() is None:
            job.kill()
    before = JsonlOutput(out).lines()
    assert 50 <= len(before) < IMAGES  # what reached the bucket: whole parts, not all
    assert not gcs.bucket("outputs").blob("run-killed.jsonl").exists()
    for gate in gates:
        gate.open()
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"already in {out}" in again.stdout and f"({len(before)} already in" in again.stdout
    check_output(read(out, gcs), images)


def test_local_folder_glob_and_list_to_a_local_file(server, tmp_path, capsys) -> None:
    """Local inputs, straight to one server, with the drawn images; Client.batch underneath."""
    folder = tmp_path / "shots"
    (folder / "day").mkdir(parents=True)
    truth = []
    for i, (rgb, shapes) in enumerate(scenes(12, seed=5)):
        (folder / ("day" if i % 2 else "") / f"{i:02d}.jpg").write_bytes(encode(rgb, "JPEG"))
        truth.append(shapes)
    listing = tmp_path / "list.txt"
    listing.write_text("# two of them\n" + "\n".join(list_inputs(str(folder))[:2]) + "\n")
    assert len(list_inputs(str(folder))) == 12
    assert len(list_inputs(str(folder / "**" / "*.jpg"))) == 12
    assert len(list_inputs(str(listing))) == 2
    out, drawn = tmp_path / "out.jsonl", tmp_path / "drawn"
    args = ["batch", str(folder), "--out", str(out), "--url", server.url, "-q"]
    assert cli.main([*args, "--save-annotated", str(drawn)]) == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["input"] for r in rows) == list_inputs(str(folder))
    assert all(Path(r["annotated"]).is_file() for r in rows) and len(list(drawn.iterdir())) == 12
    by_name = sorted(rows, key=lambda r: int(Path(r["input"]).stem))
    assert hit_rate(truth, [r["result"] for r in by_name]) >= 0.9
    # The library call behind it, directly.
    with Client.from_url(server.url) as client, client.batch(list_inputs(str(listing))) as run:
        lines = list(run)
    assert len(lines) == 2 and all(line.result is not None for line in lines)
    assert run.stats.done == 2 and run.stats.errors == {}


def test_job_wide_errors_end_the_run_and_input_errors_are_lines(server, tmp_path, capsys) -> None:
    """A refusal every input would get (an unknown class) ends the run with no line written, so
    a corrected run does them all; a missing file and a corrupt image are lines of their own. A
    list names each input once; a second run on the same file at once is refused."""
    good = tmp_path / "good.jpg"
    good.write_bytes(encode(scenes(1, seed=9)[0][0], "JPEG"))
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    listing = tmp_path / "list.txt"
    names = [str(good), str(tmp_path / "corrupt.jpg"), str(tmp_path / "missing.jpg"), str(good)]
    listing.write_text("\n".join(names) + "\n")
    assert list_inputs(str(listing)) == names[:3]
    out = tmp_path / "out.jsonl"
    args = ["batch", str(listing), "--out", str(out), "--url", server.url, "-q"]
    assert cli.main([*args, "--classes", "hexagon"]) != 0
    assert "hexagon" in capsys.readouterr().err
    assert out.read_text() == ""  # nothing counted as done
    with JsonlOutput(str(out)), pytest.raises(Exception, match="another batch is writing"):
        JsonlOutput(str(out))
    assert cli.main(args) == 0, capsys.readouterr().err
    rows = {r["input"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == set(names) and rows[str(good)]["result"]["detections"]
    assert rows[names[1]]["error"]["code"] == "invalid-image"
    missing = rows[names[2]]["error"]
    assert "status" not in missing and "No such file" in missing["detail"], missing


def test_ctrl_c_names_what_is_done_and_the_command_that_goes_on(
    emulator_info_file, shapes_a_gates, images, tmp_path
) -> None:
    """SIGINT once the gates hold the job: one line with the inputs in DEST and the command
    to run again; DEST holds exactly that many lines."""
    gates = shapes_a_gates()
    before = sum((g.state()["passed"] or 0) for g in gates)  # counts since each replica began
    out = tmp_path / "run.jsonl"
    for gate in gates:
        gate.set(5)  # ten images in all, then the calls wait
    args = ["batch", "gs://inputs/batch/", "--out", str(out), "-q", "--concurrency", "2"]
    args += ["--emulator-info", str(emulator_info_file), *PINNED]
    job = cli_process(*args)
    try:
        wait_until(
            lambda: sum((g.state()["passed"] or 0) for g in gates) >= before + 10, "ten calls"
        )
        wait_until(lambda: sum((g.state()["waiting"] or 0) for g in gates) >= 2, "the job held")
        wait_until(lambda: out.exists() and len(out.read_bytes().splitlines()) >= 10, "10 lines")
    except BaseException:  # a state never came: end the job, free the gates
        job.kill()
        for gate in gates:
            gate.open()
        raise
    _, err = interrupt(job, gates)  # the held calls may end: the job waits for them
    written = len(out.read_bytes().splitlines())
    assert job.returncode == 130, err
    assert err == (
        f"interrupted: {written} of {IMAGES + CORRUPT} inputs are in {out}; to go on, run the "
        f"same command again (it skips them): python -m client {' '.join(args)}\n"
    )
