"""``client.ab`` and ``python -m client ab`` through the real SDK against the emulator
(shapes-a 80 %: the detector; shapes-b 20 %: the segmentation weights answer /detect)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import aiplatform
from PIL import Image

from app.demo.shapes import moving_shape_frames, write_video
from client import Client, DeployedModelNotFoundError
from client.ab import (
    SplitReport,
    TargetedReport,
    decode_report,
    encode_report,
    image_files,
    match_boxes,
    plot,
    render_table,
    split_check,
    targeted,
)
from client.cli import main
from client.schema import Box, Detection
from helpers import encode, scenes

N_SCENES = 6


@pytest.fixture(scope="module")
def vertex(emulator) -> Iterator[Client]:
    with Client.from_vertex(endpoint=emulator.endpoint_id, **emulator.init_kwargs()) as client:
        yield client


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ab-images")
    for i, (rgb, _) in enumerate(scenes(N_SCENES)):
        (path / f"scene-{i}.png").write_bytes(encode(rgb))
    (path / "notes.txt").write_text("not an image")
    return path


@pytest.fixture(scope="module")
def ids(emulator) -> tuple[str, str]:
    return emulator.deployed_models["shapes-a"], emulator.deployed_models["shapes-b"]


def decodes_png(data: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image.size


def test_image_files_takes_images_sorted(folder):
    assert [p.name for p in image_files(folder)] == [f"scene-{i}.png" for i in range(N_SCENES)]


def test_match_boxes_is_one_to_one_same_class_and_optimal():
    def det(name: str, x1: float, y1: float, x2: float, y2: float) -> Detection:
        box = Box(x1=x1, y1=y1, x2=x2, y2=y2)
        return Detection(class_id=0, class_name=name, confidence=0.9, box=box)

    # Greedy on the best pair (ref 0 with cand 1, IoU 0.82) would leave ref 1 unmatched; the
    # optimal assignment pairs ref 0-cand 0 (0.67) and ref 1-cand 1 (0.67) instead.
    ref = [det("square", 0, 0, 10, 10), det("square", 4, 0, 14, 10)]
    cand = [det("square", -2, 0, 8, 10), det("square", 1, 0, 11, 10), det("circle", 0, 0, 10, 10)]
    matches = match_boxes(ref, cand)
    assert [(r, c) for r, c, _ in matches] == [(0, 0), (1, 1)]
    assert all(iou >= 0.5 for _, _, iou in matches)
    assert match_boxes(ref, cand, iou_threshold=0.9) == []
    assert match_boxes([], cand) == []


def test_targeted_model_against_itself_agrees_fully(vertex, folder, ids):
    a, _ = ids
    report = targeted(vertex, image_files(folder), deployed_model_ids=[a, a], concurrency=4)
    first, again = report.models
    assert (first.deployed_model_id, again.deployed_model_id) == (a, a)
    assert first.model == "shapes-detect" and first.errors == 0 and first.images == N_SCENES
    assert first.latency.count == N_SCENES and 0 < first.latency.p50_ms <= first.latency.p99_ms
    assert first.class_counts == again.class_counts and first.detections > 0
    assert first.detections_per_image == first.detections / N_SCENES
    assert sum(first.confidence.histogram) == first.detections
    (agree,) = report.agreement
    assert agree.matched == agree.reference_boxes == agree.candidate_boxes == first.detections
    assert (agree.precision, agree.recall, agree.f1) == (1.0, 1.0, 1.0)
    assert agree.mean_iou == pytest.approx(1.0, abs=1e-9)


def test_targeted_two_models_agree_less_and_report(vertex, folder, ids, tmp_path):
    a, b = ids
    report = targeted(vertex, image_files(folder), concurrency=3, conf=0.25)  # all deployed
    assert [m.deployed_model_id for m in report.models] == [a, b]  # largest share first
    assert [m.model for m in report.models] == ["shapes-detect", "shapes-segment"]
    assert report.params == {"conf": 0.25} and report.inputs == N_SCENES
    (agree,) = report.agreement
    assert agree.images == N_SCENES and agree.matched > 0  # the same shapes, found twice
    assert agree.mean_iou < 1.0 and agree.f1 <= 1.0
    assert agree.matched <= min(agree.reference_boxes, agree.candidate_boxes)
    assert decode_report(encode_report(report)) == report
    table = render_table(report)
    assert f"shapes-a ({a})" in table and f"shapes-b ({b})" in table  # name and id
    assert "agreement with A" in table and "mean IoU" in table
    assert [m.display_name for m in report.models] == ["shapes-a", "shapes-b"]
    plot(report, tmp_path / "ab.png")
    assert decodes_png((tmp_path / "ab.png").read_bytes()) == (1200, 450)


def test_targeted_counts_errors_instead_of_raising(vertex, folder, ids, tmp_path):
    a, b = ids
    png = (folder / "scene-0.png").read_bytes()
    inputs = [png, png[: len(png) // 2]]  # the second is a cut PNG: 400 from each model
    report = targeted(vertex, inputs, deployed_model_ids=[a, b], concurrency=2)
    for model in report.models:
        assert (model.calls, model.errors, model.images) == (2, 1, 1)
        assert list(model.error_kinds) == ["400 invalid-image"] and model.latency.count == 1
    assert report.agreement[0].images == 1
    assert "400 invalid-image x1" in render_table(report)


def test_targeted_unknown_deployed_model_fails_before_the_run(vertex, folder, ids):
    with pytest.raises(DeployedModelNotFoundError, match="'999' is not deployed"):
        targeted(vertex, image_files(folder), deployed_model_ids=[ids[0], "999"])


def test_targeted_through_one_url_is_that_servers_model(emulator_process, folder, ids):
    # the first replica as it is now (tests that kill one get a new port for its replacement)
    with Client.from_url(emulator_process.current().servers["shapes-a"]) as client:
        report = targeted(client, image_files(folder)[:2], concurrency=2)
    (model,) = report.models
    assert (model.deployed_model_id, model.calls, model.errors) == (ids[0], 2, 0)
    assert report.agreement == [] and "agreement" not in render_table(report)


def test_split_check_observes_the_configured_split(vertex, ids, endpoint, tmp_path):
    a, b = ids
    # Setting the split restarts the emulator's seeded draws for it (--split-seed): these 400
    # calls get the same 400 draws in every run, wherever the test runs in the session.
    endpoint.update(traffic_split={a: 80, b: 20})
    report = split_check(vertex, 400, concurrency=8)
    assert (report.calls, report.answered, report.errors, report.route) == (400, 400, 0, "models")
    shares = {r.deployed_model_id: r for r in report.rows}
    assert set(shares) == {a, b}
    assert (shares[a].configured_percent, shares[b].configured_percent) == (80, 20)
    # 8 points is 4 standard deviations of a share at p = 0.8 over 400 calls
    assert abs(shares[a].observed_share - 0.8) < 0.08
    assert shares[a].observed + shares[b].observed == 400
    assert 0.0 <= report.p_value <= 1.0 and report.dof == 1
    assert decode_report(encode_report(report)) == report
    assert "p = " in render_table(report)
    plot(report, tmp_path / "split.png")
    assert decodes_png((tmp_path / "split.png").read_bytes()) == (1200, 450)


@pytest.fixture
def endpoint(emulator, ids):
    """The emulator's endpoint through the SDK; its split is put back to 80/20 afterwards."""
    aiplatform.init(**emulator.init_kwargs())
    endpoint = aiplatform.Endpoint(emulator.endpoint_id)
    yield endpoint
    endpoint.update(traffic_split={ids[0]: 80, ids[1]: 20})


