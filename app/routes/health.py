"""The health route Vertex polls (``AIP_HEALTH_ROUTE``, default ``/health``)."""

from __future__ import annotations

from litestar import Response, get
from litestar.handlers import HTTPRouteHandler

from app.config import Settings
from app.registry import Registry
from client.schema import Health


def health_handler(path: str) -> HTTPRouteHandler:
    """A GET handler at ``path``: 200 once every model is warm, 503 before (or on failure)."""

    @get(path, summary="Readiness", sync_to_thread=False, cache=False)
    def health(registry: Registry, settings: Settings) -> Response[Health]:
        body = Health(
            status="ok" if registry.ready else registry.state,  # type: ignore[arg-type]
            deployed_model_id=settings.deployed_model_id,
            models={name: name in registry.models for name in registry.expected()},
            detail=registry.error,
        )
        return Response(body, status_code=200 if registry.ready else 503)

    return health
