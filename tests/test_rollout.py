"""``client.rollout`` and ``python -m client rollout`` through the real SDK against an emulator of
this module's own: ``roll-a`` (70 %) and ``roll-b`` (20 %) serve the same demo detector;
``roll-slow`` (10 %: its untargeted calls queue behind each other) the same weights through ``tests/instrumented_app.py`` with
``TEST_PREDICT_DELAY_MS``, so it is slower by construction, not by the machine's speed.

Every test that changes the split puts it back (:func:`restoring`), and most assert that the
model outside the rollout kept its share. Rollouts that hold send two probe calls at a time, not
the default four: on two cores the other two only add load, not coverage."""

from __future__ import annotations

import ast
import contextlib
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import aiplatform
from PIL import Image

from client import Client, ParameterError
from client.cli import main
from client.emulator import Emulator, EmulatorInfo
from client.rollout import (
    Guards,
    RolloutInterrupted,
    decode_report,
    encode_report,
    parse_steps,
    plan,
    render_table,
    rollout,
    step_split,
    verdict_line,
)
from conftest import INSTRUMENTED, PATIENCE_S, ROOT

# Each call to roll-slow sleeps this long and then runs the real predict REPEAT times: its p95
# is DELAY_MS plus REPEAT of roll-a's predicts, so a machine loaded enough to slow roll-a slows
# roll-slow REPEAT times as much, and the 1.5 ratio holds by construction, not by a bound on
# how fast roll-a stays (its p95 would have to pass 1.33 s plus 2.67 of its own predicts).
DELAY_MS = 2000
REPEAT = 4
START = {"roll-a": 70, "roll-b": 20, "roll-slow": 10}
WEIGHTS = ROOT / "app" / "demo" / "weights" / "shapes-detect.pt"


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmulatorInfo, Path]]:
    """The emulator and its info file; each server loads the detector only."""
    workdir = tmp_path_factory.mktemp("rollout")
    args = ["--log-dir", str(workdir / "logs")]
    for name, percent in START.items():
        args += ["--deploy", f"{name}={percent}", "--models", f"{name}:shapes-detect={WEIGHTS}"]
    args += ["--command", f"roll-slow={' '.join(INSTRUMENTED)}"]
    args += ["--env", f"roll-slow:TEST_PREDICT_DELAY_MS={DELAY_MS}"]
    args += ["--env", f"roll-slow:TEST_PREDICT_REPEAT={REPEAT}"]
    # (the emulator gives each server one torch thread: client/emulator/config.py)
    env = {"YOLO_CONFIG_DIR": str(workdir / "yolo-config"), "PYTHONUNBUFFERED": "1"}
    emulator = Emulator(
        args=args,
        env=env,
        workdir=workdir,
        startup_timeout=240,
    )
    with emulator as info, pytest.MonkeyPatch.context() as patch:
        for key, value in info.env().items():
            patch.setenv(key, value)
        yield info, workdir / "info.json"
    assert emulator.proc is not None and emulator.proc.returncode == 0, emulator.output()


@pytest.fixture(scope="module")
def ids(emu: tuple[EmulatorInfo, Path]) -> dict[str, str]:
    return dict(emu[0].deployed_models)


def current_split(info: EmulatorInfo) -> dict[str, int]:
    """The endpoint's split as the SDK reads it, without zero shares."""
    aiplatform.init(**info.init_kwargs())
    split = aiplatform.Endpoint(info.endpoint_id).traffic_split
    return {k: int(v) for k, v in split.items() if v}


def split_by_name(info: EmulatorInfo, ids: dict[str, str]) -> dict[str, int]:
    split = current_split(info)
    return {name: split.get(dm, 0) for name, dm in ids.items()}


@contextlib.contextmanager
def restoring(info: EmulatorInfo, ids: dict[str, str]) -> Iterator[None]:
    """The module's starting split before (asserted) and after (put back) the test."""
    assert split_by_name(info, ids) == START
    try:
        yield
    finally:
        aiplatform.init(**info.init_kwargs())
        aiplatform.Endpoint(info.endpoint_id).update(
            traffic_split={ids[name]: percent for name, percent in START.items()}
        )


def connect(file: Path) -> list[str]:
    return ["rollout", "--emulator-info", str(file)]


def test_steps_and_split_arithmetic() -> None:
    assert parse_steps("10, 50,100") == [10, 50, 100]
    start = {"a": 60, "b": 20, "c": 20}
    assert step_split(start, "a", "b", 50) == {"a": 40, "b": 40, "c": 20}
    assert step_split(start, "a", "b", 10) == {"a": 72, "b": 8, "c": 20}
    assert step_split(start, "a", "b", 100) == {"a": 0, "b": 80, "c": 20}
    assert step_split({"a": 1, "b": 2}, "a", "b", 50) == {"a": 1, "b": 2}  # 1.5 rounds up


