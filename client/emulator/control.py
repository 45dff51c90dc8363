"""The control plane: the Vertex REST calls the SDK makes with ``api_transport="rest"``.

Plain HTTP (point ``aiplatform.init(api_endpoint="http://127.0.0.1:PORT")`` at it). Served:

- ``GET  /v1/projects/P/locations/L/endpoints`` and ``.../endpoints/E``
- ``PATCH .../endpoints/E?updateMask=trafficSplit`` (``endpoint.update(traffic_split=...)``)
- ``GET  /v1/projects/P/locations/L/models`` and ``.../models/M`` (also ``M@1``)

Every error, unknown paths included, is Google's JSON error shape. The SDK's ``$alt`` query
parameter is accepted and ignored (the answers are always JSON with integer enums).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Litestar, Request, Response, get, patch
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.params import Parameter

from client.emulator.resources import ApiError, Endpoint, EndpointPatch, Model, Store

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


class LocationController(Controller):
    """Resources under ``projects/P/locations/L``; the path must name this emulator's."""

    path = "/v1/projects/{project:str}/locations/{location:str}"

    @staticmethod
    def _store(store: Store, project: str, location: str) -> Store:
        store.check_parent(project, location)
        return store

    @get("/endpoints", sync_to_thread=False)
    def list_endpoints(self, store: Store, project: str, location: str) -> EndpointList:
        store = self._store(store, project, location)
        return EndpointList(endpoints=list(store.endpoints.values()))

    @get("/endpoints/{endpoint_id:str}", sync_to_thread=False)
    def get_endpoint(self, store: Store, project: str, location: str, endpoint_id: str) -> Endpoint:
        return self._store(store, project, location).endpoint(endpoint_id)

    @patch("/endpoints/{endpoint_id:str}", sync_to_thread=False)
    def update_endpoint(
        self,
        store: Store,
        project: str,
        location: str,
        endpoint_id: str,
        body: bytes,
        update_mask: str | None = Parameter(query="updateMask", default=None),
    ) -> Endpoint:
        store = self._store(store, project, location)
        try:
            changes = msgspec.json.decode(body, type=EndpointPatch)
        except msgspec.DecodeError as exc:
            raise ApiError.invalid(f"invalid Endpoint in the request body: {exc}") from None
        return store.update_endpoint(endpoint_id, changes, update_mask or "")

    @get("/models", sync_to_thread=False)
    def list_models(self, store: Store, project: str, location: str) -> ModelList:
        store = self._store(store, project, location)
        return ModelList(models=list(store.models.values()))

    @get("/models/{model_id:str}", sync_to_thread=False)
    def get_model(self, store: Store, project: str, location: str, model_id: str) -> Model:
        return self._store(store, project, location).model(model_id.replace("%40", "@"))


def _error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Every failure in Google's error shape: ours, Litestar's (404, 405, bad parameters), bugs."""
    if not isinstance(exc, ApiError):
        if isinstance(exc, HTTPException):
            code = exc.status_code
            message = str(exc.detail)
            if code in (404, 405):
                message = (
                    f"{request.method} {request.url.path} is not served by this emulator's "
                    "control plane (it serves endpoints get/list/patch and models get/list)"
                )
            exc = ApiError(code, STATUS_NAMES.get(code, "UNKNOWN"), message)
        else:
            exc = ApiError(500, "INTERNAL", f"emulator bug: {exc!r}")
    return Response(exc.body(), status_code=exc.code, media_type="application/json")


def create_control_app(store: Store) -> Litestar:
    """The control plane ASGI app over ``store``."""
    return Litestar(
        route_handlers=[LocationController],
        dependencies={"store": Provide(lambda: store, sync_to_thread=False)},
        exception_handlers={Exception: _error},
        openapi_config=None,
        logging_config=None,
        debug=False,
    )
