"""Deploy to Vertex AI: upload a model, create a dedicated endpoint, deploy, split, undeploy,
delete.

Every action is data (:data:`ACTIONS`): the options it takes, the SDK calls it makes
(:class:`SdkCall`, built from those options) and how the result of the calls reads. A real run
executes exactly the calls that ``--dry-run`` prints (:func:`execute` interprets them against
``google.cloud.aiplatform``), so the two cannot drift apart. The same calls run against Vertex AI
and against the local emulator (``python -m client.emulator --empty``), whose control plane the
SDK reaches over REST (:mod:`client.vertex`).

The library functions (:func:`upload_model`, :func:`create_endpoint`, :func:`deploy_model`,
:func:`set_traffic_split`, :func:`undeploy_model`, :func:`endpoint_status`,
:func:`delete_endpoint`, :func:`delete_model`) run one action each and return a Struct; call
:meth:`Connection.init` first. ``python -m client deploy`` is
``client/cli/deploy.py``.

Example:
    conn = Connection(project="p", location="us-central1")
    conn.init()
    model = upload_model(UploadSpec(display_name="yolo", image_uri=IMAGE, artifact_uri=GS))
    endpoint = create_endpoint("yolo-endpoint", inference_timeout=600)
    deployment = deploy_model(endpoint.resource_name, model.resource_name, traffic_percentage=100)
    set_traffic_split(endpoint.resource_name, {deployment.deployed_model_id: 100})
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import msgspec

from client import errors, vertex
from client.info import EmulatorInfo, ReplicaStatus, ScaleEvent

DEFAULT_MACHINE_TYPE = "n1-standard-4"
INVOKE_ROUTE_PREFIX = "/*"  # every path of the container under /invoke (the only allowed value)


# -- SDK calls as data ------------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    """A value that is the result of an earlier call (or one the run supplies), by name, dotted
    for an attribute of it (``endpoint.resource_name``); printed as ``shown`` (default: the
    name)."""

    name: str
    shown: str | None = None

    def __repr__(self) -> str:
        return self.shown or self.name


@dataclass(frozen=True, repr=False)
class SdkCall:
    """One SDK call, as ``--dry-run`` prints it: ``result = func(*args, **kwargs)``.

    ``func`` is dotted: ``aiplatform.Model.upload``, or ``endpoint.deploy`` on an earlier
    call's result; arguments may be :class:`Ref` to earlier results, or calls themselves (a
    request message built in place: ``aiplatform.gapic.MachineSpec(...)``), in lists too.
    """

    func: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    result: str | None = None

    def __repr__(self) -> str:
        params = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.func}({', '.join(params)})"

    def __str__(self) -> str:
        return f"{self.result} = {self!r}" if self.result else repr(self)


def execute(calls: Sequence[SdkCall], names: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Make the calls, in order, with ``google.cloud.aiplatform`` as ``aiplatform`` (and
    :func:`allocate_traffic`); return every named value (``names`` and the calls' results)."""
    from google.cloud import aiplatform

    scope: dict[str, Any] = {
        "aiplatform": aiplatform,
        "allocate_traffic": allocate_traffic,
        "running_operations": running_operations,
        **(names or {}),
    }

    def lookup(dotted: str) -> Any:
        first, *path = dotted.split(".")
        found = scope[first]
        for attribute in path:
            found = getattr(found, attribute)
        return found

    def value(v: Any) -> Any:
        if isinstance(v, Ref):
            return lookup(v.name)
        if isinstance(v, SdkCall):
            return call(v)
        if isinstance(v, list):
            return [value(item) for item in v]
        return v

    def call(c: SdkCall) -> Any:
        return lookup(c.func)(*map(value, c.args), **{k: value(v) for k, v in c.kwargs.items()})

    for c in calls:
        result = call(c)
        if c.result:
            scope[c.result] = result
    return scope


# -- results ----------------------------------------------------------------------------------


class UploadedModel(msgspec.Struct, frozen=True, kw_only=True):
    resource_name: str
    model_id: str
    version_id: str
    display_name: str


#: the autoscaling targets a deploy can set, by option name, as Vertex names their metrics
AUTOSCALING_METRICS = {
    "cpu_utilization": "aiplatform.googleapis.com/prediction/online/cpu/utilization",
    "accelerator_duty_cycle": "aiplatform.googleapis.com/prediction/online/accelerator/duty_cycle",
    "request_count_per_minute": "aiplatform.googleapis.com/prediction/online/request_count",
}


