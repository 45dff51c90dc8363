"""The emulator's Vertex resources (Model, Endpoint, DeployedModel) and the store that owns them.

The Structs are the REST wire shapes (camelCase, as the SDK's ``api_transport="rest"`` reads them),
so the control plane encodes them as they are. The store is the single place state changes: the
control plane reads and updates through it and the data plane picks deployed models from it. It is
plain data, so creating models and endpoints or (un)deploying later means adding methods here, not
reshaping it.

Errors are :class:`ApiError`, which both planes answer in Google's shape
``{"error": {"code": 404, "message": ..., "status": "NOT_FOUND"}}`` (never 401: the SDK's
anonymous credentials would try to refresh and raise).
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable, Mapping

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


def now() -> str:
    """An RFC 3339 timestamp, the form protobuf's JSON mapping uses."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_id(rng: random.Random | None = None) -> str:
    """A numeric 19-digit id, the shape Vertex gives models, endpoints and deployed models."""
    return str((rng or random.SystemRandom()).randrange(10**18, 9 * 10**18))


class _Wire(Struct, kw_only=True, rename="camel", omit_defaults=True):
    """Base of the REST shapes: camelCase keys, unset fields left out (so every field the SDK
    needs to see has no default)."""


class EnvVar(_Wire, frozen=True, kw_only=True):
    name: str
    value: str


class Port(_Wire, frozen=True, kw_only=True):
    container_port: int


class ContainerSpec(_Wire, frozen=True, kw_only=True):
    """How the model's server runs. ``command`` is the local process, not an image entrypoint."""

    image_uri: str
    command: list[str] = []
    env: list[EnvVar] = []
    ports: list[Port] = []
    health_route: str
    invoke_route_prefix: str  # "/*", the only value Vertex allows


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
    machine_type: str


class DedicatedResources(_Wire, frozen=True, kw_only=True):
    machine_spec: MachineSpec
    min_replica_count: int
    max_replica_count: int


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

    def __init__(self, project: str, project_number: str, location: str) -> None:
        self.project, self.project_number, self.location = project, project_number, location
        self.models: dict[str, Model] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.on_change: list[Callable[[Endpoint], None]] = []
        self._rng = random.Random()

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
        self, endpoint_id: str, model_id: str, deployed_model_id: str, display_name: str
    ) -> DeployedModel:
        """Add a deployed model with no traffic (set the split with :meth:`set_traffic_split`)."""
        endpoint, model = self.endpoint(endpoint_id), self.model(model_id)
        deployed = DeployedModel(
            id=deployed_model_id,
            model=model.name,
            model_version_id=model.version_id,
            display_name=display_name,
            create_time=now(),
            dedicated_resources=LOCAL_RESOURCES,
        )
        split = {**endpoint.traffic_split, deployed.id: 0}
        self._replace(
            endpoint,
            deployed_models=[*endpoint.deployed_models, deployed],
            traffic_split=split,
        )
        return deployed

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
        return self._rng.choices(models, weights)[0]

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

    def _checked_split(self, endpoint: Endpoint, split: Mapping[str, int]) -> dict[str, int]:
        known = {d.id for d in endpoint.deployed_models}
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
        for callback in self.on_change:
            callback(updated)
        return updated
