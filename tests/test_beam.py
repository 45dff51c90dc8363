"""Batch jobs on Apache Beam (``client.beam``, ``python -m client batch --runner``): the
DirectRunner (several worker threads) against the session's emulator (``shapes-a`` on two
replicas), through the real SDK, with ``gs://`` through the session's GCS API server.

50 generated scenes and 2 corrupt files, in a local folder and under ``gs://inputs/beam/``; through
this project's handler, and through Beam's own ``VertexAIModelHandlerJSON`` with
``invoke_route="/predict"`` (unchanged: the server speaks its JSON). A replica SIGKILLed while
the job runs (by a step of the job itself, after the first lines) costs no input and duplicates
none.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import msgspec
import pytest
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from client import cli, errors
from client.beam import YoloModelHandler, add_batch, read_lines, retryable, shards
from conftest import pid_alive, wait_until
from helpers import encode, hit_rate, scenes

IMAGES = 50
CORRUPT = 2
WORKERS = 3


def our_handler(emulator: Any, **options: Any) -> YoloModelHandler:
    """Our handler on the session emulator (its endpoint, control plane and CA)."""
    return YoloModelHandler(
        emulator.endpoint_id,
        project=emulator.project,
        location=emulator.location,
        api_endpoint=emulator.control_plane_url,
        ca_cert=emulator.ca_cert,
        **options,
    )


def direct(workers: int = WORKERS) -> PipelineOptions:
    return PipelineOptions(
        ["--direct_running_mode=multi_threading", f"--direct_num_workers={workers}"]
    )


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory, gcs: Any) -> tuple[Path, list[Any]]:
    """The scenes and corrupt files in a folder and at gs://inputs/beam/; the drawn shapes by
    file stem."""
    folder = tmp_path_factory.mktemp("beam-shots")
    bucket = gcs.bucket("inputs")
    truth = {}
    for i, (rgb, shapes) in enumerate(scenes(IMAGES, seed=71)):
        data = encode(rgb, "JPEG", quality=92)
        (folder / f"scene-{i:02d}.jpg").write_bytes(data)
        bucket.blob(f"beam/scene-{i:02d}.jpg").upload_from_string(data, "image/jpeg")
        truth[f"scene-{i:02d}"] = shapes
    for i in range(CORRUPT):
        junk = b"\xff\xd8\xff\xe0 not a jpeg " + bytes([i]) * 64
        (folder / f"corrupt-{i}.jpg").write_bytes(junk)
        bucket.blob(f"beam/corrupt-{i}.jpg").upload_from_string(junk, "image/jpeg")
    return folder, truth


def check_lines(rows: list[dict], truth: dict[str, Any], params: dict | None = None) -> None:
    """One line per input, the corrupt ones as invalid-image lines, recall on the drawn shapes,
    every line on one deployed model, the parameters recorded."""
    counts = Counter(row["input"] for row in rows)
    assert len(counts) == IMAGES + CORRUPT and set(counts.values()) == {1}, counts.most_common(3)
    bad = sorted(Path(row["input"]).stem for row in rows if "error" in row)
    assert bad == [f"corrupt-{i}" for i in range(CORRUPT)], bad
    assert {row["error"]["code"] for row in rows if "error" in row} == {"invalid-image"}
    good = sorted((row for row in rows if "result" in row), key=lambda r: r["input"])
    assert (
        hit_rate([truth[Path(r["input"]).stem] for r in good], [r["result"] for r in good]) >= 0.9
    )
    assert len({row["deployed_model_id"] for row in rows if "result" in row}) == 1
    assert all(row.get("params") == params for row in rows)


def test_folder_through_our_handler_with_the_cli(
    emulator, emulator_info_file, shots, tmp_path, capsys
):
    folder, truth = shots
    out = tmp_path / "out" / "lines.jsonl"
    args = ["batch", str(folder), "--out", str(out), "--emulator-info", str(emulator_info_file)]
    args += ["--runner", "DirectRunner", "--concurrency", str(WORKERS), "--conf", "0.3", "--json"]
    assert cli.main(args) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)["stats"]
    rows = [json.loads(line) for line in read_lines(str(out))]
    check_lines(rows, truth, {"conf": 0.3})
    assert report["lines"] == IMAGES + CORRUPT and report["errors"] == {"invalid-image": CORRUPT}
    assert report["shards"] == shards(str(out)) and report["shards"]
    dead = [json.loads(line) for line in read_lines(str(out), errors=True)]
    assert sorted(r["input"] for r in dead) == [str(folder / f"corrupt-{i}.jpg") for i in range(2)]
    assert report["deployed_model_id"] == rows[0]["deployed_model_id"]


def test_cli_usage_errors(emulator_info_file, shots, tmp_path, capsys):
    folder, _ = shots
    args = ["batch", str(folder), "--out", str(tmp_path / "x.jsonl")]
    args += ["--emulator-info", str(emulator_info_file)]
    assert cli.main([*args, "--region", "us-central1"]) == 2  # Beam's options only with --runner
    assert "unrecognized arguments: --region us-central1" in capsys.readouterr().err
    with_runner = [*args, "--runner", "DirectRunner"]
    assert cli.main([*with_runner, "--save-annotated", str(tmp_path / "d")]) == 2
    assert "--save-annotated is the local engine's" in capsys.readouterr().err
    assert cli.main([*with_runner, "--conf", "3"]) == 2
    assert "argument --conf: must be between 0 and 1, got 3" in capsys.readouterr().err
    # refused by the server (a 4xx: not retried): the job fails, its error in one line, exit 3
    assert cli.main([*with_runner, "--classes", "hexagon"]) == 3
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("error: 400 from /detect: ") and "hexagon" in err[-1], err
    assert not list(tmp_path.glob("x-*"))


def test_bucket_to_bucket_through_our_handler_as_uris(emulator, shots, gcs):
    """gs:// listed by a worker, sent as gcsUri (the server reads them), pinned to shapes-a:
    both of its replicas answer."""
    _, truth = shots
    pinned = emulator.deployed_models["shapes-a"]
    ours = our_handler(emulator, deployed_model_id=pinned, max_images=4)
    out = "gs://outputs/beam/uris.jsonl"
    with beam.Pipeline(options=direct()) as pipeline:
        add_batch(pipeline, "gs://inputs/beam/", out, ours)
    rows = [json.loads(line) for line in read_lines(out)]
    check_lines(rows, truth)
    assert {row["deployed_model_id"] for row in rows} == {pinned}
    assert len({row.get("replica_id") for row in rows} - {None}) == 2
    assert all(s.startswith("gs://outputs/beam/uris-") for s in shards(out))


def test_bad_parameter_fails_clearly_and_bad_elements_are_refused(emulator, shots):
    common = {
        "project": emulator.project,
        "location": emulator.location,
        "api_endpoint": emulator.control_plane_url,
        "deployed_model_id": emulator.deployed_models["shapes-a"],
    }
    with pytest.raises(errors.ParameterError, match="conf"):
        YoloModelHandler(emulator.endpoint_id, params={"conf": 7}, **common)
    # what Beam retries with backoff, and what fails the bundle at once
    assert retryable(errors.RateLimitError("429", status=429))
    assert retryable(errors.UnavailableError("503", status=503))
    assert retryable(errors.ServerError("500", status=500)) and retryable(errors.ConnectionError())
    assert not retryable(errors.BadRequestError("400", status=400))
    assert not retryable(errors.PermissionDeniedError("403", status=403))
    with pytest.raises(errors.ParameterError, match="route 'stream'"):
        YoloModelHandler(emulator.endpoint_id, route="stream", **common)
    handler = YoloModelHandler(emulator.endpoint_id, params={"classes": ["hexagon"]}, **common)
    with handler.create_client() as client:
        with pytest.raises(errors.BadRequestError, match="hexagon"):  # a 4xx: not retried
            handler.request([(shots[0] / "scene-00.jpg").read_bytes()], client)
        with pytest.raises(errors.ParameterError, match="not int"):
            handler.request([7], client)


def test_keyed_bytes_and_uris_other_routes_and_requests_within_the_limits(emulator, shots):
    """(key, image) elements name their lines; /segment through the segmenting deployed model;
    a batch split into requests by ``max_images`` and ``max_body_bytes``, an image over the
    limit a line of its own, never sent."""
    folder, _ = shots
    data = [(folder / f"scene-{i:02d}.jpg").read_bytes() for i in range(3)]
    common = {
        "project": emulator.project,
        "location": emulator.location,
        "api_endpoint": emulator.control_plane_url,
    }
    seg = YoloModelHandler(
        emulator.endpoint_id,
        route="segment",
        deployed_model_id=emulator.deployed_models["shapes-b"],
        **common,
    )
    with seg.create_client() as client:
        found = seg.request([("one", data[0]), ("two", "gs://inputs/beam/scene-01.jpg")], client)
    lines = [p.inference for p in found]
    assert [line.input for line in lines] == ["one", "two"]
    assert all(line.result.detections and line.result.detections[0].mask for line in lines)
    assert {p.model_id for p in found} == {emulator.deployed_models["shapes-b"]}

    limit = max(map(len, data)) + 300
    small = YoloModelHandler(
        emulator.endpoint_id,
        deployed_model_id=emulator.deployed_models["shapes-a"],
        max_body_bytes=limit,
        **common,
    )
    items = [small._item(d) for d in (*data, b"\xff" * (limit + 1))]
    requests = small._pack(items)
    assert len(requests) > 1 and all(sum(i.weight for i in r) <= limit for r in requests)
    assert sorted(id(i) for r in requests for i in r) == sorted(map(id, items[:3]))
    assert items[3].line is not None and items[3].line.error.code == "payload-too-large"
    with small.create_client() as client:
        lines = [p.inference for p in small.request([*data, b"\xff" * (limit + 1)], client)]
    assert [line.error is None for line in lines] == [True, True, True, False]
    assert lines[0].input.startswith("sha1:")


def instance(name: str) -> tuple[str, dict]:
    if name.startswith("gs://"):
        return name, {"image": {"gcsUri": name}}
    return name, {"image": base64.b64encode(Path(name).read_bytes()).decode()}


def guide_line(keyed: tuple[str, Any]) -> str:
    """A line from Beam's own handler's (key, PredictionResult): its detections (``bbox`` as
    a box) or the server's problem."""
    name, prediction = keyed
    found = prediction.inference
    if "detections" not in found:
        return json.dumps({"input": name, "error": found})
    boxes = [
        {**d, "box": dict(zip(("x1", "y1", "x2", "y2"), d["bbox"], strict=True))}
        for d in found["detections"]
    ]
    result = {"detections": boxes}
    return json.dumps({"input": name, "result": result, "deployed_model_id": prediction.model_id})


