"""``python -m client deploy`` end to end against an emulator started empty: upload, create a
dedicated endpoint, deploy two models, split, undeploy, through the real SDK and real servers
(the deploy commands run in-process through ``client.cli.main``)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from google.api_core import exceptions as gexc
from google.cloud import aiplatform

from client import cli
from client.deploy import allocate_traffic
from client.emulator import ConfigError, Emulator, EmulatorInfo
from client.emulator.resources import ApiError, ContainerSpec, Store
from client.errors import ParameterError
from conftest import ROOT, free_port, pid_alive, wait_until
from helpers import upload as put

WEIGHTS = ROOT / "app" / "demo" / "weights"
IMAGE = "us-docker.pkg.dev/local-project/vertex-yolo/server:test"


@pytest.fixture(scope="module")
def emu(
    tmp_path_factory: pytest.TempPathFactory, gcs: Any
) -> Iterator[tuple[Emulator, EmulatorInfo]]:
    """An empty emulator; Cloud Storage (the session's GCS API server, which the emulator and
    its servers reach through STORAGE_EMULATOR_HOST) holds gs://weights/deploy/a (the detector)
    and gs://weights/deploy/b (the segmenter)."""
    workdir = tmp_path_factory.mktemp("deploy")
    for folder, weights in (("a", "shapes-detect.pt"), ("b", "shapes-segment.pt")):
        put(gcs, f"gs://weights/deploy/{folder}/{weights}", WEIGHTS / weights)
    emulator = Emulator(
        args=["--empty", "--log-dir", str(workdir / "logs")],
        env={"YOLO_CONFIG_DIR": str(workdir / "yolo-config"), "PYTHONUNBUFFERED": "1"},
        workdir=workdir,
        startup_timeout=240,
    )
    with emulator as info:
        yield emulator, info
    assert emulator.proc is not None and emulator.proc.returncode == 0, emulator.output()


@pytest.fixture
def info(emu: tuple[Emulator, EmulatorInfo], monkeypatch: pytest.MonkeyPatch) -> EmulatorInfo:
    for key, value in emu[1].env().items():
        monkeypatch.setenv(key, value)
    return emu[1]


def info_file(emu: tuple[Emulator, EmulatorInfo]) -> Path:
    assert emu[0].workdir is not None
    return emu[0].workdir / "info.json"


