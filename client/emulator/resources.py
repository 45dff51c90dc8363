"""The emulator's Vertex resources (Model, Endpoint, DeployedModel) and the store that owns them.

The Structs are the REST wire shapes (camelCase, as the SDK's ``api_transport="rest"`` reads them),
so the control plane encodes them as they are. The store is the single place state changes: the
control plane reads and updates through it (upload, create, deploy, split, undeploy, long-running
operations) and the data plane picks deployed models from it. Server processes are not its
business: :mod:`client.emulator.deployments` starts and stops them around the store's changes.

Errors are :class:`ApiError`, which both planes answer in Google's shape
``{"error": {"code": 404, "message": ..., "status": "NOT_FOUND"}}`` (never 401: the SDK's
anonymous credentials would try to refresh and raise).
"""

from __future__ import annotations

import datetime
import itertools
import random
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

import msgspec
from msgspec import Struct


class ApiError(Exception):
    """An error answered in Google's JSON shape, with the gRPC status name for its HTTP code."""

    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code, self.status, self.message = code, status, message

    def body(self) -> bytes:
        """The JSON body Google APIs answer errors with (``google.api_core`` maps it back)."""
        error = {"code": self.code, "message": self.message, "status": self.status}
        return msgspec.json.encode({"error": error})

    @classmethod
    def not_found(cls, message: str) -> ApiError:
        return cls(404, "NOT_FOUND", message)

    @classmethod
    def invalid(cls, message: str) -> ApiError:
        return cls(400, "INVALID_ARGUMENT", message)

    @classmethod
    def precondition(cls, message: str) -> ApiError:
        return cls(400, "FAILED_PRECONDITION", message)

    @classmethod
    def unavailable(cls, message: str) -> ApiError:
        return cls(503, "UNAVAILABLE", message)

    @classmethod
    def internal(cls, message: str) -> ApiError:
        return cls(500, "INTERNAL", message)

    @classmethod
    def exists(cls, message: str) -> ApiError:
        return cls(409, "ALREADY_EXISTS", message)