class DeployedModelStatus(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    display_name: str
    model: str
    traffic_percentage: int
    machine_type: str | None = None
    accelerator_type: str | None = None
    accelerator_count: int | None = None
    min_replica_count: int | None = None
    max_replica_count: int | None = None
    available_replica_count: int | None = None  # replicas serving now
    autoscaling: dict[str, int] = {}  # AUTOSCALING_METRICS name -> target
    spot: bool = False
    enable_access_logging: bool = False
    disable_container_logging: bool = False
    replicas: list[ReplicaStatus] | None = None  # with an emulator's info file only
    # (Vertex does not show its replicas' pods)


class EndpointStatus(msgspec.Struct, frozen=True, kw_only=True):
    """An endpoint as the control plane describes it: what ``deploy status`` prints."""

    resource_name: str
    endpoint_id: str
    display_name: str
    dedicated_endpoint_enabled: bool
    dedicated_endpoint_dns: str | None
    inference_timeout_s: float | None
    traffic_split: dict[str, int]
    deployed_models: list[DeployedModelStatus]
    scale_events: list[ScaleEvent] | None = None  # with an emulator's info file only
    # long-running operations on the endpoint not done yet (a deploy sent with --no-wait...);
    # None when the control plane would not list them
    running_operations: list[str] | None = None


class Deleted(msgspec.Struct, frozen=True, kw_only=True):
    """A deleted endpoint or model; ``undeployed``: the deployed models taken off first
    (``delete-endpoint --force``), as ``name (id)``."""

    resource_name: str
    undeployed: list[str] = []


class Deployment(msgspec.Struct, frozen=True, kw_only=True):
    deployed_model_id: str
    endpoint: EndpointStatus


class PendingDeployment(msgspec.Struct, frozen=True, kw_only=True):
    """A deploy sent without waiting (``--no-wait``): its long-running operation."""

    operation: str
    endpoint: str


def running_operations(endpoint: Any) -> list[str] | None:
    """The names of the endpoint's long-running operations not done yet (ListOperations on the
    endpoint); None when the control plane refuses to list them (status goes on without)."""
    from google.api_core import exceptions as gexc

    try:
        found = endpoint.api_client.list_operations(request={"name": endpoint.resource_name})
    except (gexc.GoogleAPICallError, NotImplementedError):
        return None
    operations = getattr(found, "operations", found)
    return [o.name for o in operations if not o.done]


def status(endpoint: Any, running: list[str] | None = None) -> EndpointStatus:
    """An ``aiplatform.Endpoint`` (as last read) as an :class:`EndpointStatus`."""
    resource = endpoint.gca_resource
    split = {k: int(v) for k, v in resource.traffic_split.items()}
    metric_names = {metric: name for name, metric in AUTOSCALING_METRICS.items()}
    models = []
    for d in resource.deployed_models:
        resources = d.dedicated_resources
        spec = resources.machine_spec
        accelerator = spec.accelerator_type.name if spec.accelerator_type else None
        targets = {
            metric_names.get(m.metric_name, m.metric_name): m.target
            for m in resources.autoscaling_metric_specs
        }
        models.append(
            DeployedModelStatus(
                id=d.id,
                display_name=d.display_name,
                model=d.model,
                traffic_percentage=split.get(d.id, 0),
                machine_type=spec.machine_type or None,
                accelerator_type=accelerator,
                accelerator_count=spec.accelerator_count or None,
                min_replica_count=resources.min_replica_count or None,
                max_replica_count=resources.max_replica_count or None,
                available_replica_count=d.status.available_replica_count if d.status else None,
                autoscaling=targets,
                spot=resources.spot,
                enable_access_logging=d.enable_access_logging,
                disable_container_logging=d.disable_container_logging,
            )
        )
    timeout = resource.client_connection_config.inference_timeout
    return EndpointStatus(
        resource_name=resource.name,
        endpoint_id=resource.name.rsplit("/", 1)[-1],
        display_name=resource.display_name,
        dedicated_endpoint_enabled=resource.dedicated_endpoint_enabled,
        dedicated_endpoint_dns=resource.dedicated_endpoint_dns or None,
        inference_timeout_s=timeout.total_seconds() if timeout else None,
        traffic_split=split,
        deployed_models=models,
        running_operations=running,
    )


def with_replicas(endpoint: EndpointStatus, info_file: str) -> EndpointStatus:
    """``endpoint`` with its deployed models' replicas and scale events from a running
    emulator's info file."""
    try:
        fleet = EmulatorInfo.load(info_file)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise errors.ParameterError(f"cannot read {info_file}: {exc}") from None
    ids = {d.id for d in endpoint.deployed_models}
    return msgspec.structs.replace(
        endpoint,
        deployed_models=[
            msgspec.structs.replace(d, replicas=fleet.replicas.get(d.id, []))
            for d in endpoint.deployed_models
        ],
        scale_events=[e for e in fleet.scale_events if e.deployed_model_id in ids],
    )


def status_lines(endpoint: EndpointStatus) -> list[str]:
    """The endpoint, one line per field, then each deployed model (and, from an emulator, its
    replicas and the scale events)."""
    timeout = f"{endpoint.inference_timeout_s:g} s" if endpoint.inference_timeout_s else "default"
    lines = [
        f"endpoint {endpoint.resource_name}",
        f"  display name      {endpoint.display_name}",
        f"  dedicated         {endpoint.dedicated_endpoint_enabled}",
        f"  dedicated DNS     {endpoint.dedicated_endpoint_dns or '-'}",
        f"  inference timeout {timeout}",
        f"  deployed models   {len(endpoint.deployed_models) or 'none'}",
    ]
    for name in endpoint.running_operations or []:
        lines.insert(-1, f"  running           operation {name} (not done yet)")
    for d in endpoint.deployed_models:
        machine = d.machine_type or "?"
        if d.accelerator_type:
            machine += f" + {d.accelerator_count or 1} x {d.accelerator_type}"
        if d.spot:
            machine += ", spot"
        available = "" if d.available_replica_count is None else f", {d.available_replica_count} up"
        lines.append(
            f"    {d.id}  {d.traffic_percentage:3d}%  {d.display_name}  ({d.model}; {machine}, "
            f"replicas {d.min_replica_count}-{d.max_replica_count}{available})"
        )
        if d.autoscaling:
            targets = ", ".join(f"{k} {v}" for k, v in d.autoscaling.items())
            lines.append(f"      autoscaling on {targets}")
        for r in d.replicas or []:
            lines.append(
                f"      replica {r.id}  {r.state:8s}  pid {r.pid or '-'}  port {r.port}  "
                f"restarts {r.restarts}"
            )
    if endpoint.scale_events:
        lines.append("  scale events")
        for e in endpoint.scale_events:
            lines.append(
                f"    {e.time}  {e.name} ({e.deployed_model_id})  {e.replicas_from} -> "
                f"{e.replicas_to}  {e.reason}"
            )
    return lines


# -- connection -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """Where the SDK sends its calls. ``api_endpoint`` (an emulator's ``http://host:port``)
    switches to the REST transport and anonymous credentials; without it the SDK uses Vertex AI
    and the default Google credentials."""

    project: str | None = None
    location: str | None = None
    api_endpoint: str | None = None

    def init_call(self) -> SdkCall:
        """``aiplatform.init(...)`` (credentials as a :class:`Ref` the run supplies)."""
        kwargs = vertex.init_kwargs(self.project, self.location, self.api_endpoint)
        if "credentials" in kwargs:
            kwargs["credentials"] = Ref("credentials", f"{type(kwargs['credentials']).__name__}()")
        return SdkCall("aiplatform.init", kwargs=kwargs)

    def init(self) -> None:
        """``aiplatform.init`` with these settings (the SDK's configuration is global)."""
        vertex.loopback_without_proxy(self.api_endpoint)
        credentials = vertex.init_kwargs(self.project, self.location, self.api_endpoint)
        _run([self.init_call()], lambda _: None, {"credentials": credentials.get("credentials")})


# -- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One option of an action (the command line gives it as ``--name``, or positionally).

    ``kind`` converts the text; ``many`` collects repeats into a list (or, positional, takes
    one or more values); ``flag`` is a switch (False unless given).
    """

    name: str
    help: str
    kind: Callable[[str], Any] = str
    default: Any = None
    required: bool = False
    many: bool = False
    positional: bool = False
    metavar: str | None = None
    flag: bool = False


@dataclass(frozen=True)
class Action:
    """One deploy action: its options, the SDK calls they make, and the result of the calls.

    ``calls(options)`` builds the calls from the options (a dict by option name, plus
    ``endpoint`` when ``needs_endpoint``); ``result(scope)`` reads the executed calls' named
    values into a Struct; ``lines(result)`` is how it prints.
    """

    name: str
    help: str
    options: tuple[Option, ...]
    calls: Callable[[Mapping[str, Any]], list[SdkCall]]
    result: Callable[[Mapping[str, Any]], msgspec.Struct]
    lines: Callable[[Any], list[str]]
    needs_endpoint: bool = True
    confirm: str | None = None  # what it deletes: a run needs --yes

    def run(self, options: Mapping[str, Any]) -> msgspec.Struct:
        """Make the calls (the SDK initialised: :meth:`Connection.init`) and read the result;
        the SDK's progress messages go to stderr."""
        progress_to_stderr()
        return _run(self.calls(options), self.result)


@dataclass(frozen=True)
class UploadSpec:
    """``Model.upload`` for this server's image: every path under ``/invoke`` (``/*``).

    ``artifact_uri`` is a ``gs://`` directory of weights (the server's ``AIP_STORAGE_URI``), or a
    local directory / ``file://`` URI (see :func:`upload_calls`; on Vertex with
    ``staging_bucket``, the ``gs://`` bucket the SDK copies it to); ``env``
    the container's environment (``SERVE_MODELS``...); ``args`` its command-line arguments;
    ``deployment_timeout`` the seconds a deployment may take to become healthy.
    """

    display_name: str
    image_uri: str
    artifact_uri: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    args: Sequence[str] = ()
    port: int = 8080
    health_route: str = "/health"
    deployment_timeout: int | None = None
    staging_bucket: str | None = None


def local_artifacts(artifact_uri: str) -> str | None:
    """The local directory a ``file://`` URI or a path names (made absolute); None for
    ``gs://``. A directory that does not exist is a ParameterError."""
    if artifact_uri.startswith("gs://"):
        return None
    if artifact_uri.startswith("file://"):
        path = Path(unquote(urlparse(artifact_uri).path))
    elif "://" in artifact_uri:
        raise errors.ParameterError(
            f"artifact URI {artifact_uri!r}: give gs://BUCKET/PATH, a local directory or file://"
        )
    else:
        path = Path(artifact_uri)
    if not path.is_dir():
        raise errors.ParameterError(f"artifact URI {artifact_uri}: {path} is not a directory")
    return str(path.resolve())


def upload_calls(spec: UploadSpec, emulator: bool = False) -> list[SdkCall]:
    """``Model.upload``. A local directory (or ``file://``) as the artifact URI: on Vertex the
    SDK copies it to ``spec.staging_bucket`` first (required: no bucket made behind your back);
    on the emulator (``emulator``) it is sent as it is, the upload request made through the
    SDK's model client (``Model.upload`` would stage it), and the replicas read it in place."""
    local = local_artifacts(spec.artifact_uri) if spec.artifact_uri else None
    if local and emulator:
        return _upload_request_calls(spec, local)
    if local and not spec.staging_bucket:
        raise errors.ParameterError(
            f"artifact URI {spec.artifact_uri} is local: Vertex reads gs:// only; give "
            "--staging-bucket gs://BUCKET (the SDK copies the directory there first)"
        )
    if spec.staging_bucket and not spec.staging_bucket.startswith("gs://"):
        raise errors.ParameterError(f"staging bucket {spec.staging_bucket!r}: give gs://BUCKET")
    kwargs: dict[str, Any] = {
        "display_name": spec.display_name,
        "serving_container_image_uri": spec.image_uri,
        "serving_container_invoke_route_prefix": INVOKE_ROUTE_PREFIX,
        "serving_container_health_route": spec.health_route,
        "serving_container_ports": [spec.port],
    }
    optional = {
        "artifact_uri": local or spec.artifact_uri,
        "staging_bucket": spec.staging_bucket if local else None,
        "serving_container_environment_variables": dict(spec.env) or None,
        "serving_container_args": list(spec.args) or None,
        "serving_container_deployment_timeout": spec.deployment_timeout,
    }
    kwargs |= {k: v for k, v in optional.items() if v is not None}
    return [SdkCall("aiplatform.Model.upload", kwargs=kwargs, result="model")]


def _upload_request_calls(spec: UploadSpec, artifact_uri: str) -> list[SdkCall]:
    """The UploadModel request ``Model.upload`` makes for ``spec`` (the fields it fills, the
    default version alias), with ``artifact_uri`` as it is, through the SDK's model client."""
    container: dict[str, Any] = {
        "image_uri": spec.image_uri,
        "ports": [SdkCall("aiplatform.gapic.Port", kwargs={"container_port": spec.port})],
        "health_route": spec.health_route,
        "invoke_route_prefix": INVOKE_ROUTE_PREFIX,
    }
    if spec.env:
        container["env"] = [
            SdkCall("aiplatform.gapic.EnvVar", kwargs={"name": k, "value": v})
            for k, v in spec.env.items()
        ]
    if spec.args:
        container["args"] = list(spec.args)
    if spec.deployment_timeout is not None:
        container["deployment_timeout"] = {"seconds": spec.deployment_timeout}
    model = SdkCall(
        "aiplatform.gapic.Model",
        kwargs={
            "display_name": spec.display_name,
            "artifact_uri": artifact_uri,
            "container_spec": SdkCall("aiplatform.gapic.ModelContainerSpec", kwargs=container),
            "version_aliases": ["default"],
        },
    )
    config = "aiplatform.initializer.global_config"
    return [
        SdkCall(
            f"{config}.create_client",
            kwargs={"client_class": Ref("aiplatform.Model.client_class")},
            result="models",
        ),
        SdkCall(f"{config}.common_location_path", result="parent"),
        SdkCall(
            "models.upload_model", kwargs={"parent": Ref("parent"), "model": model}, result="lro"
        ),
        SdkCall("lro.result", result="uploaded"),
        SdkCall("aiplatform.Model", (Ref("uploaded.model"),), result="model"),
    ]


def _uploaded(scope: Mapping[str, Any]) -> UploadedModel:
    model = scope["model"]
    return UploadedModel(
        resource_name=model.resource_name,
        model_id=model.name,
        version_id=model.version_id or "",
        display_name=model.display_name,
    )


def create_endpoint_calls(
    display_name: str, *, inference_timeout: int | None = None, endpoint_id: str | None = None
) -> list[SdkCall]:
    kwargs: dict[str, Any] = {"display_name": display_name, "dedicated_endpoint_enabled": True}
    if inference_timeout is not None:
        kwargs["inference_timeout"] = inference_timeout
    if endpoint_id is not None:
        kwargs["endpoint_id"] = endpoint_id
    return [SdkCall("aiplatform.Endpoint.create", kwargs=kwargs, result="endpoint")]


@dataclass(frozen=True)
class DeploySpec:
    """``endpoint.deploy``'s options: the machine, the replicas and how they scale, logging.

    ``min_replica_count`` replicas serve from the start; Vertex adds up to ``max_replica_count``
    when a target is passed (CPU or accelerator duty cycle in percent, requests per minute per
    replica; with none, Vertex scales on CPU at 60 %). ``accelerator_duty_cycle`` needs an
    accelerator. ``spot``: preemptible VMs. ``deploy_request_timeout``: seconds for the deploy
    request itself (not for the deployment). ``wait=False`` sends the deploy and returns its
    operation (``deploy status`` shows the deployed model once its replicas are healthy).
    """

    display_name: str | None = None
    traffic_percentage: int | None = None
    machine_type: str = DEFAULT_MACHINE_TYPE
    accelerator_type: str | None = None
    accelerator_count: int | None = None
    min_replica_count: int = 1
    max_replica_count: int = 1
    cpu_utilization: int | None = None
    accelerator_duty_cycle: int | None = None
    request_count_per_minute: int | None = None
    spot: bool = False
    deploy_request_timeout: float | None = None
    enable_access_logging: bool = False
    disable_container_logging: bool = False
    wait: bool = True

    def check(self) -> None:
        """Refuse what Vertex would refuse (or the SDK silently drop), before any call."""
        if self.min_replica_count < 1:
            raise errors.ParameterError(f"min replicas {self.min_replica_count}: at least 1")
        if self.max_replica_count < self.min_replica_count:
            raise errors.ParameterError(
                f"max replicas {self.max_replica_count} is below min replicas "
                f"{self.min_replica_count}"
            )
        for name in ("cpu_utilization", "accelerator_duty_cycle"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= 100:
                raise errors.ParameterError(f"{name} target {value}: a percent in 1..100")
        if self.request_count_per_minute is not None and self.request_count_per_minute < 1:
            raise errors.ParameterError("the request count per minute target must be >= 1")
        if bool(self.accelerator_type) != bool(self.accelerator_count):
            raise errors.ParameterError(
                "give the accelerator's type and count together (--accelerator-type, "
                "--accelerator-count)"
            )
        if self.accelerator_duty_cycle is not None and not self.accelerator_type:
            raise errors.ParameterError(
                "an accelerator duty cycle target needs an accelerator (--accelerator-type)"
            )
        if self.traffic_percentage is not None and not 0 <= self.traffic_percentage <= 100:
            raise errors.ParameterError(f"traffic percentage {self.traffic_percentage}: 0..100")

    def targets(self) -> dict[str, int]:
        return {
            name: target
            for name in AUTOSCALING_METRICS
            if (target := getattr(self, name)) is not None
        }


def allocate_traffic(split: Mapping[str, int], percent: int | None) -> dict[str, int]:
    """The split of a deploy that gives the new model (``"0"``) ``percent`` and scales the
    others down, as ``Endpoint.deploy`` computes it (the first model on an endpoint takes 100)."""
    if not split:
        if percent not in (None, 0, 100):
            raise errors.ParameterError(
                f"the endpoint has no deployed model: the first takes 100% of the traffic, not "
                f"{percent}%"
            )
        return {"0": 100}
    percent = percent or 0
    if percent == 100:
        return {"0": 100}
    rest = 100 - percent
    new = {k: int(v / 100 * rest) for k, v in split.items()}
    left = rest - sum(new.values())
    for key in list(new)[:left]:
        new[key] += 1
    return {**new, "0": percent}


def deploy_calls(endpoint: str, model: str, spec: DeploySpec = DeploySpec()) -> list[SdkCall]:
    """``endpoint.deploy`` with ``spec``; with ``spec.wait`` off, the same request through the
    SDK's API client (``deploy_model``), which returns the operation instead of waiting."""
    spec.check()
    reads = [
        SdkCall("aiplatform.Endpoint", (endpoint,), result="endpoint"),
        SdkCall("aiplatform.Model", (model,), result="model"),
    ]
    if not spec.wait:
        return reads + _deploy_request_calls(spec)
    kwargs: dict[str, Any] = {"model": Ref("model")}
    optional = {
        "deployed_model_display_name": spec.display_name,
        "traffic_percentage": spec.traffic_percentage,
        "machine_type": spec.machine_type,
        "accelerator_type": spec.accelerator_type,
        "accelerator_count": spec.accelerator_count,
        "min_replica_count": spec.min_replica_count,
        "max_replica_count": spec.max_replica_count,
        **{f"autoscaling_target_{name}": target for name, target in spec.targets().items()},
        "spot": spec.spot or None,
        "deploy_request_timeout": spec.deploy_request_timeout,
        "enable_access_logging": spec.enable_access_logging or None,
        "disable_container_logging": spec.disable_container_logging or None,
    }
    kwargs |= {k: v for k, v in optional.items() if v is not None}
    return reads + [
        SdkCall("endpoint.list_models", result="before"),
        SdkCall("endpoint.deploy", kwargs=kwargs),
    ]


def _deploy_request_calls(spec: DeploySpec) -> list[SdkCall]:
    """The DeployModel request ``endpoint.deploy`` makes for ``spec`` (its own fields, as the SDK
    fills them), sent through the endpoint's API client without waiting for the operation."""
    machine: dict[str, Any] = {"machine_type": spec.machine_type}
    if spec.accelerator_type:
        machine |= {
            "accelerator_type": spec.accelerator_type,
            "accelerator_count": spec.accelerator_count,
        }
    resources: dict[str, Any] = {
        "machine_spec": SdkCall("aiplatform.gapic.MachineSpec", kwargs=machine),
        "min_replica_count": spec.min_replica_count,
        "max_replica_count": spec.max_replica_count,
    }
    if spec.targets():
        resources["autoscaling_metric_specs"] = [
            SdkCall(
                "aiplatform.gapic.AutoscalingMetricSpec",
                kwargs={"metric_name": AUTOSCALING_METRICS[name], "target": target},
            )
            for name, target in spec.targets().items()
        ]
    if spec.spot:
        resources["spot"] = True
    deployed: dict[str, Any] = {
        "model": Ref("model.versioned_resource_name"),
        "dedicated_resources": SdkCall("aiplatform.gapic.DedicatedResources", kwargs=resources),
    }
    optional = {
        "display_name": spec.display_name,
        "enable_access_logging": spec.enable_access_logging or None,
        "disable_container_logging": spec.disable_container_logging or None,
    }
    deployed |= {k: v for k, v in optional.items() if v is not None}
    request: dict[str, Any] = {
        "endpoint": Ref("endpoint.resource_name"),
        "deployed_model": SdkCall("aiplatform.gapic.DeployedModel", kwargs=deployed),
        "traffic_split": Ref("split"),
    }
    if spec.deploy_request_timeout is not None:
        request["timeout"] = spec.deploy_request_timeout
    return [
        SdkCall(
            "allocate_traffic",
            (Ref("endpoint.traffic_split"), spec.traffic_percentage),
            result="split",
        ),
        SdkCall("endpoint.api_client.deploy_model", kwargs=request, result="operation"),
    ]


def _deployment(scope: Mapping[str, Any]) -> Deployment | PendingDeployment:
    """The endpoint after the deploy (the SDK re-reads it) and the deployed model it gained; or,
    not waiting, the deploy's operation."""
    if "operation" in scope:
        return PendingDeployment(
            operation=scope["operation"].operation.name, endpoint=scope["endpoint"].resource_name
        )
    endpoint = status(scope["endpoint"])
    before = {d.id for d in scope["before"]}
    new = [d.id for d in endpoint.deployed_models if d.id not in before]
    return Deployment(deployed_model_id=new[0] if new else "", endpoint=endpoint)


def _deployment_lines(result: Deployment | PendingDeployment) -> list[str]:
    if isinstance(result, PendingDeployment):
        return [
            f"deploying: operation {result.operation}",
            "the deployed model appears in `deploy status` once its replicas are healthy",
        ]
    return [f"deployed model {result.deployed_model_id}", *status_lines(result.endpoint)]


def split_calls(endpoint: str, split: Mapping[str, int]) -> list[SdkCall]:
    return [
        SdkCall("aiplatform.Endpoint", (endpoint,), result="endpoint"),
        SdkCall("endpoint.update", kwargs={"traffic_split": dict(split)}, result="endpoint"),
    ]


def undeploy_calls(endpoint: str, deployed_model_id: str) -> list[SdkCall]:
    return [
        SdkCall("aiplatform.Endpoint", (endpoint,), result="endpoint"),
        SdkCall("endpoint.undeploy", kwargs={"deployed_model_id": deployed_model_id}),
    ]


def status_calls(endpoint: str) -> list[SdkCall]:
    return [
        SdkCall("aiplatform.Endpoint", (endpoint,), result="endpoint"),
        SdkCall("running_operations", (Ref("endpoint"),), result="running"),
    ]


def _endpoint(scope: Mapping[str, Any]) -> EndpointStatus:
    return status(scope["endpoint"], scope.get("running"))


def delete_endpoint_calls(endpoint: str, force: bool = False) -> list[SdkCall]:
    """``endpoint.delete``; ``force``: the SDK undeploys every deployed model first (the ones
    without traffic first), then deletes."""
    return [
        SdkCall("aiplatform.Endpoint", (endpoint,), result="endpoint"),
        SdkCall("endpoint.list_models", result="before"),
        SdkCall("endpoint.delete", kwargs={"force": True} if force else {}),
    ]


def _deleted_endpoint(scope: Mapping[str, Any]) -> Deleted:
    undeployed = [f"{d.display_name} ({d.id})" if d.display_name else d.id for d in scope["before"]]
    return Deleted(resource_name=scope["endpoint"].resource_name, undeployed=undeployed)


def delete_model_calls(model: str) -> list[SdkCall]:
    return [SdkCall("aiplatform.Model", (model,), result="model"), SdkCall("model.delete")]


def _deleted_model(scope: Mapping[str, Any]) -> Deleted:
    return Deleted(resource_name=scope["model"].resource_name)


def _deleted_lines(result: Deleted) -> list[str]:
    first = f" (after undeploying {', '.join(result.undeployed)})" if result.undeployed else ""
    return [f"deleted {result.resource_name}{first}"]


def resolve_deployed(
    action: str, options: Mapping[str, Any], names: Mapping[str, str]
) -> dict[str, Any]:
    """``options`` with each deployed model named by display name or id (``split``'s keys,
    ``undeploy``'s id) as its id, by the endpoint's ``names`` (id -> display name)."""
    from client.names import resolve

    out = dict(options)

    def one(given: str) -> str:
        return resolve(given, names, "deployed model", errors.DeployedModelNotFoundError)

    if action == "split":
        split = parse_split(options["split"])
        out["split"] = [f"{one(k)}={v}" for k, v in split.items()]
    elif action == "undeploy":
        out["deployed_model_id"] = one(options["deployed_model_id"])
    return out


def _pairs(items: Sequence[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise errors.ParameterError(f"{what} {item!r} must look like KEY=VALUE")
        out[key] = value
    return out


def parse_split(items: Sequence[str]) -> dict[str, int]:
    """``ID=PERCENT`` items as a traffic split."""
    split = {}
    for key, value in _pairs(items, "split").items():
        try:
            split[key] = int(value)
        except ValueError:
            raise errors.ParameterError(
                f"split {key}={value!r}: the percent must be an integer"
            ) from None
    return split


def _upload_spec(o: Mapping[str, Any]) -> UploadSpec:
    return UploadSpec(
        display_name=o["display_name"],
        image_uri=o["image_uri"],
        artifact_uri=o["artifact_uri"],
        env=_pairs(o["env"] or [], "--env"),
        args=o["arg"] or [],
        port=o["port"],
        health_route=o["health_route"],
        deployment_timeout=o["deployment_timeout"],
        staging_bucket=o["staging_bucket"],
    )


def _deploy_spec(o: Mapping[str, Any]) -> DeploySpec:
    return DeploySpec(
        display_name=o["display_name"],
        traffic_percentage=o["traffic_percentage"],
        machine_type=o["machine_type"],
        accelerator_type=o["accelerator_type"],
        accelerator_count=o["accelerator_count"],
        min_replica_count=o["min_replicas"],
        max_replica_count=o["max_replicas"],
        cpu_utilization=o["autoscaling_target_cpu_utilization"],
        accelerator_duty_cycle=o["autoscaling_target_accelerator_duty_cycle"],
        request_count_per_minute=o["autoscaling_target_request_count_per_minute"],
        spot=o["spot"],
        deploy_request_timeout=o["deploy_request_timeout"],
        enable_access_logging=o["enable_access_logging"],
        disable_container_logging=o["disable_container_logging"],
        wait=not o["no_wait"],
    )


#: Every ``deploy`` action, in ``--help`` order.
ACTIONS: dict[str, Action] = {
    action.name: action
    for action in (
        Action(
            "upload",
            "Model.upload (invoke prefix /*)",
            (
                Option("display_name", "the model's name", required=True),
                Option("image_uri", "the server's container image", required=True),
                Option(
                    "artifact_uri",
                    "directory of weights (AIP_STORAGE_URI): gs://, or a local directory or "
                    "file:// (the emulator reads it in place; Vertex: with --staging-bucket)",
                ),
                Option(
                    "staging_bucket",
                    "gs://BUCKET a local --artifact-uri is copied to first (Vertex)",
                ),
                Option("env", "a container variable (repeat)", many=True, metavar="KEY=VALUE"),
                Option("arg", "a container argument (repeat)", many=True),
                Option("port", "container port (default 8080)", int, 8080),
                Option("health_route", "default /health", default="/health"),
                Option("deployment_timeout", "time to become healthy", int, metavar="SECONDS"),
            ),
            lambda o: upload_calls(_upload_spec(o), emulator=o.get("emulator", False)),
            _uploaded,
            lambda m: [f"model {m.resource_name} (version {m.version_id})"],
            needs_endpoint=False,
        ),
        Action(
            "create-endpoint",
            "Endpoint.create (dedicated)",
            (
                Option("display_name", "the endpoint's name", required=True),
                Option("inference_timeout", "per request (Vertex: 600)", int, metavar="SECONDS"),
                Option("endpoint_id", "the id to create (default: Vertex picks one)"),
            ),
            lambda o: create_endpoint_calls(
                o["display_name"],
                inference_timeout=o["inference_timeout"],
                endpoint_id=o["endpoint_id"],
            ),
            _endpoint,
            status_lines,
            needs_endpoint=False,
        ),
        Action(
            "deploy",
            "endpoint.deploy(model)",
            (
                Option("model", "model id or resource name", required=True),
                Option("display_name", "the deployed model's (default: the model's)"),
                Option(
                    "traffic_percentage",
                    "its share; the others scale down (default: 100 if first, else 0)",
                    int,
                ),
                Option(
                    "machine_type", f"default {DEFAULT_MACHINE_TYPE}", default=DEFAULT_MACHINE_TYPE
                ),
                Option("accelerator_type", "e.g. NVIDIA_L4"),
                Option("accelerator_count", "accelerators per replica", int),
                Option("min_replicas", "replicas serving from the start (default 1)", int, 1),
                Option("max_replicas", "up to this many under load (default 1)", int, 1),
                Option(
                    "autoscaling_target_cpu_utilization",
                    "scale on CPU (percent; Vertex's default 60)",
                    int,
                    metavar="PERCENT",
                ),
                Option(
                    "autoscaling_target_accelerator_duty_cycle",
                    "scale on accelerator use (percent)",
                    int,
                    metavar="PERCENT",
                ),
                Option(
                    "autoscaling_target_request_count_per_minute",
                    "scale on requests per minute per replica",
                    int,
                    metavar="N",
                ),
                Option("spot", "run on Spot VMs (preemptible)", flag=True),
                Option(
                    "deploy_request_timeout",
                    "for the deploy request itself",
                    float,
                    metavar="SECONDS",
                ),
                Option("enable_access_logging", "log each request (Cloud Logging)", flag=True),
                Option(
                    "disable_container_logging", "drop the container's stdout/stderr", flag=True
                ),
                Option("no_wait", "return the operation at once; then `deploy status`", flag=True),
            ),
            lambda o: deploy_calls(o["endpoint"], o["model"], _deploy_spec(o)),
            _deployment,
            _deployment_lines,
        ),
        Action(
            "split",
            "endpoint.update(traffic_split)",
            (
                Option(
                    "split",
                    "the new split",
                    many=True,
                    positional=True,
                    metavar="DEPLOYED_MODEL=PERCENT",
                ),
            ),
            lambda o: split_calls(o["endpoint"], parse_split(o["split"])),
            _endpoint,
            status_lines,
        ),
        Action(
            "undeploy",
            "endpoint.undeploy",
            (
                Option(
                    "deployed_model_id",
                    "the deployed model to take off (id or display name)",
                    positional=True,
                    metavar="DEPLOYED_MODEL",
                ),
            ),
            lambda o: undeploy_calls(o["endpoint"], o["deployed_model_id"]),
            _endpoint,
            status_lines,
        ),
        Action(
            "status",
            "the endpoint, deployed models, split, DNS, operations still running",
            (),
            lambda o: status_calls(o["endpoint"]),
            _endpoint,
            status_lines,
        ),
        Action(
            "delete-endpoint",
            "endpoint.delete (refused while models are deployed, unless --force)",
            (
                Option("yes", "yes, delete it (it cannot be undone)", flag=True),
                Option(
                    "force", "undeploy its deployed models first (their traffic stops)", flag=True
                ),
            ),
            lambda o: delete_endpoint_calls(o["endpoint"], force=o["force"]),
            _deleted_endpoint,
            _deleted_lines,
            confirm="the endpoint",
        ),
        Action(
            "delete-model",
            "model.delete (refused while it is deployed)",
            (
                Option("model", "model id or resource name", required=True),
                Option("yes", "yes, delete it (it cannot be undone)", flag=True),
            ),
            lambda o: delete_model_calls(o["model"]),
            _deleted_model,
            _deleted_lines,
            needs_endpoint=False,
            confirm="the model",
        ),
    )
}


# -- the library functions: one action each ------------------------------------------------------


def _run(
    calls: list[SdkCall],
    result: Callable[[Mapping[str, Any]], Any],
    names: Mapping[str, Any] | None = None,
) -> Any:
    """Execute ``calls`` and read their ``result``, the SDK's errors raised as ours."""
    with vertex.sdk_errors("the Vertex AI control plane"):
        return result(execute(calls, names))


def upload_model(spec: UploadSpec) -> UploadedModel:
    """Upload the model (waits for the operation)."""
    return _run(upload_calls(spec), _uploaded)


def create_endpoint(
    display_name: str, *, inference_timeout: int | None = None, endpoint_id: str | None = None
) -> EndpointStatus:
    """Create a dedicated endpoint (``invoke`` needs one); ``inference_timeout`` in seconds."""
    calls = create_endpoint_calls(
        display_name, inference_timeout=inference_timeout, endpoint_id=endpoint_id
    )
    return _run(calls, _endpoint)


def deploy_model(
    endpoint: str, model: str, spec: DeploySpec = DeploySpec()
) -> Deployment | PendingDeployment:
    """Deploy ``model`` to ``endpoint``: waits until it serves (a :class:`Deployment`), or, with
    ``spec.wait`` off, returns the operation (a :class:`PendingDeployment`).
    ``spec.traffic_percentage`` is the new model's share, the others scaled down to make room
    (the SDK's default: 100 for the first model, else 0)."""
    return _run(deploy_calls(endpoint, model, spec), _deployment)


def set_traffic_split(endpoint: str, split: Mapping[str, int]) -> EndpointStatus:
    """Replace the endpoint's traffic split (deployed model id -> percent, summing to 100)."""
    return _run(split_calls(endpoint, split), _endpoint)


def undeploy_model(endpoint: str, deployed_model_id: str) -> EndpointStatus:
    """Undeploy one deployed model; the SDK spreads its traffic over the others."""
    return _run(undeploy_calls(endpoint, deployed_model_id), _endpoint)


def endpoint_status(endpoint: str) -> EndpointStatus:
    """The endpoint, its deployed models, traffic split, dedicated DNS and the operations on it
    still running."""
    return _run(status_calls(endpoint), _endpoint)


def delete_endpoint(endpoint: str, *, force: bool = False) -> Deleted:
    """Delete the endpoint (refused while it has deployed models; ``force`` undeploys them
    first)."""
    return _run(delete_endpoint_calls(endpoint, force), _deleted_endpoint)


def delete_model(model: str) -> Deleted:
    """Delete the model (refused while it is deployed)."""
    return _run(delete_model_calls(model), _deleted_model)


def progress_to_stderr() -> None:
    """The SDK logs its progress ("Deploying model to Endpoint...") to stdout: move it to stderr,
    so that stdout holds only the result (``--json`` stays parseable)."""
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith("google.cloud.aiplatform") and isinstance(logger, logging.Logger):
            for handler in logger.handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream is not sys.stderr:
                    handler.setStream(sys.stderr)
