"""The health route Vertex polls (``AIP_HEALTH_ROUTE``, default ``/health``)."""

from __future__ import annotations

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec

from app.config import Settings
from app.registry import Registry
from app.shutdown import Shutdown
from client.schema import Health


def health_handler(path: str) -> HTTPRouteHandler:
    """A GET handler at ``path``: 200 once every model is warm, 503 before (or on failure, or
    once shutdown started)."""

    @get(
        path,
        summary="Readiness",
        sync_to_thread=False,
        cache=False,
        responses={
            503: ResponseSpec(Health, description="Loading, loading failed, or shutting down")
        },
    )
    def health(
        registry: NamedDependency[Registry],
        settings: NamedDependency[Settings],
        shutdown: NamedDependency[Shutdown],
    ) -> Response[Health]:
        ready = registry.serving and not shutdown.started
        status = "shutting-down" if shutdown.started else "ok" if ready else registry.state
        if status == "ready":  # this process is; another of the server's is still loading
            status = "loading"
        body = Health(
            status=status,  # type: ignore[arg-type]
            deployed_model_id=settings.deployed_model_id,
            replica_id=settings.replica_id,
            models={name: name in registry.models for name in registry.expected()},
            detail=registry.public_error(),
        )
        return Response(body, status_code=200 if ready else 503)

    return health