@pytest.mark.parametrize("routed_to", [0, 1])
def test_split_check_counts_who_answered_against_the_split_given(
    vertex, endpoint, folder, ids, routed_to
):
    """The endpoint sends everything to one model; the check, told the split is all A's,
    counts who really answered: all A (p = 1), or all B, which has no share (p = 0)."""
    a, b = ids
    served = ids[routed_to]
    endpoint.update(traffic_split={served: 100, ids[1 - routed_to]: 0})
    report = split_check(vertex, 20, inputs=image_files(folder), split={a: 100}, concurrency=4)
    assert report.route == "detect" and report.answered == 20
    rows = {r.deployed_model_id: r for r in report.rows}
    assert rows[served].observed == 20 and rows[a].expected_share == 1.0
    if served == a:
        assert set(rows) == {a} and report.p_value == 1.0
    else:
        assert rows[b].configured_percent == 0 and report.p_value == 0.0
    assert rows[served].display_name == ("shapes-a", "shapes-b")[routed_to]


# --- the CLI, in process ---------------------------------------------------------------------


def test_cli_targeted_writes_table_report_and_figure(
    emulator_info_file, folder, ids, tmp_path, capsys
):
    a, b = ids
    report_path, figure = tmp_path / "ab.json", tmp_path / "ab.png"
    at = ("--emulator-info", str(emulator_info_file))
    args = ["ab", "targeted", *at, "--images", str(folder), "--concurrency", "2"]
    assert main([*args, "--report", str(report_path), "--figure", str(figure)]) == 0
    out = capsys.readouterr()
    assert "targeted A/B on /detect: 6 inputs x 2 deployed models" in out.out
    assert f"{N_SCENES * 2}/{N_SCENES * 2}" in out.err  # the progress bar
    report = decode_report(report_path.read_bytes())
    assert isinstance(report, TargetedReport)
    assert [m.deployed_model_id for m in report.models] == [a, b]
    assert decodes_png(figure.read_bytes()) == (1200, 450)


