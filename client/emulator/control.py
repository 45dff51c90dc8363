"""The control plane: the Vertex REST calls the SDK makes with ``api_transport="rest"``.

Plain HTTP (point ``aiplatform.init(api_endpoint="http://127.0.0.1:PORT")`` at it). Served:

- ``GET  /v1/projects/P/locations/L/endpoints`` and ``.../endpoints/E``
- ``POST .../endpoints[?endpointId=E]`` (``Endpoint.create(dedicated_endpoint_enabled=True)``)
- ``PATCH .../endpoints/E?updateMask=trafficSplit`` (``endpoint.update(traffic_split=...)``)
- ``POST .../endpoints/E:deployModel`` and ``.../endpoints/E:undeployModel``
- ``DELETE .../endpoints/E`` (``endpoint.delete()``: refused while it has deployed models)
- ``GET  /v1/projects/P/locations/L/models`` and ``.../models/M`` (also ``M@1``)
- ``POST .../models:upload`` (``Model.upload``)
- ``DELETE .../models/M`` (``model.delete()``: refused while it is deployed)
- ``GET  /ui/projects/P/locations/L/operations/N`` (where the SDK polls an operation; also
  under ``/v1/``), and ``.../endpoints/E/operations`` (ListOperations: a resource's operations)

Upload, create, deploy, undeploy and delete answer long-running operations; a deploy's stays not done
until its server is healthy (see :mod:`client.emulator.deployments`).

Every error, unknown paths included, is Google's JSON error shape. The SDK's ``$alt`` query
parameter is accepted and ignored (the answers are always JSON with integer enums).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Controller, Litestar, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.params import FromPath, QueryParameter, RawBody

from client.emulator.deployments import Deployments
from client.emulator.resources import (
    ApiError,
    DeployModelRequest,
    Endpoint,
    EndpointPatch,
    Model,
    NewEndpoint,
    Operation,
    Store,
    UndeployModelRequest,
    UploadModelRequest,
)

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    413: "INVALID_ARGUMENT",
}


class EndpointList(msgspec.Struct, kw_only=True):
    endpoints: list[Endpoint]


class ModelList(msgspec.Struct, kw_only=True):
    models: list[Model]


T = TypeVar("T")


def _decode(body: RawBody, into: type[T], what: str) -> T:
    try:
        return msgspec.json.decode(body, type=into)
    except msgspec.DecodeError as exc:
        raise ApiError.invalid(f"invalid {what} in the request body: {exc}") from None


class LocationController(Controller):
    """Resources under ``projects/P/locations/L``; the path must name this emulator's."""

    path = "/v1/projects/{project:str}/locations/{location:str}"

    @staticmethod
    def _store(store: Store, project: FromPath[str], location: FromPath[str]) -> Store:
        store.check_parent(project, location)
        return store

    @get("/endpoints", sync_to_thread=False)
    def list_endpoints(
        self,
        store: NamedDependency[Store],
        deployments: NamedDependency[Deployments],
        project: FromPath[str],
        location: FromPath[str],
    ) -> EndpointList:
        store = self._store(store, project, location)
        return EndpointList(endpoints=[deployments.live(e) for e in store.endpoints.values()])

    @post("/endpoints", status_code=200, sync_to_thread=False)
    def create_endpoint(
        self,
        store: NamedDependency[Store],
        deployments: NamedDependency[Deployments],
        project: FromPath[str],
        location: FromPath[str],
        body: RawBody,
        endpoint_id: Annotated[str | None, QueryParameter(name="endpointId")] = None,
    ) -> Operation:
        self._store(store, project, location)
        return deployments.create_endpoint(endpoint_id, _decode(body, NewEndpoint, "Endpoint"))

    @post("/endpoints/{endpoint_id:str}", status_code=200)
    async def endpoint_method(
        self,
        store: NamedDependency[Store],
        deployments: NamedDependency[Deployments],
        project: FromPath[str],
        location: FromPath[str],
        endpoint_id: FromPath[str],
        body: RawBody,
    ) -> Operation:
        """``E:deployModel`` and ``E:undeployModel`` (a custom method after a colon)."""
        self._store(store, project, location)
        endpoint_id, _, method = endpoint_id.replace("%3A", ":").partition(":")
        if method == "deployModel":
            return deployments.deploy(
                endpoint_id, _decode(body, DeployModelRequest, "DeployModelRequest")
            )
        if method == "undeployModel":
            request = _decode(body, UndeployModelRequest, "UndeployModelRequest")
            return await deployments.undeploy(endpoint_id, request)
        raise ApiError(
            405,
            "UNIMPLEMENTED",
            f"POST endpoints/{endpoint_id}:{method} is not served here (deployModel, "
            "undeployModel are)",
        )

    @get("/endpoints/{endpoint_id:str}", sync_to_thread=False)
    def get_endpoint(
        self,
        store: NamedDependency[Store],
        deployments: NamedDependency[Deployments],
        project: FromPath[str],
        location: FromPath[str],
        endpoint_id: FromPath[str],
    ) -> Endpoint:
        return deployments.live(self._store(store, project, location).endpoint(endpoint_id))

    @patch("/endpoints/{endpoint_id:str}", sync_to_thread=False)
    def update_endpoint(
        self,
        store: NamedDependency[Store],
        deployments: NamedDependency[Deployments],
        project: FromPath[str],
        location: FromPath[str],
        endpoint_id: FromPath[str],
        body: RawBody,
        update_mask: Annotated[str | None, QueryParameter(name="updateMask")] = None,
    ) -> Endpoint:
        store = self._store(store, project, location)
        changes = _decode(body, EndpointPatch, "Endpoint")
        return deployments.live(store.update_endpoint(endpoint_id, changes, update_mask or ""))

    @delete("/endpoints/{endpoint_id:str}", status_code=200, sync_to_thread=False)
    def delete_endpoint(
        self,
        store: NamedDependency[Store],
        deployments: NamedDependency[Deployments],
        project: FromPath[str],
        location: FromPath[str],
        endpoint_id: FromPath[str],
    ) -> Operation:
        self._store(store, project, location)
        return deployments.delete_endpoint(endpoint_id)

    @delete("/models/{model_id:str}", status_code=200, sync_to_thread=False)
    def delete_model(
        self,
        store: NamedDependency[Store],
        deployments: NamedDependency[Deployments],
        project: FromPath[str],
        location: FromPath[str],
        model_id: FromPath[str],
    ) -> Operation:
        self._store(store, project, location)
        return deployments.delete_model(model_id.replace("%40", "@"))

    @get("/models", sync_to_thread=False)
    def list_models(
        self, store: NamedDependency[Store], project: FromPath[str], location: FromPath[str]
    ) -> ModelList:
        store = self._store(store, project, location)
        return ModelList(models=list(store.models.values()))

    @get("/models/{model_id:str}", sync_to_thread=False)
    def get_model(
        self,
        store: NamedDependency[Store],
        project: FromPath[str],
        location: FromPath[str],
        model_id: FromPath[str],
    ) -> Model:
        return self._store(store, project, location).model(model_id.replace("%40", "@"))

    @post("/models:upload", status_code=200, sync_to_thread=False)
    def upload_model(
        self,
        store: NamedDependency[Store],
        deployments: NamedDependency[Deployments],
        project: FromPath[str],
        location: FromPath[str],
        body: RawBody,
    ) -> Operation:
        self._store(store, project, location)
        return deployments.upload(_decode(body, UploadModelRequest, "UploadModelRequest"))