@pytest.fixture
def all_on_a(emulator) -> Iterator[str]:
    """The split at 100 % shapes-a for the test (Beam's handler cannot pin), 80/20 again after."""
    from google.cloud import aiplatform

    aiplatform.init(**emulator.init_kwargs())
    endpoint = aiplatform.Endpoint(emulator.endpoint_id)
    a, b = emulator.deployed_models["shapes-a"], emulator.deployed_models["shapes-b"]
    endpoint.update(traffic_split={a: 100, b: 0})
    try:
        yield a
    finally:
        endpoint.update(traffic_split=emulator.traffic_split)


def test_beams_own_vertex_handler_on_invoke_predict(emulator, all_on_a, shots, tmp_path):
    """``VertexAIModelHandlerJSON(invoke_route="/predict")``, unchanged: base64 instances from
    the folder, gcsUri instances from the bucket, several in a request (predictions in order),
    each corrupt file alone (a request with one is refused whole: Beam's handler then gives
    its error body to every instance of it)."""
    from apache_beam.ml.inference.base import KeyedModelHandler
    from apache_beam.ml.inference.vertex_ai_inference import VertexAIModelHandlerJSON

    folder, truth = shots
    local = sorted(str(p) for p in folder.iterdir())
    remote = [f"gs://inputs/beam/{Path(n).name}" for n in local]

    def handler(batch: int) -> Any:
        return KeyedModelHandler(
            VertexAIModelHandlerJSON(
                endpoint_id=emulator.endpoint_id,
                project=emulator.project,
                location=emulator.location,
                invoke_route="/predict",
                min_batch_size=batch,
                max_batch_size=batch,
            )
        )

    out = tmp_path / "guide"
    with beam.Pipeline(options=direct()) as p:
        runs = []
        for label, names in (("local", local), ("gs", remote)):
            good = [n for n in names if "corrupt" not in n]
            bad = [n for n in names if "corrupt" in n]
            for part, items, batch in (("good", good, 10), ("bad", bad, 1)):
                runs.append(
                    p
                    | f"{label}-{part}" >> beam.Create([instance(n) for n in items])
                    | f"{label}-{part}-infer" >> RunInference(handler(batch))
                    | f"{label}-{part}-line" >> beam.Map(guide_line)
                    | f"{label}-{part}-tag" >> beam.Map(lambda line, label=label: (label, line))
                )
        for label in ("local", "gs"):
            (
                runs
                | f"{label}-all" >> beam.Flatten()
                | f"{label}-only" >> beam.Filter(lambda kv, label=label: kv[0] == label)
                | f"{label}-text" >> beam.Map(lambda kv: kv[1])
                | f"{label}-write"
                >> beam.io.WriteToText(str(out / label), file_name_suffix=".jsonl")
            )
    for label in ("local", "gs"):
        rows = [json.loads(line) for line in read_lines(str(out / f"{label}.jsonl"))]
        check_lines(rows, truth)
        assert {r["deployed_model_id"] for r in rows if "result" in r} == {all_on_a}