def test_cli_video_frames_and_json(emulator_info_file, ids, tmp_path, capsys):
    a, _ = ids
    frames, _ = moving_shape_frames(6)
    video = tmp_path / "clip.mp4"
    write_video(video, frames)
    at = ("--emulator-info", str(emulator_info_file))
    args = ["ab", "targeted", *at, "--video", str(video), "--every", "2", "--max-frames", "2"]
    assert main([*args, "--deployed-models", f"{a},{a}", "--json", "-q"]) == 0
    out = capsys.readouterr()
    report = decode_report(out.out.encode())
    assert isinstance(report, TargetedReport) and report.inputs == 2
    assert report.agreement[0].f1 == 1.0 and out.err == ""


def test_cli_split(emulator_info_file, capsys):
    at = ("--emulator-info", str(emulator_info_file))
    assert main(["ab", "split", *at, "-n", "40", "--json"]) == 0
    report = decode_report(capsys.readouterr().out.encode())
    assert isinstance(report, SplitReport) and report.answered == 40
    assert json.loads(encode_report(report))["kind"] == "split"


def test_cli_usage_errors(emulator, emulator_info_file, tmp_path, capsys):
    url = emulator.servers["shapes-a"]
    assert main(["ab", "split", "--url", url, "-n", "5", "-q"]) == 2
    assert "only Vertex knows" in capsys.readouterr().err
    assert main(["ab", "targeted", "--emulator-info", str(emulator_info_file), "-q"]) == 2
    assert "--images DIR or --video FILE" in capsys.readouterr().err
    assert main(["ab", "targeted", "--url", url, "--images", str(tmp_path)]) == 2
    assert "no images" in capsys.readouterr().err
    at = ("--emulator-info", str(emulator_info_file))
    assert main(["ab", "targeted", *at, "--video", str(tmp_path / "none.mp4")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["ab", "split", *at, "--concurrency", "0"]) == 2
    assert "--concurrency: must be at least 1, got 0" in capsys.readouterr().err
    args = ["ab", "split", *at, "--deployed-model-id", "1"]
    assert main(args) == 2 and "--deployed-models" in capsys.readouterr().err