def test_same_weights_rolls_out_to_100(emu, ids, tmp_path, capsys) -> None:
    info, file = emu
    a, b = ids["roll-a"], ids["roll-b"]
    report_path, figure = tmp_path / "rollout.json", tmp_path / "rollout.png"
    with restoring(info, ids):
        code = main(
            [
                *connect(file),
                *("--from", "roll-a", "--to", b, "--steps", "50,100", "--hold", "1"),
                *("--concurrency", "2", "--max-error-rate", "0.5", "--min-agreement", "0.9"),
                *("--report", str(report_path), "--figure", str(figure)),
            ]
        )
        out, err = capsys.readouterr()
        assert code == 0, err
        # B holds the whole pool (90 %); roll-slow kept its 10 %
        assert split_by_name(info, ids) == {"roll-a": 0, "roll-b": 90, "roll-slow": 10}
    report = decode_report(report_path.read_bytes())
    assert encode_report(report) == report_path.read_bytes()
    assert (report.verdict, report.from_id, report.to_id) == ("done", a, b)
    assert (report.from_name, report.to_name) == ("roll-a", "roll-b")
    assert [s.percent for s in report.timeline] == [50, 100]
    first, second = report.timeline
    assert first.split == {a: 45, b: 45, ids["roll-slow"]: 10}
    for step in report.timeline:
        assert step.verdict == "pass" and step.pairs >= 1 and step.a.errors == step.b.errors == 0
        assert step.agreement is not None and step.agreement.reference_boxes > 0
        assert step.agreement.f1 > 0.9  # the same weights
    assert a not in second.answered_by  # A at 0 %: no untargeted call reached it
    assert [c.why for c in report.splits] == ["start", "step 1", "step 2"]
    assert "step 1/2: B 50% of the pool" in err and "step 2/2 B 100%" in err  # the live lines
    assert "done: roll-b" in out and "holds 100% of the pool" in out
    assert render_table(report) in out
    with Image.open(figure) as png:
        assert (png.format, png.size) == ("PNG", (1200, 700))


def test_slower_b_rolls_back_on_the_latency_guard(emu, ids, tmp_path, capsys) -> None:
    info, file = emu
    report_path = tmp_path / "rollout.json"
    with restoring(info, ids):
        code = main(
            [
                *connect(file),
                *("--from", "roll-a", "--to", "roll-slow", "--steps", "50,100", "--hold", "1"),
                *("--concurrency", "2", "--max-latency-ratio", "1.5"),
                *("--report", str(report_path), "-q"),
            ]
        )
        out, err = capsys.readouterr()
        assert code == 6, err
        assert split_by_name(info, ids) == START  # rolled back to the split it started from
    report = decode_report(report_path.read_bytes())
    (failure,) = report.failed
    assert (report.verdict, failure.guard, failure.threshold) == (
        "rolled back",
        "latency ratio",
        1.5,
    )
    assert failure.figure is not None and failure.figure > 1.5
    (step,) = report.timeline
    assert step.verdict == "fail" and step.b.latency.p95_ms >= DELAY_MS
    assert [c.why for c in report.splits] == ["start", "step 1", "rollback"]
    assert report.final_split == report.start_split and report.restored
    verdict = out.strip().splitlines()[-1]
    assert verdict.startswith("rolled back at step 1 (B 50% of the pool): latency ratio ")
    assert "> 1.5 (--max-latency-ratio; p95 B " in verdict and err == ""


def test_rerun_continues_from_the_current_split(emu, ids) -> None:
    """Past half-way already (A 40, B 50): the 50 % step (B 45) is skipped; a rollback would go
    back to the split found at the start of this run."""
    info, _ = emu
    a, b, slow = ids["roll-a"], ids["roll-b"], ids["roll-slow"]
    with (
        restoring(info, ids),
        Client.from_vertex(endpoint=info.endpoint_id, **info.init_kwargs()) as client,
    ):
        aiplatform.Endpoint(info.endpoint_id).update(traffic_split={a: 40, b: 50, slow: 10})
        lines: list[str] = []
        report = rollout(
            client, a, b, [50, 100], hold_s=0.5, concurrency=2, guards=Guards(), live=lines.append
        )
        assert report.skipped == [50] and [s.percent for s in report.timeline] == [100]
        assert report.start_split == {a: 40, b: 50, slow: 10} and report.verdict == "done"
        assert "steps 50 already done" in lines[0]
        assert current_split(info) == {b: 90, slow: 10}


def test_stop_with_no_restore_leaves_the_step_split(emu, ids) -> None:
    """The stop event (what the CLI's signal handlers set) mid-hold, with ``no_restore``: the
    run ends at once, the split stays the step's, the report says so."""
    info, _ = emu
    a, b = ids["roll-a"], ids["roll-b"]
    stop = threading.Event()
    lines: list[str] = []

    def live(line: str) -> None:
        lines.append(line)
        if line.startswith("step 1/2:"):  # the hold begins: stop a moment later
            threading.Timer(0.3, stop.set).start()

    with (
        restoring(info, ids),
        Client.from_vertex(endpoint=info.endpoint_id, **info.init_kwargs()) as client,
    ):
        with pytest.raises(RolloutInterrupted) as stopped:
            rollout(client, a, b, [50, 100], hold_s=60, stop=stop, live=live, no_restore=True)
        report = stopped.value.report
        assert (report.verdict, report.restored) == ("interrupted", False)
        assert [s.verdict for s in report.timeline] == ["interrupted"]
        assert split_by_name(info, ids) == {"roll-a": 45, "roll-b": 45, "roll-slow": 10}
        assert verdict_line(report).startswith(
            "interrupted at step 1 (B 50% of the pool): split left at"
        )


