"""``GET /models`` and ``GET /models/{name}``."""

from __future__ import annotations

from litestar import Controller, get

from app.registry import Registry
from client.schema import ModelInfo, ModelList


class ModelsController(Controller):
    path = "/models"

    @get(summary="List the served models", sync_to_thread=False)
    def list_models(self, registry: Registry) -> ModelList:
        registry.ensure_ready()
        return registry.describe()

    @get("/{name:str}", summary="Describe one model", sync_to_thread=False)
    def get_model(self, registry: Registry, name: str) -> ModelInfo:
        model = registry.get(name)
        return model.info(model.name == registry.default_name)