def now() -> str:
    """An RFC 3339 timestamp, the form protobuf's JSON mapping uses."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_id(rng: random.Random | None = None) -> str:
    """A numeric 19-digit id, the shape Vertex gives models, endpoints and deployed models."""
    return str((rng or random.SystemRandom()).randrange(10**18, 9 * 10**18))


class _Wire(Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    """Base of the REST shapes: camelCase keys, unset fields left out (so every field the SDK
    needs to see has no default)."""


class EnvVar(_Wire, frozen=True, kw_only=True):
    name: str
    value: str


class Port(_Wire, frozen=True, kw_only=True):
    container_port: int


class ContainerSpec(_Wire, frozen=True, kw_only=True):
    """How the model's server runs (``Model.upload``'s ``serving_container_*`` arguments).

    For a model the emulator declares at start, ``command`` is the local process it runs.
    """

    image_uri: str
    command: list[str] = []
    args: list[str] = []
    env: list[EnvVar] = []
    ports: list[Port] = []
    health_route: str = ""
    predict_route: str = ""
    invoke_route_prefix: str = ""  # "/*", the only value Vertex allows
    deployment_timeout: str | None = None  # a protobuf Duration: "1800s"

    def env_dict(self) -> dict[str, str]:
        return {e.name: e.value for e in self.env}


class Model(_Wire, frozen=True, kw_only=True):
    name: str
    display_name: str
    create_time: str
    update_time: str
    version_id: str
    version_aliases: list[str]
    version_create_time: str
    container_spec: ContainerSpec
    artifact_uri: str | None = None
    # 1 = DEDICATED_RESOURCES: without it the SDK's deploy() silently drops dedicatedResources.
    supported_deployment_resources_types: list[int]

    @property
    def id(self) -> str:
        return self.name.rsplit("/", 1)[-1]


class MachineSpec(_Wire, frozen=True, kw_only=True):
    machine_type: str = ""
    # An enum: the SDK's REST transport sends (and reads) its number, e.g. 11 for NVIDIA_L4.
    accelerator_type: int | str | None = None
    accelerator_count: int | None = None


class AutoscalingMetricSpec(_Wire, frozen=True, kw_only=True):
    """An autoscaling target, as the SDK's deploy sends it (by Vertex's metric names)."""

    metric_name: str
    target: int = 0


# Vertex's metric names for the autoscaling targets the emulator reads (the SDK's, models.py).
REQUEST_COUNT_METRIC = "aiplatform.googleapis.com/prediction/online/request_count"
CPU_METRIC = "aiplatform.googleapis.com/prediction/online/cpu/utilization"
DUTY_CYCLE_METRIC = "aiplatform.googleapis.com/prediction/online/accelerator/duty_cycle"


class DedicatedResources(_Wire, frozen=True, kw_only=True):
    machine_spec: MachineSpec
    min_replica_count: int
    max_replica_count: int = 0  # 0: as min (the SDK sends max(min, max))
    autoscaling_metric_specs: list[AutoscalingMetricSpec] = []
    spot: bool = False

    def target(self, metric: str) -> int | None:
        """The target of one autoscaling metric, if the deploy set one."""
        return next(
            (s.target for s in self.autoscaling_metric_specs if s.metric_name == metric), None
        )


class DeployedModelStatus(_Wire, frozen=True, kw_only=True):
    """A deployed model's runtime status (Vertex's ``DeployedModel.Status``)."""

    message: str = ""
    last_update_time: str
    available_replica_count: int


LOCAL_RESOURCES = DedicatedResources(
    machine_spec=MachineSpec(machine_type="local"), min_replica_count=1, max_replica_count=1
)


class DeployedModel(_Wire, frozen=True, kw_only=True):
    id: str
    model: str
    model_version_id: str
    display_name: str
    create_time: str
    dedicated_resources: DedicatedResources
    enable_access_logging: bool = False
    disable_container_logging: bool = False
    status: DeployedModelStatus | None = None  # filled in when read (the fleet's replicas)


class ClientConnectionConfig(_Wire, frozen=True, kw_only=True):
    inference_timeout: str  # a protobuf Duration: "600s"


class Endpoint(_Wire, frozen=True, kw_only=True):
    name: str
    display_name: str
    create_time: str
    update_time: str
    deployed_models: list[DeployedModel] = []
    traffic_split: dict[str, int] = {}
    etag: str
    dedicated_endpoint_enabled: bool
    dedicated_endpoint_dns: str
    client_connection_config: ClientConnectionConfig | None = None

    @property
    def id(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    @property
    def inference_timeout_s(self) -> float:
        """The total time a request may take (Vertex's default when none is configured: 600 s)."""
        config = self.client_connection_config
        return float(config.inference_timeout.removesuffix("s")) if config else 600.0


class UploadedModel(_Wire, frozen=True, kw_only=True):
    """The ``model`` of a ``models:upload`` request (fields the emulator uses; others ignored)."""

    display_name: str = ""
    container_spec: ContainerSpec | None = None
    artifact_uri: str | None = None


class UploadModelRequest(_Wire, frozen=True, kw_only=True):
    model: UploadedModel
    model_id: str | None = None


class NewEndpoint(_Wire, frozen=True, kw_only=True):
    """The body of ``endpoints.create`` (``Endpoint.create(dedicated_endpoint_enabled=True)``)."""

    display_name: str = ""
    dedicated_endpoint_enabled: bool = False
    client_connection_config: ClientConnectionConfig | None = None


class DeployedModelRequest(_Wire, frozen=True, kw_only=True):
    model: str
    display_name: str = ""
    dedicated_resources: DedicatedResources | None = None
    enable_access_logging: bool = False  # recorded: the emulator keeps no access log
    disable_container_logging: bool = False  # recorded: servers always log to their files


class DeployModelRequest(_Wire, frozen=True, kw_only=True):
    """The body of ``endpoints.deployModel``; in ``traffic_split`` the new model is ``"0"``."""

    deployed_model: DeployedModelRequest
    traffic_split: dict[str, int] = {}


class UndeployModelRequest(_Wire, frozen=True, kw_only=True):
    """The body of ``endpoints.undeployModel``; ``traffic_split``, if given, replaces the split."""

    deployed_model_id: str
    traffic_split: dict[str, int] | None = None


class Operation(Struct, kw_only=True, rename="camel", omit_defaults=True):
    """A long-running operation (``google.longrunning.Operation``).

    ``response`` carries its ``@type`` (the SDK needs it to parse the result); ``error`` is a
    ``google.rpc.Status`` (``{"code": 9, "message": ...}``, gRPC codes).
    """

    name: str
    done: bool = False
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


TYPE_PREFIX = "type.googleapis.com/google.cloud.aiplatform.v1."
GRPC_CODES = {"INVALID_ARGUMENT": 3, "NOT_FOUND": 5, "FAILED_PRECONDITION": 9, "INTERNAL": 13}
ID = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


class EndpointPatch(_Wire, frozen=True, kw_only=True):
    """The fields of an ``endpoints.patch`` body the emulator can change (the SDK sends them all)."""

    display_name: str | None = None
    traffic_split: dict[str, int] | None = None


UPDATABLE = {"trafficSplit": "traffic_split", "displayName": "display_name"}


class Store:
    """Every model and endpoint of one project and location, and the rules that change them.

    ``project`` is how resource names spell the project; ``project_number`` is accepted as well in
    request paths, as Vertex does. ``on_change`` callbacks run after each successful change.
    """

    def __init__(
        self, project: str, project_number: str, location: str, split_seed: int = 0
    ) -> None:
        self.project, self.project_number, self.location = project, project_number, location
        self.split_seed = split_seed
        self._split_draws: dict[str, random.Random] = {}  # endpoint id -> its draws
        self.models: dict[str, Model] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.operations: dict[str, Operation] = {}
        self.on_change: list[Callable[[Endpoint], None]] = []
        self._rng = random.Random()
        self._operation_numbers = itertools.count(1)

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    def check_parent(self, project: str, location: str) -> None:
        """404 unless the path names this emulator's project (id or number) and location."""
        if project not in (self.project, self.project_number) or location != self.location:
            raise ApiError.not_found(
                f"projects/{project}/locations/{location} is not served here: this emulator "
                f"serves {self.parent} (project number {self.project_number})"
            )

    def add_model(
        self,
        model_id: str,
        display_name: str,
        container: ContainerSpec,
        artifact_uri: str | None = None,
    ) -> Model:
        """Register a model, as ``Model.upload`` would."""
        t = now()
        model = Model(
            name=f"{self.parent}/models/{model_id}",
            display_name=display_name,
            create_time=t,
            update_time=t,
            version_id="1",
            version_aliases=["default"],
            version_create_time=t,
            container_spec=container,
            artifact_uri=artifact_uri,
            supported_deployment_resources_types=[1],
        )
        self.models[model_id] = model
        return model

    def upload(self, request: UploadModelRequest) -> Model:
        """``models.upload``: check the container spec and register the model (version 1)."""
        model, spec = request.model, request.model.container_spec
        if spec is None or not spec.image_uri:
            raise ApiError.invalid("model.containerSpec.imageUri is required")
        # Vertex's rules for invoke (its "Use arbitrary custom routes" page and the
        # ModelContainerSpec reference): "/*" is the only prefix, exclusive with predictRoute.
        if spec.invoke_route_prefix not in ("", "/*"):
            raise ApiError.invalid(
                f'containerSpec.invokeRoutePrefix must be "/*", not {spec.invoke_route_prefix!r}'
            )
        if spec.invoke_route_prefix and spec.predict_route:
            raise ApiError.invalid(
                "containerSpec.predictRoute and containerSpec.invokeRoutePrefix cannot both be "
                "set: a model served through invoke has no predict route"
            )
        if spec.health_route and not spec.health_route.startswith("/"):
            raise ApiError.invalid(f"containerSpec.healthRoute {spec.health_route!r} is not a path")
        if (
            spec.deployment_timeout is not None
            and duration_seconds(spec.deployment_timeout) is None
        ):
            raise ApiError.invalid(
                f"containerSpec.deploymentTimeout {spec.deployment_timeout!r} is not a duration "
                'such as "1800s"'
            )
        model_id = request.model_id or new_id(self._rng)
        if not ID.fullmatch(model_id):
            raise ApiError.invalid(f"modelId {model_id!r} must match {ID.pattern}")
        if model_id in self.models:
            raise ApiError.exists(f"Model {self.parent}/models/{model_id} already exists")
        return self.add_model(model_id, model.display_name, spec, model.artifact_uri)

    def create_endpoint(self, endpoint_id: str | None, request: NewEndpoint, dns: str) -> Endpoint:
        """``endpoints.create``; dedicated endpoints only (invoke needs one)."""
        if not request.dedicated_endpoint_enabled:
            raise ApiError.invalid(
                "this emulator serves dedicated endpoints only: create it with "
                "dedicated_endpoint_enabled=True (invoke needs a dedicated endpoint)"
            )
        timeout = 600.0
        if request.client_connection_config is not None:
            seconds = duration_seconds(request.client_connection_config.inference_timeout)
            if seconds is None or not 0 < seconds <= 3600:
                raise ApiError.invalid(
                    "clientConnectionConfig.inferenceTimeout must be a duration in (0, 3600] "
                    f"seconds, not {request.client_connection_config.inference_timeout!r}"
                )
            timeout = seconds
        endpoint_id = endpoint_id or new_id(self._rng)
        if not ID.fullmatch(endpoint_id):
            raise ApiError.invalid(f"endpointId {endpoint_id!r} must match {ID.pattern}")
        if endpoint_id in self.endpoints:
            raise ApiError.exists(f"Endpoint {self.parent}/endpoints/{endpoint_id} already exists")
        endpoint = self.add_endpoint(endpoint_id, request.display_name, dns, timeout)
        for callback in self.on_change:
            callback(endpoint)
        return endpoint

    def add_endpoint(
        self, endpoint_id: str, display_name: str, dns: str, inference_timeout: float
    ) -> Endpoint:
        """Create an empty dedicated endpoint, as ``Endpoint.create(dedicated_endpoint_enabled=True)``."""
        t = now()
        endpoint = Endpoint(
            name=f"{self.parent}/endpoints/{endpoint_id}",
            display_name=display_name,
            create_time=t,
            update_time=t,
            etag=new_id(self._rng),
            dedicated_endpoint_enabled=True,
            dedicated_endpoint_dns=dns,
            client_connection_config=ClientConnectionConfig(
                inference_timeout=f"{inference_timeout:g}s"
            ),
        )
        self.endpoints[endpoint_id] = endpoint
        return endpoint

    def deploy(
        self,
        endpoint_id: str,
        model_id: str,
        deployed_model_id: str,
        display_name: str,
        resources: DedicatedResources = LOCAL_RESOURCES,
        traffic_split: Mapping[str, int] | None = None,
        request: DeployedModelRequest | None = None,
    ) -> DeployedModel:
        """Add a deployed model. ``traffic_split`` (the new one keyed ``"0"``) replaces the split
        if given and non-empty (:meth:`check_deploy_split`); else the new model gets 0 %.
        ``request``: the deploy's, whose logging switches are recorded."""
        endpoint, model = self.endpoint(endpoint_id), self.model(model_id)
        if traffic_split:
            self.check_deploy_split(endpoint_id, traffic_split)
        deployed = DeployedModel(
            id=deployed_model_id,
            model=model.name,
            model_version_id=model.version_id,
            display_name=display_name,
            create_time=now(),
            dedicated_resources=resources,
            enable_access_logging=bool(request and request.enable_access_logging),
            disable_container_logging=bool(request and request.disable_container_logging),
        )
        split = {**endpoint.traffic_split, deployed.id: 0}
        if traffic_split:
            split = {(deployed.id if k == "0" else k): v for k, v in traffic_split.items()}
        self._replace(
            endpoint,
            deployed_models=[*endpoint.deployed_models, deployed],
            traffic_split=split,
        )
        return deployed

    def check_deploy_split(self, endpoint_id: str, split: Mapping[str, int]) -> None:
        """A deploy's split: the deployed models plus ``"0"`` (the one being deployed), 100 %."""
        endpoint = self.endpoint(endpoint_id)
        self._checked_split(endpoint, split, extra={"0"})

    def undeploy(
        self, endpoint_id: str, deployed_model_id: str, split: Mapping[str, int] | None
    ) -> DeployedModel:
        """Remove a deployed model, by Vertex's rule: it must have no traffic left, unless the
        request's ``split`` (then the new split, over the others) takes it away. The last one
        leaves an empty split."""
        endpoint = self.endpoint(endpoint_id)
        deployed = self.deployed_model(endpoint_id, deployed_model_id)
        rest = [d for d in endpoint.deployed_models if d.id != deployed.id]
        if split is not None:
            if deployed.id in split and split[deployed.id] != 0:
                raise ApiError.invalid(
                    f"trafficSplit gives {split[deployed.id]}% to {deployed.id}, the deployed "
                    "model being undeployed"
                )
            new = {k: v for k, v in split.items() if k != deployed.id}
            remaining = replace_models(endpoint, rest)
            new = self._checked_split(remaining, new) if rest else {}
        elif endpoint.traffic_split.get(deployed.id, 0) and rest:
            raise ApiError.precondition(
                f"deployed model {deployed.id} still takes {endpoint.traffic_split[deployed.id]}% "
                "of the traffic: give a trafficSplit over the other deployed models (the SDK's "
                "endpoint.undeploy does) or update the split first"
            )
        else:
            new = {k: v for k, v in endpoint.traffic_split.items() if k != deployed.id}
        self._replace(endpoint, deployed_models=rest, traffic_split=new)
        return deployed

    def delete_endpoint(self, endpoint_id: str) -> Endpoint:
        """Delete an endpoint; Vertex's rule: only once it has no deployed model."""
        endpoint = self.endpoint(endpoint_id)
        if endpoint.deployed_models:
            deployed = ", ".join(f"{d.display_name} ({d.id})" for d in endpoint.deployed_models)
            raise ApiError.precondition(
                f"Endpoint {endpoint.name} has deployed models ({deployed}): undeploy them first"
            )
        del self.endpoints[endpoint_id]
        self._split_draws.pop(endpoint_id, None)
        for callback in self.on_change:
            callback(endpoint)
        return endpoint

    def delete_model(self, model_id: str) -> Model:
        """Delete a model; Vertex's rule: only once no endpoint has it deployed."""
        model = self.model(model_id)
        users = [
            f"{d.display_name} ({d.id}) on endpoint {e.id}"
            for e in self.endpoints.values()
            for d in e.deployed_models
            if d.model.partition("@")[0] == model.name
        ]
        if users:
            raise ApiError.precondition(
                f"Model {model.name} is deployed ({', '.join(users)}): undeploy it first"
            )
        del self.models[model.id]
        return model

    # -- long-running operations -------------------------------------------------------------

    def start_operation(self, resource: str) -> Operation:
        """A new operation on ``resource`` (a model or endpoint name), not done: named under it,
        as Vertex's are (``projects/P/locations/L/endpoints/E/operations/N``). Finish it with
        :meth:`finish`."""
        number = next(self._operation_numbers)
        operation = Operation(name=f"{resource}/operations/{number}")
        self.operations[operation.name] = operation
        return operation

    def finish(
        self,
        operation: Operation,
        response_type: str,
        response: Mapping[str, Any] | Struct | None = None,
        error: ApiError | None = None,
    ) -> Operation:
        """Mark ``operation`` done with a ``response`` of ``response_type`` (e.g. ``Endpoint``)
        or an ``error`` (its gRPC code and message, as Vertex's failed operations carry)."""
        operation.done = True
        if error is not None:
            operation.error = {"code": GRPC_CODES.get(error.status, 2), "message": error.message}
        else:
            data = msgspec.to_builtins(response) if response is not None else {}
            full = response_type if "/" in response_type else TYPE_PREFIX + response_type
            operation.response = {"@type": full, **data}
        return operation

    def done(
        self, resource: str, response_type: str, response: Mapping[str, Any] | Struct | None
    ) -> Operation:
        """An operation on ``resource`` finished at once."""
        return self.finish(self.start_operation(resource), response_type, response)

    def operation(self, name: str) -> Operation:
        try:
            return self.operations[name]
        except KeyError:
            raise ApiError.not_found(f"Operation {name} not found") from None

    def endpoint(self, endpoint_id: str) -> Endpoint:
        try:
            return self.endpoints[endpoint_id]
        except KeyError:
            raise ApiError.not_found(
                f"Endpoint {self.parent}/endpoints/{endpoint_id} not found"
            ) from None

    def model(self, model_id: str) -> Model:
        base, _, version = model_id.partition("@")
        model = self.models.get(base)
        if model is None or version not in ("", model.version_id, *model.version_aliases):
            raise ApiError.not_found(f"Model {self.parent}/models/{model_id} not found")
        return model

    def deployed_model(self, endpoint_id: str, deployed_model_id: str) -> DeployedModel:
        endpoint = self.endpoint(endpoint_id)
        for deployed in endpoint.deployed_models:
            if deployed.id == deployed_model_id:
                return deployed
        raise ApiError.not_found(
            f"Deployed model {deployed_model_id} not found on endpoint {endpoint.name} "
            f"(deployed: {[d.id for d in endpoint.deployed_models]})"
        )

    def pick(self, endpoint_id: str) -> DeployedModel:
        """A deployed model drawn by the traffic split; one at 0 % is never drawn."""
        endpoint = self.endpoint(endpoint_id)
        weighted = [(d, endpoint.traffic_split.get(d.id, 0)) for d in endpoint.deployed_models]
        weighted = [(d, w) for d, w in weighted if w > 0]
        if not weighted:
            raise ApiError.precondition(
                f"Endpoint {endpoint.name} has no traffic split: no deployed model takes "
                "untargeted traffic. Set one with endpoint.update(traffic_split=...) or target a "
                "deployed model (.../deployedModels/ID/invoke/...)."
            )
        models, weights = zip(*weighted, strict=True)
        return self._split_rng(endpoint).choices(models, weights)[0]

    def _split_rng(self, endpoint: Endpoint) -> random.Random:
        """The endpoint's own generator of split draws: seeded by ``split_seed``, the endpoint
        and its split, and started afresh at each change of the split (``_replace``), so the
        draws after a change are the same in every run (Vertex's are random: no test or tool may
        rely on the sequence, only on it being repeatable)."""
        rng = self._split_draws.get(endpoint.id)
        if rng is None:
            split = ",".join(f"{k}={v}" for k, v in sorted(endpoint.traffic_split.items()))
            rng = random.Random(f"{self.split_seed}/{endpoint.id}/{split}")
            self._split_draws[endpoint.id] = rng
        return rng

    def update_endpoint(self, endpoint_id: str, patch: EndpointPatch, update_mask: str) -> Endpoint:
        """``endpoints.patch``: change the fields named by ``update_mask``."""
        endpoint = self.endpoint(endpoint_id)
        paths = [p.strip() for p in update_mask.split(",") if p.strip()]
        if not paths:
            raise ApiError.invalid("updateMask is required, e.g. ?updateMask=trafficSplit")
        changes: dict[str, object] = {}
        for path in paths:
            field = UPDATABLE.get(path) or (path if path in UPDATABLE.values() else None)
            if field is None:
                raise ApiError.invalid(
                    f"updateMask path {path!r} cannot be updated here (supported: "
                    f"{', '.join(UPDATABLE)})"
                )
            value = getattr(patch, field)
            if field == "traffic_split":
                changes[field] = self._checked_split(endpoint, value or {})
            elif value is not None:
                changes[field] = value
        return self._replace(endpoint, **changes)

    def set_traffic_split(self, endpoint_id: str, split: Mapping[str, int]) -> Endpoint:
        endpoint = self.endpoint(endpoint_id)
        return self._replace(endpoint, traffic_split=self._checked_split(endpoint, split))

    def _checked_split(
        self, endpoint: Endpoint, split: Mapping[str, int], extra: Collection[str] = ()
    ) -> dict[str, int]:
        known = {d.id for d in endpoint.deployed_models} | set(extra)
        unknown = sorted(set(split) - known)
        if unknown:
            raise ApiError.invalid(
                f"trafficSplit names deployed models {unknown} that are not deployed on "
                f"{endpoint.name} (deployed: {sorted(known)})"
            )
        bad = {k: v for k, v in split.items() if not 0 <= v <= 100}
        if bad:
            raise ApiError.invalid(f"trafficSplit percentages must be in [0, 100]: {bad}")
        total = sum(split.values())
        if known and total != 100:
            raise ApiError.invalid(f"trafficSplit must sum to 100, got {total}: {dict(split)}")
        return dict(split)

    def _replace(self, endpoint: Endpoint, **changes: object) -> Endpoint:
        updated = msgspec.structs.replace(
            endpoint, update_time=now(), etag=new_id(self._rng), **changes
        )
        self.endpoints[updated.id] = updated
        if "traffic_split" in changes:
            self._split_draws.pop(updated.id, None)  # draws start afresh for the new split
        for callback in self.on_change:
            callback(updated)
        return updated


def replace_models(endpoint: Endpoint, models: list[DeployedModel]) -> Endpoint:
    """``endpoint`` with other deployed models (not stored: for checking a split against)."""
    return msgspec.structs.replace(endpoint, deployed_models=models)


def duration_seconds(duration: str) -> float | None:
    """The seconds of a protobuf Duration string (``"600s"``, ``"1.5s"``), or None."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)s", duration)
    return float(match[1]) if match else None