_killed = threading.Event()


class KillAfter(beam.DoFn):
    """Passes lines on; SIGKILLs ``pid`` once ``after`` lines have passed (the job goes on)."""

    def __init__(self, pid: int, after: int) -> None:
        self.pid, self.after = pid, after
        self.seen = 0

    def process(self, line: Any) -> Iterator[Any]:
        self.seen += 1
        if self.seen >= self.after and not _killed.is_set():
            _killed.set()
            os.kill(self.pid, signal.SIGKILL)
        yield line


def test_replica_killed_mid_job_loses_and_duplicates_nothing(
    emulator, emulator_process, shots, tmp_path
):
    folder, truth = shots
    a = emulator.deployed_models["shapes-a"]
    victim, _ = emulator_process.current().replicas[a]
    ours = our_handler(emulator, deployed_model_id=a, max_images=2)
    out = tmp_path / "killed.jsonl"
    _killed.clear()
    with beam.Pipeline(options=direct()) as p:
        (
            p
            | beam.Create(sorted(str(f) for f in folder.iterdir()))
            | RunInference(ours)
            | beam.Map(lambda prediction: prediction.inference)
            | beam.ParDo(KillAfter(victim.pid, after=6))
            | beam.Map(lambda line: msgspec.json.encode(line).decode())
            | beam.io.WriteToText(str(out.with_suffix("")), file_name_suffix=".jsonl")
        )
    assert _killed.is_set() and not pid_alive(victim.pid)
    rows = [json.loads(line) for line in read_lines(str(out))]
    check_lines(rows, truth)
    served = Counter(row.get("replica_id") for row in rows)
    assert any(str(victim.pid) in str(r) for r in served), served  # it served before it died

    def back() -> bool:
        replicas = emulator_process.current().replicas[a]
        return all(r.state == "ready" for r in replicas) and victim.pid not in {
            r.pid for r in replicas
        }

    wait_until(back, "the killed replica to be ready again")