LOCATION = "/projects/{project:str}/locations/{location:str}"
NESTED = "/{collection:str}/{resource:str}/operations/{number:str}"
LISTED = "/{collection:str}/{resource:str}/operations"
# A poll of an operation in progress waits this long for it to finish (a long poll). The answer
# is Vertex's; only sooner: the SDK's backoff between polls grows to 20 s, and without the wait
# a deploy would look finished up to that long after its server became healthy.
LONG_POLL_S = 10.0


@get(["/ui" + LOCATION + NESTED, "/v1" + LOCATION + NESTED])
async def get_operation(
    store: NamedDependency[Store],
    project: FromPath[str],
    location: FromPath[str],
    collection: FromPath[str],
    resource: FromPath[str],
    number: FromPath[str],
) -> Operation:
    """Where the SDK polls a long-running operation (``/ui/`` + its name, which is nested under
    its resource as Vertex's are: ``.../endpoints/E/operations/N``, ``.../models/M/...``)."""
    store.check_parent(project, location)
    operation = store.operation(f"{store.parent}/{collection}/{resource}/operations/{number}")
    deadline = asyncio.get_running_loop().time() + LONG_POLL_S
    while not operation.done and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    return operation


class OperationList(msgspec.Struct, kw_only=True):
    operations: list[Operation]


@get(["/ui" + LOCATION + LISTED, "/v1" + LOCATION + LISTED], sync_to_thread=False)
def list_operations(
    store: NamedDependency[Store],
    project: FromPath[str],
    location: FromPath[str],
    collection: FromPath[str],
    resource: FromPath[str],
) -> OperationList:
    """A resource's operations, oldest first (``list_operations`` of the SDK's API client; no
    filter or paging: an emulator holds few)."""
    store.check_parent(project, location)
    prefix = f"{store.parent}/{collection}/{resource}/operations/"
    return OperationList(
        operations=[o for n, o in store.operations.items() if n.startswith(prefix)]
    )


def _error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Every failure in Google's error shape: ours, Litestar's (404, 405, bad parameters), bugs."""
    if not isinstance(exc, ApiError):
        if isinstance(exc, HTTPException):
            code = exc.status_code
            message = str(exc.detail)
            if code in (404, 405):
                message = (
                    f"{request.method} {request.url.path} is not served by this emulator's "
                    "control plane (it serves endpoints get/list/create/patch/deployModel/"
                    "undeployModel/delete, models get/list/upload/delete and operations get/list)"
                )
            exc = ApiError(code, STATUS_NAMES.get(code, "UNKNOWN"), message)
        else:
            exc = ApiError(500, "INTERNAL", f"emulator bug: {exc!r}")
    return Response(exc.body(), status_code=exc.code, media_type="application/json")


def create_control_app(store: Store, deployments: Deployments) -> Litestar:
    """The control plane ASGI app over ``store``, running servers through ``deployments``."""
    return Litestar(
        route_handlers=[LocationController, get_operation, list_operations],
        dependencies={
            "store": Provide(lambda: store, sync_to_thread=False),
            "deployments": Provide(lambda: deployments, sync_to_thread=False),
        },
        exception_handlers={Exception: _error},
        openapi_config=None,
        logging_config=None,
        debug=False,
    )
