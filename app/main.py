"""``create_app(settings)``: wire settings, registry, routes and error handling into Litestar."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin

from app.config import Settings
from app.errors import handle_exception
from app.metrics import metrics_handler
from app.middleware import identify
from app.offline import configure_ultralytics
from app.registry import Registry
from app.routes.health import health_handler
from app.routes.inference import InferenceController
from app.routes.models import ModelsController
from app.routes.stream import stream_handler

log = logging.getLogger("app")
VERSION = "0.1.0"


def create_app(
    settings: Settings | None = None, on_fatal: Callable[[], None] | None = None
) -> Litestar:
    """Build the ASGI app. Models load in the background once it starts.

    ``on_fatal`` is called if loading fails (``python -m app`` uses it to stop the server and
    exit non-zero, so Vertex sees a failed container rather than one that never gets healthy).
    """
    settings = settings or Settings.from_env()
    configure_ultralytics()  # environment only: Ultralytics is imported by the loader thread
    registry = Registry(settings)

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
        try:
            yield
        finally:
            task.cancel()

    handlers = [
        InferenceController,
        stream_handler,
        ModelsController,
        health_handler(settings.health_route),
    ]
    if settings.metrics:
        handlers.append(metrics_handler)
    return Litestar(
        route_handlers=handlers,
        dependencies={
            "registry": Provide(lambda: registry, sync_to_thread=False),
            "settings": Provide(lambda: settings, sync_to_thread=False),
        },
        lifespan=[load_models],
        state=State({"registry": registry, "settings": settings}),
        exception_handlers={Exception: handle_exception},
        before_send=[identify(settings.deployed_model_id)],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="vertex-yolo",
            version=VERSION,
            description="Ultralytics YOLO behind a Vertex AI dedicated endpoint (/invoke/*).",
            path="/openapi",
            render_plugins=[JsonRenderPlugin()],
        ),
        logging_config=None,
        debug=False,
    )
