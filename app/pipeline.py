"""The one request pipeline every inference route shares: read → decode → infer → encode.

Routes differ only in the task they need and in how they encode the results.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
from litestar import Request

from app.config import Settings
from app.errors import BadRequest
from app.inference import RESCALABLE_TASKS, restore_size
from app.media import decode_images, parse_parameters, read_inputs
from app.metrics import IMAGES, INFERENCE_SECONDS
from app.registry import LoadedModel, Registry
from client.schema import Parameters

T = TypeVar("T")


@dataclass
class Inferred:
    """A request after inference: the model used, its parameters and the raw results."""

    model: LoadedModel
    params: Parameters
    results: list[Any]
    timings_ms: dict[str, float] = field(default_factory=dict)

    def headers(self) -> dict[str, str]:
        """Headers every inference response carries (request and deployed model ids: all)."""
        timing = ", ".join(f"{k};dur={v:.1f}" for k, v in self.timings_ms.items())
        return {
            "X-Model-Name": self.model.name,
            "X-Model-Version": self.model.version,
            "Server-Timing": timing,
        }

    async def encode(self, fn: Callable[[], T]) -> T:
        """Run an encoder in a worker thread and record its time."""
        started = time.perf_counter()
        out = await anyio.to_thread.run_sync(fn)
        self.timings_ms["encode"] = (time.perf_counter() - started) * 1000
        return out


async def infer(
    request: Request,
    registry: Registry,
    settings: Settings,
    *,
    route: str,
    task: str | None = None,
    aliases: dict[str, str] | None = None,
    one_image: str | None = None,
    draft: bool = True,
) -> Inferred:
    """Read and validate the request, take a place in the model's queue, decode, predict.

    ``one_image``: the route answers a single image; this is the 400's hint when there are more.
    ``draft``: a JPEG much larger than the model's input may be decoded reduced (results are
    scaled back to full size); a route that draws on the image turns it off.
    """
    started = time.perf_counter()
    inputs = await read_inputs(request, settings.max_images)
    if one_image and len(inputs.blobs) > 1:
        raise BadRequest(
            f"{route} answers one image but the request has {len(inputs.blobs)}; {one_image}"
        )
    params = parse_parameters(inputs.params, aliases)
    model = registry.get(params.model, task=task, route=route)
    class_ids = model.class_ids(params.classes)
    imgsz = model.input_size(params.imgsz)  # 400 when a static export is asked for another size
    draft_to = imgsz if draft and settings.jpeg_draft and model.task in RESCALABLE_TASKS else None
    with model.admit():  # 429 before any work when the model's queue is full
        images = await anyio.to_thread.run_sync(
            decode_images, inputs.blobs, settings.max_pixels, draft_to
        )
        decoded = time.perf_counter()
        results = await model.predict([im.bgr for im in images], params, class_ids)
    for result, image in zip(results, images, strict=True):
        if image.reduced:
            restore_size(result, image.width, image.height)
    done = time.perf_counter()
    INFERENCE_SECONDS.labels(model.name, route).observe(done - decoded)
    IMAGES.labels(model.name, route).inc(len(images))
    timings = {"decode": (decoded - started) * 1000, "inference": (done - decoded) * 1000}
    return Inferred(model, params, results, timings)