@pytest.fixture
def run(
    emu: tuple[Emulator, EmulatorInfo], info: EmulatorInfo, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """Run ``python -m client deploy ...`` against the emulator: (exit code, stdout, stderr)."""

    def call(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.main(["deploy", *args, "--emulator-info", str(info_file(emu))])
        out, err = capsys.readouterr()
        return code, out, err

    return call


def test_dry_run_makes_no_call(capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listens at the control plane given: a call would fail (after the SDK's retries)."""
    nowhere = ["--project", "p", "--location", "us-central1"]
    nowhere += ["--api-endpoint", f"http://127.0.0.1:{free_port()}", "--dry-run"]
    commands = [
        ["upload", "--display-name", "m", "--image-uri", IMAGE, "--artifact-uri", "gs://b/w"],
        ["create-endpoint", "--display-name", "e", "--inference-timeout", "900"],
        ["deploy", "--endpoint", "1", "--model", "2", "--traffic-percentage", "20"],
        ["split", "--endpoint", "1", "3=50", "4=50"],
        ["undeploy", "--endpoint", "1", "3"],
        ["status", "--endpoint", "1"],
    ]
    for command in commands:
        assert cli.main(["deploy", *command, *nowhere]) == 0, command
    out = capsys.readouterr().out
    assert out.count("aiplatform.init(project='p', location='us-central1'") == 6
    for expected in (
        "serving_container_invoke_route_prefix='/*'",
        "serving_container_health_route='/health'",
        "artifact_uri='gs://b/w'",
        "aiplatform.Endpoint.create(display_name='e', dedicated_endpoint_enabled=True, "
        "inference_timeout=900)",
        "endpoint.deploy(model=model, traffic_percentage=20, machine_type='n1-standard-4'",
        "endpoint.update(traffic_split={'3': 50, '4': 50})",
        "endpoint.undeploy(deployed_model_id='3')",
        "endpoint = aiplatform.Endpoint('1')",
    ):
        assert expected in out
    # The deploy options users ask for, waiting (endpoint.deploy) and not (its API client).
    options = ["--endpoint", "1", "--model", "2", "--max-replicas", "3", "--spot"]
    options += ["--autoscaling-target-request-count-per-minute", "60"]
    options += ["--enable-access-logging", "--deploy-request-timeout", "30"]
    assert cli.main(["deploy", "deploy", *options, *nowhere]) == 0
    assert cli.main(["deploy", "deploy", *options, "--no-wait", *nowhere]) == 0
    out = capsys.readouterr().out
    assert (
        "endpoint.deploy(model=model, machine_type='n1-standard-4', min_replica_count=1, "
        "max_replica_count=3, autoscaling_target_request_count_per_minute=60, spot=True, "
        "deploy_request_timeout=30.0, enable_access_logging=True)"
    ) in out
    assert "split = allocate_traffic(endpoint.traffic_split, None)" in out
    assert (
        "operation = endpoint.api_client.deploy_model(endpoint=endpoint.resource_name, "
        "deployed_model=aiplatform.gapic.DeployedModel(model=model.versioned_resource_name, "
        "dedicated_resources=aiplatform.gapic.DedicatedResources(machine_spec=aiplatform.gapic."
        "MachineSpec(machine_type='n1-standard-4'), min_replica_count=1, max_replica_count=3, "
        "autoscaling_metric_specs=[aiplatform.gapic.AutoscalingMetricSpec(metric_name="
        "'aiplatform.googleapis.com/prediction/online/request_count', target=60)], spot=True), "
        "enable_access_logging=True), traffic_split=split, timeout=30.0)"
    ) in out
    # Options Vertex would refuse (or the SDK drop) are refused before any call.
    for bad, message in [
        (["--min-replicas", "2", "--max-replicas", "1"], "max replicas 1 is below min replicas 2"),
        (["--min-replicas", "0"], "at least 1"),
        (["--autoscaling-target-cpu-utilization", "120"], "a percent in 1..100"),
        (["--autoscaling-target-accelerator-duty-cycle", "50"], "needs an accelerator"),
        (["--accelerator-type", "NVIDIA_L4"], "type and count together"),
    ]:
        assert cli.main(["deploy", "deploy", "--endpoint", "1", "--model", "2", *bad, *nowhere])
        assert message in capsys.readouterr().err, bad
    # Against Vertex (no --api-endpoint): no credentials are needed to print the calls.
    assert cli.main(["deploy", "status", "--endpoint", "1", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "aiplatform.init()"


def answers(endpoint: aiplatform.Endpoint, deployed_model_id: str | None = None) -> tuple:
    """Who answers ``/models``: (header deployed model id, body deployed model id, models)."""
    response = endpoint.invoke("/models", b"", {}, deployed_model_id=deployed_model_id)
    assert response.status_code == 200, response.text
    body = response.json()
    names = sorted(m["name"] for m in body["models"])
    return response.headers["X-Deployed-Model-Id"], body["deployed_model_id"], names


def test_deploy_flow(
    run, info: EmulatorInfo, emu: tuple[Emulator, EmulatorInfo], tmp_path: Path
) -> None:
    code, out, err = run(
        *("upload", "--display-name", "shapes-a", "--image-uri", IMAGE, "--json"),
        *("--artifact-uri", "gs://weights/deploy/a", "--env", "SERVE_WORKERS=1"),
    )
    assert code == 0, err
    model_a = json.loads(out)
    assert model_a["resource_name"].startswith(f"projects/{info.project}/locations/")
    assert model_a["version_id"] == "1"
    # A local directory (here a file:// URI) is used as it is: the replicas read it in place.
    local = tmp_path / "weights-b"
    local.mkdir()
    (local / "shapes-segment.pt").write_bytes((WEIGHTS / "shapes-segment.pt").read_bytes())
    code, out, err = run(
        *("upload", "--display-name", "shapes-b", "--image-uri", IMAGE),
        *("--artifact-uri", local.as_uri(), "--deployment-timeout", "240"),
    )
    assert code == 0, err
    model_b = out.split()[1]  # "model projects/.../models/ID (version 1)"
    assert model_b.startswith("projects/") and "(version 1)" in out
    assert aiplatform.Model(model_b).gca_resource.artifact_uri == str(local)

    code, out, err = run(
        "create-endpoint", "--display-name", "flow", "--inference-timeout", "300", "--json"
    )
    assert code == 0, err
    created = json.loads(out)
    endpoint_id = created["endpoint_id"]
    assert created["dedicated_endpoint_enabled"] is True
    assert created["dedicated_endpoint_dns"] == info.dedicated_endpoint_dns
    assert created["inference_timeout_s"] == 300 and created["deployed_models"] == []
    # The emulator started empty: its info file now follows this endpoint.
    assert EmulatorInfo.load(info_file(emu)).endpoint_id == endpoint_id

    # Not waiting: the deploy's operation (named under its endpoint, as Vertex's), then status.
    code, out, err = run(
        *("deploy", "--model", model_a["model_id"], "--traffic-percentage", "100", "--json"),
        *("--machine-type", "n1-standard-8", "--max-replicas", "2", "--no-wait"),
        *("--autoscaling-target-request-count-per-minute", "100000"),
    )
    assert code == 0, err
    pending = json.loads(out)
    endpoint_name = f"projects/{info.project}/locations/{info.location}/endpoints/{endpoint_id}"
    assert pending["endpoint"] == endpoint_name
    assert pending["operation"].startswith(endpoint_name + "/operations/")

    def deployed_models() -> list[dict]:
        code, out, err = run("status", "--json")
        assert code == 0, err
        return json.loads(out)["deployed_models"]

    wait_until(lambda: len(deployed_models()) == 1, "the deploy sent without waiting to finish")
    (status_a,) = deployed_models()
    a = status_a["id"]
    assert aiplatform.Endpoint(endpoint_id).traffic_split == {a: 100}
    assert (status_a["display_name"], status_a["machine_type"]) == ("shapes-a", "n1-standard-8")
    assert (status_a["min_replica_count"], status_a["max_replica_count"]) == (1, 2)
    assert status_a["autoscaling"] == {"request_count_per_minute": 100000}
    assert status_a["available_replica_count"] == 1 and len(status_a["replicas"]) == 1
    assert status_a["model"].split("/")[-1].startswith(model_a["model_id"])

    # Waiting, through endpoint.deploy: two replicas from the start.
    code, out, err = run(
        *("deploy", "--endpoint", endpoint_id, "--model", model_b, "--traffic-percentage", "20"),
        *("--min-replicas", "2", "--max-replicas", "2", "--spot", "--enable-access-logging"),
        *("--disable-container-logging", "--deploy-request-timeout", "120"),
    )
    assert code == 0, err
    b = out.split()[2]  # "deployed model ID"
    endpoint = aiplatform.Endpoint(endpoint_id)
    assert endpoint.traffic_split == {a: 80, b: 20}
    status_b = next(d for d in deployed_models() if d["id"] == b)
    assert status_b["spot"] and status_b["enable_access_logging"]
    assert status_b["disable_container_logging"] and status_b["available_replica_count"] == 2
    # 40 calls pinned to it: both replicas answer (least outstanding requests, ties in turn).
    replica_ids = Counter(
        endpoint.invoke("/models", b"", {}, deployed_model_id=b).headers["X-Replica-Id"]
        for _ in range(40)
    )
    assert len(replica_ids) == 2, replica_ids
    pids = {r["pid"] for r in status_b["replicas"]}
    assert {int(rid.rsplit("-", 1)[1]) for rid in replica_ids} == pids
    code, out, err = run("status")
    assert code == 0, err
    assert out.count("replica shapes-b-") == 2 and "restarts 0" in out, out
    assert "autoscaling on request_count_per_minute 100000" in out
    assert "n1-standard-4, spot, replicas 2-2, 2 up" in out

    code, out, err = run("split", f"{a}=60", f"{b}=60")
    assert code == cli.EXIT_API and "must sum to 100" in err, err
    code, out, err = run("split", f"{a}=50", f"{b}=50")
    assert code == 0, err
    assert aiplatform.Endpoint(endpoint_id).traffic_split == {a: 50, b: 50}

    # Pinned calls reach the model pinned; each served the weights its artifact held.
    assert answers(endpoint, a) == (a, a, ["shapes-detect"])
    assert answers(endpoint, b) == (b, b, ["shapes-segment"])
    seen = Counter(answers(endpoint)[0] for _ in range(30))
    assert set(seen) == {a, b}, seen

    code, out, err = run("status")
    assert code == 0, err
    assert (
        f"endpoint projects/{info.project}/locations/{info.location}/endpoints/{endpoint_id}" in out
    )
    assert f"dedicated DNS     {info.dedicated_endpoint_dns}" in out
    assert f"{a}   50%  shapes-a" in out and f"{b}   50%  shapes-b" in out

    fleet = EmulatorInfo.load(info_file(emu)).replicas
    a_pids, b_pids = ([r.pid for r in fleet[x]] for x in (a, b))
    code, out, err = run("undeploy", a)
    assert code == 0, err
    assert not any(map(pid_alive, a_pids)) and all(map(pid_alive, b_pids))
    assert aiplatform.Endpoint(endpoint_id).traffic_split == {b: 100}
    gone = requests.post(info.invoke_url("/models", a), data=b"", timeout=30)
    assert gone.status_code == 404 and a in gone.json()["error"]["message"]
    assert answers(aiplatform.Endpoint(endpoint_id)) == (b, b, ["shapes-segment"])

    # Deleting: --yes first; an endpoint with deployed models needs --force, which undeploys
    # them (the last one: the split ends empty, no server is left); a deployed model's model
    # cannot go before it is undeployed.
    code, out, err = run("delete-endpoint", "--endpoint", endpoint_id)
    assert code == cli.EXIT_USAGE and "cannot be undone: add --yes" in err, err
    code, out, err = run("delete-endpoint", "--endpoint", endpoint_id, "--yes")
    assert code == cli.EXIT_USAGE, err
    assert f"still has deployed models (shapes-b ({b})): --force undeploys them" in err, err
    code, out, err = run("delete-model", "--model", model_b, "--yes")
    assert code == cli.EXIT_API and f"is deployed (shapes-b ({b}) on endpoint" in err, err
    code, out, err = run("delete-endpoint", "--endpoint", endpoint_id, "--yes", "--force")
    assert code == 0, err
    assert out == f"deleted {endpoint_name} (after undeploying shapes-b ({b}))\n"
    assert not any(map(pid_alive, b_pids))
    assert EmulatorInfo.load(info_file(emu)).server_pids == {}
    assert EmulatorInfo.load(info_file(emu)).replicas == {}
    assert EmulatorInfo.load(info_file(emu)).endpoint_id == ""
    with pytest.raises(gexc.NotFound):
        aiplatform.Endpoint(endpoint_id).list_models()  # a GET of the endpoint
    for model in (model_a["resource_name"], model_b):
        code, out, err = run("delete-model", "--model", model, "--yes")
        assert code == 0 and out == f"deleted {model}\n", err
        with pytest.raises(gexc.NotFound):
            aiplatform.Model(model)


def test_bad_inputs(run, info: EmulatorInfo, emu: tuple[Emulator, EmulatorInfo]) -> None:
    code, out, err = run("create-endpoint", "--display-name", "bad", "--json")
    assert code == 0, err
    endpoint_id = json.loads(out)["endpoint_id"]
    target = ("--endpoint", endpoint_id)

    code, _, err = run("deploy", *target, "--model", "123")
    assert code == cli.EXIT_API and "NotFound" in err and "models/123" in err, err
    code, _, err = run("split", *target, "42=100")
    assert code == cli.EXIT_API and "'42' is not deployed on this endpoint" in err, err
    code, _, err = run("split", *target, "42=half")
    assert code == cli.EXIT_USAGE and "must be an integer" in err, err
    code, _, err = run("undeploy", *target, "42")
    assert code == cli.EXIT_API and "'42' is not deployed on this endpoint" in err, err
    code, _, err = run("create-endpoint", "--display-name", "x", "--inference-timeout", "4000")
    assert code == cli.EXIT_API and "inferenceTimeout" in err, err
    for uri in ("/no/such/dir", "file:///no/such/dir"):
        code, _, err = run(
            "upload", "--display-name", "x", "--image-uri", IMAGE, "--artifact-uri", uri
        )
        assert code == cli.EXIT_USAGE and "/no/such/dir is not a directory" in err, err
    code, _, err = run(
        "upload", "--display-name", "x", "--image-uri", IMAGE, "--artifact-uri", "s3://b/w"
    )
    assert code == cli.EXIT_USAGE and "give gs://BUCKET/PATH, a local directory or file://" in err

    def upload(name: str, *options: str) -> str:
        """Upload succeeds (nothing is checked before a deploy); the new model's id."""
        code, out, err = run(
            "upload", "--display-name", name, "--image-uri", IMAGE, "--json", *options
        )
        assert code == 0, err
        return json.loads(out)["model_id"]

    # An artifact the stand-in Cloud Storage does not hold: the deploy fails, nothing starts.
    lost = upload("lost", "--artifact-uri", "gs://weights/missing")
    code, _, err = run("deploy", *target, "--model", lost)
    assert code == cli.EXIT_API and "artifactUri gs://weights/missing holds no object" in err, err
    nowhere = upload("nowhere", "--artifact-uri", "gs://no-such-bucket/w")
    code, _, err = run("deploy", *target, "--model", nowhere)
    assert code == cli.EXIT_API and "gs://no-such-bucket/w: no such bucket" in err, err

    # A container that cannot start: the deploy operation fails with its log's tail.
    broken = upload("broken", "--env", "SERVE_MODELS=no-equals-sign")
    code, _, err = run("deploy", *target, "--model", broken)
    assert code == cli.EXIT_API, err
    assert "FailedPrecondition" in err and "exited with code 2" in err, err
    assert "SERVE_MODELS entry 'no-equals-sign' must look like name=source" in err, err
    assert aiplatform.Endpoint(endpoint_id).list_models() == []
    assert "broken" not in EmulatorInfo.load(info_file(emu)).server_pids

    # A deploy whose replica never answers its health route stays running (until its deployment
    # timeout, or the emulator's end): `deploy status` shows its operation after --no-wait.
    never = upload(
        "never", "--artifact-uri", "gs://weights/deploy/a", "--health-route", "/never-healthy"
    )
    code, out, err = run("deploy", *target, "--model", never, "--no-wait", "--json")
    assert code == 0, err
    operation = json.loads(out)["operation"]
    code, out, err = run("status", *target, "--json")
    assert code == 0 and json.loads(out)["running_operations"] == [operation], out
    code, out, err = run("status", *target)
    assert f"running           operation {operation} (not done yet)" in out, out


def test_allocate_traffic_is_the_sdks() -> None:
    """The split a deploy sent without waiting carries is the one ``Endpoint.deploy`` computes."""
    for split, percent in [
        ({}, None),
        ({"1": 100}, 20),
        ({"1": 33, "2": 67}, 10),
        ({"1": 50, "2": 50}, 0),
        ({"1": 50, "2": 50}, 100),
    ]:
        expected = aiplatform.Endpoint._allocate_traffic(
            split, percent or (100 if not split else 0)
        )
        assert allocate_traffic(split, percent) == expected
    with pytest.raises(ParameterError, match="the first takes 100%"):
        allocate_traffic({}, 30)


def test_vertex_rules_on_routes(info: EmulatorInfo, emu: tuple[Emulator, EmulatorInfo]) -> None:
    """Upload takes one of predictRoute and invokeRoutePrefix, and only the prefix "/*"; a model
    uploaded without it deploys (on Vertex's default health route, with a ':' in it) but invoke
    does not reach it."""
    aiplatform.init(**info.init_kwargs())
    with pytest.raises(
        gexc.BadRequest, match="predictRoute and containerSpec.invokeRoutePrefix cannot both"
    ):
        aiplatform.Model.upload(
            display_name="both",
            serving_container_image_uri=IMAGE,
            serving_container_predict_route="/predict",
            serving_container_invoke_route_prefix="/*",
        )
    with pytest.raises(
        gexc.BadRequest, match="invokeRoutePrefix must be \"/\\*\", not '/detect/\\*'"
    ):
        aiplatform.Model.upload(
            display_name="narrow",
            serving_container_image_uri=IMAGE,
            serving_container_invoke_route_prefix="/detect/*",
        )
    plain = aiplatform.Model.upload(
        display_name="plain",
        serving_container_image_uri=IMAGE,
        artifact_uri="gs://weights/deploy/a",
    )
    endpoint = aiplatform.Endpoint.create(display_name="rules", dedicated_endpoint_enabled=True)
    endpoint.deploy(plain, min_replica_count=1, max_replica_count=1)
    (deployed,) = endpoint.list_models()
    # The server took Vertex's default health route, ':' and all, and answers on it.
    route = f"/v1/endpoints/{endpoint.name}/deployedModels/{deployed.id}:predict"
    (replica,) = EmulatorInfo.load(info_file(emu)).replicas[deployed.id]
    assert requests.get(replica.url + route, timeout=30).json()["status"] == "ok"
    for pinned in (deployed.id, None):
        refused = endpoint.invoke("/models", b"", {}, deployed_model_id=pinned)
        assert refused.status_code == 400, refused.text
        assert "uploaded without invokeRoutePrefix" in refused.json()["error"]["message"]
    endpoint.undeploy_all()
    assert not pid_alive(replica.pid)


def test_store_split_rules() -> None:
    """Vertex's rules, on the store alone: the "0" key, undeploying a model that has traffic."""
    store = Store("p-project", "1", "us-central1")
    store.add_endpoint("e", "e", "127.0.0.1:1", 600)
    spec = ContainerSpec(image_uri=IMAGE, health_route="/health", invoke_route_prefix="/*")
    store.add_model("m", "m", spec)
    store.deploy("e", "m", "1", "one", traffic_split={"0": 100})
    with pytest.raises(ApiError, match="must sum to 100"):
        store.check_deploy_split("e", {"0": 30, "1": 30})
    with pytest.raises(ApiError, match=r"\['7'\].*not deployed"):
        store.check_deploy_split("e", {"0": 50, "7": 50})
    store.deploy("e", "m@1", "2", "two", traffic_split={"0": 20, "1": 80})
    assert store.endpoint("e").traffic_split == {"1": 80, "2": 20}
    with pytest.raises(ApiError, match="still takes 80% of the traffic") as failure:
        store.undeploy("e", "1", None)
    assert failure.value.status == "FAILED_PRECONDITION"
    with pytest.raises(ApiError, match="gives 10% to 1"):
        store.undeploy("e", "1", {"1": 10, "2": 90})
    store.undeploy("e", "1", {"2": 100})
    assert store.endpoint("e").traffic_split == {"2": 100}
    store.undeploy("e", "2", None)  # the last one may take its traffic with it
    assert store.endpoint("e").traffic_split == {} and store.endpoint("e").deployed_models == []


def test_empty_flag_excludes_deployments() -> None:
    from client.emulator.__main__ import build_config, parser

    assert build_config(parser().parse_args(["--empty"])).deployed_models == ()
    with pytest.raises(ConfigError, match="--empty deploys nothing at start"):
        build_config(parser().parse_args(["--empty", "--deploy", "a"]))
