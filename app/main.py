"""``create_app(settings)``: wire settings, registry, routes and error handling into Litestar."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from litestar import Litestar, Response, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import NotFoundException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.types import ControllerRouterHandler

from app import siblings
from app.config import Settings
from app.errors import handle_exception
from app.metrics import MetricsController, prometheus_config
from app.middleware import identify, log_requests
from app.offline import configure_ffmpeg, configure_ultralytics
from app.registry import Registry
from app.routes.health import health_handler
from app.routes.images import ImagesController
from app.routes.models import ModelsController
from app.routes.stream import stream_handler
from app.shutdown import Shutdown

log = logging.getLogger("app")
VERSION = "0.1.0"


def create_app(
    settings: Settings | None = None, on_fatal: Callable[[], None] | None = None
) -> Litestar:
    """Build the ASGI app. Models load in the background once it starts.

    ``on_fatal`` is called if loading fails (``python -m app`` uses it to stop the server and
    exit non-zero, so Vertex sees a failed container rather than one that never gets healthy).
    The routes served besides inference (``/openapi...``, ``/metrics``) follow ``SERVE_OPENAPI``
    and ``SERVE_METRICS``; README's "Routes served" table lists them all (a test compares).
    ``app.state.shutdown`` is marked by ``python -m app`` when a shutdown signal arrives.
    """
    settings = settings or Settings.from_env()
    configure_ultralytics()  # environment only: Ultralytics is imported by the loader thread
    configure_ffmpeg()  # read by OpenCV at each video open (/stream)
    registry = Registry(settings)
    shutdown = Shutdown()

    @asynccontextmanager
    async def load_models(_: Litestar) -> AsyncIterator[None]:
        async def load() -> None:
            try:
                await registry.load()
            except Exception:
                log.exception("loading models failed; the server cannot become healthy")
                if on_fatal is not None:
                    on_fatal()

        task = asyncio.create_task(load())
        if siblings.current().all_ready():
            # one of the server's processes, started again after it died: the others serve
            # meanwhile, so it listens (uvicorn binds after this) once its models are ready
            await task
        try:
            yield
        finally:
            task.cancel()
            registry.close()

    handlers: list[ControllerRouterHandler] = [
        ImagesController,
        stream_handler,
        ModelsController,
        health_handler(settings.health_route),
    ]
    middleware = []
    if settings.metrics:
        handlers.append(MetricsController)
        middleware.append(prometheus_config(settings.health_route).middleware)
    openapi = None
    if settings.openapi:
        openapi = OpenAPIConfig(
            title="vertex-yolo",
            version=VERSION,
            description="Ultralytics YOLO behind a Vertex AI dedicated endpoint (/invoke/*).",
            render_plugins=[JsonRenderPlugin()],
            openapi_router=Router(
                "/openapi", route_handlers=[], include_in_schema=False, after_request=_not_found
            ),
        )
    app = Litestar(
        route_handlers=handlers,
        dependencies={
            "registry": Provide(lambda: registry, sync_to_thread=False),
            "settings": Provide(lambda: settings, sync_to_thread=False),
            "shutdown": Provide(lambda: shutdown, sync_to_thread=False),
        },
        lifespan=[load_models],
        state=State({"registry": registry, "settings": settings, "shutdown": shutdown}),
        exception_handlers={Exception: handle_exception},
        before_send=[identify(settings.deployed_model_id, settings.replica_id)],
        middleware=middleware,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=openapi,
        logging_config=None,
        debug=False,
    )
    # Outermost, so unknown routes and errors get their log line too.
    app.asgi_handler = log_requests(
        app.asgi_handler, settings.health_route, settings.deployed_model_id
    )
    return app


async def _not_found(response: Response) -> Response:
    """Litestar answers an unknown ``/openapi/<name>`` with an HTML page; make it the usual
    404 problem document instead."""
    if response.status_code == 404:
        raise NotFoundException()
    return response