def test_an_error_mid_step_restores_the_starting_split(emu, ids) -> None:
    """An empty probe image is a ParameterError in the client, raised from a probe call: the
    run puts the starting split back, then raises it, with a note saying so."""
    info, _ = emu
    with (
        restoring(info, ids),
        Client.from_vertex(endpoint=info.endpoint_id, **info.init_kwargs()) as client,
    ):
        with pytest.raises(ParameterError, match="empty") as raised:
            rollout(client, "roll-a", "roll-b", [50], hold_s=1, probes=[b""])
        assert split_by_name(info, ids) == START
        assert any("the starting split was restored" in note for note in raised.value.__notes__)


def test_sigterm_mid_step_restores_the_starting_split(emu, ids) -> None:
    info, file = emu
    a, b = ids["roll-a"], ids["roll-b"]
    with restoring(info, ids):
        proc = subprocess.Popen(
            [sys.executable, "-m", "client", *connect(file), "--from", a, "--to", b]
            + ["--steps", "50,100", "--hold", "60"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        assert proc.stderr is not None
        threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True).start()
        try:
            seen = []
            while not any(line.startswith("step 1/2:") for line in seen):
                seen.append(lines.get(timeout=PATIENCE_S))  # holding step 1 (of 60 s)
            assert split_by_name(info, ids) == {"roll-a": 45, "roll-b": 45, "roll-slow": 10}
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)  # the hold polls every 0.1 s, then one SDK call
            assert proc.stdout is not None
            out = proc.stdout.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 143, out
        assert split_by_name(info, ids) == START
        assert "interrupted at step 1 (B 50% of the pool): split restored to" in out


def test_dry_run_prints_the_plan_and_sdk_calls_and_changes_nothing(emu, ids, capsys) -> None:
    info, file = emu
    a, b, slow = ids["roll-a"], ids["roll-b"], ids["roll-slow"]
    before = current_split(info)
    args = ["--from", a, "--to", "roll-b", "--steps", "10,30,100", "--dry-run"]
    assert main([*connect(file), *args]) == 0
    out = capsys.readouterr().out
    assert out.startswith("aiplatform.init(project=")
    assert "already done: steps 10" in out  # B holds 20 of the pool's 90: 22 % >= 10 %
    updates = [
        ast.literal_eval(line.split("traffic_split=", 1)[1].rstrip(")"))
        for line in out.splitlines()
        if "endpoint.update(traffic_split=" in line
    ]
    assert updates == [
        {a: 63, b: 27, slow: 10},
        {a: 0, b: 90, slow: 10},
        {a: 70, b: 20, slow: 10},  # the rollback
    ]
    assert out.count("endpoint = aiplatform.Endpoint('projects/") == 3
    assert current_split(info) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "50,10"], "steps must increase"),
        (["--steps", "0,50"], "not an integer percent in 1..100"),
        (["--steps", "50,101"], "not an integer percent in 1..100"),
        (["--steps", "half"], "give percents of the pool as integers"),
        (["--to", "roll-a"], "are the same deployed model"),
        (["--to", "999"], "'999' is not deployed on this endpoint"),
        (["--max-error-rate", "2"], "max_error_rate must be in [0, 1]"),
    ],
)
def test_bad_arguments_exit_2(emu, ids, capsys, args, message) -> None:
    info, file = emu
    given = {"--from": "roll-a", "--to": "roll-b", "--steps": "50,100", "--hold": "1"}
    given |= dict(zip(args[::2], args[1::2], strict=True))
    assert main([*connect(file), *(x for kv in given.items() for x in kv)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert split_by_name(info, ids) == START


def test_plan_reads_and_changes_nothing(emu, ids) -> None:
    """Display names stand for ids; B already holds 22 % of the pool (20 of 90), so a 20 %
    step is done; the plan holds each other step's full split."""
    info, _ = emu
    with Client.from_vertex(endpoint=info.endpoint_id, **info.init_kwargs()) as client:
        the_plan = plan(client, "roll-a", "roll-b", [20, 60, 100])
    a, b, slow = ids["roll-a"], ids["roll-b"], ids["roll-slow"]
    assert (the_plan.a, the_plan.b, the_plan.pool) == (a, b, 90)
    assert (the_plan.skipped, the_plan.todo) == ([20], [60, 100])
    assert the_plan.splits == [{a: 36, b: 54, slow: 10}, {a: 0, b: 90, slow: 10}]
    assert split_by_name(info, ids) == START
