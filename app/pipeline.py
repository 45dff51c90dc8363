"""The image routes' pipeline: front end → decode → infer → encode.

``/detect``, ``/segment``, ``/annotate`` and ``/predict`` differ only in their :class:`Route`
and in how they encode the results (``app/routes/images.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import anyio
from litestar import Request

from app.config import Settings
from app.frontend import Route, admitted
from app.images import decode_images
from app.metrics import IMAGES, INFERENCE_SECONDS
from app.registry import LoadedModel, Registry
from app.results import RESCALABLE_TASKS, restore_size
from client.schema import SERVER_TIMING, ModelParameters, format_server_timing

P = TypeVar("P", bound=ModelParameters)
T = TypeVar("T")


@dataclass
class Inferred(Generic[P]):
    """A request after inference: the model used, its parameters and the raw results."""

    model: LoadedModel
    params: P
    results: list[Any]
    timings_ms: dict[str, float] = field(default_factory=dict)

    def headers(self) -> dict[str, str]:
        """Headers every inference response carries (request and deployed model ids: all)."""
        return {
            "X-Model-Name": self.model.name,
            "X-Model-Version": self.model.version,
            SERVER_TIMING: format_server_timing(self.timings_ms),
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
    route: Route[P],
    *,
    one_image: str | None = None,
    draft: bool = True,
) -> Inferred[P]:
    """Admit the request (:func:`app.frontend.admitted`), decode its images, predict.

    ``one_image``: see :func:`~app.frontend.admitted`. ``draft``: a JPEG much larger than the
    model's input may be decoded reduced (results are scaled back to full size); a route that
    draws on the image turns it off.
    """
    async with admitted(request, registry, settings, route, one_image=one_image) as job:
        model = job.model
        reduce = draft and settings.jpeg_draft and model.task in RESCALABLE_TASKS
        images = await anyio.to_thread.run_sync(
            decode_images, job.inputs.blobs, settings.max_pixels, job.imgsz if reduce else None
        )
        decoded = time.perf_counter()
        results = await model.predict([im.bgr for im in images], job.params, job.class_ids)
    for result, image in zip(results, images, strict=True):
        if image.reduced:
            restore_size(result, image.width, image.height)
    done = time.perf_counter()
    INFERENCE_SECONDS.labels(model.name, route.path).observe(done - decoded)
    IMAGES.labels(model.name, route.path).inc(len(images))
    timings = {"decode": (decoded - job.started) * 1000, "inference": (done - decoded) * 1000}
    return Inferred(model, job.params, results, timings)
