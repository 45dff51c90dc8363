"""``/models`` and ``/models/{name}``: GET, and POST too, because ``Endpoint.invoke`` only POSTs."""

from __future__ import annotations

import msgspec
from litestar import Controller, HttpMethod, route
from litestar.di import NamedDependency
from litestar.params import FromPath

from app.config import Settings
from app.registry import Registry
from app.routes.openapi import problems
from client.schema import ModelInfo, ModelList


class ModelsController(Controller):
    path = "/models"

    @route(
        http_method=[HttpMethod.GET, HttpMethod.POST],
        status_code=200,
        summary="List the served models",
        responses=problems(503),
        sync_to_thread=False,
    )
    def list_models(
        self, registry: NamedDependency[Registry], settings: NamedDependency[Settings]
    ) -> ModelList:
        registry.ensure_ready()
        return msgspec.structs.replace(
            registry.describe(),
            max_pixels=settings.max_pixels,
            max_body_bytes=settings.max_body_bytes,
        )

    @route(
        "/{name:str}",
        http_method=[HttpMethod.GET, HttpMethod.POST],
        status_code=200,
        summary="Describe one model",
        responses=problems(404, 503),
        sync_to_thread=False,
    )
    def get_model(self, registry: NamedDependency[Registry], name: FromPath[str]) -> ModelInfo:
        model = registry.get(name)
        return model.info(model.name == registry.default_name)
